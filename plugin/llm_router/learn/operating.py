"""Operating points of the learned router: the quality-for-price trade-off, swept and picked.

`choose` is the vectorised twin of quality_gate's `tradeoff` rule (best p - t * price / dearest
price, ties to the cheapest); eval checks both give the same models.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

TRADEOFFS = tuple([0.0] + np.geomspace(1e-3, 3.0, 160).tolist())
TARGETS = (0.95, 1.00)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Point:
    """One operating point measured on some rows."""

    tradeoff: float
    quality: float
    cost_per_1k: float


def utility(p: np.ndarray, prices: np.ndarray, tradeoff: float) -> np.ndarray:
    """(rows, models) value of each model under the trade-off rule: quality minus tradeoff x price / the dearest price."""
    return p - tradeoff * prices[None, :] / (float(prices.max()) or 1.0)


def choose(p: np.ndarray, prices: np.ndarray, tradeoff: float) -> np.ndarray:
    """Model index per row under the trade-off rule; ties go to the cheaper model."""
    order = np.argsort(prices, kind="stable")
    return order[utility(p[:, order], prices[order], tradeoff).argmax(1)]


def measure(choice: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> tuple[float, float]:
    """(quality, cost per 1K queries in USD) of a choice per row."""
    rows = np.arange(len(choice))
    return float(scores[rows, choice].mean()), float(costs[rows, choice].mean() * 1000)


def curve(p: np.ndarray, prices: np.ndarray, scores: np.ndarray, costs: np.ndarray,
          tradeoffs: tuple[float, ...] = TRADEOFFS) -> list[Point]:
    """The operating point for every trade-off value."""
    return [Point(t, *measure(choose(p, prices, t), scores, costs)) for t in tradeoffs]


def logged_quality(p: np.ndarray, choice: np.ndarray, served: np.ndarray, outcome: np.ndarray,
                   propensity: np.ndarray) -> tuple[float, float]:
    """Doubly robust estimate of the mean quality of `choice` from logs holding one outcome per row.

    p: predicted quality (n, models), out-of-fold where observed; served/outcome: the model that
    answered each row (-1: a model that cannot be chosen) and its score; propensity: per row, the
    chance its answering model was picked for it. The prediction is corrected by the observed error wherever the
    logged model is the one chosen, which undoes the optimism of picking by noisy predictions.
    Returns the estimate and its standard error.
    """
    rows = np.arange(len(choice))
    hit = choice == served
    terms = p[rows, choice] + hit * (outcome - p[rows, served]) / propensity
    return float(terms.mean()), float(terms.std() / np.sqrt(max(1, len(terms))))


def logged_curve(p: np.ndarray, prices: np.ndarray, served: np.ndarray, outcome: np.ndarray, propensity: np.ndarray,
                 z: float = 0.0, tradeoffs: tuple[float, ...] = TRADEOFFS) -> list[Point]:
    """`curve` for logged traffic: doubly robust quality minus z standard errors, each model's mean price as its cost.

    With z > 0 a point counts only the quality the logs vouch for, so a target is reached with
    margin where the logs hold few outcomes of the cheaper models.
    """
    out = []
    for t in tradeoffs:
        c = choose(p, prices, t)
        q, se = logged_quality(p, c, served, outcome, propensity)
        out.append(Point(t, q - z * se, float(prices[c].mean() * 1000)))
    return out


def frontier_of(items: Iterable[T], cost: Callable[[T], float], quality: Callable[[T], float], eps: float = 1e-12) -> list[T]:
    """Items no other item beats on both cost and quality, by ascending cost."""
    out: list[T] = []
    for it in sorted(items, key=lambda x: (cost(x), -quality(x))):
        if not out or quality(it) > quality(out[-1]) + eps:
            out.append(it)
    return out


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats on both cost and quality, by ascending cost."""
    return frontier_of(points, lambda p: p.cost_per_1k, lambda p: p.quality)


def cheapest_reaching(points: list[Point], quality: float) -> Point | None:
    """The cheapest point whose quality is at least `quality` (None when none is)."""
    ok = [pt for pt in points if pt.quality >= quality - 1e-12]
    return min(ok, key=lambda x: (x.cost_per_1k, -x.quality)) if ok else None


def pick(points: list[Point], best_quality: float, targets: tuple[float, ...] = TARGETS) -> dict[float, float]:
    """Trade-off per target share of the best single model's quality (the highest-quality point when none reaches it)."""
    out = {}
    for frac in targets:
        found = cheapest_reaching(points, frac * best_quality)
        out[frac] = (found or max(points, key=lambda x: (x.quality, -x.cost_per_1k))).tradeoff
    return out
