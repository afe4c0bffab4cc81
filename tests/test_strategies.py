"""Every selection strategy through its shared signature."""
from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from llm_router.catalog import Tier
from llm_router.classify.base import Classification
from llm_router.config import load_config
from llm_router.request import parse_request
from llm_router.router import build_catalog
from llm_router.strategies import STRATEGIES, make_strategy
from llm_router.strategies.base import Context, NoState, by_price

CFG = load_config()
CATALOG = build_catalog(CFG)
ALL = tuple(by_price(CATALOG.models.values()))
LADDER = dict(CFG.policies["default"].ladder)


def ctx(tier=Tier.LOW, category="chat", *, candidates=ALL, params=None, state=None, seed=0, counter=0,
        quality=(), label=None, body=None) -> Context:
    body = body or {"messages": [{"role": "user", "content": "hello"}]}
    cls = Classification(tier, category, 0.9, 0.5, ("test",), "test", quality=quality, label=label)
    return Context(request=parse_request(orjson.dumps(body)), classification=cls, candidates=tuple(candidates),
                   params=params or {}, state=state or NoState(), rng=random.Random(seed), counter=counter, ladder=LADDER)


def test_registry_has_one_module_per_strategy():
    assert set(STRATEGIES) == {"ladder", "quality_gate", "cost_weighted", "capability", "round_robin", "least_used", "semantic", "cascade", "hedge"}


@pytest.mark.parametrize("tier, model", [(Tier.LOW, "deepseek-v2"), (Tier.MEDIUM, "llama-3-70b"),
                                         (Tier.HIGH, "claude-3.5-sonnet"), (Tier.CRITICAL, "gpt-4o")])
def test_ladder_maps_tiers(tier, model):
    sel = make_strategy("ladder").select(ctx(tier))
    assert sel.model.id == model and model in sel.reason


def test_ladder_replaces_an_unavailable_rung_with_the_cheapest_model_meeting_the_tier():
    without = [m for m in ALL if m.id != "llama-3-70b"]
    sel = make_strategy("ladder").select(ctx(Tier.MEDIUM, candidates=without))
    # not the HIGH rung (claude, $3/$15) but the cheapest model rated MEDIUM or above
    assert sel.model.id == "mistral-large" and "llama-3-70b unavailable" in sel.reason  # Large 3: $0.50/$1.50
    low_down = [m for m in ALL if m.id not in ("deepseek-v2", "llama-3-70b")]
    assert make_strategy("ladder").select(ctx(Tier.LOW, candidates=low_down)).model.id == "mistral-large"
    only_low = [CATALOG.models["deepseek-v2"]]
    sel = make_strategy("ladder").select(ctx(Tier.CRITICAL, candidates=only_low))
    assert sel.model.id == "deepseek-v2" and "most capable" in sel.reason


def test_ladder_without_rungs_takes_nearest_capable_model():
    only = [CATALOG.models["gemini-1.5-pro"], CATALOG.models["mistral-large"]]
    assert make_strategy("ladder").select(ctx(Tier.HIGH, candidates=only)).model.id == "gemini-1.5-pro"
    assert make_strategy("ladder").select(ctx(Tier.CRITICAL, candidates=only)).model.id == "gemini-1.5-pro"


def test_quality_gate_with_predictions_picks_cheapest_over_bar():
    q = (("deepseek-v2", 0.4), ("llama-3-70b", 0.75), ("mistral-large", 0.8), ("gpt-4o", 0.9))
    s = make_strategy("quality_gate")
    assert s.select(ctx(quality=q, params={"min_quality": 0.7})).model.id == "mistral-large"  # cheaper than Llama 3.3
    assert s.select(ctx(quality=q, params={"min_quality": 0.85})).model.id == "gpt-4o"
    assert s.select(ctx(quality=q, params={"min_quality": 0.3})).model.id == "deepseek-v2"
    assert s.select(ctx(quality=q, params={"relative": 0.95})).model.id == "gpt-4o"  # bar 0.855
    sel = s.select(ctx(quality=q, params={"min_quality": 0.99}))
    assert sel.model.id == "gpt-4o" and "no model clears" in sel.reason


def test_quality_gate_blend_sends_its_share_of_prompts_to_the_other_tradeoff_and_each_prompt_always_the_same_way():
    q = (("deepseek-v2", 0.6), ("gpt-4o", 0.9))
    s = make_strategy("quality_gate")
    params = {"tradeoff": 2.0, "blend": {"tradeoff": 0.0, "share": 0.3}}  # 2.0: cheapest; 0.0: best predicted
    prompts = [f"question number {i}: what is {i} squared?" for i in range(2000)]
    picks = [s.select(ctx(quality=q, params=params, body={"messages": [{"role": "user", "content": t}]})) for t in prompts]
    dear = [sel.model.id == "gpt-4o" for sel in picks]
    assert 0.26 < sum(dear) / len(dear) < 0.34
    assert all(("the blend share" in sel.reason) == d for sel, d in zip(picks, dear))
    again = [s.select(ctx(quality=q, params=params, body={"messages": [{"role": "user", "content": t}]})).model.id == "gpt-4o"
             for t in prompts[:200]]
    assert again == dear[:200]
    none = {**params, "blend": {"tradeoff": 0.0, "share": 0.0}}
    assert all(s.select(ctx(quality=q, params=none, body={"messages": [{"role": "user", "content": t}]})).model.id == "deepseek-v2"
               for t in prompts[:200])


