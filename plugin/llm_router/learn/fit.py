"""Fitting the quality model (numpy only): ridge scores per model, Platt-calibrated, ridge strength by inner CV.

Ridge on 0..1 outcomes gives a score per model in closed form for every strength at once (one
eigendecomposition per fold); a 1-D logistic fit per model then turns scores into calibrated
probabilities, and that calibration folds into the weights, so prediction stays one matrix
multiply and a sigmoid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_router.learn.linear import fit_logistic

L2_GRID = (1.0, 10.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


@dataclass(frozen=True, slots=True)
class Fitted:
    """Standardisation and calibrated linear weights."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (features, models), on standardised features
    bias: np.ndarray
    l2: float
    cv_logloss: dict[float, float]  # inner-CV log-loss per strength tried


def fold_ids(keys: np.ndarray, folds: int) -> np.ndarray:
    """Fold of each row from its prompt hash: deterministic, duplicates share a fold."""
    return (np.asarray(keys, np.int64) % folds).astype(int)


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    return mean, scale


class _Ridge:
    """All ridge solutions of one training set, for any strength, from one eigendecomposition."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.xm = x.mean(0)
        self.ym = y.mean(0)
        xc = x - self.xm
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        self.evals = np.maximum(evals, 0.0)
        self.evecs = evecs
        self.proj = evecs.T @ (xc.T @ (y - self.ym))  # (features, models)

    def weights(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        w = self.evecs @ (self.proj / (self.evals + l2)[:, None])
        return w, self.ym - self.xm @ w


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _platt(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model a, c so that sigmoid(a * score + c) is calibrated."""
    a = np.zeros(y.shape[1])
    c = np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        w, b = fit_logistic(scores[:, [j]], y[:, [j]], l2=1e-3)
        a[j], c[j] = w[0, 0], b[0]
    return a, c


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray, grid: tuple[float, ...] = L2_GRID) -> dict[float, np.ndarray]:
    """Out-of-fold ridge scores per strength (standardisation fitted inside each fold)."""
    out = {l2: np.zeros(y.shape) for l2 in grid}
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        if not tr.any():
            continue
        mean, scale = standardise(x[tr])
        ridge = _Ridge((x[tr] - mean) / scale, y[tr])
        xt = (x[te] - mean) / scale
        for l2 in grid:
            w, b = ridge.weights(l2)
            out[l2][te] = xt @ w + b
    return out


def fit(x: np.ndarray, y: np.ndarray, keys: np.ndarray, *, l2: float | None = None, folds: int = 5,
        grid: tuple[float, ...] = L2_GRID) -> tuple[Fitted, np.ndarray]:
    """Fit on all rows; returns the model and out-of-fold probabilities of the chosen strength.

    The strength (unless given) and the calibration come from inner cross-validation on these
    rows only, so the out-of-fold probabilities are honest estimates for picking operating points.
    """
    grid = (l2,) if l2 is not None else grid
    fid = fold_ids(keys, folds) if len(np.unique(fold_ids(keys, folds))) > 1 else np.arange(len(x)) % max(2, folds)
    scores = out_of_fold(x, y, fid, grid)
    losses: dict[float, float] = {}
    calib: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for s in grid:
        a, c = _platt(scores[s], y)
        calib[s] = (a, c)
        losses[s] = _logloss(_sigmoid(scores[s] * a + c), y)
    best = min(grid, key=lambda s: (losses[s], -s))
    a, c = calib[best]
    mean, scale = standardise(x)
    w, b = _Ridge((x - mean) / scale, y).weights(best)
    fitted = Fitted(mean, scale, w * a, b * a + c, best, losses)
    return fitted, _sigmoid(scores[best] * a + c)


# Below this many answered requests a model gets its observed mean rate, with no prompt signal:
# on fewer rows a 264-feature fit is mostly noise, and the router would chase it.
MIN_ROWS_PER_MODEL = 100


def _fit_column(x: np.ndarray, y: np.ndarray, keys: np.ndarray, mean: np.ndarray, scale: np.ndarray, *,
                l2: float | None, folds: int, grid: tuple[float, ...], min_rows: int) -> tuple[np.ndarray, float, float | None, dict]:
    """One model's weights and bias on the standardisation (mean, scale), fitted on its observed rows.

    Too few rows, or one outcome only: zero weights and the (Laplace-smoothed) mean rate.
    """
    if len(y) < max(min_rows, 2 * folds) or y.min() == y.max():
        rate = (float(y.sum()) + 1.0) / (len(y) + 2.0)
        return np.zeros(x.shape[1]), float(np.log(rate / (1.0 - rate))), None, {}
    f, _ = fit(x, y[:, None], keys, l2=l2, folds=folds, grid=grid)
    # Re-express on the given standardisation: (x - M)/S @ w' + b' == (x - m)/s @ w + b.
    w = f.weights[:, 0] * scale / f.scale
    b = float(f.bias[0] + ((mean - f.mean) / f.scale) @ f.weights[:, 0])
    return w, b, f.l2, f.cv_logloss


def fit_partial(x: np.ndarray, y: np.ndarray, keys: np.ndarray, *, l2: float | None = None, folds: int = 5,
                grid: tuple[float, ...] = L2_GRID, min_rows: int = MIN_ROWS_PER_MODEL) -> tuple[Fitted, np.ndarray, list[dict]]:
    """`fit` where y is NaN for outcomes never observed (own traffic: only the answering model's score).

    Each model is fitted on the rows it answered. The probabilities returned for every row and model
    are cross-fitted: row r's come from models fitted without r's fold, observed or not, so picking
    by them and correcting them on the observed rows (`operating.logged_quality`) stays unbiased.
    Returns the model fitted on all rows (its l2: the median over models), those probabilities, and
    per model the rows it was fitted on and its ridge strength (None: its mean rate is used).
    """
    n, m = y.shape
    mean, scale = standardise(x)
    xs = (x - mean) / scale
    outer = fold_ids(np.asarray(keys) // 11, folds)  # other hash bits than the inner folds of `fit`
    probs = np.zeros((n, m))
    for f in np.unique(outer):
        out, inn = outer == f, outer != f
        for j in range(m):
            obs = inn & ~np.isnan(y[:, j])
            w, b, _, _ = _fit_column(x[obs], y[obs, j], keys[obs], mean, scale, l2=l2, folds=folds, grid=grid,
                                     min_rows=min_rows)
            probs[out, j] = _sigmoid(xs[out] @ w + b)
    weights = np.zeros((x.shape[1], m))
    bias = np.zeros(m)
    losses: dict[float, float] = {}
    info: list[dict] = []
    for j in range(m):
        obs = ~np.isnan(y[:, j])
        weights[:, j], bias[j], used, cv = _fit_column(x[obs], y[obs, j], keys[obs], mean, scale, l2=l2, folds=folds,
                                                       grid=grid, min_rows=min_rows)
        info.append({"rows": int(obs.sum()), "l2": used})
        for s_, v in cv.items():
            losses[s_] = losses.get(s_, 0.0) + v * obs.sum() / n
    chosen = [i["l2"] for i in info if i["l2"] is not None]
    l2_used = float(np.median(chosen)) if chosen else float(grid[0])
    return Fitted(mean, scale, weights, bias, l2_used, losses), probs, info
