"""How much a prompt-only router can save on a data set: the signal per task, and a task-aware ceiling.

`python -m llm_router.learn.ceiling --data PATH...` prints, per task (group):
- the out-of-fold AUC with which the static embedding predicts "model m answers well" (logistic
  regression, 5 folds by prompt hash), for every model: 0.5 is no signal;
- the best saving a router could reach that KNOWS each prompt's task and mixes models per task at
  random (a linear program over per-task model shares): no prompt-level signal needed or used.
Both are upper-bound style evidence for what a learned router can do with cheap features.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from llm_router.datasets import load
from llm_router.learn.features import load_embedder
from llm_router.learn.fit import fold_ids
from llm_router.learn.train import keys_of, requests_of


def group_auc(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float | None:
    """Out-of-fold ROC AUC of a logistic regression from x to y, or None when y is constant."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return None
    p = np.zeros(len(y))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        if y[tr].min() == y[tr].max():
            p[te] = y[tr].mean()
            continue
        p[te] = LogisticRegression(C=1.0, max_iter=2000).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    return float(roc_auc_score(y, p))


def task_ceiling(scores: np.ndarray, costs: np.ndarray, groups: list[str], target_quality: float) -> float | None:
    """Minimum mean cost of per-task random model mixes reaching `target_quality`, or None (LP)."""
    from scipy.optimize import linprog

    names = sorted(set(groups))
    g = np.array([names.index(x) for x in groups])
    n, m = scores.shape
    k = len(names)
    share = np.array([(g == i).mean() for i in range(k)])
    q = np.array([scores[g == i].mean(0) for i in range(k)])  # (tasks, models)
    c = np.array([costs[g == i].mean(0) for i in range(k)])
    # variables x[i, j] >= 0: share of task i's prompts sent to model j; sum_j x[i, j] = 1.
    cost_vec = (share[:, None] * c).ravel()
    a_ub = -(share[:, None] * q).ravel()[None, :]
    a_eq = np.zeros((k, k * m))
    for i in range(k):
        a_eq[i, i * m:(i + 1) * m] = 1.0
    res = linprog(cost_vec, A_ub=a_ub, b_ub=[-target_quality], A_eq=a_eq, b_eq=np.ones(k), bounds=(0, None), method="highs")
    return float(res.fun) if res.success else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_router.learn.ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    ds = load(args.data)
    print(ds.describe())
    emb = load_embedder("static")
    x = np.stack([emb.embed(r.prompt) for r in requests_of(ds)])
    folds = fold_ids(keys_of(ds), args.folds)
    groups = np.array(ds.groups)
    if len(set(ds.groups)) > 12:  # many subjects (MMLU): report the pooled AUC only
        tasks = [("all tasks pooled", np.ones(len(ds), bool))]
    else:
        tasks = [(t, groups == t) for t in sorted(set(ds.groups))]
    print("\nout-of-fold AUC of the static embedding predicting 'model answers well' (0.5 = no signal):")
    for name, mask in tasks:
        aucs = {mdl: group_auc(x[mask], ds.scores[mask, j] > 0.5, folds[mask]) for j, mdl in enumerate(ds.models)}
        shown = ", ".join(f"{mdl.split('/')[-1]} {a:.2f}" for mdl, a in aucs.items() if a is not None)
        print(f"  {name} ({int(mask.sum())} prompts): {shown}")
    best = int(ds.scores.mean(0).argmax())
    bq, bc = float(ds.scores[:, best].mean()), float(ds.costs[:, best].mean())
    print(f"\nbest single model {ds.models[best]}: quality {bq:.3f}, ${bc * 1000:.3f} per 1K queries")
    for frac in (0.95, 1.0):
        cost = task_ceiling(ds.scores, ds.costs, ds.groups, frac * bq)
        saving = "unreachable" if cost is None else f"{1 - cost / bc:.3f}"
        print(f"task-aware random mixing, quality >= {frac:.0%} of best: saving {saving}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
