"""Hedged routing: the same request to n models at once; the first good answer, or the best by the scorer."""
from __future__ import annotations

import asyncio

from llm_router.catalog import Model
from llm_router.orchestrate.calls import Attempt, call_model, note_fallback, score_attempt, with_logprobs
from llm_router.orchestrate.cascade import unavailable
from llm_router.orchestrate.client import UpstreamClient
from llm_router.orchestrate.params import HedgeParams
from llm_router.orchestrate.reply import OrchestratedReply
from llm_router.orchestrate.respond import answer_reply, base_headers, error_reply, passthrough_reply
from llm_router.request import LLMRequest
from llm_router.runtime import Exchange, Runtime


async def run_hedge(client: UpstreamClient, runtime: Runtime, ex: Exchange, request: LLMRequest, models: tuple[Model, ...],
                    params: HedgeParams, *, deadline_s: float) -> OrchestratedReply:
    """Race the models; cancel the rest once the pick is made (cancelled calls are accounted at their estimate)."""
    scoring = params.scoring
    base = base_headers(ex)
    added = scoring.request_logprobs and with_logprobs(request)
    steps: list[str] = []
    skipped: list[str] = []
    racing: list[Model] = []
    for i, m in enumerate(models[: params.n]):
        why = unavailable(runtime, ex, m) if i > 0 else None
        if why is not None:
            skipped.append(f"{m.id}: skipped ({why})")
            steps.append(f"{m.id} skipped ({why})")
            continue
        racing.append(m)
    primary = racing[0].id
    for m in racing[1:]:
        note_fallback(runtime, ex, primary, m.id, "hedge")
    timeout = min(scoring.timeout_s, deadline_s)

    async def one(model: Model, number: int) -> Attempt:
        att = await call_model(client, runtime, ex, model, timeout_s=timeout, attempt=number)
        if att.ok:
            att.score = await score_attempt(client, runtime, ex, att, request, scoring)
        return att

    tasks = {asyncio.ensure_future(one(m, i + 1)): m for i, m in enumerate(racing)}
    done_list: list[Attempt] = []
    winner: Attempt | None = None
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # deadline: what is still running is cancelled below
            for task in done:
                att = task.result()
                done_list.append(att)
                if params.pick == "first" and att.ok and att.score.value >= scoring.floor and winner is None:
                    winner = att
            if winner is not None:
                break
    finally:
        still = [t for t in tasks if not t.done()]
        for t in still:
            t.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
    finished = {a.model.id: a for a in done_list}
    for m in racing:
        steps.append(f"{m.id} {finished[m.id].outcome()}" if m.id in finished else f"{m.id} cancelled")
    answered = [a for a in done_list if a.ok]
    if winner is None and answered:
        # pick=best, or no answer cleared the floor: the highest score; ties go to the earlier (cheaper) model
        winner = max(answered, key=lambda a: (a.score.value, -racing.index(a.model)))
    if winner is not None:
        steps.append(f"picked {winner.model.id} ({params.pick})")
        ex.call = winner.call
        return answer_reply(ex, base, winner, steps, strip_logprobs=added)
    final = [a for a in done_list if not a.retryable]
    if final and len(final) == len(done_list):
        return passthrough_reply(ex, base, final[0], steps)
    return error_reply(ex, base, done_list, steps, skipped)
