"""Selection strategies, one module each, sharing the Strategy signature."""
from __future__ import annotations

from llm_router.strategies.base import Context, NoState, Selection, StateView, Strategy
from llm_router.strategies.capability import Capability
from llm_router.strategies.cascade import Cascade
from llm_router.strategies.cost_weighted import CostWeighted
from llm_router.strategies.hedge import Hedge
from llm_router.strategies.ladder import Ladder
from llm_router.strategies.pools import LeastUsed, RoundRobin
from llm_router.strategies.quality_gate import QualityGate
from llm_router.strategies.semantic import SemanticRoute

STRATEGIES: dict[str, type] = {
    s.name: s for s in (Ladder, QualityGate, CostWeighted, Capability, RoundRobin, LeastUsed, SemanticRoute, Cascade, Hedge)
}


def make_strategy(name: str) -> Strategy:
    """A strategy instance by config name."""
    return STRATEGIES[name]()


__all__ = ["Context", "NoState", "STRATEGIES", "Selection", "StateView", "Strategy", "make_strategy"]
