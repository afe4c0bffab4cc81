"""Cascade plans: an ordered chain of >= 3 models of rising capability, cheapest first."""
from __future__ import annotations

from llm_router.strategies.base import Context, Selection, by_capability


class Cascade:
    """params.chain: explicit model ids; else the cheapest model per capability step (at least quorum + 1 for scorer agree)."""

    name = "cascade"

    def select(self, ctx: Context) -> Selection:
        available = {m.id: m for m in ctx.candidates}
        quorum = int(ctx.params.get("quorum", 2)) if ctx.params.get("scorer") == "agree" else 0
        length = max(3, int(ctx.params.get("length", 3)), quorum + 1)  # agreement: the quorum, then one to escalate to
        chain = [available[i] for i in ctx.params.get("chain") or [] if i in available]
        if len(chain) < 2:
            ordered = by_capability(ctx.candidates)
            # One model per tier, cheapest in each tier, rising.
            per_tier: dict[int, list] = {}
            for m in ordered:
                per_tier.setdefault(int(m.tier), []).append(m)
            chain = [min(ms, key=lambda m: m.blended_price) for _, ms in sorted(per_tier.items())]
            if len(chain) < length:
                extra = [m for m in ordered if m not in chain]
                chain = sorted(chain + extra[: length - len(chain)], key=lambda m: (m.tier, m.quality))
            chain = chain[-length:] if len(chain) > length and ctx.params.get("top") else chain[:length]
        return Selection(chain[0], "cascade " + " -> ".join(m.id for m in chain), fallbacks=tuple(chain[1:]), mode="cascade")
