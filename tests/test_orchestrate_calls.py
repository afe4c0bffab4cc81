"""Cascade, hedge and chain fallback by the runner itself, against real fake providers over HTTP."""
from __future__ import annotations

import time

import orjson
import pytest
from conftest import orchestrate_once

from llm_router.orchestrate import wants_orchestration
from llm_router.runtime import Exchange, Runtime

PROMPT = "Explain how a hash map handles collisions."
# Mistral returns no logprobs (the logprob scorer takes its answers on the verifier's word): kept out of these chains.
CASCADE = {"strategy": "cascade", "explain": True, "params": {"scorer": "logprob", "floor": 0.6, "timeout_s": 5},
           "constraints": {"exclude_models": ["mistral-large"]}}
HEDGE_FIRST = {"strategy": "hedge", "explain": True, "params": {"n": 3, "pick": "first", "scorer": "logprob", "floor": 0.6,
                                                                  "timeout_s": 5}}
HEDGE_BEST = {**HEDGE_FIRST, "params": {**HEDGE_FIRST["params"], "pick": "best"}}


@pytest.fixture
def make(on_fakes):
    """A Runtime whose providers are the fakes (keys from the environment), with the given policies."""
    return lambda policies, server=None: Runtime(on_fakes(policies, server))


def ask(rt: Runtime, policy: str, prompt: str = PROMPT, **extra):
    """Decide and orchestrate one request; the orchestrator's client is closed in the same loop."""
    return orchestrate_once(rt, policy, prompt, **extra)


def chain_of(rt: Runtime, policy: str, **extra) -> list[str]:
    ex = Exchange("probe", "r", 0.0)
    rt.decide(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": PROMPT}], **extra}),
              path="/v1/chat/completions", ex=ex, route_conf={"policy": policy})
    return [m.id for m in ex.decision.chain]


def provider(rt: Runtime, model_id: str) -> str:
    return rt.catalog.models[model_id].provider


def responses(rt: Runtime) -> dict:
    return dict(rt.metrics.responses.values)


# ---- cascade -----------------------------------------------------------------------------------

def test_confident_cheap_answer_is_returned_after_one_call(make, fakes):
    rt = make({"c": CASCADE})
    chain = chain_of(rt, "c")
    assert len(chain) >= 3
    ex, rep = ask(rt, "c")
    assert rep.status == 200 and rep.model == chain[0]
    assert rep.header("x-llm-router-model") == chain[0] and rep.header("x-llm-router-request-id") == ex.request_id
    assert "0.6" in rep.header("x-llm-router-steps")
    assert len(fakes.requests()) == 1
    sent = fakes.requests()[0].json
    assert sent["logprobs"] is True  # asked on the runner's account ...
    assert orjson.loads(rep.body)["choices"][0]["logprobs"] is None  # ... and not handed to the client


def test_weak_answers_escalate_and_every_call_is_accounted(make, fakes):
    rt = make({"c": CASCADE})
    chain = chain_of(rt, "c")
    for m in chain[:2]:
        fakes.set_behaviour(provider(rt, m), default_quality=0.0)  # confident-less (weak) answers
    ex, rep = ask(rt, "c")
    assert rep.status == 200 and rep.model == chain[2], rep.steps
    assert f"[{rt.catalog.models[chain[2]].name}]" in orjson.loads(rep.body)["choices"][0]["message"]["content"]
    assert [r.provider for r in fakes.requests()] == [provider(rt, m) for m in chain[:3]]
    got = responses(rt)
    assert all(got.get((m, "2xx")) == 1 for m in chain[:3])
    assert rt.metrics.fallbacks.values == {(chain[0], chain[1], "low_score"): 1, (chain[1], chain[2], "low_score"): 1}
    assert all(rt.metrics.cost.values[("r", m)] > 0 for m in chain[:3])
    steps = rep.header("x-llm-router-steps")
    assert steps.count("<0.6") == 2 and ">=0.6" in steps


def test_no_answer_reaches_the_floor_best_is_returned(make, fakes):
    rt = make({"c": CASCADE})
    fakes.set_behaviour(None, default_quality=0.0)
    _, rep = ask(rt, "c")
    assert rep.status == 200 and "best is" in rep.header("x-llm-router-steps")
    assert len(fakes.requests()) == 3


def test_verifier_escalates_on_a_refusal(make, fakes):
    rt = make({"v": {**CASCADE, "params": {"scorer": "verify", "floor": 0.5}}})
    chain = chain_of(rt, "v")
    first = rt.catalog.models[chain[0]]
    fakes.set_behaviour(first.provider, texts={first.name: "I'm sorry, but I can't help with that."})
    _, rep = ask(rt, "v")
    assert rep.model == chain[1]
    assert "refusal" in rep.header("x-llm-router-steps")
    assert "logprobs" not in fakes.requests()[0].json  # the verifier needs none


