"""Downgrade budgets: once a route's (consumer's, or the global) budget is spent, only models within the
rule's prices serve it, instead of every request being refused.

`accounting.limits: [{scope: route, usd: 50, window: day, action: downgrade, max_output_price: 3}]`
keeps a route answering after its budget is gone, on the cheap models; a request only dearer models
can serve gets a 429 naming the budget.
"""
from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, restored, running_fakes, short_tmp, start_stack  # noqa: F401
from llm_router.accounting import Usage
from llm_router.config import ConfigError, parse_config
from llm_router.gateways.envoy.stack import wait_for
from llm_router.runtime import Exchange, Refusal, Runtime

HARD = "Explain the trade-offs between optimistic and pessimistic locking in a booking system."
RULES_HARD = "Prove that the square root of 2 is irrational, step by step, then generalise the proof to any non-square integer."
# Under $1.40 out: DeepSeek (peak or not) and Llama 3.3; neither follows a JSON schema.
DOWNGRADE = {"scope": "route", "usd": 0.01, "window": "day", "action": "downgrade", "max_output_price": 1.4}


def chat(prompt: str = HARD, **extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra})


@pytest.mark.parametrize("rule, says", [
    ({"scope": "model", "usd": 1, "action": "downgrade", "max_output_price": 3}, "'downgrade' applies to route, consumer and global"),
    ({"scope": "route", "usd": 1, "action": "downgrade"}, "a 'downgrade' limit needs max_input_price and/or max_output_price"),
    ({"scope": "route", "usd": 1, "max_input_price": 1}, "max_input_price: only a 'downgrade' limit takes prices"),
    ({"scope": "route", "usd": 1, "action": "downgrade", "max_output_price": -1}, "max_output_price: must be a non-negative number"),
])
def test_bad_downgrade_rules_are_named(rule, says, provider_keys):
    with pytest.raises(ConfigError) as err:
        Runtime(parse_config({"accounting": {"limits": [rule]}}))
    assert "accounting.limits[0]" in str(err.value) and says in str(err.value), str(err.value)


def test_a_spent_route_budget_downgrades_then_refuses_what_only_dear_models_serve(tmp_path, provider_keys):
    rt = Runtime(parse_config({"metrics": {"listen": "127.0.0.1:0", "decision_log": str(tmp_path / "decisions.jsonl")},
                               "accounting": {"limits": [DOWNGRADE]}}))

    def send(body: bytes, rid: str):
        ex = Exchange(rid, "chat", 0.0)
        return ex, rt.decide(body, path="/v1/chat/completions", ex=ex)

    async def go():
        await rt.start()
        try:
            ex, first = send(chat(), "r1")
            rt.on_response(ex, 200, Usage(1000, 1000), 0.2)  # Claude: $0.018 of a $0.01 budget
            await rt.shared.sync()
            ex2, second = send(chat(), "r2")
            rt.on_response(ex2, 200, Usage(100, 100), 0.1)
            return first, (ex2, second), send(chat(response_format={"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "object"}}}), "r3")
        finally:
            await rt.stop()

    first, (ex2, second), (_, third) = asyncio.run(go())
    assert not isinstance(first, Refusal) and first.model.id == "claude-3.5-sonnet"
    assert not isinstance(second, Refusal) and second.model.output_price <= 1.4
    assert "downgraded: $0.01 per day for route 'chat' spent" in ex2.decision.reason
    assert all(m.output_price <= 1.4 for m in ex2.decision.chain)
    # Structured output: GPT-4o, Gemini and Mistral Large can follow a schema, all dearer than the cap.
    assert isinstance(third, Refusal) and third.status == 429
    err = orjson.loads(third.body)["error"]
    assert err["code"] == "spend_limit_exceeded" and "only models up to output $1.4 per 1M tokens" in err["message"]
    text = rt.metrics.exposition().decode()
    assert 'llm_router_downgraded_total{route="chat"} 1.0' in text
    lines = [orjson.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [x.get("downgraded", "")[:4] for x in lines if x["request_id"] in ("r1", "r2")] == ["", "$0.0"]


def test_a_consumer_budget_downgrades_only_that_consumer(provider_keys):
    rule = {**DOWNGRADE, "scope": "consumer"}
    rt = Runtime(parse_config({"metrics": {"listen": "127.0.0.1:0"}, "accounting": {"limits": [rule]}}))
    alice, bob = [("authorization", "Bearer client-alice")], [("authorization", "Bearer client-bob")]

    async def go():
        await rt.start()
        try:
            ex = Exchange("a1", "chat", 0.0)
            rt.decide(chat(), path="/v1/chat/completions", ex=ex, headers=alice)
            rt.on_response(ex, 200, Usage(1000, 1000), 0.2)
            await rt.shared.sync()
            out = []
            for rid, who in (("a2", alice), ("b1", bob)):
                ex = Exchange(rid, "chat", 0.0)
                out.append(rt.decide(chat(), path="/v1/chat/completions", ex=ex, headers=who))
            return out
        finally:
            await rt.stop()

    alice_next, bob_first = asyncio.run(go())
    assert alice_next.model.output_price <= 1.4 and bob_first.model.id == "claude-3.5-sonnet"


@pytest.mark.envoy
def test_llm_router_serve_behind_envoy_downgrades_a_route_whose_budget_is_spent(tmp_path_factory):
    """The real `llm-router serve`: spend is shared through its state, the next request is served cheaper."""
    data = config_data()
    data["accounting"] = {"limits": [{**DOWNGRADE, "usd": 1e-9}]}
    data["state"] = {"refresh_s": 0.05}
    for fakes in running_fakes(data):
        with short_tmp() as wd, restored(fakes):
            s = start_stack(wd, fakes, data, processor="cli")
            try:
                first = httpx.post(s.url + "/v1/chat/completions", content=chat(RULES_HARD), timeout=30,
                                   headers={"content-type": "application/json"})
                assert first.status_code == 200 and first.headers["x-llm-router-model"] == "claude-3.5-sonnet"

                def downgraded() -> bool:
                    r = httpx.post(s.url + "/v1/chat/completions", content=chat(RULES_HARD), timeout=30,
                                   headers={"content-type": "application/json"})
                    assert r.status_code == 200, r.text
                    return "downgraded" in r.headers.get("x-llm-router-reason", "")

                wait_for(downgraded, timeout=15, what="the spent budget seen by the processor")
                r = httpx.post(s.url + "/v1/chat/completions", content=chat(RULES_HARD), timeout=30,
                               headers={"content-type": "application/json"})
                assert r.status_code == 200 and s.cfg.models[r.headers["x-llm-router-model"]].output_price <= 1.4
            finally:
                s.stop()
