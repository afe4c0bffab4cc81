"""One upstream call of an orchestration: plan, send, account (health, spend, metrics, log), score."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from llm_router.accounting import SSEUsage, Usage, usage_from_json
from llm_router.catalog import Model
from llm_router.orchestrate.client import Response, UpstreamClient
from llm_router.orchestrate.params import ScoringParams
from llm_router.orchestrate.scorers import Score, combined, read_answer
from llm_router.plan import FALLBACK_4XX, UpstreamCall, plan_call
from llm_router.request import LLMRequest, parse_request
from llm_router.runtime import Exchange, Runtime

RETRYABLE_4XX = FALLBACK_4XX  # after these (and 5xx, no answer) the next model is tried; other 4xx: the request is bad
CANCELLED = 499  # nginx's "client closed request": the orchestration cancelled the call


@dataclass(slots=True)
class Attempt:
    """One model's call and what came of it."""

    model: Model
    call: UpstreamCall | None
    response: Response
    score: Score | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.response.status < 300

    @property
    def retryable(self) -> bool:
        s = self.response.status
        return s == 0 or s >= 500 or s in RETRYABLE_4XX

    def outcome(self) -> str:
        """Short, header-safe: '200 score 0.42 (reason)' or '503' or 'timeout after 30s'."""
        r = self.response
        if r.status == 0:
            return r.error or "no response"
        if self.score is not None:
            return f"{r.status} score {self.score.value:.2f} ({self.score.reason})"
        return str(r.status)


def with_logprobs(request: LLMRequest) -> bool:
    """Ask a chat request for token logprobs (when the client did not); True when added."""
    if request.api != "chat" or "logprobs" in request.body:
        return False
    request.body["logprobs"] = True
    return True


def usage_of(resp: Response) -> Usage | None:
    """Token usage of a whole answer: JSON, or an SSE stream read to its end (a streamed fallback)."""
    if not resp.body:
        return None
    if any(n == "content-type" and "event-stream" in v for n, v in resp.headers):
        sse = SSEUsage()
        sse.feed(resp.body)
        sse.finish()
        return sse.usage
    return usage_from_json(resp.body)


def account(runtime: Runtime, ex: Exchange, call: UpstreamCall, status: int, usage: Usage | None, latency_s: float,
            headers: list[tuple[str, str]] | None, attempt: int) -> None:
    """Report one finished call as this exchange's call (health, spend limits, metrics, decision log)."""
    ex.call = call
    ex.attempt = attempt
    runtime.on_response(ex, status, usage, latency_s, headers)


def note_fallback(runtime: Runtime, ex: Exchange, from_model: str, to_model: str, reason: str) -> None:
    """Count an escalation, fallback or hedge branch (metrics; in-flight for health)."""
    telemetry = getattr(runtime, "telemetry", None)
    if telemetry is not None:
        telemetry.on_fallback(ex, from_model, to_model, reason)


async def call_model(client: UpstreamClient, runtime: Runtime, ex: Exchange, model: Model, *, timeout_s: float,
                     attempt: int) -> Attempt:
    """Plan and send one model's call; account it when it finishes or is cancelled."""
    call = runtime.attempt(ex, model.id)
    if call is None:
        return Attempt(model, None, Response(0, error="no call could be planned for this model"))
    try:
        resp = await client.send(call, timeout_s=timeout_s, request_id=ex.request_id)
    except asyncio.CancelledError:
        # A cancelled call may still be billed: account the estimate (prompt + expected output).
        d = ex.decision
        est = Usage(d.input_tokens, d.expected_output_tokens) if d is not None else None
        account(runtime, ex, call, CANCELLED, est, 0.0, None, attempt)
        raise
    account(runtime, ex, call, resp.status, usage_of(resp), resp.latency_s, resp.headers, attempt)
    return Attempt(model, call, resp)


async def score_attempt(client: UpstreamClient, runtime: Runtime, ex: Exchange, att: Attempt, request: LLMRequest,
                        scoring: ScoringParams) -> Score:
    """Score an answer with the policy's scorer (the judge makes its own accounted call)."""
    answer = read_answer(request.api, att.response.body)
    if answer is None:
        return Score(0.0, "the answer is not a well-formed completion", "verify")
    base = combined(answer, request.body, request.prompt, "auto" if scoring.scorer == "judge" else scoring.scorer)
    if scoring.scorer != "judge" or base.value < scoring.floor:
        return base
    judged = await judge(client, runtime, ex, request.prompt, answer.text, scoring)
    return judged if judged is not None else Score(base.value, f"judge gave no score; {base.reason}", base.source)


JUDGE_SYSTEM = ("You grade an assistant's answer to a user's request. Reply with one integer from 1 (useless or wrong) "
                "to 10 (correct and complete), and nothing else.")


async def judge(client: UpstreamClient, runtime: Runtime, ex: Exchange, prompt: str, answer: str,
                scoring: ScoringParams) -> Score | None:
    """Ask the judge model for a 1-10 grade; its call is accounted like any other."""
    model = runtime.catalog.models.get(scoring.judge or "")
    if model is None or not runtime.catalog.serves(model, "chat"):
        return None
    body = orjson.dumps({"model": model.name, "max_tokens": 5, "temperature": 0, "messages": [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Request:\n{prompt[:6000]}\n\nAnswer:\n{answer[:6000]}\n\nGrade (1-10):"}]})
    req = parse_request(body, "chat")
    call = plan_call(req, model, runtime.catalog, runtime.credentials, route_header=runtime.route_header)
    resp = await client.send(call, timeout_s=scoring.timeout_s, request_id=ex.request_id)
    saved = ex.call
    account(runtime, ex, call, resp.status, usage_from_json(resp.body) if resp.body else None, resp.latency_s,
            resp.headers, ex.attempt)
    ex.call = saved
    if not 200 <= resp.status < 300:
        return None
    got = read_answer("chat", resp.body)
    digits = "".join(ch if ch.isdigit() else " " for ch in (got.text if got else "")).split()
    if not digits or not 1 <= int(digits[0]) <= 10:
        return None
    grade = int(digits[0])
    return Score((grade - 1) / 9, f"judge {model.id} graded {grade}/10", "judge")