def test_verifier_checks_the_requested_json_schema(make, fakes):
    rt = make({"v": {**CASCADE, "params": {"scorer": "verify", "floor": 0.5}}})
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    chain = chain_of(rt, "v", response_format=rf)
    m0, m1 = (rt.catalog.models[m] for m in chain[:2])
    fakes.set_behaviour(m0.provider, texts={m0.name: '{"town": "Oslo"}'})
    fakes.set_behaviour(m1.provider, texts={m1.name: '{"city": "Oslo"}'})
    _, rep = ask(rt, "v", response_format=rf)
    assert rep.model == m1.id
    assert orjson.loads(orjson.loads(rep.body)["choices"][0]["message"]["content"]) == {"city": "Oslo"}
    assert "does not match the schema" in rep.header("x-llm-router-steps")


@pytest.mark.parametrize("failing,expected", [(1, 1), (2, 2)])
def test_failing_providers_fall_through_to_a_healthy_one(make, fakes, failing, expected):
    rt = make({"c": CASCADE})
    chain = chain_of(rt, "c")
    for m in chain[:failing]:
        fakes.set_behaviour(provider(rt, m), status=500)
    _, rep = ask(rt, "c")
    assert rep.status == 200 and rep.model == chain[expected]
    assert all(responses(rt).get((m, "5xx")) == 1 for m in chain[:failing])
    assert all(rt.metrics.fallbacks.values.get((chain[i], chain[i + 1], "server_error")) == 1 for i in range(failing))


def test_all_failing_is_one_clear_502(make, fakes):
    rt = make({"c": CASCADE})
    fakes.set_behaviour(None, status=503)
    _, rep = ask(rt, "c")
    assert rep.status == 502 and rep.model is None
    err = orjson.loads(rep.body)["error"]
    assert err["code"] == "upstream_failed" and err["type"] == "server_error"
    assert "every model of the chain failed" in err["message"] and err["message"].count("503") == 3
    assert all(k not in rep.body.decode() for k in fakes.keys().values())


def test_all_rate_limited_is_503_with_retry_after(make, fakes):
    rt = make({"c": CASCADE})
    chain = chain_of(rt, "c")
    fakes.set_behaviour(None, status=429, retry_after_s=7)
    _, rep = ask(rt, "c")
    assert rep.status == 503 and rep.header("retry-after") == "7"
    assert orjson.loads(rep.body)["error"]["code"] == "no_model_available"
    assert set(chain) <= rt.health.excluded()  # the 429s cooled the models down: out of selection


def test_a_slow_model_times_out_and_the_next_answers(make, fakes):
    rt = make({"c": {**CASCADE, "params": {**CASCADE["params"], "timeout_s": 0.5}}})
    chain = chain_of(rt, "c")
    fakes.set_behaviour(provider(rt, chain[0]), first_byte_ms=5000)
    t0 = time.monotonic()
    _, rep = ask(rt, "c")
    assert rep.status == 200 and rep.model == chain[1]
    assert time.monotonic() - t0 < 4
    assert "timeout after 0.5s" in rep.header("x-llm-router-steps")
    assert responses(rt).get((chain[0], "none")) == 1


def test_a_bad_request_is_not_escalated(make, fakes):
    rt = make({"c": CASCADE})
    fakes.set_behaviour(None, status=400)
    _, rep = ask(rt, "c")
    assert rep.status == 400 and len(fakes.requests()) == 1


def test_streaming_requests_are_not_orchestrated(make):
    rt = make({"c": CASCADE})
    ex = Exchange("s", "r", 0.0)
    rt.decide(orjson.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}),
              path="/v1/chat/completions", ex=ex, route_conf={"policy": "c"})
    assert ex.decision.mode == "cascade" and not wants_orchestration(ex)


def test_egress_mode_sends_through_the_gateway_url_with_the_route_header(make, fakes):
    rt = make({"c": CASCADE})
    chain = chain_of(rt, "c")
    first = provider(rt, chain[0])
    # the "gateway" here is the first provider's fake itself: what matters is where the call goes and what it carries
    rt2 = make({"c": CASCADE}, server={"orchestrate": {"egress": fakes.url(first)}})
    _, rep = ask(rt2, "c")
    assert rep.status == 200
    got = fakes.requests(first)[-1]
    assert got.headers["x-llm-router-upstream"] == rt2.catalog.models[chain[0]].upstream
    direct = make({"c": CASCADE})
    fakes.clear()
    ask(direct, "c")
    assert "x-llm-router-upstream" not in fakes.requests()[0].headers


