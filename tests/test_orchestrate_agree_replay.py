"""Agreement cascade replayed on recorded answers: cost = every call, the runtime's settle rule, choice on training folds only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_router.datasets import Dataset, load
from llm_router.evaluate import evaluate, format_table, replay_agreement
from llm_router.learn import agreement as ag
from llm_router.learn.features import Featurizer, HashingEmbedder
from llm_router.orchestrate.agreement import settle

FIX = Path(__file__).parent / "fixtures" / "learned"
MC = "Pick one:\nA) red\nB) blue\nC) green\nPrint only a single choice from \"A\" or \"B\" or \"C\" without explanation.\nAnswer:"
N = ag.NONE


def test_replay_pays_every_call_and_returns_the_cheapest_agreeing_answer():
    # models: 0 cheap, 1 cheap, 2 mid (tie-breaker), 3 top
    costs = np.array([[1.0, 2.0, 10.0, 100.0]] * 5)
    codes = np.array([[0, 0, 1, 1],    # the pair agrees: 2 calls, model 0's answer
                      [0, 1, 1, 0],    # disagree; the mid model sides with model 1: 3 calls
                      [0, 1, 2, 3],    # nobody agrees: the top model's answer stands, 4 calls
                      [0, 1, 2, 0],    # the top model confirms the cheapest answer: that one is returned
                      [N, N, 0, 1]])   # no final answers: escalate; no quorum, the top model's answer stands
    r = ag.replay(ag.AgreeConfig((0, 1, 2, 3), 2), codes, costs)
    assert r.choice.tolist() == [0, 1, 3, 0, 3]
    assert r.cost.tolist() == [3.0, 13.0, 113.0, 113.0, 113.0]
    assert r.calls.tolist() == [2, 3, 4, 4, 4] and r.escalated.tolist() == [False, True, True, True, True]
    single = ag.replay(ag.AgreeConfig((2,), 1), codes, costs)
    assert single.choice.tolist() == [2] * 5 and single.cost.tolist() == [10.0] * 5


def _settle_row(cfg: ag.AgreeConfig, codes: np.ndarray) -> tuple[int, int]:
    """The runtime's rule, one row at a time: (model returned, calls made)."""
    chain, q = cfg.chain, cfg.quorum
    finals = [None if codes[j] == N else int(codes[j]) for j in chain[:q]]
    asked = list(chain[:q])
    for t in chain[q:]:
        won = settle(finals, q)
        if won is not None:
            return asked[won], len(asked)
        asked.append(t)
        finals.append(None if codes[t] == N else int(codes[t]))
    won = settle(finals, q)
    if won is not None:
        return asked[won], len(asked)
    return asked[-1], len(asked)


def test_vectorised_replay_equals_the_runtime_settle_rule():
    rng = np.random.default_rng(7)
    codes = rng.integers(-1, 3, size=(400, 6))
    costs = rng.uniform(0.1, 5.0, size=(400, 6))
    configs = [ag.AgreeConfig((0, 1, 5), 2), ag.AgreeConfig((0, 1, 2, 5), 2), ag.AgreeConfig((0, 1, 2, 5), 3),
               ag.AgreeConfig((3, 4, 1, 2, 5), 2), ag.AgreeConfig((1, 2, 3, 4, 5), 3)]
    for cfg in configs:
        r = ag.replay(cfg, codes, costs)
        for i in range(len(codes)):
            model, calls = _settle_row(cfg, codes[i])
            assert (r.choice[i], r.calls[i]) == (model, calls), (cfg, codes[i])
            assert r.cost[i] == pytest.approx(costs[i, list(cfg.chain[:calls])].sum())


