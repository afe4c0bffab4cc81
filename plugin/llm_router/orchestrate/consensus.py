"""Agreement cascade: the chain's first `quorum` models answer at once; an answer they all share is returned,
else the next models are asked one at a time until `quorum` answers agree; the last model's answer stands.

A failed call (5xx, 429, timeout, unreachable) is a missing vote: the cascade escalates past it, so a
surviving cheap answer can still be confirmed by the next model. Every call is accounted as it ends.
"""
from __future__ import annotations

import asyncio

from llm_router.catalog import Model
from llm_router.classify.answer_kind import policy_kind
from llm_router.orchestrate.agreement import final_answer, settle
from llm_router.orchestrate.calls import Attempt, call_model, note_fallback
from llm_router.orchestrate.cascade import unavailable
from llm_router.orchestrate.client import UpstreamClient
from llm_router.orchestrate.params import CascadeParams
from llm_router.orchestrate.reply import OrchestratedReply
from llm_router.orchestrate.respond import answer_reply, base_headers, error_reply, passthrough_reply
from llm_router.orchestrate.scorers import Score, read_answer
from llm_router.request import LLMRequest
from llm_router.runtime import Exchange, Runtime

_SHOWN = 16


def _final(att: Attempt, request: LLMRequest) -> str | None:
    answer = read_answer(request.api, att.response.body) if att.ok else None
    return final_answer(answer.text, request.prompt) if answer is not None else None


def _label(value: str | None) -> str:
    if value is None:
        return "no final answer"
    return "answer " + repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


async def run_agreement(client: UpstreamClient, runtime: Runtime, ex: Exchange, request: LLMRequest,
                        chain: tuple[Model, ...], params: CascadeParams, *, deadline_s: float) -> OrchestratedReply:
    """Ask the quorum at once, then escalate one model at a time until `quorum` final answers agree."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    scoring = params.scoring
    base = base_headers(ex)
    steps: list[str] = []
    skipped: list[str] = []
    models: list[Model] = []
    for i, m in enumerate(chain):
        why = unavailable(runtime, ex, m) if i > 0 else None
        if why is not None:
            skipped.append(f"{m.id}: skipped ({why})")
            steps.append(f"{m.id} skipped ({why})")
        else:
            models.append(m)
    wanted, kind = kind_quorum(params, request, chain)
    # Fewer usable models than the quorum + 1: ask them all at once and settle for what they share.
    quorum = min(wanted, max(1, len(models) - 1)) if len(models) > 1 else 1
    first, rest = models[:quorum], models[quorum:]
    steps.append(f"{kind} answers; quorum {quorum}")
    for m in first[1:]:
        note_fallback(runtime, ex, first[0].id, m.id, "agree")
    timeout = min(scoring.timeout_s, max(0.05, end - loop.time()))
    attempts = list(await asyncio.gather(*(call_model(client, runtime, ex, m, timeout_s=timeout, attempt=i + 1)
                                           for i, m in enumerate(first))))
    finals: list[str | None] = []
    for att in attempts:
        if not att.ok and not att.retryable:
            steps.append(f"{att.model.id} {att.outcome()}")
            return passthrough_reply(ex, base, att, steps)
        finals.append(_final(att, request))
        _note(att, finals[-1], steps)
    number = len(attempts) + 1
    previous = attempts[-1].model.id
    while True:
        won = settle(finals, quorum)
        if won is not None:
            winner = attempts[won]
            winner.score = Score(1.0, f"{quorum} agree", "agree")
            steps.append(f"{quorum} agree on {_label(finals[won]).removeprefix('answer ')}: {winner.model.id}")
            return answer_reply(ex, base, winner, steps)
        if not rest:
            if attempts[-1].ok and len(attempts) > quorum:
                steps.append(f"no quorum before the last model: {attempts[-1].model.id}'s answer stands")
                return answer_reply(ex, base, attempts[-1], steps)
            break
        left = end - loop.time()
        if left <= 0.05:
            skipped.append(f"{rest[0].id}: not tried (deadline of {deadline_s:g}s reached)")
            break
        model = rest.pop(0)
        note_fallback(runtime, ex, previous, model.id, "disagree")
        att = await call_model(client, runtime, ex, model, timeout_s=min(scoring.timeout_s, left), attempt=number)
        number += 1
        previous = model.id
        if not att.ok and not att.retryable:
            steps.append(f"{model.id} {att.outcome()}")
            return passthrough_reply(ex, base, att, steps)
        attempts.append(att)
        finals.append(_final(att, request))
        _note(att, finals[-1], steps)
    answered = [a for a in attempts if a.ok]
    if answered:
        # The last model failed too: the answer most models share, ties to the cheaper (earlier) one.
        votes = {f: finals.count(f) for f in finals if f is not None}
        pick = max(range(len(attempts)), key=lambda i: (attempts[i].ok, votes.get(finals[i], 0) if finals[i] else 0, -i))
        steps.append(f"no quorum and the last model failed: best available is {attempts[pick].model.id}")
        return answer_reply(ex, base, attempts[pick], steps)
    return error_reply(ex, base, attempts, steps, skipped)


def kind_quorum(params: CascadeParams, request: LLMRequest, chain: tuple[Model, ...]) -> tuple[int, str]:
    """The quorum for this request, and its kind as shown in the steps.

    Recomputed from the prompt with the function the strategy used to pick the chain (policy_kind),
    so no field has to carry it through the Decision. The kind's quorum applies only when the chain
    is the kind's own (the strategy falls back to the plain chain when none of the kind's models can serve).
    """
    kind = policy_kind(request.prompt)
    kc = params.for_kind(kind)
    if kc is not None and kc.quorum > 1 and {m.id for m in chain} <= set(kc.chain):
        return kc.quorum, kind
    return params.quorum, kind


def _note(att: Attempt, final: str | None, steps: list[str]) -> None:
    if att.ok:
        steps.append(f"{att.model.id} {att.response.status} {_label(final)}")
    else:
        steps.append(f"{att.model.id} {att.outcome()}")
