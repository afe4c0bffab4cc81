"""How far answer-aware cascades can go: cheap models vote, a learned rule accepts their answer or asks the best model.

Analysis for `python -m llm_router.learn.ceiling` on data with recorded answers (RouterBench). Richer
than the agreement cascade: several cheaper models answer at once, and a logistic model on which of
them share the plurality answer (and which gave none) predicts whether that answer is right; below
a threshold the best model is asked and its answer stands. Every call made is paid.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from llm_router.learn.agreement import NONE, Option, cheapest_combination, frontier
from llm_router.learn.fit import fold_ids
from llm_router.learn.linear import fit_logistic, predict_logistic

MAX_ASK = 10  # models asked at once, at most (RouterBench: any set of its 10 models below GPT-4)
VOTING_KINDS = ("choice", "number")  # answer kinds whose final answers can be compared


@dataclass(frozen=True, slots=True)
class VoteRule:
    """Ask `ask` at once; accept their plurality answer when its predicted chance reaches `threshold`, else ask `escalate`."""

    ask: tuple[int, ...]
    threshold: float  # <= 0: always accept (a single model, no vote)
    escalate: int


@dataclass(frozen=True, slots=True)
class Votes:
    """Rows seen through one set of asked models: features, whose answer a plurality returns, what asking costs."""

    x: np.ndarray  # (rows, 2k+1): shares the plurality, gave no answer, plurality share
    owner: np.ndarray  # the cheapest asked model holding the plurality answer (the first asked when none answered)
    cost: np.ndarray  # every asked model's call

    @classmethod
    def of(cls, codes: np.ndarray, costs: np.ndarray, ask: tuple[int, ...]) -> "Votes":
        c = codes[:, list(ask)]
        answer, count = plurality(c)
        holds = (c == answer[:, None]) & (answer[:, None] != NONE)
        owner = np.where(holds.any(1), np.asarray(ask)[holds.argmax(1)], ask[0])
        x = np.hstack([holds, c == NONE, (count / len(ask))[:, None]]).astype(float)
        return cls(x, owner, costs[:, list(ask)].sum(1))


def plurality(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row the most common final answer (ties: the earlier column's) and how many columns give it."""
    n, k = c.shape
    answer, count = np.full(n, NONE), np.zeros(n)
    for a in range(k):
        v = c[:, a]
        m = ((c == v[:, None]) & (v[:, None] != NONE)).sum(1)
        better = (m > count) & (v != NONE)
        answer[better], count[better] = v[better], m[better]
    return answer, count


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return fit_logistic(x, y[:, None], l2=1.0)


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each row's acceptance chance from a rule fitted without its fold."""
    p = np.zeros(len(y))
    for f in np.unique(folds):
        te, tr = folds == f, folds != f
        w, b = _fit(x[tr], y[tr])
        p[te] = predict_logistic(x[te], w, b)[:, 0]
    return p


def kind_options(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, escalate: int, folds: np.ndarray) -> list[Option]:
    """Every single model, and every vote of up to MAX_ASK models cheaper than `escalate` at every threshold."""
    n = len(codes)
    rows = np.arange(n)
    opts = [Option(float(costs[:, j].sum()), float(scores[:, j].sum()), VoteRule((j,), 0.0, j)) for j in range(codes.shape[1])]
    prices = costs.mean(0)
    cheaper = sorted((j for j in range(codes.shape[1]) if prices[j] < prices[escalate]), key=lambda j: (prices[j], j))
    for size in range(1, MAX_ASK + 1):
        for ask in itertools.combinations(cheaper, size):
            v = Votes.of(codes, costs, ask)
            right = scores[rows, v.owner]
            if right.min() == right.max():
                continue
            p = np.round(out_of_fold(v.x, right, folds), 2)
            for t in np.unique(p):
                take = p >= t
                opts.append(Option(float((v.cost + np.where(take, 0.0, costs[:, escalate])).sum()),
                                   float(np.where(take, right, scores[:, escalate]).sum()), VoteRule(ask, float(t), escalate)))
    return opts


