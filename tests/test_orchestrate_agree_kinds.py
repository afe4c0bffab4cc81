"""Per-answer-kind agreement chains: params.kinds validation, the strategy's chain per kind, quorum 1 as plain
routing, the runtime's per-kind quorum over fake providers, and the eval's deployable policy through the real Router."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml
from agree_prompts import CODE, FOUR, MATH, TWO
from conftest import orchestrated_answer

from llm_router.classify.answer_kind import policy_kind
from llm_router.config import ConfigError, parse_config
from llm_router.datasets import Dataset, load
from llm_router.decision import RouteError
from llm_router.evaluate import (agree_inputs, check_agree_policy, deployable_agreement, eval_config, load_responses,
                                 policy_fragment)
from llm_router.fakes import FakeProviders
from llm_router.learn import agreement as ag
from llm_router.learn.fit import fold_ids
from llm_router.learn.train import keys_of, requests_of
from llm_router.orchestrate import wants_orchestration
from llm_router.orchestrate.agreement import settle
from llm_router.orchestrate.params import param_problems, parse_params
from llm_router.router import Router
from llm_router.runtime import Exchange, Runtime

TEXT = "Tell me about the history of tea in two sentences."  # written for this project

KINDS = {
    "choice:4": {"chain": ["deepseek-v2", "llama-3-70b", "gpt-4o"], "quorum": 2},
    "choice": {"chain": ["llama-3-70b", "mistral-large", "claude-3.5-sonnet"], "quorum": 2},
    "number": {"chain": ["deepseek-v2", "llama-3-70b", "mistral-large", "gpt-4o"], "quorum": 3},
    "code": {"chain": ["claude-3.5-sonnet"], "quorum": 1},
}
POLICY = {"strategy": "cascade", "explain": True, "params": {"scorer": "agree", "kinds": KINDS, "timeout_s": 5}}
MODELS = ["deepseek-v2", "llama-3-70b", "gemini-1.5-pro", "mistral-large", "claude-3.5-sonnet", "gpt-4o"]


def test_policy_kind_is_the_replays_row_kind():
    assert [policy_kind(p) for p in (FOUR, TWO, MATH, CODE, TEXT)] == ["choice:4", "choice:2", "number", "code", "text"]
    for p in (FOUR, TWO, MATH, CODE, TEXT):
        assert ag.row_kind(p) == policy_kind(p)


# ---- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kinds,message", [
    ({"code": {"chain": ["gpt-4o", "x"], "quorum": 1}}, "params.kinds.code.chain[1]: unknown model 'x'"),
    ({"code": {"chain": ["gpt-4o"], "quorum": 0}}, "params.kinds.code.quorum: must be an integer in [1, 8], got 0"),
    ({"code": {"chain": ["gpt-4o"], "quorum": 9}}, "params.kinds.code.quorum: must be an integer in [1, 8], got 9"),
    ({"code": {"chain": ["gpt-4o"], "quorum": True}}, "params.kinds.code.quorum: must be an integer"),
    ({"number": {"chain": ["deepseek-v2", "gpt-4o"], "quorum": 2}},
     "params.kinds.number.chain: quorum 2 needs at least 3 models (the quorum asked at once, then one to escalate to), got 2"),
    ({"prose": {"chain": ["gpt-4o"], "quorum": 1}}, "params.kinds.prose: unknown answer kind 'prose'"),
    ({"choice:1": {"chain": ["gpt-4o"], "quorum": 1}}, "params.kinds.choice:1: unknown answer kind"),
    ({"choice:x": {"chain": ["gpt-4o"], "quorum": 1}}, "params.kinds.choice:x: unknown answer kind"),
    ({"code": {"chain": [], "quorum": 1}}, "params.kinds.code.chain: must be a non-empty list of model ids"),
    ({"code": {"chain": "gpt-4o", "quorum": 1}}, "params.kinds.code.chain: must be a non-empty list of model ids"),
    ({"code": {"chain": ["gpt-4o", "gpt-4o"], "quorum": 1}}, "params.kinds.code.chain: names a model twice"),
    ({"code": {"chain": ["gpt-4o"], "quorum": 1, "floor": 0.5}}, "params.kinds.code.floor: unknown (known: chain, quorum)"),
    ({"code": ["gpt-4o"]}, "params.kinds.code: must be a mapping with chain and quorum"),
    (["gpt-4o"], "params.kinds: must be a mapping answer kind -> {chain, quorum}"),
])
def test_kinds_errors_name_the_field(kinds, message):
    problems = param_problems("cascade", {"scorer": "agree", "kinds": kinds}, MODELS)
    assert any(p.startswith(message) for p in problems), problems


def test_kinds_validation_through_the_config_and_its_other_rules():
    with pytest.raises(ConfigError) as err:
        parse_config({"policies": {"ag": {"strategy": "cascade",
                                          "params": {"scorer": "agree", "kinds": {"code": {"chain": ["gpt-4o", "x"], "quorum": 1}}}}}})
    assert "policies.ag.params.kinds.code.chain[1]: unknown model 'x'" in str(err.value)
    assert param_problems("cascade", {"scorer": "verify", "kinds": {"code": {"chain": ["gpt-4o"], "quorum": 1}}}, MODELS) == [
        "params.kinds: only used with scorer 'agree', the scorer is 'verify'"]
    assert param_problems("cascade", {"scorer": "agree", "max_steps": 3, "kinds": KINDS}, MODELS) == [
        "params.max_steps: 3 leaves no model to escalate to after params.kinds.number.quorum 3"]
    assert param_problems("cascade", {"scorer": "agree", "kinds": KINDS}, MODELS) == []
    p = parse_params("cascade", {"scorer": "agree", "quorum": 2, "kinds": {**KINDS, "default": {"chain": ["gpt-4o"], "quorum": 1}}})
    assert p.for_kind("choice:4").chain == ("deepseek-v2", "llama-3-70b", "gpt-4o")
    assert p.for_kind("choice:2").chain[0] == "llama-3-70b"  # the coarse key
    assert p.for_kind("number").quorum == 3 and p.for_kind("text").chain == ("gpt-4o",)  # text: the default
    assert parse_params("cascade", {"scorer": "agree", "kinds": KINDS}).for_kind("text") is None  # the plain chain


# ---- the strategy ---------------------------------------------------------------------------------

def decide(policy: dict, prompt: str):
    router = Router(parse_config({"policies": {"ag": policy}}))
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
    _, d = router.route(body, path="/v1/chat/completions", policy=router.policies["ag"])
    assert not isinstance(d, RouteError), d
    return d


@pytest.mark.parametrize("prompt,chain,label", [
    (FOUR, ["deepseek-v2", "llama-3-70b", "gpt-4o"], "kind choice:4: cascade"),
    (TWO, ["llama-3-70b", "mistral-large", "claude-3.5-sonnet"], "kind choice:2 (as choice): cascade"),
    (MATH, ["deepseek-v2", "llama-3-70b", "mistral-large", "gpt-4o"], "kind number: cascade"),
])
def test_strategy_picks_the_kinds_chain(prompt, chain, label):
    d = decide(POLICY, prompt)
    assert [m.id for m in d.chain] == chain and d.mode == "cascade"
    assert d.selection.startswith(label), d.selection


def test_a_kind_without_an_entry_takes_the_default_then_the_plain_chain():
    plain = decide(POLICY, TEXT)  # no text entry, no default: the plain chain of the policy
    assert plain.mode == "cascade" and plain.selection.startswith("cascade ") and len(plain.chain) >= 3
    with_default = {**POLICY, "params": {**POLICY["params"], "kinds": {**KINDS, "default": {"chain": ["mistral-large"], "quorum": 1}}}}
    d = decide(with_default, TEXT)
    assert d.model.id == "mistral-large" and d.mode == "fallback" and "kind text (as default)" in d.selection


def test_quorum_1_is_plain_routing_to_the_first_model():
    d = decide(POLICY, CODE)
    assert d.model.id == "claude-3.5-sonnet" and d.mode == "fallback"
    assert d.selection == "kind code: claude-3.5-sonnet alone (quorum 1)"
    assert d.fallbacks and "claude-3.5-sonnet" not in {m.id for m in d.fallbacks}  # the router's own fallback chain
    ex = Exchange("r1", "r", 0.0)
    ex.decision = d
    assert not wants_orchestration(ex)


def test_kinds_models_unavailable_fall_back_to_the_plain_chain():
    router = Router(parse_config({"policies": {"ag": POLICY}}))
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": CODE}]})
    _, d = router.route(body, policy=router.policies["ag"], excluded=frozenset({"claude-3.5-sonnet"}))
    assert d.mode == "cascade" and "claude-3.5-sonnet" not in {m.id for m in d.chain}


# ---- the runtime, against fake providers over real HTTP ---------------------------------------------

@pytest.fixture
def runtime(on_fakes):
    return Runtime(on_fakes({"ag": POLICY}))


def answer(rt: Runtime, fakes: FakeProviders, texts: dict[str, str], prompt: str):
    return orchestrated_answer(rt, fakes, texts, prompt, "ag")


def asked(rt: Runtime, fakes: FakeProviders) -> list[str]:
    by_name = {m.name: m.id for m in rt.catalog.models.values()}
    return sorted(by_name[r.json["model"]] for r in fakes.requests())


def test_runtime_asks_the_number_kinds_quorum_of_3_at_once(runtime, fakes):
    rep = answer(runtime, fakes, {"deepseek-v2": "So 75.", "llama-3-70b": "#### 75", "mistral-large": "75 rolls",
                                  "gpt-4o": "75"}, MATH)
    assert rep.status == 200 and rep.model == "deepseek-v2", rep.steps
    assert asked(runtime, fakes) == ["deepseek-v2", "llama-3-70b", "mistral-large"]  # 3 at once; a quorum of 2 asks 2
    steps = rep.header("x-llm-router-steps")
    assert "number answers; quorum 3" in steps and "3 agree on '75'" in steps


def test_runtime_two_of_three_is_no_quorum_for_the_number_kind(runtime, fakes):
    rep = answer(runtime, fakes, {"deepseek-v2": "75", "llama-3-70b": "75", "mistral-large": "74", "gpt-4o": "75"}, MATH)
    assert rep.model == "deepseek-v2", rep.steps  # gpt-4o completes the quorum of 3 on 75: the cheapest sharing it
    assert len(fakes.requests()) == 4


def test_runtime_uses_the_choice_kinds_quorum_of_2(runtime, fakes):
    rep = answer(runtime, fakes, {"deepseek-v2": "B", "llama-3-70b": "B) mercury", "gpt-4o": "C"}, FOUR)
    assert rep.status == 200 and rep.model == "deepseek-v2", rep.steps
    assert asked(runtime, fakes) == ["deepseek-v2", "llama-3-70b"]
    assert "choice:4 answers; quorum 2" in rep.header("x-llm-router-steps")


# ---- the eval's deployable policy -------------------------------------------------------------------

FIX = Path(__file__).parent / "fixtures" / "learned"
MC = "Pick one:\nA) red\nB) blue\nC) green\nPrint only a single choice from \"A\" or \"B\" or \"C\" without explanation.\nAnswer:"


def _mixed_dataset() -> tuple[Dataset, list[list[str | None]]]:
    """Multiple-choice rows where two cheap models agree when right, and code rows the mid model serves."""
    rng = np.random.default_rng(3)
    prompts, scores, responses = [], [], []
    for i in range(60):
        if i % 3:
            right = rng.random(3) < np.array([0.7, 0.7, 1.0])
            prompts.append(MC.replace("Pick one", f"Pick one #{i}"))
            wrong = ["C", "B"]
            responses.append(["A" if r else wrong[j % 2] for j, r in enumerate(right)])
        else:
            right = np.array([False, True, True])
            prompts.append(f"Write a function that returns item #{i} of a list.")
            responses.append([f"```python\ndef f{j}(): pass\n```" for j in range(3)])
        scores.append(right.astype(float))
    costs = np.tile([1.0, 2.0, 30.0], (60, 1)) / 1000
    ds = Dataset("routerbench", ("cheap-a", "cheap-b", "top"), [f"r{i}" for i in range(60)], prompts, ["g"] * 60,
                 np.array(scores), costs, "test")
    return ds, responses


def _route_and_settle(ds: Dataset, policy: dict, codes: np.ndarray) -> tuple[float, float]:
    """Each row through the real Router under the policy, then the runtime's settle rule on its recorded answers."""
    router = Router(eval_config(ds.models, ds.costs.mean(0), ds.scores.mean(0),
                                extra={"agree": {"classifier": "rules", "strategy": "cascade", "params": policy, "fallbacks": 0}}))
    index = {m: j for j, m in enumerate(ds.models)}
    quality = cost = 0.0
    for i, request in enumerate(requests_of(ds)):
        d = router.decide(request, router.policies["agree"])
        chain = [index[m.id] for m in d.chain]
        if d.mode != "cascade":
            quality, cost = quality + ds.scores[i, chain[0]], cost + ds.costs[i, chain[0]]
            continue
        q = policy["kinds"][policy_kind(request.prompt)]["quorum"]
        finals = [None if codes[i, j] == ag.NONE else int(codes[i, j]) for j in chain]
        n = q
        while settle(finals[:n], q) is None and n < len(chain):
            n += 1
        won = settle(finals[:n], q)
        pick = chain[won] if won is not None else chain[n - 1]
        quality, cost = quality + ds.scores[i, pick], cost + ds.costs[i, chain[:n]].sum()
    return quality / len(ds), cost / len(ds) * 1000


