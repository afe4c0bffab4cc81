"""Ladder: each tier maps to a model; when that model is unavailable, climb to the next tier."""
from __future__ import annotations

from llm_router.catalog import Tier
from llm_router.strategies.base import Context, Selection, by_capability


TIER_NAMES = tuple(t.name for t in Tier)


class Ladder:
    """Tier -> model from the policy's ladder, climbing when a rung is unavailable."""

    name = "ladder"

    def select(self, ctx: Context) -> Selection:
        tier = ctx.classification.tier
        available = {m.id: m for m in ctx.candidates}
        for t in range(tier, len(TIER_NAMES)):
            mid = ctx.ladder.get(TIER_NAMES[t])
            if mid in available:
                step = "" if t == tier else f", climbed to {TIER_NAMES[t]} ({ctx.ladder.get(tier.name)} unavailable)"
                return Selection(available[mid], f"ladder {tier.name} -> {mid}{step}")
        # No rung at or above the tier is available: the least capable model that still
        # meets the tier, else the most capable one left.
        ordered = by_capability(ctx.candidates)
        meets = [m for m in ordered if m.tier >= tier]
        model = meets[0] if meets else ordered[-1]
        return Selection(model, f"ladder {tier.name}: no rung available, nearest capable model {model.id}")
