"""Operating points of the learned router: the quality-for-price trade-off, swept and picked.

`choose` is the vectorised twin of quality_gate's `tradeoff` rule (best p - t * price / dearest
price, ties to the cheapest); eval checks both give the same models.

A target that falls between two measured points is met by a blend of them: a fixed share of
requests, drawn by a hash of the prompt (so a prompt always gets the same rule), uses the
dearer point's trade-off. Where the predictions barely vary within a task the points are far
apart, and the cheapest single point reaching a target can overshoot it by a lot.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from llm_router.strategies.quality_gate import blend_draw  # noqa: F401 (the live rule's draw, for the twin)

TRADEOFFS = tuple([0.0] + np.geomspace(1e-3, 3.0, 160).tolist())
TARGETS = (0.95, 1.00)
MARGINS = (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03)  # added to a target when its blend is picked
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Point:
    """One operating point measured on some rows."""

    tradeoff: float
    quality: float
    cost_per_1k: float


@dataclass(frozen=True, slots=True)
class Blend:
    """Trade-off `tradeoff` for most requests and `other` for a `share` of them (0: a single point)."""

    tradeoff: float
    other: float
    share: float
    quality: float
    cost_per_1k: float

    @classmethod
    def single(cls, point: Point) -> "Blend":
        """One operating point on its own."""
        return cls(point.tradeoff, point.tradeoff, 0.0, point.quality, point.cost_per_1k)

    def params(self) -> dict:
        """quality_gate params that run this blend."""
        if self.share <= 0.0:
            return {"tradeoff": self.tradeoff}
        return {"tradeoff": self.tradeoff, "blend": {"tradeoff": self.other, "share": round(self.share, 6)}}


def utility(p: np.ndarray, prices: np.ndarray, tradeoff: float) -> np.ndarray:
    """(rows, models) value of each model under the trade-off rule: quality minus tradeoff x price / the dearest price."""
    return p - tradeoff * prices[None, :] / (float(prices.max()) or 1.0)


def choose(p: np.ndarray, prices: np.ndarray, tradeoff: float) -> np.ndarray:
    """Model index per row under the trade-off rule; ties go to the cheaper model."""
    order = np.argsort(prices, kind="stable")
    return order[utility(p[:, order], prices[order], tradeoff).argmax(1)]


def choose_blend(p: np.ndarray, prices: np.ndarray, tradeoff: float, other: float, share: float,
                 draws: np.ndarray) -> np.ndarray:
    """`choose` under a blend: rows whose draw is below `share` use trade-off `other`."""
    out = choose(p, prices, tradeoff)
    if share > 0.0:
        dear = draws < share
        out[dear] = choose(p[dear], prices, other)
    return out


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


def highest(points: list[Point]) -> Point:
    """The highest-quality point (the cheaper of equals): what a target no point reaches gets."""
    return max(points, key=lambda x: (x.quality, -x.cost_per_1k))


def cheapest_blend(points: list[Point], quality: float) -> Blend | None:
    """The cheapest mix of at most two points whose expected quality is at least `quality` (None when none is)."""
    front = pareto(points)
    best: Blend | None = None
    for i, a in enumerate(front):
        if a.quality >= quality - 1e-12:
            if best is None or a.cost_per_1k < best.cost_per_1k:
                best = Blend.single(a)
            continue
        for b in front[i + 1:]:
            if b.quality < quality - 1e-12:
                continue
            share = (quality - a.quality) / (b.quality - a.quality)
            cost = a.cost_per_1k + share * (b.cost_per_1k - a.cost_per_1k)
            if best is None or cost < best.cost_per_1k - 1e-12:
                best = (Blend.single(b) if share >= 1.0 - 1e-9
                        else Blend(a.tradeoff, b.tradeoff, share, quality, cost))
    return best


def pick_blends(points: list[Point], best_quality: float, targets: tuple[float, ...] = TARGETS,
                margins: dict[float, float] | None = None) -> dict[float, Blend]:
    """The cheapest blend per target: a share of the best single model's quality, raised by the target's
    margin (the highest-quality point when no blend reaches it)."""
    out = {}
    for frac in targets:
        found = cheapest_blend(points, (frac + (margins or {}).get(frac, 0.0)) * best_quality)
        out[frac] = found or Blend.single(highest(points))
    return out


def pick(points: list[Point], best_quality: float, targets: tuple[float, ...] = TARGETS) -> dict[float, float]:
    """Trade-off per target share of the best single model's quality (the highest-quality point when none reaches it)."""
    out = {}
    for frac in targets:
        found = cheapest_reaching(points, frac * best_quality)
        out[frac] = (found or highest(points)).tradeoff
    return out


@dataclass(frozen=True, slots=True)
class HeldOut:
    """A rule's margin and what it delivered on inner held-out rows: mean quality and cost per row, and whether it reached."""

    margin: float
    quality: float
    cost: float
    reached: bool


def blends_held_out(p: np.ndarray, prices: np.ndarray, scores: np.ndarray, costs: np.ndarray, inner: np.ndarray,
                    draws: np.ndarray, best: int, targets: tuple[float, ...] = TARGETS) -> dict[float, HeldOut]:
    """Per target, the smallest margin that still reaches it on rows the blend was not picked on, and what it delivered there.

    A blend picked to just reach a target on the rows it was picked on falls a little short on new
    rows (the points that look cheapest are partly lucky). Per inner fold, blends are picked on the
    other folds' out-of-fold predictions with each margin and applied to this fold's rows; the
    margin is the smallest whose pooled quality reaches the target. Its pooled quality and cost
    are returned with it, so another rule can be compared on the same rows.
    """
    n = len(p)
    got = {(f, m): (np.zeros(n), np.zeros(n)) for f in targets for m in MARGINS}
    for g in np.unique(inner):
        te, tr = np.nonzero(inner == g)[0], np.nonzero(inner != g)[0]
        points = curve(p[tr], prices, scores[tr], costs[tr])
        picked = {m: pick_blends(points, float(scores[tr, best].mean()), targets, {f: m for f in targets}) for m in MARGINS}
        for m, blends in picked.items():
            for f, b in blends.items():
                choice = choose_blend(p[te], prices, b.tradeoff, b.other, b.share, draws[te])
                q, c = got[(f, m)]
                q[te], c[te] = scores[te, choice], costs[te, choice]
    need = float(scores[:, best].mean())
    return {f: first_reaching(got, f, f * need) for f in targets}


def first_reaching(got: dict[tuple[float, float], tuple[np.ndarray, np.ndarray]], frac: float, quality_needed: float) -> HeldOut:
    """The smallest margin whose pooled held-out quality (got[(frac, margin)]: quality, cost per row) reaches
    `quality_needed` (else the largest), with what it delivered."""
    m = next((m for m in MARGINS if got[(frac, m)][0].mean() >= quality_needed - 1e-12), MARGINS[-1])
    q, c = got[(frac, m)]
    return HeldOut(m, float(q.mean()), float(c.mean()), bool(q.mean() >= quality_needed - 1e-12))