@pytest.mark.parametrize("params, problem", [
    ({"tradeoff": "x"}, "params.tradeoff: must be a number >= 0, got 'x'"),
    ({"tradeoff": 0.1, "blend": 0.5}, "params.blend: must be a mapping with tradeoff and share, got float"),
    ({"blend": {"tradeoff": 0.1, "share": 0.5}}, "params.blend: needs params.tradeoff"),
    ({"tradeoff": 0.1, "blend": {"tradeoff": 0.1, "share": 1.5}}, "params.blend.share: must be a number from 0 to 1, got 1.5"),
    ({"tradeoff": 0.1, "blend": {"tradeoff": -1, "share": 0.5}}, "params.blend.tradeoff: must be a number >= 0, got -1"),
    ({"tradeoff": 0.1, "blend": {"tradeoff": 0.1, "share": 0.5, "rate": 1}}, "params.blend: unknown field(s) ['rate']"),
])
def test_quality_gate_params_are_checked_with_config(params, problem):
    from llm_router.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"policies": {"default": {"classifier": "rules", "strategy": "quality_gate", "params": params}}})
    assert any(f"policies.default.{problem}" in line for line in "; ".join(info.value.problems).split("; "))
    ok = {"tradeoff": 0.1, "blend": {"tradeoff": 0.02, "share": 0.4}}
    parse_config({"policies": {"default": {"classifier": "rules", "strategy": "quality_gate", "params": ok}}})


def test_quality_gate_mix_draws_each_task_from_its_shares_and_leaves_other_prompts_to_the_tradeoff():
    q = (("deepseek-v2", 0.6), ("gpt-4o", 0.9))
    s = make_strategy("quality_gate")
    params = {"tradeoff": 2.0, "mix": {"winogrande": {"gpt-4o": 0.75, "deepseek-v2": 0.25}, "arc": {"llama-3-70b": 1.0}}}
    prompts = [f"question number {i}: which option fits?" for i in range(2000)]

    def pick(t, label, candidates=ALL):
        return s.select(ctx(quality=q, params=params, label=label, candidates=candidates,
                            body={"messages": [{"role": "user", "content": t}]}))

    picks = [pick(t, "winogrande") for t in prompts]
    dear = [sel.model.id == "gpt-4o" for sel in picks]
    assert {sel.model.id for sel in picks} == {"gpt-4o", "deepseek-v2"} and 0.71 < sum(dear) / len(dear) < 0.79
    assert "task winogrande: its mix sends 75% of its prompts here" in next(sel.reason for sel in picks if sel.model.id == "gpt-4o")
    assert [pick(t, "winogrande").model.id == "gpt-4o" for t in prompts[:200]] == dear[:200]  # a prompt always goes the same way
    assert {pick(t, "arc").model.id for t in prompts[:50]} == {"llama-3-70b"}
    # No label, or a task the mix does not name: the trade-off (2.0 here: the cheapest predicted)
    assert {pick(t, None).model.id for t in prompts[:50]} == {pick(t, "chat").model.id for t in prompts[:50]} == {"deepseek-v2"}
    # A mixed model not among the candidates: the task's other shares, renormalised; none left: the trade-off
    without = [m for m in ALL if m.id != "gpt-4o"]
    assert {pick(t, "winogrande", without).model.id for t in prompts[:50]} == {"deepseek-v2"}
    no_llama = [m for m in ALL if m.id != "llama-3-70b"]
    sel = pick(prompts[0], "arc", no_llama)
    assert sel.model.id == "deepseek-v2" and "tradeoff 2" in sel.reason


@pytest.mark.parametrize("params, problem", [
    ({"mix": []}, "params.mix: must be a non-empty mapping task -> {model: share}, got []"),
    ({"mix": {"arc": "gpt-4o"}}, "params.mix.arc: must be a non-empty mapping model -> share, got 'gpt-4o'"),
    ({"mix": {"arc": {"gpt-4o": -1}}}, "params.mix.arc.gpt-4o: must be a number >= 0, got -1"),
    ({"mix": {"arc": {"gpt-4o": 0}}}, "params.mix.arc: the shares add up to 0 (at least one must be positive)"),
    ({"mix": {"arc": {"gpt-9": 1}}}, "params.mix.arc.gpt-9: unknown model 'gpt-9'"),
])
def test_quality_gate_mix_is_checked_with_config(params, problem):
    from llm_router.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"policies": {"default": {"classifier": "rules", "strategy": "quality_gate", "params": params}}})
    assert any(f"policies.default.{problem}" in line for line in "; ".join(info.value.problems).split("; "))
    parse_config({"policies": {"default": {"classifier": "rules", "strategy": "quality_gate",
                                           "params": {"mix": {"arc": {"gpt-4o": 0.5, "deepseek-v2": 0.5}}}}}})


