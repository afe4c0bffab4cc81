"""Circuit breaking, rate-limit signals and spend limits, driven through shared state."""
from __future__ import annotations

import asyncio
import time

import pytest

from llm_router.health import CLOSED, HALF_OPEN, OPEN, Health, HealthConfig
from llm_router.limits import LimitRule, SpendLimits, parse_limits
from llm_router.state import MemoryStore, RedisStore, SharedState

MODELS = ["cheap", "mid", "top"]


def sync(state, now):
    asyncio.run(state.sync(now))


def make_health(**kw) -> tuple[Health, SharedState]:
    state = SharedState(MemoryStore())
    conf = HealthConfig(**{"min_requests": 4, "error_rate": 0.5, "cooldown_s": 10, "window_s": 30, "bucket_s": 5, **kw})
    return Health(state, MODELS, conf), state


def test_breaker_opens_on_error_rate_then_probes_and_closes():
    h, state = make_health(probe_every=3)
    t = time.time()
    for status in (200, 500, 502, 0):  # 3 failures of 4 (status 0 = no response)
        h.started("cheap")
        h.observe("cheap", status, 0.1, None, t)
    sync(state, t)
    assert h.mode["cheap"] == OPEN and "cheap" in h.excluded() and h.is_open("cheap")
    sync(state, t + 5)
    assert h.mode["cheap"] == OPEN  # still cooling down
    sync(state, t + 11)
    assert h.mode["cheap"] == HALF_OPEN
    seen = [("cheap" in h.excluded()) for _ in range(6)]
    assert seen.count(False) == 2  # one probe in three decisions
    h.observe("cheap", 200, 0.1, None, t + 12)  # the probe succeeds
    assert h.mode["cheap"] == CLOSED and "cheap" not in h.excluded()
    h.observe("cheap", 500, 0.1, None, t + 12)
    assert h.mode["cheap"] == CLOSED  # 1 failure in 2 calls since it closed: the old ones do not count
    sync(state, t + 13)
    assert h.mode["cheap"] == CLOSED  # old failures still in the window do not re-open it


def test_breaker_opens_at_the_failure_that_crosses_the_threshold_not_a_snapshot_later():
    store = MemoryStore()
    state, other_state = SharedState(store), SharedState(store)
    conf = HealthConfig(min_requests=4, error_rate=0.5, cooldown_s=10, window_s=30, bucket_s=5)
    h, other = Health(state, MODELS, conf), Health(other_state, MODELS, conf)  # two processes over one store
    t = time.time()
    sync(state, t)
    for i in range(3):
        h.observe("cheap", 503, 0.1, None, t + i * 0.01)
        assert h.mode["cheap"] == CLOSED  # fewer than min_requests
    h.observe("cheap", 503, 0.1, None, t + 0.05)
    assert h.mode["cheap"] == OPEN and "cheap" in h.excluded()  # no refresh in between
    assert other.mode["cheap"] == CLOSED
    sync(state, t + 0.25)
    sync(other_state, t + 0.25)
    assert h.mode["cheap"] == OPEN and other.mode["cheap"] == OPEN  # the other process learns at its next refresh
    # Calls of this process and those in the snapshot count together; occasional failures do not open it.
    for _ in range(3):
        h.observe("mid", 200, 0.1, None, t + 0.3)
    sync(state, t + 0.5)
    for status in (200, 500, 500, 200, 500):
        h.observe("mid", status, 0.1, None, t + 0.6)
    assert h.mode["mid"] == CLOSED  # 3 failures in 8 calls
    h.observe("mid", 502, 0.1, None, t + 0.7)
    assert h.mode["mid"] == CLOSED  # 4 in 9
    h.observe("mid", 502, 0.1, None, t + 0.8)
    assert h.mode["mid"] == OPEN  # 5 in 10: the error rate


def test_failed_probe_reopens_with_doubled_cooldown():
    h, state = make_health()
    t = time.time()
    for _ in range(4):
        h.observe("mid", 503, 0.1, None, t)
    sync(state, t)
    sync(state, t + 11)
    assert h.mode["mid"] == HALF_OPEN
    h.observe("mid", 500, 0.1, None, t + 11)
    assert h.mode["mid"] == OPEN
    sync(state, t + 25)
    assert h.mode["mid"] == OPEN  # 20 s cool-down now
    sync(state, t + 32)
    assert h.mode["mid"] == HALF_OPEN


def test_too_few_requests_or_healthy_traffic_keep_it_closed():
    h, state = make_health()
    t = time.time()
    for _ in range(3):
        h.observe("top", 500, 0.1, None, t)  # below min_requests
    sync(state, t)
    assert h.mode["top"] == CLOSED
    for _ in range(10):
        h.observe("mid", 200, 0.1, None, t)
    h.observe("mid", 500, 0.1, None, t)
    sync(state, t)
    assert h.mode["mid"] == CLOSED


def test_slow_answers_count_as_failures():
    h, state = make_health(slow_s=2.0)
    t = time.time()
    for _ in range(4):
        h.observe("top", 200, 5.0, None, t)
    sync(state, t)
    assert h.mode["top"] == OPEN


