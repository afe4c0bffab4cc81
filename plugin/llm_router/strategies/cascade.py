"""Cascade plans: an ordered chain of >= 3 models of rising capability, cheapest first; or, per answer kind, the kind's own chain."""
from __future__ import annotations

from llm_router.classify.answer_kind import lookup_key, policy_kind
from llm_router.strategies.base import Context, Selection, by_capability


class Cascade:
    """params.chain: explicit model ids; else the cheapest model per capability step (at least quorum + 1 for scorer agree).

    params.kinds (scorer agree): the request's answer kind, read from its prompt, picks its own chain and
    quorum; quorum 1 routes to that chain's first model alone (plain routing, the gateway's fallbacks).
    """

    name = "cascade"

    def select(self, ctx: Context) -> Selection:
        available = {m.id: m for m in ctx.candidates}
        kinds = ctx.params.get("kinds")
        if kinds and ctx.params.get("scorer") == "agree":
            kind = policy_kind(ctx.request.prompt)
            key = lookup_key(kinds, kind)
            if key is not None:
                found = self._for_kind(kind, key, kinds[key], available)
                if found is not None:
                    return found
        return self._plain(ctx, available)

    @staticmethod
    def _for_kind(kind: str, key: str, entry: dict, available: dict) -> Selection | None:
        chain = [available[i] for i in entry["chain"] if i in available]
        if not chain:
            return None  # none of the kind's models can serve now: the plain chain
        label = f"kind {kind}" if key == kind else f"kind {kind} (as {key})"
        if int(entry.get("quorum", 2)) == 1:
            return Selection(chain[0], f"{label}: {chain[0].id} alone (quorum 1)",
                             fallbacks=tuple(chain[1:]) if len(chain) > 1 else None)
        return Selection(chain[0], f"{label}: cascade " + " -> ".join(m.id for m in chain),
                         fallbacks=tuple(chain[1:]), mode="cascade")

    @staticmethod
    def _plain(ctx: Context, available: dict) -> Selection:
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