def test_quality_gate_without_predictions_uses_tier_floors():
    s = make_strategy("quality_gate")
    assert s.select(ctx(Tier.LOW)).model.id == "deepseek-v2"
    assert s.select(ctx(Tier.HIGH)).model.id == "gemini-1.5-pro"  # cheapest with quality >= 0.9
    assert s.select(ctx(Tier.CRITICAL)).model.id == "gpt-4o"
    assert s.select(ctx(Tier.CRITICAL, params={"floors": {"CRITICAL": 0.5}})).model.id == "deepseek-v2"


def test_cost_weighted_is_reproducible_and_prefers_cheap_models():
    s = make_strategy("cost_weighted")
    picks = [s.select(ctx(Tier.MEDIUM, seed=7)).model.id for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same choice
    rng_ctx = ctx(Tier.MEDIUM, seed=1)
    counts = Counter(s.select(rng_ctx).model.id for _ in range(3000))
    assert "deepseek-v2" not in counts  # LOW-tier models are not allowed for MEDIUM requests
    assert counts["llama-3-70b"] > counts["gemini-1.5-pro"] > counts["gpt-4o"]
    # shares follow 1/price within sampling error
    allowed = [m for m in ALL if m.tier >= Tier.MEDIUM]
    inv = {m.id: 1 / m.blended_price for m in allowed}
    expected = inv["llama-3-70b"] / sum(inv.values())
    assert abs(counts["llama-3-70b"] / 3000 - expected) < 0.04


def test_capability_matching():
    s = make_strategy("capability")
    code = s.select(ctx(Tier.LOW, "code"))
    assert "code" in code.model.capabilities
    vision = ctx(Tier.LOW, body={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
                 candidates=[m for m in ALL if "vision" in m.capabilities])
    assert s.select(vision).model.id == "deepseek-v2"  # the cheapest that reads images (V4.1 Flash)
    no_deepseek = ctx(Tier.LOW, body=vision.request.body, candidates=[m for m in vision.candidates if m.id != "deepseek-v2"])
    assert s.select(no_deepseek).model.id == "gemini-1.5-pro"
    extraction = s.select(ctx(Tier.MEDIUM, "extraction"))
    assert "json" in extraction.model.capabilities and extraction.model.tier >= Tier.MEDIUM


def test_round_robin_cycles_through_the_pool():
    s = make_strategy("round_robin")
    pool = ["deepseek-v2", "llama-3-70b", "mistral-large"]
    picks = [s.select(ctx(params={"pool": pool}, counter=i)).model.id for i in range(6)]
    assert picks == pool + pool


class Quotas:
    def __init__(self, left, flight=None):
        self.left, self.flight = left, flight or {}

    def remaining(self, model_id):
        return self.left.get(model_id)

    def in_flight(self, model_id):
        return self.flight.get(model_id, 0)


def test_least_used_prefers_most_quota_left_then_fewest_in_flight():
    s = make_strategy("least_used")
    pool = {"pool": ["deepseek-v2", "llama-3-70b", "mistral-large"]}
    sel = s.select(ctx(params=pool, state=Quotas({"deepseek-v2": 0.1, "llama-3-70b": 0.7, "mistral-large": 0.4})))
    assert sel.model.id == "llama-3-70b" and "70%" in sel.reason
    tie = Quotas({"deepseek-v2": 0.5, "llama-3-70b": 0.5, "mistral-large": 0.5}, {"deepseek-v2": 3, "llama-3-70b": 1, "mistral-large": 2})
    assert s.select(ctx(params=pool, state=tie)).model.id == "llama-3-70b"


def test_semantic_routing_maps_archetypes_and_falls_back_to_ladder():
    s = make_strategy("semantic")
    params = {"map": {"sql-query": "mistral-large", "poem": "llama-3-70b"}}
    assert s.select(ctx(label="sql-query", params=params)).model.id == "mistral-large"
    assert s.select(ctx(label="unknown", category="poem", params=params)).model.id == "llama-3-70b"
    sel = s.select(ctx(Tier.CRITICAL, label="other", params=params))
    assert sel.model.id == "gpt-4o" and "ladder" in sel.reason


def test_cascade_is_a_chain_of_three_rising_models():
    sel = make_strategy("cascade").select(ctx())
    chain = [sel.model, *sel.fallbacks]
    assert sel.mode == "cascade" and len(chain) >= 3
    assert [m.tier for m in chain] == sorted(m.tier for m in chain)
    assert chain[0].id == "deepseek-v2"
    explicit = make_strategy("cascade").select(ctx(params={"chain": ["llama-3-70b", "mistral-large", "gpt-4o"]}))
    assert [explicit.model.id, *[m.id for m in explicit.fallbacks]] == ["llama-3-70b", "mistral-large", "gpt-4o"]
