"""Cost-weighted: random among the models the tier allows, weighted by 1/price."""
from __future__ import annotations

from llm_router.strategies.base import Context, Selection, by_price


class CostWeighted:
    """Random choice weighted by 1/price (params: `power` sharpens the preference)."""

    name = "cost_weighted"

    def select(self, ctx: Context) -> Selection:
        tier = ctx.classification.tier
        allowed = [m for m in by_price(ctx.candidates) if m.tier >= tier] or by_price(ctx.candidates)[-1:]
        power = float(ctx.params.get("power", 1.0))
        weights = [1.0 / max(m.blended_price, 1e-6) ** power for m in allowed]
        total = sum(weights)
        x = ctx.rng.random() * total
        for model, w in zip(allowed, weights):
            x -= w
            if x <= 0:
                break
        share = w / total
        return Selection(model, f"cost-weighted among {len(allowed)} models allowed for {tier.name}: {model.id} (p={share:.2f})",
                         chance=lambda mid: sum(wm for m, wm in zip(allowed, weights) if m.id == mid) / total)
