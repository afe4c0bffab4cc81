"""Eval: JSON keys and invariants, a deterministic end-to-end run, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_router.datasets import load
from llm_router.evaluate import eval_config, evaluate, format_table, oracle_choice, routellm_metrics, tiers_by_rank
from llm_router.learn.features import Featurizer, HashingEmbedder
from llm_router.learn.train import train_model

FIX = Path(__file__).parent / "fixtures" / "learned"


@pytest.fixture(scope="module")
def report():
    ds = load([FIX / "routerbench_small.csv"])
    return evaluate(ds, Featurizer("hashing", HashingEmbedder()), folds=3)


def test_json_keys_and_invariants(report):
    out = report.to_json()
    assert {"best_single", "oracle", "strategies", "at_quality"} <= set(out)
    assert set(out["best_single"]) >= {"model", "quality", "cost_per_1k"}
    assert out["oracle"]["quality"] >= out["best_single"]["quality"]
    assert out["oracle"]["cost_per_1k"] <= out["best_single"]["cost_per_1k"]
    names = [s["name"] for s in out["strategies"]]
    for expected in ("ladder", "cost_weighted", "capability", "round_robin", "least_used", "semantic", "quality_gate", "cascade",
                     "learned@0.95", "learned@1.00"):
        assert expected in names
    for s in out["strategies"]:
        assert set(s) >= {"name", "quality", "cost_per_1k", "model_share"}
        assert abs(sum(s["model_share"].values()) - 1.0) < 1e-9
    for key in ("0.95", "1.00"):
        r = out["at_quality"][key]
        assert abs(r["saving_vs_best"] - (1 - r["cost_per_1k"] / out["best_single"]["cost_per_1k"])) < 1e-12
    json.dumps(out)  # plain JSON
    # 88 prompts in 3 folds are too few for topic clusters (one per 50 training prompts, at least 2).
    assert "learned router: topic clusters per fold (fitted on its training prompts): 0, 0, 0" in out["notes"]


def test_end_to_end_is_deterministic_and_routes_well(report):
    ds = load([FIX / "routerbench_small.csv"])
    again = evaluate(ds, Featurizer("hashing", HashingEmbedder()), folds=3)
    assert again.to_json() == report.to_json()
    best = report.best_single
    assert best["model"] == "big-pro" and best["quality"] == 1.0
    r95 = report.at_quality["0.95"]
    # Easy prompts (half) go to cheap models: a large saving near 95% of the best quality (88 prompts
    # in 3 folds: a few held-out answers move quality by 0.01 each).
    assert r95["quality"] >= 0.88 and r95["saving_vs_best"] > 0.3
    assert "cross-validation" in report.split
    assert "learned@0.95" in format_table(report)
    assert "target 95%: picked on training rows (blends of two operating points" in format_table(report)


def test_a_model_file_from_before_blends_runs_its_single_operating_point():
    ds = load([FIX / "routerbench_small.csv"])
    feat = Featurizer("hashing", HashingEmbedder())
    model, _ = train_model(ds.subset(range(60)), feat)
    for point in model.meta["operating_points"].values():
        point.pop("params")
        point.pop("margin")
    rep = evaluate(ds, feat, model=model)
    for frac in ("0.95", "1.00"):
        r = rep.at_quality[frac]
        assert r["blends"] == [] and r["tradeoff"] == [round(model.meta["operating_points"][frac]["tradeoff"], 6)]


def test_held_out_rows_only_with_a_trained_model(tmp_path):
    ds = load([FIX / "routerbench_small.csv"])
    feat = Featurizer("hashing", HashingEmbedder())
    model, _ = train_model(ds.subset(range(60)), feat)
    rep = evaluate(ds, feat, model=model)
    assert rep.rows == len(ds) - 60
    assert any("were left out" in n for n in rep.notes)
    with pytest.raises(ValueError, match="every prompt"):
        evaluate(ds.subset(range(60)), feat, model=model)


def test_catalog_tiers_ladder_and_oracle():
    assert tiers_by_rank(np.array([0.5, 0.9, 0.7, 0.1])) == ["MEDIUM", "CRITICAL", "HIGH", "LOW"]
    assert tiers_by_rank(np.array([0.6, 0.8])) == ["MEDIUM", "CRITICAL"]
    cfg = eval_config(("a", "b", "c", "d"), np.array([1.0, 3.0, 2.0, 0.5]), np.array([0.5, 0.9, 0.7, 0.1]))
    assert cfg.policies["ladder"].ladder == {"LOW": "d", "MEDIUM": "a", "HIGH": "c", "CRITICAL": "b"}
    ds = load([FIX / "routerbench_small.csv"])
    choice = oracle_choice(ds)
    assert (ds.scores[np.arange(len(ds)), choice] == ds.scores.max(1)).all()


def test_routellm_metrics_perfect_and_random():
    ds = load([FIX / "routellm_small.csv"])
    strong = ds.models.index("strong-model")
    perfect = np.zeros((len(ds), 2))
    perfect[:, strong] = 1.0
    perfect[:, 1 - strong] = ds.scores[:, 1 - strong]
    rl = routellm_metrics(perfect, ds, strong)
    assert rl["cpt80"] <= 0.4 and rl["apgr"] > 0.8
    flat = routellm_metrics(np.full((len(ds), 2), 0.5), ds, strong)
    assert flat["apgr"] < rl["apgr"]


def test_cli_json_and_errors(tmp_path):
    data = str(FIX / "routerbench_small.csv")
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "eval", "--data", data, "--features", "hashing", "--folds", "3",
                          "--json", "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["best_single"]["model"] == "big-pro"
    model = tmp_path / "m.npz"
    tr = subprocess.run([sys.executable, "-m", "llm_router.cli", "train", "--data", data, "--features", "hashing", "--out", str(model)],
                        capture_output=True, text=True, timeout=300)
    assert tr.returncode == 0, tr.stderr
    assert model.exists() and "operating points" in tr.stdout
    bad = subprocess.run([sys.executable, "-m", "llm_router.cli", "eval", "--data", str(tmp_path / "nope.csv")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such file" in bad.stderr
    again = subprocess.run([sys.executable, "-m", "llm_router.cli", "eval", "--data", data, "--router", str(model), "-q"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "every prompt" in again.stderr


def test_config_classifier_settings_change_the_replay(report):
    from llm_router.config import parse_config

    ds = load([FIX / "routerbench_small.csv"])
    strict = parse_config({"classifiers": {"rules": {"cuts": [0.001, 0.002, 0.003]}}}).classifiers.model_dump()
    strict.pop("learned")
    rep = evaluate(ds, Featurizer("hashing", HashingEmbedder()), folds=3, classifiers=strict)
    ladder = {s.name: s for s in rep.strategies}["ladder"]
    default_ladder = {s.name: s for s in report.strategies}["ladder"]
    # Every prompt now rates CRITICAL, so the ladder sends all of them to the top rung.
    assert ladder.model_share == {"big-pro": 1.0}
    assert ladder.cost_per_1k > default_ladder.cost_per_1k


def test_cascade_replay_escalates_below_the_floor_and_pays_every_call():
    from llm_router.datasets import Dataset
    from llm_router.evaluate import replay_cascade
    from llm_router.request import parse_request

    mc = "Pick one:\nA) red\nB) blue\nPrint only a single choice from \"A\" or \"B\" without explanation.\nAnswer:"
    models = ("cheap", "mid", "top")
    scores = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    costs = np.array([[1.0, 10.0, 100.0]] * 4) / 1000
    ds = Dataset("routerbench", models, ["a", "b", "c", "d"], [mc] * 4, ["g"] * 4, scores, costs, "test")
    responses = [["A", "A", "A"],  # cheap answers well: one call
                 ["I cannot help with that.", "B", "B"],  # refusal: escalate once
                 ["A or B", "maybe", "B"],  # several letters, then none: escalate twice
                 ["", "", ""]]  # nothing good anywhere: the last model's answer stands
    requests = [parse_request(ds.row(i).body()) for i in range(4)]
    chains = [[0, 1, 2]] * 4
    r = replay_cascade("cascade@0.5", chains, responses, requests, ds, 0.5)
    assert r.quality == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert r.cost_per_1k == pytest.approx(1000 * (1 + 11 + 111 + 111) / 4 / 1000)
    assert r.model_share == {"cheap": 0.25, "mid": 0.25, "top": 0.5}
    assert "75.0% escalated" in r.note
    strict = replay_cascade("cascade@0.9", chains, [["A) red", "B", "B"]] * 4, requests, ds, 0.9)
    assert strict.model_share == {"mid": 1.0}  # 'one letter with extra text' scores 0.7 < 0.9


def test_report_has_cascade_rows_when_the_data_holds_answers(report):
    names = {s.name: s for s in report.strategies}
    assert {"cascade@0.5", "cascade@0.8"} <= set(names)
    assert "calls per request" in names["cascade@0.5"].note
    assert any("cascade@F" in n for n in report.notes)


def test_cli_policy_out_writes_a_config_fragment(tmp_path):
    import yaml

    from llm_router.orchestrate.params import param_problems

    data = str(FIX / "routerbench_small.csv")
    path = tmp_path / "agree.yaml"
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "eval", "--data", data, "--features", "hashing", "--folds", "3",
                          "-q", "--policy-out", str(path), "--policy-target", "1.00"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "deployable agreement policy" in out.stdout and f"wrote {path}" in out.stderr
    text = path.read_text()
    assert "Fit on ALL rows" in text and "target: 100%" in text and "not ids of the default catalog" in text
    agree = yaml.safe_load(text)["policies"]["agree"]
    assert agree["strategy"] == "cascade" and agree["classifier"] == "rules"
    assert param_problems("cascade", agree["params"], ("tiny-7b", "mid-34b", "big-pro")) == []
    bad = subprocess.run([sys.executable, "-m", "llm_router.cli", "eval", "--data", data, "--policy-out",
                          str(tmp_path / "no" / "such" / "dir.yaml")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--policy-out: the folder of" in bad.stderr
