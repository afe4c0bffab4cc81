"""Pools: round-robin and least-used (by remaining quota) over a set of models."""
from __future__ import annotations

from llm_router.catalog import Model
from llm_router.strategies.base import Context, Selection, by_price


def _pool(ctx: Context) -> list[Model]:
    """The configured pool (params.pool), else the candidates the tier allows."""
    ids = ctx.params.get("pool")
    if ids:
        by_id = {m.id: m for m in ctx.candidates}
        pool = [by_id[i] for i in ids if i in by_id]
        if pool:
            return pool
    tier = ctx.classification.tier
    return [m for m in by_price(ctx.candidates) if m.tier >= tier] or by_price(ctx.candidates)[-1:]


class RoundRobin:
    """Each request takes the next model of the pool."""

    name = "round_robin"

    def select(self, ctx: Context) -> Selection:
        pool = _pool(ctx)
        model = pool[ctx.counter % len(pool)]
        # The position in the rotation does not depend on the prompt: each member is equally likely.
        return Selection(model, f"round-robin {ctx.counter % len(pool) + 1}/{len(pool)} -> {model.id}",
                         chance=lambda mid: sum(m.id == mid for m in pool) / len(pool))


class LeastUsed:
    """The pool member with the most quota left (state the adapters update), then fewest in flight."""

    name = "least_used"

    def select(self, ctx: Context) -> Selection:
        pool = _pool(ctx)

        def key(m: Model) -> tuple[float, int, float]:
            left = ctx.state.remaining(m.id)
            return (-(1.0 if left is None else left), ctx.state.in_flight(m.id), m.blended_price)

        model = min(pool, key=key)
        left = ctx.state.remaining(model.id)
        shown = "unknown" if left is None else f"{left:.0%}"
        return Selection(model, f"least-used of {len(pool)}: {model.id} (quota left {shown}, in flight {ctx.state.in_flight(model.id)})")
