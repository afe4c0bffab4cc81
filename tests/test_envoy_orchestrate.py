"""Cascade and hedge decisions through a real Envoy: the processor calls the models and answers with an immediate response."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fakes, fresh_fakes, start_stack  # noqa: F401
from llm_router.config import load_config
from llm_router.gateways.envoy.bootstrap import RouteSpec

pytestmark = pytest.mark.envoy

PROMPT = {"model": "auto", "messages": [{"role": "user", "content": "Explain how a hash map handles collisions."}]}
CASCADE = {"strategy": "cascade", "explain": True, "params": {"scorer": "logprob", "floor": 0.6, "timeout_s": 5}}
HEDGE = {"strategy": "hedge", "explain": True, "params": {"n": 2, "pick": "first", "scorer": "logprob", "floor": 0.6,
                                                          "timeout_s": 5}}


def orchestrate_config(fakes) -> dict:  # noqa: F811
    """The test config with providers at the fakes' URLs (the processor calls them itself) and two orchestrated routes."""
    data = config_data()
    base = load_config(None)
    data["providers"] = {n: {**base.providers[n].model_dump(), "base_url": fakes.url(n)} for n in base.providers}
    data["policies"]["cascade"] = CASCADE
    data["policies"]["hedge"] = HEDGE
    return data


@pytest.fixture(scope="module")
def orch(fakes, tmp_path_factory):  # noqa: F811
    wd = Path(tmp_path_factory.mktemp("orchestrate"))
    s = start_stack(wd, fakes, orchestrate_config(fakes),
                    routes=(RouteSpec("/cascade/", policy="cascade"), RouteSpec("/hedge/", policy="hedge"), RouteSpec("/")))
    try:
        yield s
    finally:
        s.stop()


def post(stack, path: str, body: dict) -> httpx.Response:
    return httpx.post(stack.url + path, content=orjson.dumps(body), headers={"content-type": "application/json"}, timeout=60)


def chain_of(stack, policy: str) -> list[str]:
    from llm_router.runtime import Exchange

    ex = Exchange("probe", "r", 0.0)
    stack.processor.runtime.decide(orjson.dumps(PROMPT), path="/v1/chat/completions", ex=ex, route_conf={"policy": policy})
    return [m.id for m in ex.decision.chain]


def test_a_cascade_escalates_past_weak_answers_and_takes_longer_than_a_message_timeout(orch, fresh_fakes):
    chain = chain_of(orch, "cascade")
    catalog = orch.processor.runtime.catalog
    first, second = (catalog.models[m] for m in chain[:2])
    # The first model is slow and weak: the whole cascade takes longer than Envoy's 500 ms message timeout.
    fresh_fakes.set_behaviour(first.provider, default_quality=0.0, first_byte_ms=700)
    fresh_fakes.set_behaviour(second.provider, default_quality=1.0)
    t0 = time.perf_counter()
    r = post(orch, "/cascade/v1/chat/completions", PROMPT)
    assert r.status_code == 200, r.text
    assert time.perf_counter() - t0 > 0.7
    assert r.headers["x-llm-router-model"] == second.id
    assert "<0.6" in r.headers["x-llm-router-steps"] and r.headers["x-llm-router-request-id"]
    answer = r.json()
    assert answer["choices"][0]["message"]["content"].startswith(f"[{second.name}]")
    assert answer["choices"][0]["logprobs"] is None  # asked for scoring, not handed to the client
    calls = fresh_fakes.requests()
    assert [c.provider for c in calls] == [first.provider, second.provider]
    assert all("x-envoy-attempt-count" not in c.headers for c in calls)  # the processor called them, not Envoy
    rid = r.headers["x-llm-router-request-id"]
    reported = orch.observer.attempts_for(rid, 2)
    assert [(e.call.model.id, status) for e, status, _, _ in reported] == [(first.id, 200), (second.id, 200)]
    assert rid not in orch.processor.service.pending  # nothing waits for a response through Envoy


def test_a_hedge_answers_with_the_first_good_reply(orch, fresh_fakes):
    chain = chain_of(orch, "hedge")
    catalog = orch.processor.runtime.catalog
    slow = catalog.models[chain[0]]
    fresh_fakes.set_behaviour(None, default_quality=1.0)
    fresh_fakes.set_behaviour(slow.provider, first_byte_ms=1500)
    r = post(orch, "/hedge/v1/chat/completions", PROMPT)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == chain[1]


def test_a_streaming_request_under_a_cascade_policy_is_routed_by_envoy(orch, fresh_fakes):
    r = post(orch, "/cascade/v1/chat/completions", {**PROMPT, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    [call] = fresh_fakes.requests()
    assert call.headers["x-envoy-attempt-count"] == "1"


def test_all_models_failing_in_a_cascade_is_one_openai_error(orch, fresh_fakes):
    fresh_fakes.set_behaviour(None, status=503)
    r = post(orch, "/cascade/v1/chat/completions", PROMPT)
    assert r.status_code in (502, 503), r.text
    assert r.json()["error"]["type"] == "server_error"
    fresh_fakes.set_behaviour(None, status=None)
    assert post(orch, "/v1/chat/completions", PROMPT).status_code == 200