def test_deployable_policy_parses_and_the_router_runs_what_the_replay_chose():
    ds, responses = _mixed_dataset()
    codes, kinds = agree_inputs(ds, responses)
    fids = np.arange(len(ds)) % 3
    policies, fit = deployable_agreement(ds, codes, kinds, fids, float(ds.costs[:, 2].mean() * 1000))
    p95 = policies["0.95"]
    assert set(p95["kinds"]) == {"choice:3", "code", "default"}
    assert p95["kinds"]["choice:3"] == {"chain": ["cheap-a", "cheap-b", "top"], "quorum": 2}
    assert p95["kinds"]["code"] == {"chain": ["cheap-b"], "quorum": 1}
    assert "all 60 rows" in fit["fit_on"] and "held out" in fit["quote"]
    assert check_agree_policy(ds, requests_of(ds), policies, fit["chosen"]) == 2 * len(ds)
    # The YAML fragment is a config the schema accepts once the data set's models are in the catalog.
    fragment = yaml.safe_load(policy_fragment(policies, "0.95", dataset="test", models=fit["models"]))
    catalog = eval_config(ds.models, ds.costs.mean(0), ds.scores.mean(0))
    cfg = parse_config({"providers": {n: p.model_dump() for n, p in catalog.providers.items()},
                        "models": {n: m.model_dump() for n, m in catalog.models.items()},
                        "policies": fragment["policies"], "default_policy": "agree"}, with_defaults=False)
    assert cfg.policies["agree"].strategy == "cascade"
    # Routed by the Router and settled row by row, the policy has the replay's in-sample quality and cost.
    q, c = _route_and_settle(ds, p95, codes)
    assert q == pytest.approx(fit["in_sample"]["0.95"]["quality"]) and c == pytest.approx(fit["in_sample"]["0.95"]["cost_per_1k"])


