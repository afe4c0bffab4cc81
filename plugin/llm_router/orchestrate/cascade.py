"""Walk a decision's chain: escalate on a failed call, and (cascade) on an answer scored below the floor."""
from __future__ import annotations

import asyncio

from llm_router.catalog import Model
from llm_router.orchestrate.calls import Attempt, call_model, note_fallback, score_attempt, with_logprobs
from llm_router.orchestrate.client import UpstreamClient
from llm_router.orchestrate.params import ScoringParams
from llm_router.orchestrate.reply import OrchestratedReply
from llm_router.orchestrate.respond import answer_reply, base_headers, error_reply, passthrough_reply
from llm_router.plan import fallback_reason
from llm_router.request import LLMRequest
from llm_router.runtime import Exchange, Runtime


def unavailable(runtime: Runtime, ex: Exchange, model: Model) -> str | None:
    """Why a later model of the chain must be skipped now (open breaker, no key, spent budget), or None."""
    if model.id in runtime.health.excluded():
        return "circuit open"
    if model.id in runtime.keyless:
        return "no credential"
    limits = runtime.limits
    if limits is not None and limits.rules and ex.decision is not None:
        d = ex.decision
        over = limits.check(model=model.id, route=ex.route, consumer=ex.extra.get("consumer"),
                            estimate_usd=model.cost(d.input_tokens, d.expected_output_tokens))
        if over is not None:
            return "over budget"
    return None


async def run_chain(client: UpstreamClient, runtime: Runtime, ex: Exchange, request: LLMRequest, chain: tuple[Model, ...],
                    *, scoring: ScoringParams | None, deadline_s: float, fallback_timeout_s: float = 30.0, first_attempt: int = 1,
                    previous: str | None = None, prior: list[str] | None = None,
                    previous_status: int | None = None) -> OrchestratedReply:
    """Try the chain in order; with scoring, an answer below the floor escalates too.

    The best answer seen is returned when none reaches the floor; an error only when no model
    answered at all. `previous`/`prior`/`previous_status`: a failed attempt made before (APISIX post-resp fallback).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    base = base_headers(ex)
    added = scoring is not None and scoring.request_logprobs and with_logprobs(request)
    steps: list[str] = list(prior or [])
    failed: list[Attempt] = []
    skipped: list[str] = []
    best: Attempt | None = None
    reason = fallback_reason(previous_status)
    number = first_attempt
    for i, model in enumerate(chain):
        if i > 0 or previous is not None:
            why = unavailable(runtime, ex, model)
            if why is not None:
                skipped.append(f"{model.id}: skipped ({why})")
                steps.append(f"{model.id} skipped ({why})")
                continue
        left = end - loop.time()
        if left <= 0.05:
            skipped.append(f"{model.id}: not tried (deadline of {deadline_s:g}s reached)")
            break
        if previous is not None:
            note_fallback(runtime, ex, previous, model.id, reason)
        timeout = min(scoring.timeout_s if scoring else fallback_timeout_s, left)
        att = await call_model(client, runtime, ex, model, timeout_s=timeout, attempt=number)
        number += 1
        previous = model.id
        if not att.ok:
            steps.append(f"{model.id} {att.outcome()}")
            if not att.retryable:
                return passthrough_reply(ex, base, att, steps)
            failed.append(att)
            reason = fallback_reason(att.response.status)
            continue
        if scoring is None:
            steps.append(f"{model.id} {att.response.status}")
            return answer_reply(ex, base, att, steps)
        att.score = await score_attempt(client, runtime, ex, att, request, scoring)
        good = att.score.value >= scoring.floor
        steps.append(f"{model.id} {att.score.value:.2f}{'>=' if good else '<'}{scoring.floor:g} ({att.score.reason})")
        if good:
            return answer_reply(ex, base, att, steps, strip_logprobs=added)
        if best is None or att.score.value > best.score.value:
            best = att
        reason = "low_score"
    if best is not None:
        steps.append(f"no answer reached {scoring.floor:g}: best is {best.model.id}")
        return answer_reply(ex, base, best, steps, strip_logprobs=added)
    return error_reply(ex, base, failed, steps, skipped)
