"""Shadow policies: the model the client asked for (else the reference) is served; routing's choice is only recorded."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_router.accounting import Usage
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.decision import Decision, RouteError
from llm_router.router import Router, build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.secrets.env import EnvStore

KEYS = {"OPENAI_API_KEY": "sk-o", "DEEPSEEK_API_KEY": "sk-d", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "m"}
LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
EASY = "hi there, thanks!"
HARD = "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."


def data(**policy) -> dict:
    return {"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "explain": True,
                                     "shadow": True, **policy},
                         "live": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER}}}


def chat(text: str, model: str = "auto", **extra) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra})


def test_the_reference_or_the_asked_model_is_served_and_routings_choice_recorded():
    router = Router(parse_config(data(reference_model="gpt-4o")))
    _, d = router.route(chat(EASY))
    assert isinstance(d, Decision) and (d.model.id, d.shadow.id, d.strategy) == ("gpt-4o", "deepseek-v2", "shadow")
    assert "served gpt-4o, the reference model; routing would choose deepseek-v2" in d.reason
    assert d.fallbacks and d.model not in d.fallbacks  # the served model's own chain
    _, asked = router.route(chat(EASY, model="claude-sonnet-4-6"))  # by the provider's name
    assert (asked.model.id, asked.shadow.id) == ("claude-3.5-sonnet", "deepseek-v2") and "the model asked for" in asked.reason
    live = router.policy_for(orjson.dumps({"policy": "live"}))
    for text in (EASY, HARD):  # the recorded choice is what the same policy without shadow routes to
        _, shadowed = router.route(chat(text, model="gpt-4o"))
        _, routed = router.route(chat(text, model="gpt-4o"), policy=live)
        assert shadowed.model.id == "gpt-4o" and shadowed.shadow.id == routed.model.id and routed.shadow is None
    assert router.route(chat(HARD), policy=live)[1].model.id != "deepseek-v2"


def test_unknown_or_disallowed_models_are_refused_naming_the_field():
    router = Router(parse_config(data(constraints={"providers": ["openai", "deepseek"]})))
    _, unknown = router.route(chat(EASY, model="gpt-9"))
    assert isinstance(unknown, RouteError) and unknown.status == 400 and unknown.field == "model" and "gpt-9" in unknown.message
    _, other = router.route(chat(EASY, model="claude-3.5-sonnet"))
    assert isinstance(other, RouteError) and other.code == "model_not_allowed"


def test_without_a_reference_that_can_serve_it_the_most_capable_model_is_served():
    router = Router(parse_config(data(reference_model="gpt-4o")))
    _, d = router.route(orjson.dumps({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": EASY}]}),
                        path="/v1/messages")  # GPT-4o does not speak Anthropic's API
    assert d.model.id == "claude-3.5-sonnet" and "most capable" in d.reason


def runtime(tmp_path) -> Runtime:
    cfg = parse_config({**data(), "metrics": {"decision_log": str(tmp_path / "decisions.jsonl")}})
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]))


def samples(rt: Runtime, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(rt.metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_call_goes_to_the_served_model_and_metrics_and_log_hold_what_routing_would_spend(tmp_path):
    async def go() -> Runtime:
        rt = runtime(tmp_path)
        await rt.start()
        ex = Exchange(request_id=rt.new_request_id(), route="chat", started=0.0)
        call = rt.decide(chat(EASY), path="/v1/chat/completions", ex=ex)
        assert not isinstance(call, Refusal)
        assert call.model.id == "gpt-4o" and orjson.loads(call.body)["model"] == "gpt-4o"
        assert ("authorization", "Bearer sk-o") in call.set_headers
        assert ("x-llm-router-model", "gpt-4o") in call.response_headers
        assert ("x-llm-router-shadow-model", "deepseek-v2") in call.response_headers
        rt.on_response(ex, 200, Usage(1000, 200), 0.3, None)
        await rt.stop()
        return rt
    rt = asyncio.run(go())
    catalog = rt.catalog.models
    actual, would = Usage(1000, 200).cost(catalog["gpt-4o"]), Usage(1000, 200).cost(catalog["deepseek-v2"])
    assert samples(rt, "llm_router_cost_usd_total") == {(("model", "gpt-4o"), ("route", "chat")): pytest.approx(actual)}
    assert samples(rt, "llm_router_shadow_cost_usd_total") == {(("model", "deepseek-v2"), ("route", "chat")): pytest.approx(would)}
    assert samples(rt, "llm_router_shadow_requests_total") == {(("model", "deepseek-v2"), ("route", "chat"), ("tier", "LOW")): 1.0}
    assert samples(rt, "llm_router_requests_total") == {(("model", "gpt-4o"), ("route", "chat"), ("strategy", "shadow"),
                                                         ("tier", "LOW")): 1.0}
    [rec] = [orjson.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert (rec["model"], rec["shadow_model"], rec["strategy"]) == ("gpt-4o", "deepseek-v2", "shadow")
    assert rec["shadow_cost_usd"] == pytest.approx(would, abs=1e-8) and rec["cost_usd"] == pytest.approx(actual, abs=1e-8)


def test_a_shadow_conversation_continues_from_routings_choice_while_the_served_model_keeps_its_responses():
    mini = {"provider": "openai", "name": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6, "context_window": 128000,
            "tier": "LOW", "quality": 0.7, "capabilities": ["tools", "json", "streaming"]}
    cfg = parse_config({**data(affinity="conversation", reference_model="gpt-4o"), "models": {"gpt-4o-mini": mini}})
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]), telemetry=False)

    def turn(text: str, rid: str, previous: str | None = None) -> Decision:
        ex = Exchange(rid, "r", 0.0)
        extra = {"previous_response_id": previous} if previous else {}
        rt.decide(orjson.dumps({"model": "auto", "input": text, **extra}), path="/v1/responses", ex=ex)
        rt.on_response(ex, 200, Usage(10, 5, response_id=rid), 0.1)
        return ex.decision

    first = turn(HARD, "resp_1")
    assert (first.model.id, first.shadow.id) == ("gpt-4o", "gpt-4o")
    second = turn(EASY, "resp_2", previous="resp_1")  # routing would keep the conversation on its first choice
    assert (second.model.id, second.shadow.id) == ("gpt-4o", "gpt-4o") and "affinity" in second.reason
    fresh = turn(EASY, "resp_3")
    assert (fresh.model.id, fresh.shadow.id) == ("gpt-4o", "gpt-4o-mini")
    easy_follow = turn(EASY, "resp_4", previous="resp_3")
    assert (easy_follow.model.id, easy_follow.shadow.id) == ("gpt-4o", "gpt-4o-mini")  # kept on routing's choice, not the served one
    assert "affinity" in easy_follow.reason
    follow = turn(HARD, "resp_5", previous="resp_4")  # needs more than the mini: routing moves up, as it would live
    assert follow.shadow.id == "gpt-4o"
    assert rt.stored_response("/v1/responses/resp_3", ex=Exchange("x", "r", 0.0)).model.id == "gpt-4o"  # where it is stored


def test_a_shadow_share_routes_the_rest_reproducibly_and_bad_values_are_named():
    from llm_router.config import ConfigError

    def shares(seed: int) -> list[str]:
        router = Router(parse_config({**data(shadow=0.75, reference_model="gpt-4o"), "seed": seed}))
        return [router.route(chat(EASY))[1].model.id for _ in range(400)]
    served = shares(7)
    routed = served.count("deepseek-v2")
    assert served.count("gpt-4o") + routed == 400 and 60 <= routed <= 140  # ~25% routed
    assert shares(7) == served  # the same seed, the same split
    for bad in (1.5, -0.1, "half"):
        with pytest.raises(ConfigError) as err:
            parse_config(data(shadow=bad))
        assert "policies.default.shadow" in str(err.value)
