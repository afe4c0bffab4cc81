"""Capability matching: the cheapest model strong in the request's category and needs."""
from __future__ import annotations

from llm_router.strategies.base import Context, Selection, by_price

# Category -> the capability a model should list to be preferred for it.
CATEGORY_CAPABILITY = {"code": "code", "extraction": "json"}


class Capability:
    """Cheapest model at or above the tier that has the category's capability."""

    name = "capability"

    def select(self, ctx: Context) -> Selection:
        tier = ctx.classification.tier
        mapping = {**CATEGORY_CAPABILITY, **(ctx.params.get("categories") or {})}
        wanted = set(ctx.request.needs.as_capabilities())
        cap = mapping.get(ctx.classification.category)
        if cap:
            wanted.add(cap)
        if ctx.request.input_tokens > 32_000:
            wanted.add("long_context")
        ordered = by_price(ctx.candidates)
        for pool, why in (
            ([m for m in ordered if m.tier >= tier and wanted <= m.capabilities], "has"),
            ([m for m in ordered if m.tier >= tier and (wanted - {"long_context"}) <= m.capabilities], "has most of"),
            ([m for m in ordered if m.tier >= tier], "meets the tier but lacks"),
        ):
            if pool:
                model = pool[0]
                need = ",".join(sorted(wanted)) or "no special capability"
                return Selection(model, f"{ctx.classification.category}/{tier.name}: cheapest that {why} {need} -> {model.id}")
        model = max(ordered, key=lambda m: (m.tier, m.quality))
        return Selection(model, f"no model meets {tier.name}; most capable is {model.id}")
