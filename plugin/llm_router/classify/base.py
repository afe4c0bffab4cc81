"""What every classifier returns, and the protocol they share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from llm_router.catalog import Tier
from llm_router.request import LLMRequest

CATEGORIES = ("code", "math", "reasoning", "creative", "extraction", "chat", "knowledge", "analysis")


@dataclass(slots=True)
class Classification:
    """A classifier's verdict on one request."""

    tier: Tier
    category: str
    confidence: float  # 0..1: how sure the classifier is of the tier
    score: float  # 0..1 complexity; orders prompts within and across tiers
    evidence: tuple[str, ...]  # short human-readable facts behind the verdict
    classifier: str
    # Optional per-model probability of a good answer (learned classifier only).
    quality: tuple[tuple[str, float], ...] = ()
    label: str | None = None  # nearest archetype (semantic classifier), for semantic routing

    def describe(self) -> str:
        """One line: tier, category, confidence and the strongest evidence."""
        ev = "; ".join(self.evidence[:3])
        return f"{self.classifier}: {self.tier.name} {self.category} (conf {self.confidence:.2f}, score {self.score:.2f}){': ' + ev if ev else ''}"


class Classifier(Protocol):
    """Anything that turns a request into a Classification, without I/O."""

    name: str

    def classify(self, request: LLMRequest) -> Classification: ...


def tier_for_score(score: float, cuts: tuple[float, ...]) -> Tier:
    """Map a 0..1 complexity score to a tier with three ascending cut points."""
    if score < cuts[0]:
        return Tier.LOW
    if score < cuts[1]:
        return Tier.MEDIUM
    if score < cuts[2]:
        return Tier.HIGH
    return Tier.CRITICAL