def fronts_of(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, keys: np.ndarray) -> dict[str, list[Option]]:
    """Per answer kind, the cost/quality frontier of single models and vote rules (acceptance chances out-of-fold)."""
    best = int(scores.mean(0).argmax())
    out: dict[str, list[Option]] = {}
    for kind in sorted(set(kinds.tolist())):
        r = np.nonzero(kinds == kind)[0]
        if kind.startswith(VOTING_KINDS):
            opts = kind_options(codes[r], scores[r], costs[r], best, fold_ids(keys[r] // 7, 5))
        else:
            opts = [Option(float(costs[r, j].sum()), float(scores[r, j].sum()), VoteRule((j,), 0.0, j)) for j in range(codes.shape[1])]
        out[kind] = frontier(opts)
    return out


def run(rule: VoteRule, train: tuple[np.ndarray, np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost per test row of `rule`, its acceptance model fitted on the training rows (codes, scores, costs)."""
    codes, scores, costs = test
    rows = np.arange(len(codes))
    if rule.threshold <= 0.0:
        j = rule.ask[0]
        return scores[:, j], costs[:, j]
    t_codes, t_scores, t_costs = train
    seen = Votes.of(t_codes, t_costs, rule.ask)
    w, b = _fit(seen.x, t_scores[np.arange(len(t_codes)), seen.owner])
    v = Votes.of(codes, costs, rule.ask)
    take = predict_logistic(v.x, w, b)[:, 0] >= rule.threshold
    return (np.where(take, scores[rows, v.owner], scores[:, rule.escalate]),
            v.cost + np.where(take, 0.0, costs[:, rule.escalate]))


@dataclass(frozen=True, slots=True)
class Reach:
    """One target: the saving against the best single model and the quality reached, as a share of its quality."""

    saving: float | None  # None: the target is out of reach
    relative_quality: float


def in_hindsight(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, keys: np.ndarray,
                 fracs: tuple[float, ...]) -> dict[float, Reach]:
    """Rules and thresholds picked on the scored rows themselves (acceptance chances out-of-fold): an upper bound."""
    fronts = fronts_of(codes, scores, costs, kinds, keys)
    best = int(scores.mean(0).argmax())
    bq, bc = float(scores[:, best].sum()), float(costs[:, best].sum())
    out = {}
    for frac in fracs:
        picked = cheapest_combination(fronts, frac * bq)
        total_q = sum(next(o.quality for o in fronts[k] if o.config == rule) for k, rule in picked.items())
        total_c = sum(next(o.cost for o in fronts[k] if o.config == rule) for k, rule in picked.items())
        out[frac] = Reach(1 - total_c / bc if total_q >= frac * bq - 1e-9 else None, total_q / bq)
    return out


def held_out(codes: np.ndarray, scores: np.ndarray, costs: np.ndarray, kinds: np.ndarray, keys: np.ndarray, folds: np.ndarray,
             fracs: tuple[float, ...]) -> dict[float, Reach]:
    """Per fold, rules and thresholds picked on the other folds (no margin), then run on the fold's rows."""
    n = len(codes)
    got = {f: (np.zeros(n), np.zeros(n)) for f in fracs}
    for fold in np.unique(folds):
        te, tr = np.nonzero(folds == fold)[0], np.nonzero(folds != fold)[0]
        fronts = fronts_of(codes[tr], scores[tr], costs[tr], kinds[tr], keys[tr])
        means = scores[tr].mean(0)
        for frac in fracs:
            q, c = got[frac]
            j = int(means.argmax())  # a kind the training rows lack: their best model
            q[te], c[te] = scores[te, j], costs[te, j]
            for kind, rule in cheapest_combination(fronts, frac * float(means.max()) * len(tr)).items():
                a, b = tr[kinds[tr] == kind], te[kinds[te] == kind]
                q[b], c[b] = run(rule, (codes[a], scores[a], costs[a]), (codes[b], scores[b], costs[b]))
    best = int(scores.mean(0).argmax())
    bq, bc = float(scores[:, best].mean()), float(costs[:, best].mean())
    return {f: Reach(1 - c.mean() / bc, q.mean() / bq) for f, (q, c) in got.items()}
