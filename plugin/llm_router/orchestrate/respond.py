"""Turning attempts into the client's reply: the chosen answer with its headers, or one clear error."""
from __future__ import annotations

import orjson

from llm_router.decision import RouteError
from llm_router.orchestrate.calls import Attempt
from llm_router.orchestrate.reply import OrchestratedReply
from llm_router.plan import header_safe
from llm_router.runtime import Exchange

STEPS_HEADER = "x-llm-router-steps"
# Upstream answer headers worth passing on to the client (the rest are the provider's business).
PASSED = frozenset({"content-type", "openai-processing-ms", "request-id", "x-request-id", "anthropic-version"})


def base_headers(ex: Exchange) -> list[tuple[str, str]]:
    """The decision's response headers (request id; explanation when the policy asks)."""
    call = ex.call
    headers = list(call.response_headers) if call is not None else []
    if not any(n == "x-llm-router-request-id" for n, _ in headers):
        headers.insert(0, ("x-llm-router-request-id", ex.request_id))
    return headers


def explaining(ex: Exchange) -> bool:
    return ex.policy is not None and bool(ex.policy.conf.explain)


def answer_reply(ex: Exchange, base: list[tuple[str, str]], att: Attempt, steps: list[str], *,
                 strip_logprobs: bool = False) -> OrchestratedReply:
    """The chosen model's answer, as the provider sent it (decoded), with our headers."""
    if att.call is not None:
        ex.call = att.call
    body = att.response.body
    if strip_logprobs:
        body = _without_logprobs(body)
    headers = [(n, v) for n, v in att.response.headers if n in PASSED]
    if not any(n == "content-type" for n, _ in headers):
        headers.append(("content-type", "application/json"))
    for name, value in base:
        if name == "x-llm-router-model":
            value = att.model.id
        headers.append((name, value))
    if explaining(ex):
        headers.append((STEPS_HEADER, header_safe(" -> ".join(steps), 900)))
    return OrchestratedReply(att.response.status, headers, body, att.model.id, steps)


def error_reply(ex: Exchange, base: list[tuple[str, str]], attempts: list[Attempt], steps: list[str],
                skipped: list[str]) -> OrchestratedReply:
    """No model gave an answer: 503 when all were rate limited or unavailable, else 502; OpenAI format."""
    failed = [f"{a.model.id}: {a.outcome()}" for a in attempts]
    every = failed + skipped
    limited = attempts and all(a.response.status == 429 for a in attempts)
    if not attempts or limited:
        err = RouteError(503, "no model of the chain could answer: " + "; ".join(every or ["none available"]),
                         code="no_model_available")
    else:
        err = RouteError(502, "every model of the chain failed: " + "; ".join(every), code="upstream_failed")
    headers = [("content-type", "application/json")]
    retry = [_seconds(a) for a in attempts if a.response.status == 429]
    retry = [r for r in retry if r is not None]
    if limited and retry:
        headers.append(("retry-after", f"{min(retry):g}"))
    headers += [(n, v) for n, v in base if n == "x-llm-router-request-id" or explaining(ex)
                and n != "x-llm-router-model"]
    if explaining(ex):
        headers.append((STEPS_HEADER, header_safe(" -> ".join(steps), 900)))
    return OrchestratedReply(err.status, headers, orjson.dumps(err.openai_body()), None, steps)


def passthrough_reply(ex: Exchange, base: list[tuple[str, str]], att: Attempt, steps: list[str]) -> OrchestratedReply:
    """A provider's 4xx about the request itself (bad parameter, too large): the client must fix it."""
    headers = [(n, v) for n, v in att.response.headers if n in PASSED] or [("content-type", "application/json")]
    headers += [(n, v) for n, v in base if n == "x-llm-router-request-id"]
    return OrchestratedReply(att.response.status, headers, att.response.body, att.model.id, steps)


def _seconds(att: Attempt) -> float | None:
    for name, value in att.response.headers:
        if name == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _without_logprobs(body: bytes) -> bytes:
    """The answer without the token logprobs the runner asked for on its own account."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    for choice in data.get("choices") or [] if isinstance(data, dict) else []:
        if isinstance(choice, dict) and "logprobs" in choice:
            choice["logprobs"] = None
    return orjson.dumps(data)
