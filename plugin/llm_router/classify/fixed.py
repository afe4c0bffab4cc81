"""No classification: the same verdict for every request, for policies that route by strategy alone.

Round-robin and least-used pools, a fixed cascade chain or hedge set, or a capability match need no
view of the prompt's difficulty; `classifier: none` skips the work (and its microseconds). The
verdict's tier still limits pools without an explicit `pool` to models of that tier or above.
"""
from __future__ import annotations

from llm_router.catalog import Tier
from llm_router.classify.base import Classification
from llm_router.request import LLMRequest

EVIDENCE = ("no classifier: the policy routes by its strategy alone",)


class FixedClassifier:
    """Every request gets `tier`, category chat, confidence 0."""

    name = "none"

    def __init__(self, tier: Tier = Tier.MEDIUM):
        self.tier = tier

    def classify(self, request: LLMRequest) -> Classification:
        """The fixed verdict (a new value each time: strategies may keep it)."""
        return Classification(tier=self.tier, category="chat", confidence=0.0, score=0.5, evidence=EVIDENCE, classifier=self.name)