def test_429_retry_after_cools_down_and_ratelimit_headers_feed_remaining():
    h, state = make_health()
    t = time.time()
    h.observe("cheap", 429, 0.05, [("Retry-After", "20"), ("x-ratelimit-remaining-requests", "0"),
                                   ("x-ratelimit-limit-requests", "500")], t)
    assert "cheap" in h.excluded()
    sync(state, t + 1)
    assert h.mode["cheap"] == OPEN and h.remaining("cheap") == 0.0
    sync(state, t + 21)
    assert h.mode["cheap"] == HALF_OPEN
    h.observe("mid", 200, 0.1, {"x-ratelimit-remaining-requests": "300", "x-ratelimit-limit-requests": "1000",
                                "x-ratelimit-remaining-tokens": "90000", "x-ratelimit-limit-tokens": "100000"}, t)
    sync(state, t)
    assert h.remaining("mid") == pytest.approx(0.3)  # the scarcer of requests and tokens
    assert h.remaining("top") is None


def test_a_429_on_one_of_several_keys_cools_that_key_for_the_model_shared_with_other_processes():
    store = MemoryStore()
    state, other_state = SharedState(store), SharedState(store)
    h, other = (Health(st, MODELS, HealthConfig(), keys={"cheap": 2, "mid": 1}) for st in (state, other_state))
    t = time.time()
    h.observe("cheap", 429, 0.05, [("retry-after", "20")], t, key=1)
    assert h.cooling_keys("cheap") == {1} and h.mode["cheap"] == CLOSED and "cheap" not in h.excluded()
    assert h.cooling_keys("mid") == set()
    sync(state, t + 1)
    sync(other_state, t + 1)
    assert other.cooling_keys("cheap") == {1}  # every process skips that key
    assert h.cooling_keys("cheap") == {1}
    h.observe("mid", 429, 0.05, [("retry-after", "20")], t + 1, key=0)
    assert h.mode["mid"] == OPEN  # one key only: the model cools down, as before
    h.observe("cheap", 429, 0.05, [("retry-after", "20")], t + 2, key=0)
    assert h.mode["cheap"] == OPEN and "cheap" in h.excluded()  # every key cooling
    sync(state, t + 25)
    assert h.cooling_keys("cheap") == set()  # the retry-after is over


def test_key_counts_that_change_after_start_up_are_followed():
    """A secret refresh that finds a second key: a 429 then cools that key only; one that loses keys prunes the rest."""
    store = MemoryStore()
    state = SharedState(store)
    h = Health(state, MODELS, HealthConfig(), keys={"cheap": 1})
    h.set_keys({"cheap": 3})
    t = time.time()
    h.observe("cheap", 429, 0.05, [("retry-after", "20")], t, key=2)
    assert h.cooling_keys("cheap") == {2} and h.mode["cheap"] == CLOSED
    sync(state, t + 1)  # the new key's flag is read back from the shared store
    assert h.cooling_keys("cheap") == {2}
    h.set_keys({"cheap": 2})  # key 2 is gone: nothing of it is left cooling
    assert h.cooling_keys("cheap") == set()
    h.observe("cheap", 429, 0.05, [("retry-after", "20")], t + 2, key=2)  # a late answer on the removed key
    assert h.mode["cheap"] == CLOSED
    h.observe("cheap", 429, 0.05, [("retry-after", "20")], t + 2, key=0)
    assert h.cooling_keys("cheap") == {0} and h.mode["cheap"] == CLOSED


def test_anthropic_headers_feed_remaining_and_a_429_cools_down_until_the_reset():
    h, state = make_health()
    t = time.time()
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 40))
    h.observe("mid", 200, 0.1, [("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "10"),
                                ("anthropic-ratelimit-tokens-limit", "40000"), ("anthropic-ratelimit-tokens-remaining", "30000")], t)
    sync(state, t)
    assert h.remaining("mid") == pytest.approx(0.2)
    # No retry-after: the exhausted window's RFC 3339 reset sets the cool-down.
    h.observe("top", 429, 0.05, [("anthropic-ratelimit-requests-limit", "50"), ("anthropic-ratelimit-requests-remaining", "0"),
                                 ("anthropic-ratelimit-requests-reset", reset)], t)
    sync(state, t + 1)
    assert h.mode["top"] == OPEN and h.remaining("top") == 0.0
    sync(state, t + 30)
    assert h.mode["top"] == OPEN  # the default cool-down (10 s) would have ended
    sync(state, t + 42)
    assert h.mode["top"] == HALF_OPEN


def test_openai_minute_resets_are_understood():
    h, state = make_health(max_retry_after_s=600)
    t = time.time()
    h.observe("cheap", 429, 0.05, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-limit-tokens": "1000",
                                   "x-ratelimit-reset-tokens": "2m30s"}, t)
    sync(state, t + 140)
    assert h.mode["cheap"] == OPEN
    sync(state, t + 151)
    assert h.mode["cheap"] == HALF_OPEN


