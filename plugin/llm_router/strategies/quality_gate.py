"""Quality gate: the cheapest model whose (predicted) quality clears the bar."""
from __future__ import annotations

from llm_router.catalog import Tier
from llm_router.strategies.base import Context, Selection, by_price

# Default minimum model quality per request tier when no prediction is available.
TIER_FLOOR = {Tier.LOW: 0.0, Tier.MEDIUM: 0.82, Tier.HIGH: 0.9, Tier.CRITICAL: 0.95}


class QualityGate:
    """Cheapest candidate whose quality clears the bar.

    With a learned classifier the bar applies to each model's predicted probability of a good
    answer (params: `min_quality`, absolute, or `relative`, a share of the best prediction;
    or `tradeoff`: the best predicted quality minus tradeoff x price / the dearest price).
    Otherwise it applies to the catalog quality, with a floor per tier (params: `floors`).
    """

    name = "quality_gate"

    def select(self, ctx: Context) -> Selection:
        ordered = by_price(ctx.candidates)
        predicted = dict(ctx.classification.quality)
        if predicted:
            scored = [(m, predicted[m.id]) for m in ordered if m.id in predicted]
            if scored and ctx.params.get("tradeoff") is not None:
                # Best value: predicted quality minus tradeoff x price relative to the dearest candidate.
                t = float(ctx.params["tradeoff"])
                top = max(m.blended_price for m, _ in scored) or 1.0
                model, p = max(scored, key=lambda mp: mp[1] - t * mp[0].blended_price / top)
                return Selection(model, f"best predicted quality {p:.2f} for its price (tradeoff {t:g})")
            if scored:
                best = max(p for _, p in scored)
                bar = float(ctx.params.get("min_quality", 0.0))
                rel = ctx.params.get("relative")
                if rel is not None:
                    bar = max(bar, float(rel) * best)
                for model, p in scored:
                    if p >= bar:
                        return Selection(model, f"cheapest with predicted quality {p:.2f} >= bar {bar:.2f}")
                model, p = max(scored, key=lambda mp: mp[1])
                return Selection(model, f"no model clears bar {bar:.2f}; best predicted {p:.2f}")
        floors = {Tier[k] if isinstance(k, str) else Tier(k): float(v) for k, v in (ctx.params.get("floors") or {}).items()}
        floor = floors.get(ctx.classification.tier, TIER_FLOOR[ctx.classification.tier])
        for model in ordered:
            if model.quality >= floor:
                return Selection(model, f"{ctx.classification.tier.name} needs quality >= {floor:.2f}: cheapest is {model.id} ({model.quality:.2f})")
        model = max(ordered, key=lambda m: m.quality)
        return Selection(model, f"no model reaches quality {floor:.2f}; best is {model.id}")
