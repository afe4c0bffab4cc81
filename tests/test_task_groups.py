"""Task recogniser (learn.groups): trained on the data's task labels, added to the learned router's features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_router.classify.learned import LearnedClassifier
from llm_router.cli import main as cli_main
from llm_router.datasets import Dataset, load
from llm_router.learn.clusters import Clusters, join
from llm_router.learn.features import Featurizer, HashingEmbedder
from llm_router.learn.groups import MIN_ROWS_PER_GROUP, cross_fitted, fit_groups, fit_softmax, recognised
from llm_router.learn.model import ModelFileError, QualityModel
from llm_router.learn.train import requests_of, train_model

FIX = Path(__file__).parent / "fixtures" / "learned"


def _task_data(n: int = 800, tasks: int = 8, dim: int = 8, seed: int = 0, noise: float = 0.05):
    """Embeddings on a circle, one task per sector; the cheap model is right on every other task.

    No linear rule over the embedding says which tasks those are; knowing the task does.
    """
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.zeros((n, dim + 8))
    x[:, 0], x[:, 1] = np.cos(angle), np.sin(angle)
    task = (angle / (2 * np.pi / tasks)).astype(int)
    cheap_right = (task % 2 == 0) ^ (rng.random(n) < noise)
    scores = np.stack([cheap_right, np.ones(n, bool)], 1).astype(float)
    costs = np.tile([0.001, 0.02], (n, 1))
    ds = Dataset("routerbench", ("cheap", "top"), [f"r{i}" for i in range(n)], [f"prompt {i}" for i in range(n)],
                 [f"task{t}" for t in task], scores, costs, "test")
    return ds, x, Featurizer("hashing", HashingEmbedder(dim=dim))


def train_fixture(out: Path, *flags: str) -> None:
    """`llm-router train` on the small RouterBench fixture with hashing features, written to `out`."""
    assert cli_main(["train", "--data", str(FIX / "routerbench_small.csv"), "--out", str(out), "--features", "hashing", *flags]) == 0


def test_softmax_regression_recognises_separable_groups():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 12)) * 3
    label = rng.integers(0, 5, 600)
    x = centres[label] + rng.normal(size=(600, 12))
    w, b = fit_softmax(x, label, 5)
    assert w.shape == (12, 5) and b.shape == (5,)
    assert ((x @ w + b).argmax(1) == label).mean() > 0.95


def test_only_groups_with_enough_rows_are_recognised():
    few = MIN_ROWS_PER_GROUP - 1
    assert recognised(["a"] * 50 + ["b"] * 30 + ["c"] * few) == ["a", "b"]
    assert recognised(["a"] * 50 + ["c"] * few) == []  # one group is nothing to recognise
    assert recognised([""] * 50 + ["b"] * 50) == []  # rows without a task name are no group
    emb = np.random.default_rng(0).normal(size=(60, 4))
    assert fit_groups(emb, ["a"] * 60, temperature=20.0) is None


def test_task_recogniser_learns_what_a_linear_model_cannot():
    ds, x, feat = _task_data()
    right = ds.scores[:, 0] > 0.5
    accuracy = {}
    for groups in (False, True):
        model, oof = train_model(ds, feat, x=x, clusters=0, groups=groups)
        accuracy[groups] = float(((oof[:, 0] > 0.5) == right).mean())
        assert sorted(model.meta["groups"]) == (sorted(set(ds.groups)) if groups else [])
        assert model.meta["clusters"] == 0
    assert len(model.meta["groups"]) == 8 and model.clusters.blocks == (8,) and model.clusters.bias is not None
    assert accuracy[False] < 0.7 < 0.8 < accuracy[True]


def test_cross_fitted_posteriors_come_from_recognisers_not_trained_on_the_row():
    """Random labels: a recogniser fits them on its own rows, and knows nothing of rows it did not see."""
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(240, 60))
    labels = [("a", "b")[i] for i in rng.integers(0, 2, 240)]
    truth = np.array([lab == "b" for lab in labels])
    block, names = fit_groups(emb, labels, temperature=20.0)
    in_sample = block.memberships(emb)
    held_out = cross_fitted(emb, labels, names, np.arange(240) % 3, temperature=20.0)
    assert held_out.shape == (240, 2) and np.allclose(held_out.sum(1), 1.0, atol=1e-5)
    b = names.index("b")
    assert ((in_sample[:, b] > 0.5) == truth).mean() > 0.7
    assert ((held_out[:, b] > 0.5) == truth).mean() < 0.65


def test_model_with_a_recogniser_survives_save_load_and_predicts_by_the_plain_formula(tmp_path):
    ds, x, feat = _task_data(n=400)
    model, _ = train_model(ds, feat, x=x, clusters=4, groups=True)
    c = model.clusters
    assert c.blocks == (4, 8)  # the k-means block first, the recogniser last
    assert np.all(c.bias[:c.k - 8] == 0) and np.any(c.bias[-8:] != 0)
    aug = c.augment(x)
    plain = 1.0 / (1.0 + np.exp(-(((aug - model.mean) / model.scale) @ model.weights + model.bias)))
    assert np.allclose(model.predict(x.astype(np.float32)), plain, atol=1e-5)
    path = model.save(tmp_path / "m.npz")
    again = QualityModel.load(path)
    assert again.meta["format_version"] == 3  # releases without recognisers refuse the file by its version
    assert np.allclose(again.predict(x.astype(np.float32)), plain, atol=1e-5)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["cluster_bias"] = np.zeros(3, np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelFileError, match=r"cluster_bias of shape \(3,\) does not match"):
        QualityModel.load(bad)


def test_recogniser_logits_far_out_stay_finite():
    """A prompt far from every training prompt gives huge logits: clipped, the prediction is still a probability."""
    ds, x, feat = _task_data(n=400)
    model, _ = train_model(ds, feat, x=x, clusters=0, groups=True)
    far = x[0].copy()
    far[:2] *= 1e6
    p = model.predict(far.astype(np.float32))
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))


def test_join_keeps_blocks_in_order_and_zero_bias_for_kmeans():
    a = Clusters(np.eye(3, 4, dtype=np.float32), (3,))
    b = Clusters(np.ones((2, 4), np.float32), (2,), bias=np.array([1.0, -1.0], np.float32))
    both = join(a, b)
    assert both.blocks == (3, 2) and both.bias.tolist() == [0, 0, 0, 1, -1]
    assert join(None, b) is b and join(a, None) is a
    m = both.memberships(np.ones(4, np.float32))
    assert np.allclose(m[:3].sum(), 1) and np.allclose(m[3:].sum(), 1)
    with pytest.raises(ValueError, match="same temperature"):
        join(a, Clusters(np.ones((2, 4), np.float32), (2,), temperature=1.0))


def test_train_and_eval_report_the_recogniser(tmp_path, capsys):
    """The fixture's rows name 2 tasks: train says the recogniser is there, --no-groups leaves it out, routes load."""
    out = tmp_path / "m.npz"
    src = FIX / "routerbench_small.csv"
    train_fixture(out)
    said = capsys.readouterr().out
    assert "(the last 2: a recogniser of the data's tasks, cross-fitted accuracy " in said
    model = QualityModel.load(out)
    assert sorted(model.meta["groups"]) == ["easy", "hard"] and 0.5 < model.meta["group_accuracy"] <= 1.0
    ds = load([src])
    req = requests_of(ds)[5]
    clf = LearnedClassifier.load(out)
    feat = Featurizer("hashing", HashingEmbedder())
    assert np.allclose([p for _, p in clf.classify(req).quality], model.predict(feat.features(req)), atol=1e-6)
    train_fixture(out, "--no-groups")
    assert "recogniser" not in capsys.readouterr().out and QualityModel.load(out).meta["groups"] == []


