"""Fake LLM providers: OpenAI-compatible and Anthropic APIs with realistic JSON and SSE.

Each fake checks the credential it expects (401 in its provider's error format otherwise),
records what it received, and can be told to be slow, fail, or rate-limit, in patterns: always,
the first N requests, a share of them, or mid-answer (the connection cut after K chunks). What each provider refuses
is in refusals.py, the bodies it answers with in shapes.py.
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import gzip
import random
import re
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from llm_router.catalog import MODEL_PLACEHOLDER
from llm_router.fakes.answers import Answer, make_answer, split_text
from llm_router.fakes.http import Reply, Request
from llm_router.fakes.refusals import (GEMINI_3, GEMINI_THOUGHTS, GPT_THOUGHTS, REASONING_MODEL, SINGLE_CHOICE_CHAT,
                                       STATELESS_RESPONSES, STRICT_FIELDS, Ask, Refusal, api_error, google_error,
                                       reasoning_effort, refusal)
from llm_router.fakes.shapes import (FAKE_THOUGHT, anthropic_input, anthropic_json, input_items, openai_json, openai_usage,
                                     prompt_text, reasoning_text, response_object, thinking_signature)
from llm_router.forward import api_root, forward_path
from llm_router.request import estimate_tokens

CONTROL_PREFIX = "/_fake/"
AZURE_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": {
    kind: {"filtered": False, "severity": "safe"} for kind in ("hate", "self_harm", "sexual", "violence")}}]
LIMIT_STYLES = ("openai", "anthropic", "retry-after")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a fake answers; change it at run time with FakeProviders.set_behaviour()."""

    first_byte_ms: float = 0.0  # delay before the response starts
    chunk_ms: float = 0.0  # delay between SSE events
    chunks: int = 8  # content pieces in a streamed answer
    error_rate: float = 0.0  # share of requests answered with a 500
    rate_limit_rate: float = 0.0  # share of requests answered with a 429
    status: int | None = None  # answer every request with this status (429, 500, 503, ...)
    retry_after_s: float = 1.0  # retry-after on 429s
    quality: dict[str, float] = field(default_factory=dict)  # model name -> share of good answers
    default_quality: float = 0.9
    output_tokens: int | None = None  # fixed completion length (default: derived from the prompt)
    models: tuple[str, ...] | None = None  # model names it serves (None: any)
    requests_limit: int = 10_000  # advertised in the rate-limit headers (x-ratelimit-limit-requests, ...)
    tokens_limit: int = 2_000_000
    gzip: bool = False  # compress JSON answers when the client accepts gzip
    gzip_stream: bool = False  # compress SSE answers too (as some CDNs in front of providers do), flushed per event
    texts: dict[str, str] = field(default_factory=dict)  # model name -> fixed answer text (refusals, JSON, ...)
    fail_first: int = 0  # the next N requests (counted from when this is set) are answered with fail_status
    fail_status: int = 503
    break_after_chunks: int | None = None  # cut the connection after K content chunks (JSON: half the body)
    disconnect: bool = False  # close the connection without answering (a reset before the response)
    cached_share: float = 0.0  # share of prompt tokens reported as read from the prompt cache
    cache_write_share: float = 0.0  # share reported as written to it (of what was not read)
    rate_limited_keys: tuple[str, ...] = ()  # other keys of the account, whose quota is spent: answered 429

    def merged(self, **changes: Any) -> "Behaviour":
        """A copy with some fields changed; unknown names raise TypeError naming them."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise TypeError(f"unknown behaviour fields {bad}; known: {sorted(known)}")
        if "models" in changes and changes["models"] is not None:
            changes["models"] = tuple(changes["models"])
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as a fake received it."""

    provider: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # wall clock seconds
    http_version: str = "1.1"

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["body"] = self.body.decode("utf-8", "replace")
        return d


def fake_key(provider: str) -> str:
    """The credential a fake provider expects."""
    return f"fake-{provider}-key"


