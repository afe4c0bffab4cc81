"""Semantic routing: the nearest archetype (from the semantic classifier) picks the model."""
from __future__ import annotations

from llm_router.strategies.base import Context, Selection
from llm_router.strategies.ladder import Ladder


class SemanticRoute:
    """params.map: archetype or category -> model id; unmapped requests use the ladder."""

    name = "semantic"

    def select(self, ctx: Context) -> Selection:
        mapping = ctx.params.get("map") or {}
        available = {m.id: m for m in ctx.candidates}
        c = ctx.classification
        for label in (c.label, c.category):
            mid = mapping.get(label) if label else None
            if mid in available:
                return Selection(available[mid], f"nearest archetype {label!r} -> {mid}")
        picked = Ladder().select(ctx)
        return Selection(picked.model, f"no archetype mapping for {c.label or c.category!r}; {picked.reason}")
