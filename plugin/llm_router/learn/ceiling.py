"""How much a prompt-only router can save on a data set: the signal per task, and a task-aware ceiling.

`python -m llm_router.learn.ceiling --data PATH...` prints, per task (group):
- the out-of-fold AUC with which the static embedding predicts "model m answers well" (logistic
  regression, 5 folds by prompt hash), for every model: 0.5 is no signal;
- the best saving a router could reach that KNOWS each prompt's task and mixes models per task at
  random (a linear program over per-task model shares): no prompt-level signal needed or used; in
  sample, and held out (shares solved on the training folds);
- the learned router's quality model scored held out three ways: with its task recogniser (as
  `train` builds it), with the TRUE task of every prompt in its place (which no live router knows),
  and with neither. Each at the cheapest operating point reaching the target on the held-out rows
  themselves (in hindsight, so a little above what eval reports): if the true task gains little
  over the recogniser, better task recognition cannot close the gap to a target;
- on data with recorded answers (RouterBench), how far an answer-aware cascade goes (`learn.vote`):
  every set of models cheaper than the best one answers at once, a learned rule on who shares the
  plurality answer accepts it or asks the best model; in hindsight and held out.
All are upper-bound style evidence for what a learned router can do with cheap features.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from llm_router.datasets import load
from llm_router.evaluate import agree_inputs, load_responses
from llm_router.learn import operating, vote
from llm_router.learn.clusters import TEMPERATURE, auto_k, fit_clusters
from llm_router.learn.features import Featurizer, load_embedder
from llm_router.learn.fit import fit, fold_ids
from llm_router.learn.groups import recognised, recogniser_features
from llm_router.learn.linear import sigmoid
from llm_router.learn.train import keys_of, model_prices, requests_of


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


def task_mix(scores: np.ndarray, costs: np.ndarray, groups: list[str], target_quality: float) -> tuple[list[str], np.ndarray, float] | None:
    """The cheapest per-task random model mix reaching `target_quality` (LP): tasks, shares (tasks, models), mean cost; or None."""
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
    return (names, res.x.reshape(k, m), float(res.fun)) if res.success else None


def task_ceiling(scores: np.ndarray, costs: np.ndarray, groups: list[str], target_quality: float) -> float | None:
    """Minimum mean cost of per-task random model mixes reaching `target_quality`, or None (LP)."""
    found = task_mix(scores, costs, groups, target_quality)
    return None if found is None else found[2]


def task_mix_held_out(scores: np.ndarray, costs: np.ndarray, groups: list[str], folds: np.ndarray,
                      frac: float) -> tuple[float, float]:
    """Per fold, the mix solved on the other folds (for `frac` of their best model), run on the fold's rows.

    Returns (saving against the best single model, quality as a share of its quality), expected over the
    random draws. A task the training folds lack, or a target they cannot reach, gets their best model.
    """
    n, m = scores.shape
    got_q, got_c = np.zeros(n), np.zeros(n)
    for f in np.unique(folds):
        te, tr = np.nonzero(folds == f)[0], np.nonzero(folds != f)[0]
        best = int(scores[tr].mean(0).argmax())
        x = np.zeros((n, m))
        x[te, best] = 1.0
        found = task_mix(scores[tr], costs[tr], [groups[i] for i in tr], frac * float(scores[tr, best].mean()))
        if found is not None:
            index = {name: i for i, name in enumerate(found[0])}
            for i in te:
                t = index.get(groups[i])
                if t is not None:
                    x[i] = found[1][t]
        got_q[te] = (x[te] * scores[te]).sum(1)
        got_c[te] = (x[te] * costs[te]).sum(1)
    best = int(scores.mean(0).argmax())
    return 1 - got_c.mean() / costs[:, best].mean(), got_q.mean() / scores[:, best].mean()


def told_the_task(ds, x: np.ndarray, dim: int, folds: np.ndarray, keys: np.ndarray) -> dict[str, dict[float, float | None]]:
    """Held-out saving at each target: quality model with no task features, the recogniser, the true task."""
    names = recognised(ds.groups)
    onehot = np.array([[g == n for n in names] for g in ds.groups], float)
    preds = {way: np.zeros(ds.scores.shape) for way in ("neither", "recogniser", "true task")}
    emb = x[:, :dim]
    for f in np.unique(folds):
        tr, te = np.nonzero(folds != f)[0], np.nonzero(folds == f)[0]
        topics = fit_clusters(emb[tr], auto_k(len(tr)), seed=0)
        base = topics.augment(x) if topics is not None else x
        labels = [ds.groups[i] for i in tr]
        task = recogniser_features(emb[tr], labels, keys[tr], temperature=TEMPERATURE, names=names) if names else None
        extra = {"neither": (None, None)}
        if task is not None:
            extra["recogniser"] = (task[2], task[0].memberships(emb[te]))
            extra["true task"] = (onehot[tr], onehot[te])
        for way, (a, b) in extra.items():
            xtr = base[tr] if a is None else np.hstack([base[tr], a])
            xte = base[te] if b is None else np.hstack([base[te], b])
            fitted, _ = fit(xtr, ds.scores[tr], keys[tr] // 7)
            preds[way][te] = sigmoid(((xte - fitted.mean) / fitted.scale) @ fitted.weights + fitted.bias)
    best = int(ds.scores.mean(0).argmax())
    bq, bc = float(ds.scores[:, best].mean()), float(ds.costs[:, best].mean())
    prices = model_prices(ds)
    out: dict[str, dict[float, float | None]] = {}
    for way, p in preds.items():
        if way != "neither" and not names:
            continue
        points = operating.curve(p, prices, ds.scores, ds.costs)
        out[way] = {}
        for frac in operating.TARGETS:
            pt = operating.cheapest_reaching(points, frac * bq)
            out[way][frac] = None if pt is None else 1 - pt.cost_per_1k / (bc * 1000)
    return out


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
    mixes = {frac: task_mix_held_out(ds.scores, ds.costs, ds.groups, folds, frac) for frac in operating.TARGETS}
    print("the same mixing held out (shares solved on the training folds, no margin): "
          + ", ".join(f"{frac:.0%}: {sv:.3f} (at {rq:.1%} of best)" for frac, (sv, rq) in mixes.items()))
    print("\nlearned router held out, at the cheapest point reaching the target on the held-out rows (hindsight):")
    feats = Featurizer("static", emb).matrix(requests_of(ds)).astype(np.float64)
    keys = keys_of(ds)
    for way, savings in told_the_task(ds, feats, emb.dim, folds, keys).items():
        shown = ", ".join(f"{frac:.0%}: " + ("unreachable" if v is None else f"{v:.3f}") for frac, v in savings.items())
        print(f"  {way:11s} {shown}")
    answers = load_responses(ds)
    if answers is not None:
        print_vote_reach(ds, answers, keys, folds)
    return 0


def print_vote_reach(ds, answers: list[list[str | None]], keys: np.ndarray, folds: np.ndarray) -> None:
    """The answer-aware cascade's savings at each target, in hindsight and held out."""
    codes, kinds = agree_inputs(ds, answers)
    print(f"\nanswer-aware cascade: every set of the models cheaper than the best one (up to {vote.MAX_ASK}) answers at once; a logistic rule on which of them share the "
          "plurality answer (and which gave none) accepts it, else the best model answers; every call paid; "
          "one rule per answer kind (code and text: single models):")

    def shown(reach: dict[float, vote.Reach]) -> str:
        return ", ".join(f"{frac:.0%}: " + ("unreachable" if r.saving is None else f"{r.saving:.3f}")
                         + f" (at {r.relative_quality:.1%} of best)" for frac, r in reach.items())

    bound = vote.in_hindsight(codes, ds.scores, ds.costs, kinds, keys, operating.TARGETS)
    print(f"  in hindsight (rules and thresholds picked on the scored rows, acceptance chances out-of-fold): {shown(bound)}")
    held = vote.held_out(codes, ds.scores, ds.costs, kinds, keys, folds, operating.TARGETS)
    print(f"  held out (picked on the training folds, no margin): {shown(held)}")


if __name__ == "__main__":
    sys.exit(main())