def test_configuration_is_chosen_on_training_folds_only():
    # Each cheap model is right half the time. In fold 1 (training for fold 0), a and b never agree on a
    # wrong answer while a and c sometimes do; in fold 0 (held out) b and c swap roles. A choice that
    # peeked at fold 0 would take agree(a + c); the honest one takes agree(a + b) there.
    models = ("a", "b", "c", "top")
    patterns = [(0, 0, 1), (0, 2, 0), (1, 0, 1), (1, 2, 0)]  # answers of a, b, c; 0 is right
    fids = np.array([0] * 20 + [1] * 20)
    codes = np.zeros((40, 4), int)
    for i in range(40):
        a, b, c = patterns[i % 4]
        codes[i, :3] = (a, b, c) if fids[i] == 1 else (a, c, b)
    scores = (codes == 0).astype(float)
    costs = np.tile([1.0, 1.0, 1.0, 50.0], (40, 1)) / 1000
    kinds = np.array(["choice:3"] * 40)
    h = ag.cross_validate(codes, scores, costs, kinds, fids, (0.95,), models)[0.95]
    assert h.chosen[0]["choice:3"] == "agree(a + b) -> top"
    assert h.chosen[1]["choice:3"] == "agree(a + c) -> top"
    held0 = scores[np.arange(40), h.replay.choice][fids == 0].mean()
    assert held0 == pytest.approx(0.75)  # a + b agree on a wrong answer in a quarter of fold 0's rows
    peeked = ag.choose(codes[fids == 0], scores[fids == 0], costs[fids == 0], kinds[fids == 0], 0.95)
    assert peeked["choice:3"].describe(models) == "agree(a + c) -> top"


def test_cheapest_combination_across_kinds_meets_the_total():
    a, b = ag.AgreeConfig((0,), 1), ag.AgreeConfig((1,), 1)
    fronts = {"x": [ag.Option(1.0, 5.0, a), ag.Option(10.0, 9.0, b)], "y": [ag.Option(2.0, 4.0, a), ag.Option(4.0, 8.0, b)]}
    assert ag.cheapest_combination(fronts, 12.0) == {"x": a, "y": b}  # 1+4=5 for 13, cheaper than 10+2 for 13
    assert ag.cheapest_combination(fronts, 99.0) == {"x": b, "y": b}  # unreachable: the best quality


def test_row_kinds_and_answer_codes():
    assert ag.row_kind(MC) == "choice:3"
    assert ag.row_kind("Write a function that reverses a list.") == "code"
    codes = ag.answer_codes([["B", "B) blue", "blue", "I do", None]], [MC])
    assert codes[0, 0] == codes[0, 1] == codes[0, 2] != N and codes[0, 3] == N and codes[0, 4] == N


@pytest.fixture(scope="module")
def report():
    return evaluate(load([FIX / "routerbench_small.csv"]), Featurizer("hashing", HashingEmbedder()), folds=3)


def test_report_has_agreement_rows_keys_and_an_honest_bound(report):
    out = report.to_json()
    names = {s["name"]: s for s in out["strategies"]}
    assert {"agree@0.95", "agree@1.00"} <= set(names)
    best_c = out["best_single"]["cost_per_1k"]
    for key in ("0.95", "1.00"):
        r = out["at_quality_agree"][key]
        assert r["cost_per_1k"] == pytest.approx(names[f"agree@{key}"]["cost_per_1k"])
        assert r["saving_vs_best"] == pytest.approx(1 - r["cost_per_1k"] / best_c)
        assert len(r["configurations"]) == 3  # one choice per fold
        assert "upper bound" in out["at_quality_agree_bound"][key]["note"]
    assert set(out["at_quality"]) == {"0.95", "1.00"}  # the learned router's keys keep their meaning
    assert any(n.startswith("agree@x") for n in out["notes"])
    assert "agreement cascade vs best single" in format_table(report)


def test_replay_agreement_cost_is_the_sum_of_calls_on_a_small_set():
    mc = [MC] * 6
    scores = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1]], float)
    costs = np.tile([1.0, 2.0, 30.0], (6, 1)) / 1000
    ds = Dataset("routerbench", ("p", "q", "top"), [f"r{i}" for i in range(6)], mc, ["g"] * 6, scores, costs, "test")
    letter = {1.0: "A", 0.0: "B"}
    responses = [[letter[s] for s in row] for row in scores.tolist()]
    rows, held, bound = replay_agreement(ds, responses, np.array([0, 1, 0, 1, 0, 1]), best_cost=30.0)
    for r in rows:
        key = r.name.split("@")[1]
        # every row pays at least its first stage; the reported cost is the mean of what each row paid
        assert held[key]["cost_per_1k"] == pytest.approx(r.cost_per_1k)
        assert held[key]["calls_per_request"] >= 1.0
    assert bound["1.00"]["quality"] == pytest.approx(1.0)
