"""Per-task model mixes (learn.task_mix): solved for a target, written by train, labelled live, replayed by eval."""
from __future__ import annotations

import numpy as np
import pytest

from llm_router.classify.learned import LearnedClassifier
from llm_router.cli import main as cli_main
from llm_router.datasets import load
from llm_router.evaluate import evaluate
from llm_router.learn import operating, task_mix
from llm_router.learn.features import Featurizer, HashingEmbedder
from llm_router.learn.fit import fold_ids
from llm_router.learn.model import QualityModel
from llm_router.learn.train import keys_of, requests_of, train_model

from test_task_groups import FIX, _task_data, train_fixture  # the planted-task data and the fixture's training


def test_solve_gives_each_task_the_cheapest_shares_reaching_the_target():
    # task 0: the cheap model is as good as the dear one; task 1: the cheap one is always wrong.
    scores = np.array([[1, 1], [1, 1], [0, 1], [0, 1]], float)
    costs = np.tile([1.0, 10.0], (4, 1))
    task = np.array([0, 0, 1, 1])
    assert task_mix.solve(scores, costs, task, 2, 1.0) == pytest.approx(np.array([[1, 0], [0, 1]]))
    assert task_mix.solve(scores, costs, task, 2, 0.75) == pytest.approx(np.array([[1, 0], [0.5, 0.5]]))
    assert task_mix.solve(scores, costs, task, 2, 1.01) is None
    # a task without rows gets the rows' best model
    assert task_mix.solve(scores, costs, task, 3, 1.0)[2] == pytest.approx([0, 1])


def test_draw_lands_on_the_share_the_draw_falls_in():
    shares = np.array([[0.25, 0.75], [0.25, 0.75], [1.0, 0.0], [0.0, 1.0]])
    assert task_mix.draw(shares, np.array([0.2, 0.3, 0.99, 0.0])).tolist() == [0, 1, 0, 1]


def _tasks(n: int = 1200, seed: int = 0):
    """Four tasks of equal size; the cheap model is right on 90%, 70%, 40% and 10% of them; the dear one on 95%."""
    rng = np.random.default_rng(seed)
    task = rng.integers(0, 4, n)
    cheap_rate = np.array([0.9, 0.7, 0.4, 0.1])[task]
    scores = np.stack([rng.random(n) < cheap_rate, rng.random(n) < 0.95], 1).astype(float)
    costs = np.tile([0.001, 0.02], (n, 1))
    return task, scores, costs


