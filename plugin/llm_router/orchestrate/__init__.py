"""The runner's own upstream calls: cascade on confidence, hedged routing, runner-side fallback.

Both adapters call `orchestrate()` for a non-streaming request whose decision's mode is
"cascade" or "hedge" (see `wants_orchestration`), and answer the client with the reply.
Streaming requests are not orchestrated: they take plain routing with the decision's chain.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from llm_router.orchestrate.reply import OrchestratedReply

if TYPE_CHECKING:
    from llm_router.decision import Decision
    from llm_router.orchestrate.engine import Orchestrator
    from llm_router.request import LLMRequest
    from llm_router.runtime import Exchange, Runtime

ORCHESTRATED_MODES = frozenset({"cascade", "hedge"})


def wants_orchestration(ex: "Exchange") -> bool:
    """Whether a decided exchange is answered by orchestrate() rather than by plain routing."""
    d = ex.decision
    return d is not None and d.mode in ORCHESTRATED_MODES and ex.request is not None and not ex.request.stream


def orchestrator_for(runtime: "Runtime") -> "Orchestrator":
    """The runtime's orchestrator (settings checked, one pooled HTTP client), made on first use."""
    from llm_router.orchestrate.engine import attach

    return attach(runtime)


async def orchestrate(runtime: "Runtime", ex: "Exchange", request: "LLMRequest", decision: "Decision") -> OrchestratedReply:
    """Answer one request by cascade or hedge (per decision.mode); every call made is accounted.

    Never raises (but on cancellation): a failure becomes a 502/503 reply in OpenAI's error format.
    Adapters must not report the reply to Runtime.on_response again.
    """
    return await orchestrator_for(runtime).run(ex, request, decision)


async def fallback(runtime: "Runtime", ex: "Exchange", *, failed_status: int, failed_model: str) -> OrchestratedReply:
    """Runner-side fallback after the gateway's own call to `failed_model` answered `failed_status`:
    the rest of the decision's chain, by the runner (APISIX ext-plugin-post-resp)."""
    return await orchestrator_for(runtime).fallback(ex, failed_status=failed_status, failed_model=failed_model)


__all__ = ["ORCHESTRATED_MODES", "OrchestratedReply", "fallback", "orchestrate", "orchestrator_for", "wants_orchestration"]