def test_ceiling_tool_scores_the_router_told_the_true_task_beside_the_recogniser():
    """On tasks no linear rule tells apart, knowing the task (recognised or true) saves more than topic clusters alone."""
    from llm_router.learn.ceiling import told_the_task
    from llm_router.learn.fit import fold_ids
    from llm_router.learn.train import keys_of

    ds, x, _ = _task_data(n=600, noise=0.02)
    ds.prompts[:] = [f"prompt {i} of the planted tasks" for i in range(len(ds))]
    keys = keys_of(ds)
    out = told_the_task(ds, x, 8, fold_ids(keys, 5), keys)
    assert set(out) == {"neither", "recogniser", "true task"}
    saving = {way: v[0.95] for way, v in out.items()}
    # The cheap model is right on half the prompts: knowing where saves about half the top model's cost.
    # (the topic clusters of "neither" find the sectors too, less sharply)
    assert saving["true task"] > 0.4 and saving["recogniser"] > 0.4
    assert saving["neither"] is None or saving["neither"] < saving["recogniser"] - 0.05


def test_check_loads_the_learned_model_and_says_what_it_holds(tmp_path, capsys):
    """`check` loads classifiers.learned.model as serve would: a missing file is an error, not 'valid'."""
    import yaml

    out = tmp_path / "m.npz"
    train_fixture(out)
    capsys.readouterr()
    conf = {"classifiers": {"learned": {"model": str(out), "aliases": {"tiny-7b": "deepseek-v2", "big-pro": "gpt-4o"}}},
            "policies": {"default": {"classifier": "learned", "strategy": "quality_gate", "params": {"tradeoff": 0.1}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert cli_main(["check", str(path)]) == 0
    said = capsys.readouterr().out
    assert f"learned model {out}: format 3" in said and "a recogniser of the training data's tasks" in said
    assert "  predicts: deepseek-v2, mid-34b, gpt-4o" in said
    assert "not in the catalog, so never routed to: mid-34b" in said
    assert "for 95% of its best model's quality (training data): quality_gate params {tradeoff: " in said
    conf["classifiers"]["learned"]["model"] = str(tmp_path / "missing.npz")
    path.write_text(yaml.safe_dump(conf))
    assert cli_main(["check", str(path)]) == 2
    got = capsys.readouterr()
    assert "is valid" not in got.out
    assert f"classifiers.learned.model: {tmp_path / 'missing.npz'}: no such model file" in got.err
