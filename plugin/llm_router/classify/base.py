"""What every classifier returns, and the protocol they share."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from llm_router.catalog import Tier
from llm_router.request import LLMRequest

CATEGORIES = ("code", "math", "reasoning", "creative", "extraction", "chat", "knowledge", "analysis")


class Evidence(Sequence[str]):
    """Evidence strings formatted on first use: most decisions never show them, and formatting costs."""

    __slots__ = ("_make", "_items")

    def __init__(self, make: Callable[[], Sequence[str]]):
        self._make: Callable[[], Sequence[str]] | None = make
        self._items: tuple[str, ...] = ()

    def _get(self) -> tuple[str, ...]:
        make = self._make
        if make is not None:
            self._items = tuple(make())
            self._make = None  # drop what the closure held (vectors, scores)
        return self._items

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index):
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        return self._get() == (tuple(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


@dataclass(slots=True, init=False)
class Classification:
    """A classifier's verdict on one request."""

    tier: Tier
    category: str
    confidence: float  # 0..1: how sure the classifier is of the tier
    score: float  # 0..1 complexity; orders prompts within and across tiers
    evidence: Sequence[str]  # short human-readable facts behind the verdict (a tuple, or Evidence built on use)
    classifier: str
    # Optional per-model probability of a good answer (learned classifier only).
    quality: tuple[tuple[str, float], ...] = ()
    label: str | None = None  # nearest archetype (semantic classifier), for semantic routing

    def __init__(self, tier: Tier, category: str, confidence: float, score: float, evidence: Sequence[str], classifier: str,
                 quality: tuple[tuple[str, float], ...] = (), label: str | None = None) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.tier = tier
        self.category = category
        self.confidence = confidence
        self.score = score
        self.evidence = evidence
        self.classifier = classifier
        self.quality = quality
        self.label = label

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
