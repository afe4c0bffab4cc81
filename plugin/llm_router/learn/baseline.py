"""The TF-IDF + logistic-regression router the issues quote as a reference, measured three ways.

`python -m llm_router.learn.baseline --data PATH...` fits, per model, P(answers well) from TF-IDF of
the prompt (word 1-2 grams, scikit-learn), 5 folds by prompt hash as `eval` uses, and routes with the
same trade-off rule as the learned router. It prints the saving at 95% / 100% of the best single
model's quality measured three ways, because the way the operating point is picked moves the figure
more than the features do:
- held out: the point (single, or a blend of two) picked on inner out-of-fold predictions of the
  training folds and applied to the held-out fold, pooled over folds (the `eval` protocol);
- pooled, picked on held-out: the point picked on the pooled held-out predictions themselves;
- one fold at a time, picked on that fold: what a single train/test split reports when its point is
  picked on its own test rows; printed per fold, so the spread is visible.
`--with-learned` also asks whether words add to the learned router: its predictions (static features,
trained per fold as `eval` does), TF-IDF's and their mean, measured held out as above and, on one
optimistic footing for all three, with the cheapest point picked on the pooled held-out rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from llm_router.datasets import Dataset, load
from llm_router.learn import operating
from llm_router.learn.fit import fold_ids
from llm_router.learn.train import keys_of, model_prices

SWEEP = tuple(float(t) for t in np.round(np.linspace(0.0, 3.0, 301), 4))


@dataclass(frozen=True, slots=True)
class Reached:
    """Quality (share of the best single model's) and saving of one way of picking, at one target."""

    relative_quality: float
    saving: float


def tfidf_predictions(train_text: list[str], train_scores: np.ndarray, test_text: list[str],
                      c: float = 1.0) -> np.ndarray:
    """(test rows, models) P(score >= 0.5) from TF-IDF + logistic regression fitted on the training rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=100_000)
    x_train = vec.fit_transform(train_text)
    x_test = vec.transform(test_text)
    out = np.zeros((len(test_text), train_scores.shape[1]))
    for m in range(train_scores.shape[1]):
        y = (train_scores[:, m] >= 0.5).astype(int)
        if y.min() == y.max():
            out[:, m] = float(y[0])
            continue
        out[:, m] = LogisticRegression(C=c, max_iter=3000).fit(x_train, y).predict_proba(x_test)[:, 1]
    return out


def out_of_fold(texts: list[str], scores: np.ndarray, folds: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Predictions for every row from a fit on the other folds."""
    oof = np.zeros(scores.shape)
    for f in np.unique(folds):
        tr, te = np.nonzero(folds != f)[0], np.nonzero(folds == f)[0]
        oof[te] = tfidf_predictions([texts[i] for i in tr], scores[tr], [texts[i] for i in te], c)
    return oof


FoldPredictions = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def held_out(ds: Dataset, folds: np.ndarray, predictions: FoldPredictions, targets: tuple[float, ...]) -> dict[str, dict[float, Reached]]:
    """The `eval` protocol: per fold, points picked on inner out-of-fold predictions of the training rows.

    `predictions(train_rows, test_rows)` gives (inner out-of-fold predictions of the training rows,
    predictions of the test rows from a fit on all training rows).
    """
    prices, best = model_prices(ds), int(ds.scores.mean(0).argmax())
    draws = np.array([operating.blend_draw(p) for p in ds.prompts])
    chosen = {kind: {t: np.zeros(len(ds), int) for t in targets} for kind in ("single", "blend")}
    for f in np.unique(folds):
        tr, te = np.nonzero(folds != f)[0], np.nonzero(folds == f)[0]
        inner, test = predictions(tr, te)
        points = operating.curve(inner, prices, ds.scores[tr], ds.costs[tr], SWEEP)
        need = float(ds.scores[tr, best].mean())
        singles, blends = operating.pick(points, need, targets), operating.pick_blends(points, need, targets)
        for t in targets:
            chosen["single"][t][te] = operating.choose(test, prices, singles[t])
            b = blends[t]
            chosen["blend"][t][te] = operating.choose_blend(test, prices, b.tradeoff, b.other, b.share, draws[te])
    bq, bc = float(ds.scores[:, best].mean()), float(ds.costs[:, best].mean() * 1000)
    out: dict[str, dict[float, Reached]] = {}
    for kind, per_target in chosen.items():
        out[kind] = {}
        for t, choice in per_target.items():
            q, cost = operating.measure(choice, ds.scores, ds.costs)
            out[kind][t] = Reached(q / bq, 1 - cost / bc)
    return out


def tfidf_folds(ds: Dataset, oof: np.ndarray, c: float = 1.0) -> FoldPredictions:
    """TF-IDF fold predictions: inner out-of-fold fits on the training rows; the test rows from `oof`."""
    keys = keys_of(ds)

    def predictions(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inner_folds = fold_ids(keys[tr] // 7, 5)  # the inner folds train_model uses
        return out_of_fold([ds.prompts[i] for i in tr], ds.scores[tr], inner_folds, c), oof[te]
    return predictions


def learned_folds(ds: Dataset) -> FoldPredictions:
    """The learned router's fold predictions (static features): `train_model`'s own inner out-of-fold ones."""
    from llm_router.learn.features import Featurizer, load_embedder
    from llm_router.learn.train import requests_of, train_model

    featurizer = Featurizer("static", load_embedder("static"))
    x = featurizer.matrix(requests_of(ds))

    def predictions(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model, inner = train_model(ds.subset(tr), featurizer, x=x[tr])
        order = [model.models.index(m) for m in ds.models]
        return inner[:, order], model.predict(x[te])[:, order]
    return predictions


def cached(predictions: FoldPredictions) -> FoldPredictions:
    """The same fold predictions, computed once per fold."""
    memo: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def once(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = te.tobytes()
        if key not in memo:
            memo[key] = predictions(tr, te)
        return memo[key]
    return once


def averaged(a: FoldPredictions, b: FoldPredictions) -> FoldPredictions:
    """The mean of two sets of fold predictions."""
    def predictions(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (ia, ta), (ib, tb) = a(tr, te), b(tr, te)
        return (ia + ib) / 2, (ta + tb) / 2
    return predictions


def picked_on(scores: np.ndarray, costs: np.ndarray, p: np.ndarray, prices: np.ndarray, best: int,
              target: float) -> Reached | None:
    """The cheapest single point reaching the target on these very rows (None when none does)."""
    bq, bc = float(scores[:, best].mean()), float(costs[:, best].mean() * 1000)
    found = operating.cheapest_reaching(operating.curve(p, prices, scores, costs, SWEEP), target * bq)
    return None if found is None else Reached(found.quality / bq, 1 - found.cost_per_1k / bc)


def compare(ds: Dataset, predictions: dict[str, np.ndarray], targets: tuple[float, ...]) -> dict[str, dict]:
    """Per set of predictions and target: saving of the cheapest single point and blend picked on these rows."""
    prices, best = model_prices(ds), int(ds.scores.mean(0).argmax())
    bq, bc = float(ds.scores[:, best].mean()), float(ds.costs[:, best].mean() * 1000)
    out: dict[str, dict] = {}
    for name, p in predictions.items():
        points = operating.curve(p, prices, ds.scores, ds.costs, SWEEP)
        out[name] = {}
        for t in targets:
            single = operating.cheapest_reaching(points, t * bq)
            blend = operating.cheapest_blend(points, t * bq)
            out[name][f"{t:.2f}"] = {"single": None if single is None else round(1 - single.cost_per_1k / bc, 4),
                                     "blend": None if blend is None else round(1 - blend.cost_per_1k / bc, 4)}
    return out


def _as_dict(got: dict[str, dict[float, Reached]]) -> dict[str, dict[str, dict]]:
    return {kind: {f"{t:.2f}": asdict(r) for t, r in per.items()} for kind, per in got.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_router.learn.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regressions")
    parser.add_argument("--with-learned", action="store_true",
                        help="also compare with the learned router's predictions and their mean with TF-IDF's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ds = load(args.data)
    if np.isnan(ds.scores).any():
        print("error: the baseline needs every model's outcome for every prompt (a benchmark data set); "
              "own traffic knows only the answering model's", file=sys.stderr)
        return 2
    targets = (0.95, 1.0)
    folds = fold_ids(keys_of(ds), args.folds)
    oof = out_of_fold(ds.prompts, ds.scores, folds, args.C)
    prices, best = model_prices(ds), int(ds.scores.mean(0).argmax())
    report = {
        "data": ds.describe(),
        "best_single": ds.models[best],
        "held_out": _as_dict(held_out(ds, folds, tfidf_folds(ds, oof, args.C), targets)),
        "pooled_picked_on_held_out": {f"{t:.2f}": (asdict(r) if (r := picked_on(ds.scores, ds.costs, oof, prices, best, t)) else None)
                                      for t in targets},
        "per_fold_picked_on_fold": {f"{t:.2f}": [(asdict(r) if (r := picked_on(ds.scores[folds == f], ds.costs[folds == f],
                                                                               oof[folds == f], prices, best, t)) else None)
                                                 for f in range(args.folds)] for t in targets},
    }
    if args.with_learned:
        learned, words = cached(learned_folds(ds)), cached(tfidf_folds(ds, oof, args.C))
        report["held_out_words_vs_learned"] = {name: _as_dict(held_out(ds, folds, pred, targets)) for name, pred in
                                               (("learned", learned), ("tfidf", words), ("mean", averaged(learned, words)))}
        test = {"learned": np.zeros(ds.scores.shape), "tfidf": np.zeros(ds.scores.shape)}
        for f in range(args.folds):
            tr, te = np.nonzero(folds != f)[0], np.nonzero(folds == f)[0]
            test["learned"][te], test["tfidf"][te] = learned(tr, te)[1], words(tr, te)[1]
        test["mean"] = (test["learned"] + test["tfidf"]) / 2
        report["pooled_words_vs_learned"] = compare(ds, test, targets)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(report["data"])
    print(f"TF-IDF + logistic regression, best single model {ds.models[best]}; saving at 95% / 100% of its quality:")

    def show(r: dict | None) -> str:
        return "unreached" if r is None else f"{r['saving']:.3f} (at {r['relative_quality']:.1%})"

    for kind, per in report["held_out"].items():
        print(f"  held out, {kind} point picked on training folds: " + " / ".join(show(per[k]) for k in ("0.95", "1.00")))
    print("  pooled, picked on the held-out rows: " + " / ".join(show(report["pooled_picked_on_held_out"][k]) for k in ("0.95", "1.00")))
    for k in ("0.95", "1.00"):
        print(f"  one fold at a time, picked on that fold, {k}: " + ", ".join(show(r) for r in report["per_fold_picked_on_fold"][k]))
    for name, per in report.get("held_out_words_vs_learned", {}).items():
        print(f"  {name} predictions, held out, picked on training folds (single, blend): "
              + "; ".join(f"{k}: " + " / ".join(show(per[kind][k]) for kind in ("single", "blend")) for k in ("0.95", "1.00")))
    for name, per in report.get("pooled_words_vs_learned", {}).items():
        print(f"  {name} predictions, picked on the pooled held-out rows, single / blend: "
              + "; ".join(f"{k}: {v['single']} / {v['blend']}" for k, v in per.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
