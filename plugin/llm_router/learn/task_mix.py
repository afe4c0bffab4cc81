"""Per-task model mixes: for each recognised task, the share of its prompts each model gets, solved for a quality target.

Where prompt-level signal is weak, the learned router's per-prompt predictions within a task are
mostly noise, and a single trade-off over global prices picks models for whole tasks at a time.
A mix instead solves, on the training rows, the cheapest per-task shares reaching the target (a
linear program over the tasks' mean quality and cost per model), with a margin sized by inner
cross-validation. Live, the learned classifier names the recognised task (`Classification.label`)
and quality_gate's `mix` param draws the model from that task's shares by a hash of the prompt.
Training needs scipy (the `train` extra); serving does not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_router.learn import operating

MIN_SHARE = 1e-4  # shares below this are dropped (and the rest renormalised): LP round-off, not a decision


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares (tasks, models), each row summing to 1, the margin added to the target, and how that held on inner held-out rows."""

    shares: np.ndarray
    margin: float
    held_out: operating.HeldOut

    def params(self, tasks: list[str], models: tuple[str, ...]) -> dict[str, dict[str, float]]:
        """quality_gate `mix` param: task -> {model: share}, only the models with a share."""
        return {t: {models[j]: round(float(s), 6) for j, s in enumerate(row) if s > 0} for t, row in zip(tasks, self.shares)}


def solve(scores: np.ndarray, costs: np.ndarray, task: np.ndarray, k: int, target_quality: float) -> np.ndarray | None:
    """Cheapest shares (k, models) whose mean quality on these rows reaches `target_quality`; None when none does.

    `task`: each row's task index in 0..k-1. A task without rows gets the rows' best model.
    """
    from scipy.optimize import linprog

    n, m = scores.shape
    weight = np.bincount(task, minlength=k) / n
    q = np.zeros((k, m))
    c = np.zeros((k, m))
    for t in range(k):
        rows = task == t
        if rows.any():
            q[t], c[t] = scores[rows].mean(0), costs[rows].mean(0)
    a_eq = np.kron(np.eye(k), np.ones((1, m)))  # each task's shares add up to 1
    res = linprog((weight[:, None] * c).ravel(), A_ub=-(weight[:, None] * q).ravel()[None, :], b_ub=[-target_quality],
                  A_eq=a_eq, b_eq=np.ones(k), bounds=(0, None), method="highs")
    if not res.success:
        return None
    x = np.clip(res.x.reshape(k, m), 0.0, None)
    x[x < MIN_SHARE] = 0.0
    best = int(scores.mean(0).argmax())
    x[weight == 0] = 0.0
    x[weight == 0, best] = 1.0
    return x / x.sum(1, keepdims=True)


def draw(shares: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row the model its draw `u` in [0, 1) lands on, given the row's shares (rows, models)."""
    cum = np.cumsum(shares, 1)
    return np.minimum((cum <= u[:, None] * cum[:, -1:]).sum(1), shares.shape[1] - 1)


def expected(shares: np.ndarray, task: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row the quality and cost expected over the draws of its task's shares."""
    x = shares[task]
    return (x * scores).sum(1), (x * costs).sum(1)


def fit(scores: np.ndarray, costs: np.ndarray, task: np.ndarray, k: int, inner: np.ndarray,
        fracs: tuple[float, ...] = operating.TARGETS) -> dict[float, Mix | None]:
    """Per target, shares solved on all rows for the target plus the smallest margin that held on inner held-out rows.

    None for a target no mix reaches on these rows.
    """
    n = len(scores)
    got: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]] = {
        (f, mg): (np.zeros(n), np.zeros(n)) for f in fracs for mg in operating.MARGINS}
    best_pooled = np.zeros(n)
    for g in np.unique(inner):
        te, tr = inner == g, inner != g
        means = scores[tr].mean(0)
        best_pooled[te] = scores[te, int(means.argmax())]
        for f in fracs:
            for mg in operating.MARGINS:
                x = solve(scores[tr], costs[tr], task[tr], k, (f + mg) * float(means.max()))
                if x is None:  # not reachable on these rows: their best model
                    x = np.zeros((k, scores.shape[1]))
                    x[:, int(means.argmax())] = 1.0
                q, c = got[(f, mg)]
                q[te], c[te] = expected(x, task[te], scores[te], costs[te])
    top = float(scores.mean(0).max())
    out: dict[float, Mix | None] = {}
    for f in fracs:
        held = operating.first_reaching(got, f, f * float(best_pooled.mean()))
        margin = held.margin
        x = solve(scores, costs, task, k, (f + margin) * top)
        if x is None and margin:
            x = solve(scores, costs, task, k, f * top)
            held = operating.HeldOut(0.0, float(got[(f, 0.0)][0].mean()), float(got[(f, 0.0)][1].mean()), False)
        out[f] = None if x is None else Mix(x, held.margin, held)
    return out