def test_fit_sizes_a_margin_so_the_mix_holds_on_rows_it_was_not_solved_on():
    task, scores, costs = _tasks()
    keys = np.arange(len(task)) * 7919
    outer = fold_ids(keys, 5)
    got_q, got_c = np.zeros(len(task)), np.zeros(len(task))
    margins = []
    for f in range(5):
        te, tr = outer == f, outer != f
        mix = task_mix.fit(scores[tr], costs[tr], task[tr], 4, fold_ids(keys[tr] // 7, 5), (0.95,))[0.95]
        assert mix is not None and mix.margin in operating.MARGINS
        assert np.allclose(mix.shares.sum(1), 1.0)
        margins.append(mix.margin)
        got_q[te], got_c[te] = task_mix.expected(mix.shares, task[te], scores[te], costs[te])
    assert got_q.mean() >= 0.95 * scores[:, 1].mean() - 0.01  # held out, within sampling noise of the target
    assert 1 - got_c.mean() / costs[:, 1].mean() > 0.3  # the easy tasks go to the cheap model
    # the easiest task always goes cheap, the hardest always dear
    assert mix.shares[0] == pytest.approx([1, 0]) and mix.shares[3] == pytest.approx([0, 1])


def test_train_writes_a_mix_per_target_and_the_model_names_each_prompts_task(tmp_path):
    ds, x, feat = _task_data(tasks=4)
    model, _ = train_model(ds, feat, x=x, clusters=0, groups=True)
    mixes = model.meta["task_mix"]
    assert set(mixes) == {"0.95", "1.00"}
    mix = mixes["0.95"]["mix"]
    assert set(mix) == {f"task{t}" for t in range(4)}
    assert mix["task0"] == {"cheap": 1.0} and mix["task1"] == {"top": 1.0}  # cheap right on even tasks only
    for key, op in model.meta["operating_points"].items():  # the mix where it reached for less on inner held-out rows
        mine, theirs = mixes[key]["inner_held_out"], op["inner_held_out"]
        wins = mine["reached"] and (not theirs["reached"] or mine["cost_per_1k"] < theirs["cost_per_1k"])
        assert op["rule"] == ("mix" if wins else "tradeoff") and ("mix" in op["params"]) == wins
        if wins:
            assert op["params"]["mix"] == mixes[key]["mix"]
    again = QualityModel.load(model.save(tmp_path / "m.npz"))
    assert again.meta["task_mix"] == mixes
    found = again.task_of(x.astype(np.float32))
    assert found.shape == (len(ds),) and (np.array(again.tasks)[found] == np.array(ds.groups)).mean() > 0.9
    assert again.task_of(x[0].astype(np.float32)) == found[0]


def test_the_learned_classifier_labels_a_request_with_its_recognised_task(tmp_path, capsys):
    out = tmp_path / "m.npz"
    train_fixture(out)
    said = capsys.readouterr().out
    assert "rule per target, by cost on inner held-out rows (trade-off blend vs per-task mix of the recognised tasks): 95%: " in said
    clf = LearnedClassifier.load(out)
    ds = load([FIX / "routerbench_small.csv"])
    reqs = requests_of(ds)
    feats = Featurizer("hashing", HashingEmbedder()).matrix(reqs)
    want = np.array(clf.model.tasks)[clf.model.task_of(feats)]
    got = [clf.classify(r) for r in reqs]
    assert [c.label for c in got] == want.tolist() and {c.label for c in got} <= {"easy", "hard"}
    assert all(c.evidence[0] == f"task {c.label}" for c in got)
    # a model without a recogniser labels nothing
    train_fixture(out, "--no-groups")
    assert LearnedClassifier.load(out).classify(reqs[0]).label is None


def test_eval_routes_the_mix_through_the_router_on_held_out_rows():
    ds, x, feat = _task_data(n=1000, tasks=4)
    ds.prompts[:] = [f"prompt {i} of the planted tasks" for i in range(len(ds))]

    index = {p: i for i, p in enumerate(ds.prompts)}

    class Planted(Featurizer):
        """The planted features of each prompt, where the live router would embed it."""

        def features(self, request):
            return x[index[request.prompt]].astype(np.float32)

        def matrix(self, requests):
            return np.stack([self.features(r) for r in requests])

    rep = evaluate(ds, Planted("hashing", feat.embedder), folds=5, clusters=0)
    names = [s.name for s in rep.strategies]
    assert "learned_mix@0.95" in names and "learned_mix@1.00" in names
    at = rep.at_quality_task_mix
    assert set(at) == {"0.95", "1.00"} and at["0.95"]["reached"] and at["1.00"]["relative_quality"] > 0.99
    # Half the tasks need the dear model: the mix at 95% saves about half its cost, held out.
    assert 0.35 < at["0.95"]["saving_vs_best"] < 0.6
    mix_row = next(s for s in rep.strategies if s.name == "learned_mix@0.95")
    assert set(mix_row.model_share) <= {"cheap", "top"} and "per-task mix" in mix_row.note
    assert any(n.startswith("learned_mix@x: the learned classifier's recognised task") for n in rep.notes)
    said = next(n for n in rep.notes if n.startswith("learned_mix@x: the Router's choices checked"))
    # every row of both mix rows, and the rows of learned@x wherever training found the mix cheaper
    size = np.bincount(fold_ids(keys_of(ds), 5))
    uses = sum(int(size[f]) for r in rep.at_quality.values() for f, rule in enumerate(r["rules"]) if rule == "mix")
    assert said.endswith(f"on {2000 + uses} decisions") and len(rep.at_quality["0.95"]["rules"]) == 5


def test_a_config_with_the_mix_routes_each_prompt_by_its_recognised_task(tmp_path, capsys):
    """The whole live path: train, check (the mix with aliases applied), route through the Router by the config."""
    import json

    import yaml

    out = tmp_path / "m.npz"
    train_fixture(out)
    src = FIX / "routerbench_small.csv"
    model = QualityModel.load(out)
    aliases = {"tiny-7b": "deepseek-v2", "mid-34b": "llama-3-70b", "big-pro": "gpt-4o"}
    mix = {task: {aliases[m]: v for m, v in shares.items()} for task, shares in model.meta["task_mix"]["0.95"]["mix"].items()}
    conf = {"classifiers": {"learned": {"model": str(out), "aliases": aliases}},
            "policies": {"default": {"classifier": "learned", "strategy": "quality_gate",
                                     "params": {"tradeoff": 0.1, "mix": mix}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(conf))
    capsys.readouterr()
    assert cli_main(["check", str(path)]) == 0
    said = capsys.readouterr().out
    assert "quality_gate params" in said and "deepseek-v2" in said and "tiny-7b:" not in said  # aliased
    ds = load([src])
    for prompt in ds.prompts[:6]:
        assert cli_main(["route", "--config", str(path), "--json", prompt]) == 0
        got = json.loads(capsys.readouterr().out)
        label = got["label"]  # the recognised task
        assert label in mix
        assert f"task {label}: its mix sends" in got["reason"]
        assert got["model"] in {m for m, v in mix[label].items() if v > 0}
