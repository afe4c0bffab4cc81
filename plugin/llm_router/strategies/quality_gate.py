"""Quality gate: the cheapest model whose (predicted) quality clears the bar."""
from __future__ import annotations

import zlib

from llm_router.catalog import Model, Tier
from llm_router.strategies.base import Context, Selection, by_price

# Default minimum model quality per request tier when no prediction is available.
TIER_FLOOR = {Tier.LOW: 0.0, Tier.MEDIUM: 0.82, Tier.HIGH: 0.9, Tier.CRITICAL: 0.95}


def blend_draw(prompt: str) -> float:
    """A prompt's fixed position in [0, 1) for blends: the same prompt always lands on the same side."""
    return zlib.crc32(prompt.encode("utf-8", "replace")) / 4294967296.0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def param_problems(params) -> list[str]:
    """Problems with quality_gate params, each naming the field ('params.blend.share: ...')."""
    out = []
    for key in ("tradeoff", "min_quality", "relative"):
        v = params.get(key)
        if v is not None and (not _number(v) or v < 0):
            out.append(f"params.{key}: must be a number >= 0, got {v!r}")
    out += mix_problems(params.get("mix"))
    blend = params.get("blend")
    if blend is None:
        return out
    if not isinstance(blend, dict):
        return out + [f"params.blend: must be a mapping with tradeoff and share, got {type(blend).__name__}"]
    if params.get("tradeoff") is None:
        out.append("params.blend: needs params.tradeoff (the rule for the prompts outside the blend's share)")
    unknown = sorted(set(blend) - {"tradeoff", "share"})
    if unknown:
        out.append(f"params.blend: unknown field(s) {unknown} (known: ['share', 'tradeoff'])")
    t, share = blend.get("tradeoff"), blend.get("share")
    if not _number(t) or t < 0:
        out.append(f"params.blend.tradeoff: must be a number >= 0, got {t!r}")
    if not _number(share) or not 0.0 <= share <= 1.0:
        out.append(f"params.blend.share: must be a number from 0 to 1, got {share!r}")
    return out


def mix_problems(mix) -> list[str]:
    """Problems with params.mix (task -> {model id: share}), each naming the field."""
    if mix is None:
        return []
    if not isinstance(mix, dict) or not mix:
        return [f"params.mix: must be a non-empty mapping task -> {{model: share}}, got {mix!r}"]
    out = []
    for task, shares in mix.items():
        where = f"params.mix.{task}"
        if not isinstance(shares, dict) or not shares:
            out.append(f"{where}: must be a non-empty mapping model -> share, got {shares!r}")
            continue
        bad = [m for m, v in shares.items() if not _number(v) or v < 0]
        if bad:
            out.append(f"{where}.{bad[0]}: must be a number >= 0, got {shares[bad[0]]!r}")
        elif not sum(shares.values()) > 0:
            out.append(f"{where}: the shares add up to 0 (at least one must be positive)")
    return out


def mix_pick(mix: dict, task: str | None, ordered: list[Model], prompt: str) -> tuple[Model, float] | None:
    """The model a task's mix draws for this prompt among the candidates, with its share; None when it cannot."""
    shares = mix.get(task) if task is not None else None
    if not shares:
        return None
    usable = [(m, float(shares[m.id])) for m in ordered if float(shares.get(m.id, 0.0)) > 0.0]
    if not usable:
        return None
    total = sum(s for _, s in usable)
    u = blend_draw(prompt) * total
    for model, share in usable:
        u -= share
        if u < 0.0:
            return model, share / total
    return usable[-1][0], usable[-1][1] / total


class QualityGate:
    """Cheapest candidate whose quality clears the bar.

    With a learned classifier the bar applies to each model's predicted probability of a good
    answer (params: `min_quality`, absolute, or `relative`, a share of the best prediction;
    or `tradeoff`: the best predicted quality minus tradeoff x price / the dearest price, optionally
    with `blend: {tradeoff, share}`: that share of prompts, drawn by a hash of the prompt, uses the
    blend's trade-off instead; `llm-router train` prints the blend that meets each target).
    `mix: {task: {model: share}}` (from `llm-router train`, for the learned classifier's recognised
    task, its label): a prompt of a task in the mix gets a model drawn from that task's shares by a
    hash of the prompt, among the candidates; any other prompt goes by the rules above.
    Otherwise it applies to the catalog quality, with a floor per tier (params: `floors`).
    """

    name = "quality_gate"

    def select(self, ctx: Context) -> Selection:
        ordered = by_price(ctx.candidates)
        mix = ctx.params.get("mix")
        if mix:
            found = mix_pick(mix, ctx.classification.label, ordered, ctx.request.prompt)
            if found is not None:
                return Selection(found[0], f"task {ctx.classification.label}: its mix sends {found[1]:.0%} of its prompts here")
        predicted = dict(ctx.classification.quality)
        if predicted:
            scored = [(m, predicted[m.id]) for m in ordered if m.id in predicted]
            if scored and ctx.params.get("tradeoff") is not None:
                # Best value: predicted quality minus tradeoff x price relative to the dearest candidate.
                t = float(ctx.params["tradeoff"])
                blend = ctx.params.get("blend")
                blended = bool(blend) and blend_draw(ctx.request.prompt) < float(blend["share"])
                if blended:
                    t = float(blend["tradeoff"])
                top = max(m.blended_price for m, _ in scored) or 1.0
                model, p = max(scored, key=lambda mp: mp[1] - t * mp[0].blended_price / top)
                return Selection(model, f"best predicted quality {p:.2f} for its price (tradeoff {t:g}"
                                        f"{', the blend share' if blended else ''})")
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