def test_fixture_report_has_the_policy_and_a_config_fragment(tmp_path):
    from llm_router.evaluate import evaluate, format_table
    from llm_router.learn.features import Featurizer, HashingEmbedder

    rep = evaluate(load([FIX / "routerbench_small.csv"]), Featurizer("hashing", HashingEmbedder()), folds=3)
    out = rep.to_json()
    assert set(out["agree_policy"]) == {"0.95", "1.00"}
    for params in out["agree_policy"].values():
        assert params["scorer"] == "agree" and "default" in params["kinds"]
        assert param_problems("cascade", params, rep.agree_policy_fit["models"] + [rep.best_single["model"]]) == []
    assert out["agree_policy_fit"]["router_check"] > 0 and "chosen" not in out["agree_policy_fit"]
    assert any(n.startswith("agree_policy: checked through the real Router") for n in out["notes"])
    assert "deployable agreement policy" in format_table(rep) and "fit on ALL rows" in format_table(rep)
    orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)


ROUTERBENCH = Path("/work/shared/data/routerbench")


@pytest.mark.skipif(not ROUTERBENCH.is_dir(), reason="RouterBench data not present at /work/shared/data/routerbench")
def test_routerbench_policy_routes_every_row_as_the_replay_chose():
    ds = load([ROUTERBENCH])
    responses = load_responses(ds)
    assert responses is not None
    codes, kinds = agree_inputs(ds, responses)
    fids = fold_ids(keys_of(ds), 5)
    policies, fit = deployable_agreement(ds, codes, kinds, fids, float(ds.costs.mean(0).max() * 1000))
    assert check_agree_policy(ds, requests_of(ds), policies, fit["chosen"]) == 2 * len(ds)
    assert any(e["quorum"] == 2 for e in policies["0.95"]["kinds"].values())  # agreement is deployed where it pays
    q, c = _route_and_settle(ds, policies["0.95"], codes)
    assert q == pytest.approx(fit["in_sample"]["0.95"]["quality"]) and c == pytest.approx(fit["in_sample"]["0.95"]["cost_per_1k"])
