"""L2-regularised logistic regression for several outputs at once, fitted by Newton steps (numpy only).

Targets may be fractional (0..1 scores): the loss is the cross-entropy against them.
"""
from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, sample_weight: np.ndarray | None = None,
                 iters: int = 30, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Weights (features, outputs) and biases (outputs) minimising mean cross-entropy + l2/2n * |w|^2.

    x: (n, f) features; y: (n, k) targets in 0..1. The bias is not penalised.
    """
    n, f = x.shape
    k = y.shape[1]
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    sw = sw / sw.mean()
    xa = np.hstack([x, np.ones((n, 1))])
    reg = np.full(f + 1, l2)
    reg[-1] = 1e-8
    w = np.zeros((f + 1, k))
    prior = np.clip((sw[:, None] * y).sum(0) / sw.sum(), 1e-4, 1 - 1e-4)
    w[-1] = np.log(prior / (1 - prior))
    for j in range(k):
        wj = w[:, j]
        for _ in range(iters):
            p = sigmoid(xa @ wj)
            grad = xa.T @ (sw * (p - y[:, j])) + reg * wj
            h = (xa * (sw * np.maximum(p * (1 - p), 1e-9))[:, None]).T @ xa
            h[np.diag_indices_from(h)] += reg
            step = np.linalg.solve(h, grad)
            wj = wj - step
            if np.abs(step).max() < tol:
                break
        w[:, j] = wj
    return w[:-1], w[-1]


def predict_logistic(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Probabilities (n, outputs)."""
    return sigmoid(x @ w + b)