class FakeProvider:
    """One provider: its APIs (paths by request API), auth style and expected key."""

    def __init__(self, name: str, *, paths: dict[str, str], auth: str = "bearer", key: str | None = None,
                 behaviour: Behaviour | None = None, seed: int = 0, max_records: int = 10_000, limits: str | None = None,
                 max_output: dict[str, int] | None = None):
        self.name = name
        self.auth = auth
        # Rate-limit headers in this provider's own dialect (see llm_router.ratelimits): Anthropic's (its
        # x-api-key auth) on every API it serves, Gemini only retry-after on 429s, everyone else OpenAI's,
        # also on a Messages API it offers (DeepSeek's).
        self.limits = limits or ("anthropic" if auth == "x-api-key" else "retry-after" if auth == "x-goog-api-key" else "openai")
        if self.limits not in LIMIT_STYLES:
            raise ValueError(f"limits must be one of {LIMIT_STYLES}, got {limits!r}")
        self.key = key if key is not None else fake_key(name)
        self.strict = STRICT_FIELDS.get(name, {})  # API -> the only fields it accepts
        self.max_output = max_output or {}  # model name -> the largest max_tokens it accepts (400 above)
        # Paths may name the model ({model}, as Azure's deployments do) and require query parameters
        # (api-version): a request without them gets a 404, as Azure answers.
        self.routes: dict[str, str] = {}  # exact path -> API
        self.templates: list[tuple[re.Pattern[str], str]] = []  # path with the model in it -> API
        self.required: dict[str, tuple[str, ...]] = {}  # API -> query parameters it needs
        for api, path in paths.items():
            bare, _, query = path.partition("?")
            self.required[api] = tuple(k for k, _ in parse_qsl(query, keep_blank_values=True))
            if MODEL_PLACEHOLDER in bare:
                pattern = re.escape(bare).replace(re.escape(MODEL_PLACEHOLDER), "(?P<model>[^/]+)") + "$"
                self.templates.append((re.compile(pattern), api))
            else:
                self.routes[bare] = api
        self.responses_path = paths["responses"].partition("?")[0] if "responses" in paths else None
        # OpenAI's other APIs (embeddings, moderations, audio, images) under the same root as its chat path
        self.root = api_root(paths)
        self.count_path = paths["messages"].partition("?")[0].rstrip("/") + "/count_tokens" if "messages" in paths else None
        self.stored: dict[str, dict[str, Any]] = {}  # response id -> the response and its input items, as OpenAI keeps them
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}  # Batch API: file id -> (file object, content)
        self.batches: dict[str, dict[str, Any]] = {}  # batch id -> batch object
        self.behaviour = behaviour or Behaviour()
        self.records: list[Recorded] = []
        self.max_records = max_records
        self.port = 0
        self._rng = random.Random(seed)
        self._used = 0
        self._failed = 0  # requests answered with fail_status under the current fail_first

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Answer by this behaviour from now on (a fail_first count starts again)."""
        self.behaviour = behaviour
        self._failed = 0

    # ---- request handling -------------------------------------------------------------

    async def handle(self, req: Request, resp: Reply) -> None:
        path = req.path.split("?", 1)[0]
        if path.startswith(CONTROL_PREFIX):
            await self._control(req, resp, path[len(CONTROL_PREFIX):])
            return
        status = await self._answer(req, resp, path)
        self._record(req, status)

    def _record(self, req: Request, status: int) -> None:
        if len(self.records) >= self.max_records:
            del self.records[: self.max_records // 2]
        self.records.append(Recorded(self.name, req.method, req.path, dict(req.headers), req.body, status, time.time(),
                                     req.version))

    def _route(self, path: str) -> tuple[str | None, str | None]:
        """The API a path serves and the model it names (None when the body names it)."""
        api = self.routes.get(path)
        if api is None:
            for pattern, name in self.templates:
                m = pattern.match(path)
                if m:
                    return name, unquote(m.group("model"))
        return api, None

    async def _answer(self, req: Request, resp: Reply, path: str) -> int:
        api, deployment = self._route(path)
        anthropic = api == "messages"
        if api is not None and self.required[api]:
            given = {k for k, _ in parse_qsl(req.path.partition("?")[2], keep_blank_values=True)}
            if any(k not in given for k in self.required[api]):
                await resp.send(404, [("content-type", "application/json")],
                                orjson.dumps({"error": {"code": "404", "message": "Resource not found"}}))
                return 404
        if api is None and self.responses_path and path.startswith(self.responses_path + "/"):
            return await self._stored_call(req, resp, path[len(self.responses_path) + 1:])
        if api is None and path == self.count_path:
            return await self._count_tokens(req, resp)
        if api is None and self.root is not None and path.startswith(self.root + "/"):
            found = forward_path(path)
            if found is not None and path == self.root + found.tail:
                if found.api in ("files", "batches"):
                    return await self._batch_api(req, resp, found.api, found.tail)
                return await self._unrouted_api(req, resp, found.api, found.tail)
        if api is None:
            return await self._error(resp, 404, f"unknown path {path}", "not_found_error" if anthropic else "invalid_request_error",
                                     anthropic, code="unknown_url")
        if req.method != "POST":
            return await self._error(resp, 405, f"{req.method} is not allowed on {path}", "invalid_request_error", anthropic)
        b = self.behaviour
        if b.rate_limited_keys and self._presented(req.headers) in b.rate_limited_keys:
            return await self._rate_limited(resp, anthropic)
        if not self._authorized(req.headers):
            return await self._auth_error(resp, anthropic)
        if b.first_byte_ms:
            await asyncio.sleep(b.first_byte_ms / 1000)
        if b.disconnect:
            resp.abort()
            return 0
        forced = b.status
        if forced is None and self._failed < b.fail_first:
            self._failed += 1
            forced = b.fail_status
        if forced is None:
            roll = self._rng.random()
            if roll < b.rate_limit_rate:
                forced = 429
            elif roll < b.rate_limit_rate + b.error_rate:
                forced = 500
        if forced == 429:
            return await self._rate_limited(resp, anthropic)
        if forced is not None and forced >= 400:
            kind = "overloaded_error" if anthropic else "server_error"
            return await self._error(resp, forced, f"the fake {self.name} provider failed ({forced})", kind, anthropic)
        try:
            data = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return await self._error(resp, 400, "could not parse the JSON body", "invalid_request_error", anthropic)
        if not isinstance(data, dict):
            return await self._error(resp, 400, "body must be a JSON object", "invalid_request_error", anthropic)
        ask = Ask.read(api, deployment, data)
        refused = refusal(self.name, api, ask, data, req.body, strict=self.strict.get(api), models=b.models,
                          max_output=self.max_output)
        if refused is not None:
            return await self._refuse(resp, refused)
        model: str = ask.model
        max_tokens, choices, thinking = ask.max_tokens, ask.choices, ask.thinking
        thinks = ask.deepseek_thinks(self.name, api)
        single = api == "chat" and self.name in SINGLE_CHOICE_CHAT
        prompt = prompt_text(data, api)
        answer = make_answer(model, prompt, max_tokens=max_tokens if isinstance(max_tokens, int) else None,
                             quality=b.quality.get(model, b.default_quality), output_tokens=b.output_tokens)
        if model in b.texts:
            answer = replace(answer, text=b.texts[model])
        if self.name == "google" and GEMINI_3.match(model) and isinstance(max_tokens, int) and max_tokens < GEMINI_THOUGHTS:
            # Gemini 3 thinks before it answers and its thoughts count against the limit: a small one is used up by them
            answer = replace(answer, text="", output_tokens=max_tokens, finish="length")
        if self.name == "openai" and model.startswith("gpt-") and REASONING_MODEL.match(model) and reasoning_effort(data, api) != "none":
            # GPT-5 and later reason first (at medium unless told), within the output limit: a small one is used up by it
            if isinstance(max_tokens, int) and max_tokens <= GPT_THOUGHTS:
                answer = replace(answer, text="", output_tokens=max_tokens, reasoning_tokens=max_tokens, finish="length")
            else:
                thought = GPT_THOUGHTS if not isinstance(max_tokens, int) else min(GPT_THOUGHTS, max_tokens - answer.output_tokens)
                answer = replace(answer, output_tokens=answer.output_tokens + max(0, thought), reasoning_tokens=max(0, thought))
        if b.cached_share > 0:
            answer = replace(answer, cached_tokens=int(answer.input_tokens * min(1.0, b.cached_share)))
        if b.cache_write_share > 0:
            fresh = answer.input_tokens - answer.cached_tokens
            answer = replace(answer, cache_write_tokens=int(fresh * min(1.0, b.cache_write_share)))
        headers = self._limit_headers(answer) + [("x-fake-provider", self.name), ("x-fake-quality", "good" if answer.good else "weak")]
        stream = data.get("stream") is True
        # A model asked to think answers with a thinking block first, signed for this model only (by Anthropic; DeepSeek's
        # Anthropic endpoint signs nothing: "" stands for its unsigned block).
        signed = (("" if self.name == "deepseek" else thinking_signature(model))
                  if anthropic and isinstance(thinking, dict) and thinking.get("type") == "enabled" else None)
        if stream:
            if b.gzip_stream and "gzip" in req.headers.get("accept-encoding", ""):
                resp = GzipStream(resp)
            if anthropic:
                await self._anthropic_stream(resp, model, answer, headers, signed)
            elif api == "responses":
                await self._responses_stream(resp, model, answer, headers, data)
            else:
                opts = data.get("stream_options")
                usage = isinstance(opts, dict) and opts.get("include_usage") is True
                await self._openai_stream(resp, model, answer, headers, api, usage, reasoning=thinks)
            return 200
        if api == "responses":
            payload = orjson.dumps(self._keep(response_object(model, answer, data, f"resp_{uuid.uuid4().hex[:24]}"), data))
        else:
            payload = (anthropic_json(model, answer, signed) if anthropic
                       else openai_json(model, answer, api, logprobs=data.get("logprobs") is True and not single,
                                        provider=self.name, choices=choices, reasoning=thinks))
        headers = [("content-type", "application/json"), *headers]
        if b.gzip and "gzip" in req.headers.get("accept-encoding", ""):
            payload = gzip.compress(payload)
            headers.append(("content-encoding", "gzip"))
        if b.break_after_chunks is not None:
            await resp.send_part(200, headers, payload, len(payload) // 2)
            return 200
        await resp.send(200, headers, payload)
        return 200

    def _authorized(self, headers: dict[str, str]) -> bool:
        return self.auth == "none" or self._presented(headers) == self.key

    def _presented(self, headers: dict[str, str]) -> str:
        """The key a request carries in this provider's auth style."""
        if self.auth == "bearer":
            value = headers.get("authorization", "")
            return value[len("Bearer "):] if value.startswith("Bearer ") else ""
        return headers.get(self.auth, "")

    def _limit_headers(self, answer: Answer | None) -> list[tuple[str, str]]:
        b = self.behaviour
        self._used += 1
        return self._limits(max(0, b.requests_limit - self._used), max(0, b.tokens_limit - (answer.output_tokens if answer else 0)),
                            reset_s=1.0)

    def _limits(self, requests_left: int, tokens_left: int, *, reset_s: float) -> list[tuple[str, str]]:
        """The quota headers this provider sends with every answer."""
        b = self.behaviour
        if self.limits == "openai":
            reset = f"{reset_s:g}s"
            return [("x-ratelimit-limit-requests", str(b.requests_limit)), ("x-ratelimit-remaining-requests", str(requests_left)),
                    ("x-ratelimit-reset-requests", reset), ("x-ratelimit-limit-tokens", str(b.tokens_limit)),
                    ("x-ratelimit-remaining-tokens", str(tokens_left)), ("x-ratelimit-reset-tokens", reset)]
        if self.limits == "anthropic":
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + reset_s))
            out = [("anthropic-ratelimit-requests-limit", str(b.requests_limit)),
                   ("anthropic-ratelimit-requests-remaining", str(requests_left)), ("anthropic-ratelimit-requests-reset", at)]
            for window in ("tokens", "input-tokens", "output-tokens"):
                out += [(f"anthropic-ratelimit-{window}-limit", str(b.tokens_limit)),
                        (f"anthropic-ratelimit-{window}-remaining", str(tokens_left)), (f"anthropic-ratelimit-{window}-reset", at)]
            return out
        return []

    async def _error(self, resp: Reply, status: int, message: str, kind: str, anthropic: bool, *,
                     param: str | None = None, code: str | None = None, headers: list[tuple[str, str]] = ()) -> int:
        return await self._refuse(resp, api_error(status, message, kind, anthropic, param=param, code=code), headers)

    async def _google_error(self, resp: Reply, status: int, message: str, kind: str) -> int:
        return await self._refuse(resp, google_error(status, message, kind))

    async def _refuse(self, resp: Reply, refused: Refusal, headers: list[tuple[str, str]] = ()) -> int:
        """Send a provider's error answer; its status."""
        tag = [("x-fake-provider", self.name)] if refused.tagged else []
        await resp.send(refused.status, [("content-type", "application/json"), *tag, *headers], orjson.dumps(refused.body))
        return refused.status

    async def _auth_error(self, resp: Reply, anthropic: bool) -> int:
        if anthropic:
            return await self._error(resp, 401, "invalid x-api-key", "authentication_error", True)
        return await self._error(resp, 401, "Incorrect API key provided. You can find your API key in your account settings.",
                                 "invalid_request_error", False, code="invalid_api_key")

    async def _rate_limited(self, resp: Reply, anthropic: bool) -> int:
        b = self.behaviour
        headers = [("retry-after", f"{b.retry_after_s:g}"), *self._limits(0, 0, reset_s=b.retry_after_s)]
        if anthropic:
            return await self._error(resp, 429, "Number of requests has exceeded your rate limit.", "rate_limit_error", True,
                                     headers=headers)
        return await self._error(resp, 429, f"Rate limit reached for requests on the fake {self.name} provider.",
                                 "requests", False, code="rate_limit_exceeded", headers=headers)

    async def _pace(self, resp: Reply, chunk: int) -> bool:
        """Before content chunk `chunk`: wait the per-chunk delay; False (connection cut) past break_after_chunks."""
        b = self.behaviour
        if b.break_after_chunks is not None and chunk >= b.break_after_chunks:
            resp.abort()
            return False
        if b.chunk_ms:
            await asyncio.sleep(b.chunk_ms / 1000)
        return True

    async def _openai_stream(self, resp: Reply, model: str, answer: Answer, headers: list[tuple[str, str]], api: str,
                             usage: bool, *, reasoning: bool = False) -> None:
        b = self.behaviour
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}" if api == "chat" else f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        await resp.start(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers])

        def event(choices: list, **extra: Any) -> bytes:
            obj = {"id": cid, "object": "chat.completion.chunk" if api == "chat" else "text_completion", "created": created,
                   "model": model, "system_fingerprint": "fp_fake", "choices": choices, **extra}
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        if api == "chat" and self.auth == "api-key":
            # Azure opens with a chunk of no choices, no id and no model: its prompt's content-filter results
            await resp.write(b"data: " + orjson.dumps({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                                                       "prompt_filter_results": AZURE_FILTER_RESULTS}) + b"\n\n")
        if api == "chat":
            await resp.write(event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]))
        if reasoning:  # DeepSeek streams its thinking first, as reasoning_content deltas
            for piece in split_text(reasoning_text(model, answer), 2):
                await resp.write(event([{"index": 0, "delta": {"content": None, "reasoning_content": piece}, "logprobs": None,
                                         "finish_reason": None}]))
        for i, piece in enumerate(split_text(answer.text, b.chunks)):
            if not await self._pace(resp, i):
                return
            choice = ({"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None} if api == "chat"
                      else {"index": 0, "text": piece, "logprobs": None, "finish_reason": None})
            await resp.write(event([choice]))
        last = ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish} if api == "chat"
                else {"index": 0, "text": "", "logprobs": None, "finish_reason": answer.finish})
        if self.strict:  # usage rides on the finishing chunk, asked for or not (as Mistral sends it)
            await resp.write(event([last], usage=openai_usage(answer, self.name)))
        else:
            await resp.write(event([last]))
        if usage and not self.strict:
            await resp.write(event([], usage=openai_usage(answer, self.name)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.end()

    async def _anthropic_stream(self, resp: Reply, model: str, answer: Answer, headers: list[tuple[str, str]],
                                signed: str | None = None) -> None:
        b = self.behaviour
        mid = f"msg_{uuid.uuid4().hex[:24]}"
        await resp.start(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers])

        async def event(name: str, obj: dict) -> None:
            await resp.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n")

        await event("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {**anthropic_input(answer), "output_tokens": 1}}})
        at = 0
        if signed is not None:  # thinking first, its signature in one signature_delta at its end (as Anthropic sends it)
            await event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                "type": "thinking", "thinking": "", **({"signature": ""} if signed else {})}})
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "thinking_delta", "thinking": FAKE_THOUGHT}})
            if signed:
                await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "signature_delta", "signature": signed}})
            await event("content_block_stop", {"type": "content_block_stop", "index": 0})
            at = 1
        await event("content_block_start", {"type": "content_block_start", "index": at, "content_block": {"type": "text", "text": ""}})
        await event("ping", {"type": "ping"})
        for i, piece in enumerate(split_text(answer.text, b.chunks)):
            if not await self._pace(resp, i):
                return
            await event("content_block_delta", {"type": "content_block_delta", "index": at,
                                                "delta": {"type": "text_delta", "text": piece}})
        await event("content_block_stop", {"type": "content_block_stop", "index": at})
        await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                      "usage": {"output_tokens": answer.output_tokens}})
        await event("message_stop", {"type": "message_stop"})
        await resp.end()

    async def _responses_stream(self, resp: Reply, model: str, answer: Answer, headers: list[tuple[str, str]],
                                data: dict[str, Any]) -> None:
        """OpenAI Responses streaming: typed events, usage in the closing response.completed (no [DONE])."""
        b = self.behaviour
        rid, mid = f"resp_{uuid.uuid4().hex[:24]}", f"msg_{uuid.uuid4().hex[:24]}"
        await resp.start(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers])
        seq = 0

        async def event(name: str, **fields: Any) -> None:
            nonlocal seq
            await resp.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, "sequence_number": seq, **fields})
                             + b"\n\n")
            seq += 1

        opening = response_object(model, answer, data, rid, status="in_progress")
        await event("response.created", response=opening)
        await event("response.in_progress", response=opening)
        item = {"id": mid, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        await event("response.output_item.added", output_index=0, item=item)
        at = {"item_id": mid, "output_index": 0, "content_index": 0}
        await event("response.content_part.added", **at, part={"type": "output_text", "text": "", "annotations": []})
        for i, piece in enumerate(split_text(answer.text, b.chunks)):
            if not await self._pace(resp, i):
                return
            await event("response.output_text.delta", **at, delta=piece, logprobs=[])
        part = {"type": "output_text", "text": answer.text, "annotations": []}
        await event("response.output_text.done", **at, text=answer.text, logprobs=[])
        await event("response.content_part.done", **at, part=part)
        await event("response.output_item.done", output_index=0, item={**item, "status": "completed", "content": [part]})
        await event("response.completed", response=self._keep(response_object(model, answer, data, rid), data))
        await resp.end()

    # ---- stored responses (OpenAI keeps answers unless store is false) -----------------

    def _keep(self, obj: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Store a finished response with its input items, as OpenAI does (bounded); returns it."""
        if data.get("store", True) is not False and self.name not in STATELESS_RESPONSES:
            if len(self.stored) >= self.max_records:
                del self.stored[next(iter(self.stored))]
            self.stored[obj["id"]] = {"response": obj, "input": input_items(data.get("input")),
                                      "background": data.get("background") is True}
        return obj

    async def _stored_call(self, req: Request, resp: Reply, rest: str) -> int:
        """GET/DELETE <responses>/{id}, POST {id}/cancel, GET {id}/input_items, with OpenAI's errors."""
        if not self._authorized(req.headers):
            return await self._auth_error(resp, False)
        rid, _, what = rest.partition("/")
        kept = self.stored.get(rid)
        allowed = {"": ("GET", "DELETE"), "cancel": ("POST",), "input_items": ("GET",)}.get(what)
        if allowed is None:
            return await self._error(resp, 404, f"unknown path {req.path.split('?', 1)[0]}", "invalid_request_error", False,
                                     code="unknown_url")
        if req.method not in allowed:
            return await self._error(resp, 405, f"{req.method} is not allowed here", "invalid_request_error", False)
        if kept is None:
            return await self._error(resp, 404, f"Response with id '{rid}' not found.", "invalid_request_error", False)
        if what == "" and req.method == "DELETE":
            del self.stored[rid]
            body: Any = {"id": rid, "object": "response", "deleted": True}
        elif what == "cancel":
            if not kept["background"]:
                return await self._error(resp, 400, "Only responses created with background=true can be cancelled.",
                                         "invalid_request_error", False)
            body = kept["response"]
        elif what == "input_items":
            items = kept["input"]
            body = {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                    "last_id": items[-1]["id"] if items else None, "has_more": False}
        else:
            body = kept["response"]
        await resp.send(200, [("content-type", "application/json"), ("x-fake-provider", self.name)], orjson.dumps(body))
        return 200

    async def _unrouted_api(self, req: Request, resp: Reply, api: str, tail: str) -> int:
        """OpenAI's embeddings, moderations, audio and images APIs, answered in their JSON formats."""
        if req.method != "POST":
            return await self._error(resp, 405, f"{req.method} is not allowed here", "invalid_request_error", False)
        if not self._authorized(req.headers):
            return await self._auth_error(resp, False)
        data: Any = {}
        if "json" in req.headers.get("content-type", ""):
            try:
                data = orjson.loads(req.body)
            except orjson.JSONDecodeError:
                return await self._error(resp, 400, "could not parse the JSON body", "invalid_request_error", False)
        model = data.get("model", "") if isinstance(data, dict) else ""
        if api == "embeddings":
            inputs = data.get("input") if isinstance(data, dict) else None
            texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else None
            if not texts:
                return await self._error(resp, 400, "'input' is required", "invalid_request_error", False, param="input")
            tokens = sum(estimate_tokens(t) if isinstance(t, str) else 1 for t in texts)
            rng = random.Random(str(texts))
            body: Any = {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                         "data": [{"object": "embedding", "index": i, "embedding": [round(rng.uniform(-1, 1), 6) for _ in range(8)]}
                                  for i in range(len(texts))]}
        elif api == "moderations":
            body = {"id": f"modr-{uuid.uuid4().hex[:24]}", "model": model or "omni-moderation-latest",
                    "results": [{"flagged": False, "categories": {}, "category_scores": {}}]}
        elif tail == "/audio/transcriptions" or tail == "/audio/translations":
            body = {"text": f"(a fake transcript of {len(req.body)} bytes)"}
        elif api == "images":
            body = {"created": int(time.time()), "data": [{"url": f"https://images.example/{uuid.uuid4().hex[:12]}.png"}]}
        else:  # audio/speech: bytes of audio
            await resp.send(200, [("content-type", "audio/mpeg"), ("x-fake-provider", self.name)], b"ID3" + bytes(61))
            return 200
        await resp.send(200, [("content-type", "application/json"), ("x-fake-provider", self.name)], orjson.dumps(body))
        return 200

    async def _batch_api(self, req: Request, resp: Reply, api: str, tail: str) -> int:
        """OpenAI's Batch API as far as a client drives it: upload a JSONL file, create a batch naming it, read
        both back, cancel the batch, download a file's content."""
        if not self._authorized(req.headers):
            return await self._auth_error(resp, False)
        parts = tail.strip("/").split("/")
        found = self.files if api == "files" else self.batches
        kind = "File" if api == "files" else "Batch"
        if len(parts) > 1 and parts[1] not in found:
            return await self._error(resp, 404, f"No such {kind} object: {parts[1]}", "invalid_request_error", False, param="id")
        json_type = [("content-type", "application/json"), ("x-fake-provider", self.name)]
        if len(parts) == 1 and req.method == "GET":
            items = [f[0] for f in self.files.values()] if api == "files" else list(self.batches.values())
            await resp.send(200, json_type, orjson.dumps({"object": "list", "data": items, "has_more": False}))
            return 200
        if api == "files" and len(parts) == 1 and req.method == "POST":
            form = _multipart(req)
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, tuple):
                return await self._error(resp, 400, "'file' is a required property", "invalid_request_error", False, param="file")
            obj = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(upload[1]), "created_at": int(time.time()),
                   "filename": upload[0], "purpose": purpose if isinstance(purpose, str) else "", "status": "processed"}
            self.files[obj["id"]] = (obj, upload[1])
            await resp.send(200, json_type, orjson.dumps(obj))
            return 200
        if api == "files" and len(parts) == 2 and req.method == "GET":
            await resp.send(200, json_type, orjson.dumps(self.files[parts[1]][0]))
            return 200
        if api == "files" and len(parts) == 3 and parts[2] == "content" and req.method == "GET":
            await resp.send(200, [("content-type", "application/octet-stream"), ("x-fake-provider", self.name)],
                            self.files[parts[1]][1])
            return 200
        if api == "batches" and len(parts) == 1 and req.method == "POST":
            try:
                data = orjson.loads(req.body)
            except orjson.JSONDecodeError:
                return await self._error(resp, 400, "could not parse the JSON body", "invalid_request_error", False)
            file_id = data.get("input_file_id") if isinstance(data, dict) else None
            if file_id not in self.files:
                return await self._error(resp, 400, f"No such File object: {file_id}", "invalid_request_error", False,
                                         param="input_file_id")
            obj = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": data.get("endpoint"), "errors": None,
                   "input_file_id": file_id, "completion_window": data.get("completion_window", "24h"), "status": "validating",
                   "output_file_id": None, "created_at": int(time.time()),
                   "request_counts": {"total": 0, "completed": 0, "failed": 0}}
            self.batches[obj["id"]] = obj
            await resp.send(200, json_type, orjson.dumps(obj))
            return 200
        if api == "batches" and len(parts) == 2 and req.method == "GET":
            await resp.send(200, json_type, orjson.dumps(self.batches[parts[1]]))
            return 200
        if api == "batches" and len(parts) == 3 and parts[2] == "cancel" and req.method == "POST":
            self.batches[parts[1]]["status"] = "cancelling"
            await resp.send(200, json_type, orjson.dumps(self.batches[parts[1]]))
            return 200
        return await self._error(resp, 405, f"{req.method} is not allowed on {tail}", "invalid_request_error", False)

    async def _count_tokens(self, req: Request, resp: Reply) -> int:
        """Anthropic's POST /v1/messages/count_tokens: {"input_tokens": N} for a messages body (no max_tokens needed)."""
        if req.method != "POST":
            return await self._error(resp, 405, f"{req.method} is not allowed here", "invalid_request_error", True)
        if not self._authorized(req.headers):
            return await self._auth_error(resp, True)
        try:
            data = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return await self._error(resp, 400, "could not parse the JSON body", "invalid_request_error", True)
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, str) or not model:
            return await self._error(resp, 400, "model: Field required", "invalid_request_error", True)
        if self.behaviour.models is not None and model not in self.behaviour.models:
            return await self._error(resp, 404, f"model: {model}", "not_found_error", True)
        tokens = max(1, estimate_tokens(prompt_text(data, "messages")))
        await resp.send(200, [("content-type", "application/json"), ("x-fake-provider", self.name)],
                        orjson.dumps({"input_tokens": tokens}))
        return 200

    # ---- control API ------------------------------------------------------------------

    async def _control(self, req: Request, resp: Reply, what: str) -> None:
        """GET requests | POST behaviour (JSON fields) | POST reset: for fakes run in another process."""
        if what == "requests" and req.method == "GET":
            body = orjson.dumps([r.as_dict() for r in self.records])
        elif what == "behaviour" and req.method == "POST":
            try:
                self.set_behaviour(self.behaviour.merged(**orjson.loads(req.body or b"{}")))
            except (TypeError, ValueError) as exc:
                await resp.send(400, [("content-type", "application/json")], orjson.dumps({"error": str(exc)}))
                return
            body = orjson.dumps(asdict(self.behaviour))
        elif what == "reset" and req.method == "POST":
            self.records.clear()
            self.set_behaviour(Behaviour(models=self.behaviour.models))
            body = b"{}"
        else:
            await resp.send(404, [("content-type", "application/json")], b'{"error": "unknown control endpoint"}')
            return
        await resp.send(200, [("content-type", "application/json")], body)


# ---- response bodies --------------------------------------------------------------------


def _multipart(req: Request) -> dict[str, Any]:
    """A multipart/form-data body: field name -> text, or (filename, bytes) for a file."""
    ctype = req.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return {}
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + req.body)
    out: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        out[name] = (filename, payload) if filename else payload.decode("utf-8", "replace")
    return out


class GzipStream:
    """A streamed reply compressed with gzip, flushed after every write so each event arrives at once."""

    def __init__(self, inner: Reply):
        self.inner = inner
        self._z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        await self.inner.start(status, [*headers, ("content-encoding", "gzip")])

    async def write(self, data: bytes) -> None:
        if data:
            await self.inner.write(self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH))

    async def end(self) -> None:
        await self.inner.write(self._z.flush())
        await self.inner.end()