def test_in_flight_counts():
    h, _ = make_health()
    h.started("top")
    h.started("top")
    assert h.in_flight("top") == 2
    h.observe("top", 200, 0.1, None, time.time())
    assert h.in_flight("top") == 1


def test_breaker_state_is_shared_through_redis(redis_url):
    """A breaker opened by one runner process takes the model out of selection in another."""
    prefix = f"h{time.monotonic_ns()}"
    s1, s2 = SharedState(RedisStore(redis_url, prefix=prefix)), SharedState(RedisStore(redis_url, prefix=prefix))
    conf = HealthConfig(min_requests=4, cooldown_s=10)
    h1, h2 = Health(s1, MODELS, conf), Health(s2, MODELS, conf)
    t = time.time()

    async def go():
        for _ in range(4):
            h1.observe("top", 500, 0.1, None, t)
        await s1.sync(t)
        await s1.sync(t)  # the open flag written by the first sync is read back
        await s2.sync(t)
        assert h2.mode["top"] == OPEN and "top" in h2.excluded()
        await s1.stop()
        await s2.stop()
    asyncio.run(go())


# ---- spend limits ------------------------------------------------------------------------

def test_parse_limits_names_bad_fields():
    assert parse_limits([{"scope": "model", "match": "top", "usd": 5, "window": "hour", "action": "exclude"}])[0].window == "hour"
    for item, words in [
        ({"scope": "team", "usd": 1}, "accounting.limits[0].scope"),
        ({"scope": "route", "usd": 1, "window": "week"}, "accounting.limits[0].window"),
        ({"scope": "route", "usd": -1}, "accounting.limits[0].usd"),
        ({"scope": "route", "usd": 1, "action": "exclude"}, "'exclude' applies to model limits only"),
        ({"scope": "route", "usd": 1, "colour": 1}, "unknown fields ['colour']"),
    ]:
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
            parse_limits([item])


def test_model_budget_excludes_the_model_once_spent():
    state = SharedState(MemoryStore())
    lim = SpendLimits(state, [LimitRule("model", 1.0, "day", "top", "exclude")], MODELS)
    t = time.time()
    lim.record(model="top", route="r", consumer=None, usd=0.6, now=t)
    sync(state, t)
    assert lim.excluded() == frozenset()
    lim.record(model="top", route="r", consumer=None, usd=0.5, now=t)
    sync(state, t)
    assert lim.excluded() == {"top"}
    assert lim.remaining()["model:top/day"] == 0.0
    sync(state, t + 86400)  # the next day's window starts empty
    assert lim.excluded() == frozenset()


def test_reject_limits_per_consumer_route_and_global():
    state = SharedState(MemoryStore())
    rules = [LimitRule("consumer", 1.0, "minute"), LimitRule("route", 5.0, "day", "chat"), LimitRule("global", 8.0, "month")]
    lim = SpendLimits(state, rules, MODELS, routes=["chat"])
    t = time.time()
    for who in ("alice", "bob"):
        lim.seen_consumer(who)
    lim.record(model="cheap", route="chat", consumer="alice", usd=0.95, now=t)
    sync(state, t)
    err = lim.check(model="cheap", route="chat", consumer="alice", estimate_usd=0.1)
    assert err is not None and err.status == 429 and "consumer 'alice'" in err.message and "$1 per minute" in err.message
    assert lim.check(model="cheap", route="chat", consumer="bob", estimate_usd=0.1) is None
    assert lim.check(model="cheap", route="chat", consumer="alice", estimate_usd=0.01) is None
    for i in range(5):
        lim.record(model="cheap", route="chat", consumer=f"c{i}", usd=0.9, now=t)
    sync(state, t)
    err = lim.check(model="cheap", route="chat", consumer="bob", estimate_usd=0.1)
    assert err is not None and "route 'chat'" in err.message
    assert lim.check(model="cheap", route="other", consumer="bob", estimate_usd=0.1) is None
    lim.record(model="cheap", route="other", consumer="x", usd=3.0, now=t)
    sync(state, t)
    err = lim.check(model="cheap", route="other", consumer="bob", estimate_usd=0.1)
    assert err is not None and "global" in err.message
    assert err.openai_body()["error"]["type"] == "rate_limit_error"


def test_a_model_its_provider_refuses_outright_is_broken_off_but_bad_requests_are_not():
    """404 (a retired model name), 401 and 403 (the key) fail every request to the model: they open the breaker."""
    for status in (404, 401, 403):
        h, state = make_health()
        t = time.time()
        for _ in range(4):
            h.observe("top", status, 0.1, None, t)
        sync(state, t)
        assert h.mode["top"] == OPEN and "top" in h.excluded(), status
    h, state = make_health()
    t = time.time()
    for _ in range(4):
        h.observe("top", 400, 0.1, None, t)  # a malformed or refused request: the model is fine
    sync(state, t)
    assert h.mode["top"] == CLOSED and "top" not in h.excluded()


def test_the_config_checks_know_every_health_setting():
    from dataclasses import fields

    from llm_router.edge_sections import CHECKS

    assert set(CHECKS["health"]) == {f.name for f in fields(HealthConfig)}
