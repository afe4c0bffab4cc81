"""The signature every selection strategy shares."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from llm_router.catalog import Model
from llm_router.classify.base import Classification
from llm_router.request import LLMRequest


class StateView(Protocol):
    """What strategies may read of shared state (pools, quotas): in memory or Redis."""

    def remaining(self, model_id: str) -> float | None:
        """Share of the model's quota left (0..1), or None when unknown."""

    def in_flight(self, model_id: str) -> int:
        """Requests currently running on the model."""


class NoState:
    """State for pure use (eval, tests): everything unknown."""

    def remaining(self, model_id: str) -> float | None:
        return None

    def in_flight(self, model_id: str) -> int:
        return 0


@dataclass(slots=True)
class Context:
    """Everything a strategy may look at."""

    request: LLMRequest
    classification: Classification
    candidates: tuple[Model, ...]  # allowed, capable, healthy; ordered by ascending price
    params: dict[str, Any]  # the policy's strategy parameters
    state: StateView
    rng: random.Random
    counter: int = 0  # per-policy request counter, for round-robin
    ladder: dict[str, str] = field(default_factory=dict)  # tier name -> model id


@dataclass(slots=True)
class Selection:
    """A strategy's pick: the primary model, optionally its own chain, and why."""

    model: Model
    reason: str
    fallbacks: tuple[Model, ...] | None = None  # None: the router builds the chain
    mode: str = "fallback"
    # A randomised strategy's chance of picking a model id for this request (None: deterministic);
    # with policy `explore` on, the logged propensity is built from it. A function, so that nothing
    # is computed per request unless a policy explores.
    chance: Callable[[str], float] | None = None


class Strategy(Protocol):
    """Choose a model from the candidates; pure apart from ctx.rng."""

    name: str

    def select(self, ctx: Context) -> Selection: ...


def by_price(models: tuple[Model, ...] | list[Model]) -> list[Model]:
    """Models from cheapest to dearest (blended price), ties by quality descending."""
    return sorted(models, key=lambda m: (m.blended_price, -m.quality, m.id))


def by_capability(models: tuple[Model, ...] | list[Model]) -> list[Model]:
    """Models from least to most capable (tier, then quality, then price)."""
    return sorted(models, key=lambda m: (m.tier, m.quality, -m.blended_price, m.id))
