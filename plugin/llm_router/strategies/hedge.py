"""Hedge plans: n models asked at once (the orchestrator races them); cheapest first, other providers preferred."""
from __future__ import annotations

from llm_router.strategies.base import Context, Selection, by_price


class Hedge:
    """params.models: explicit model ids; else the n cheapest that meet the tier, one per provider first."""

    name = "hedge"

    def select(self, ctx: Context) -> Selection:
        n = max(2, int(ctx.params.get("n", 2)))
        available = {m.id: m for m in ctx.candidates}
        chosen = [available[i] for i in ctx.params.get("models") or [] if i in available][:n]
        if len(chosen) < 2:
            ordered = by_price(ctx.candidates)
            tier = ctx.classification.tier
            meets = [m for m in ordered if m.tier >= tier] or ordered[-1:]
            chosen, providers = [], set()
            for m in meets:  # one per provider: a hedge against one provider's bad minute
                if m.provider not in providers:
                    chosen.append(m)
                    providers.add(m.provider)
            for m in meets + ordered:
                if m not in chosen:
                    chosen.append(m)
            chosen = chosen[:n]
        pick = ctx.params.get("pick", "first")
        return Selection(chosen[0], f"hedge ({pick}) over " + ", ".join(m.id for m in chosen),
                         fallbacks=tuple(chosen[1:]), mode="hedge")
