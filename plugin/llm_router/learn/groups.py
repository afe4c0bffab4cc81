"""Task recognition as features: where the training data names each prompt's task, learn to recognise it.

Outcome data often says which task or subject a prompt came from (RouterBench's eval_name, the
MMLU subject, LLMRouter's task). Unsupervised topic clusters only approximate those groups; a
softmax regression over the prompt embedding, fitted on the labels, recognises them (MMLU's 57
subjects: 0.72-0.73 cross-fitted accuracy, which `train` prints and eval notes per fold). Its posterior joins
the topic-cluster memberships as one more block, so the quality model learns each model's rate per
recognised task, and a prompt whose task is uncertain gets the blend of its likely tasks' rates.
Labels are needed only to train; at run time the recogniser is one small matrix product.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from llm_router.learn.clusters import Clusters
from llm_router.learn.fit import standardise

MIN_ROWS_PER_GROUP = 20  # a task with fewer training prompts is not learned as its own group
MAX_GROUPS = 200
L2 = 1e-2  # penalty on the standardised weights; held-out MMLU accuracy is flat from 3e-3 to 1e-2
ITERATIONS = 100
CROSS_FOLDS = 5  # cross-fitting folds of the posteriors the quality model is fitted on


def recognised(labels: Sequence[str]) -> list[str]:
    """The groups worth recognising: those with enough rows, most frequent first (empty: fewer than two)."""
    counts = Counter(labels).most_common(MAX_GROUPS)
    names = [g for g, n in counts if n >= MIN_ROWS_PER_GROUP and g]
    return names if len(names) >= 2 else []


def _rows_of(labels: Sequence[str], names: list[str]) -> np.ndarray:
    """Each label's index in `names` (-1: a group not recognised)."""
    index = {g: i for i, g in enumerate(names)}
    return np.array([index.get(g, -1) for g in labels])


def fit_softmax(x: np.ndarray, labels: np.ndarray, k: int, *, l2: float = L2,
                iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Weights (features, k) and biases (k,) minimising mean cross-entropy + l2/2 |W|^2 (bias free).

    Nesterov-accelerated gradient descent with the step from the loss's Lipschitz bound: a few
    seconds for 11,000 rows of 256 features and 57 groups, numpy only.
    """
    n, f = x.shape
    target = np.zeros((n, k), np.float32)
    target[np.arange(n), labels] = 1.0
    xa = np.hstack([x, np.ones((n, 1))]).astype(np.float32)
    v = np.random.default_rng(0).standard_normal(f + 1).astype(np.float32)
    for _ in range(30):  # power iteration for the top eigenvalue of xa'xa / n
        v = xa.T @ (xa @ v) / n
        v /= np.linalg.norm(v)
    step = 1.0 / (0.5 * float(v @ (xa.T @ (xa @ v))) / n + l2)
    reg = np.full((f + 1, 1), l2, np.float32)
    reg[-1] = 0.0
    w = np.zeros((f + 1, k), np.float32)
    ahead, t = w.copy(), 1.0
    for _ in range(iterations):
        s = xa @ ahead
        s -= s.max(1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(1, keepdims=True)
        nxt = ahead - step * (xa.T @ (p - target) / n + reg * ahead)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        ahead = nxt + ((t - 1.0) / t_next) * (nxt - w)
        w, t = nxt, t_next
    return w[:-1], w[-1]


def fit_groups(emb: np.ndarray, labels: Sequence[str], *, temperature: float,
               names: list[str] | None = None) -> tuple[Clusters, list[str]] | None:
    """A recogniser of the labelled groups as a cluster block over the embedding columns, or None.

    The block's rows are the regression's weights (standardisation folded in) divided by
    `temperature`, so that `Clusters.memberships`, which multiplies by it, gives the logits.
    `names`: the groups to recognise (default: `recognised(labels)`).
    """
    names = recognised(labels) if names is None else names
    if not names:
        return None
    rows = _rows_of(labels, names)
    keep = rows >= 0
    x = emb[keep].astype(np.float64)
    mean, scale = standardise(x)
    w, b = fit_softmax((x - mean) / scale, rows[keep], len(names))
    weights = w / scale[:, None]
    bias = b - mean @ weights
    return Clusters((weights.T / temperature).astype(np.float32), (len(names),), temperature,
                    bias.astype(np.float32)), names


def cross_fitted(emb: np.ndarray, labels: Sequence[str], names: list[str], folds: np.ndarray, *,
                 temperature: float) -> np.ndarray:
    """Posteriors (rows, groups) of the training rows, each from a recogniser fitted without its fold.

    The quality model is fitted on these, not on the full recogniser's in-sample posteriors: those
    are sharper than any new prompt's, so the model would trust them too much and its out-of-fold
    predictions, from which operating points are picked, would promise quality it does not deliver
    (MMLU held out, fitted on in-sample posteriors: 94.9% of GPT-4's quality where 95% was asked for).
    """
    out = np.zeros((len(emb), len(names)), np.float32)
    for f in np.unique(folds):
        te = folds == f
        fitted = fit_groups(emb[~te], [g for g, t in zip(labels, te) if not t], temperature=temperature, names=names)
        if fitted is None:
            continue
        out[te] = fitted[0].memberships(emb[te])
    return out


def group_accuracy(posterior: np.ndarray, labels: Sequence[str], names: list[str]) -> float:
    """Share of the rows of a recognised group whose most likely group is theirs."""
    rows = _rows_of(labels, names)
    known = rows >= 0
    return round(float((posterior[known].argmax(1) == rows[known]).mean()), 4) if known.any() else 0.0


def recogniser_features(emb: np.ndarray, labels: Sequence[str], keys: np.ndarray, *, temperature: float,
                        names: list[str] | None = None) -> tuple[Clusters, list[str], np.ndarray] | None:
    """The recogniser for live prompts, its groups, and the training rows' cross-fitted posteriors (None: no groups).

    Folds come from other bits of the prompt hash than the quality model's own inner folds.
    """
    fitted = fit_groups(emb, labels, temperature=temperature, names=names)
    if fitted is None:
        return None
    block, names = fitted
    folds = (np.asarray(keys, np.int64) // 11 % CROSS_FOLDS).astype(int)
    return block, names, cross_fitted(emb, labels, names, folds, temperature=temperature)