# ---- hedge -------------------------------------------------------------------------------------

def test_hedge_first_returns_the_fastest_good_answer_and_cancels_the_rest(make, fakes):
    rt = make({"h": HEDGE_FIRST})
    chain = chain_of(rt, "h")
    assert len(chain) == 3 and len({provider(rt, m) for m in chain}) == 3
    for m in chain[:2]:
        fakes.set_behaviour(provider(rt, m), first_byte_ms=3000)
    t0 = time.monotonic()
    _, rep = ask(rt, "h")
    assert time.monotonic() - t0 < 2.5
    assert rep.status == 200 and rep.model == chain[2]
    steps = rep.header("x-llm-router-steps")
    assert steps.count("cancelled") == 2
    got = responses(rt)
    assert got.get((chain[2], "2xx")) == 1
    assert all(got.get((m, "4xx")) == 1 for m in chain[:2])  # cancelled calls: accounted as 499 ...
    assert all(rt.metrics.cost.values[("r", m)] > 0 for m in chain)  # ... at their estimated cost
    assert {k[2] for k in rt.metrics.fallbacks.values} == {"hedge"}


def test_hedge_best_waits_for_all_and_picks_the_highest_score(make, fakes):
    rt = make({"h": HEDGE_BEST})
    chain = chain_of(rt, "h")
    fakes.set_behaviour(None, default_quality=0.0)
    fakes.set_behaviour(provider(rt, chain[1]), default_quality=1.0, first_byte_ms=300)
    _, rep = ask(rt, "h")
    assert rep.model == chain[1]
    assert all(responses(rt).get((m, "2xx")) == 1 for m in chain)
    assert len(fakes.requests()) == 3


def test_hedge_survives_failures_and_reports_none_healthy(make, fakes):
    rt = make({"h": HEDGE_FIRST})
    chain = chain_of(rt, "h")
    fakes.set_behaviour(provider(rt, chain[0]), status=500)
    fakes.set_behaviour(provider(rt, chain[1]), status=429)
    _, rep = ask(rt, "h")
    assert rep.status == 200 and rep.model == chain[2]
    rt2 = make({"h": HEDGE_FIRST})
    for m, s in zip(chain, (500, 429, 502)):
        fakes.set_behaviour(provider(rt2, m), status=s)
    _, rep2 = ask(rt2, "h")
    assert rep2.status == 502 and orjson.loads(rep2.body)["error"]["code"] == "upstream_failed"


def test_judge_scorer_grades_answers_and_its_calls_are_accounted(make, fakes):
    policy = {**CASCADE, "params": {"scorer": "judge", "judge": "gpt-4o", "floor": 0.8, "timeout_s": 5}}
    rt = make({"j": policy})
    chain = chain_of(rt, "j")
    assert "gpt-4o" not in chain[:1]
    judge = rt.catalog.models["gpt-4o"]
    fakes.set_behaviour(judge.provider, texts={judge.name: "9"})
    _, rep = ask(rt, "j")
    assert rep.model == chain[0] and "graded 9/10" in rep.header("x-llm-router-steps")
    asked = [r.json for r in fakes.requests(judge.provider)]
    assert len(asked) == 1 and asked[0]["max_tokens"] == 5 and "Grade (1-10)" in asked[0]["messages"][-1]["content"]
    assert responses(rt)[("gpt-4o", "2xx")] == 1 and rt.metrics.cost.values[("r", "gpt-4o")] > 0
    rt2 = make({"j": policy})
    fakes.set_behaviour(judge.provider, texts={judge.name: "2"})
    _, rep2 = ask(rt2, "j")
    assert rep2.status == 200 and "best is" in rep2.header("x-llm-router-steps")
    assert rep2.header("x-llm-router-steps").count("graded 2/10") == 3


def test_hedge_first_skips_a_fast_weak_answer(make, fakes):
    rt = make({"h": HEDGE_FIRST})
    chain = chain_of(rt, "h")
    fakes.set_behaviour(provider(rt, chain[0]), default_quality=0.0)  # fast, weak
    for m in chain[1:]:
        fakes.set_behaviour(provider(rt, m), first_byte_ms=200)  # slower, good
    _, rep = ask(rt, "h")
    assert rep.model in chain[1:] and rep.model != chain[0]
    assert f"{chain[0]} 200 score" in rep.header("x-llm-router-steps")
