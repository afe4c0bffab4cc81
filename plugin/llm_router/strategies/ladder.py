"""Ladder: each tier maps to a model; an unavailable rung is replaced by the cheapest model that meets the tier."""
from __future__ import annotations

from llm_router.catalog import TIER_NAMES
from llm_router.strategies.base import Context, Selection, by_capability, by_price


class Ladder:
    """Tier -> model from the policy's ladder.

    When the rung's model is out of selection (open breaker, spent budget, missing capability),
    the cheapest available model rated for the tier or above takes its place -- not the next
    rung, which is usually far dearer (with DeepSeek down, a LOW request should not jump to the
    HIGH rung's model when a MEDIUM model is cheaper).
    """

    name = "ladder"

    def select(self, ctx: Context) -> Selection:
        tier = ctx.classification.tier
        name = TIER_NAMES[tier]
        wanted = ctx.ladder.get(name)
        for model in ctx.candidates:
            if model.id == wanted:
                return Selection(model, f"ladder {name} -> {wanted}")
        meets = [m for m in by_price(ctx.candidates) if m.tier >= tier]
        if meets:
            model = meets[0]
            why = f"{wanted} unavailable" if wanted else "no rung"
            return Selection(model, f"ladder {tier.name}: {why}; cheapest rated {tier.name} or above is {model.id}")
        model = by_capability(ctx.candidates)[-1]
        return Selection(model, f"ladder {tier.name}: no model rated {tier.name} available; most capable is {model.id}")
