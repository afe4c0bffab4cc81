"""Fake LLM providers: OpenAI-compatible and Anthropic APIs with realistic JSON and SSE.

Each fake checks the credential it expects (401 in its provider's error format otherwise),
records what it received, and can be told to be slow, fail, or rate-limit, in patterns: always,
the first N requests, a share of them, or mid-answer (the connection cut after K chunks).
"""
from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import gzip
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from llm_router.catalog import MODEL_PLACEHOLDER
from llm_router.fakes.answers import Answer, make_answer, split_text
from llm_router.fakes.http import Reply, Request
from llm_router.forward import api_root, forward_path
from llm_router.request import estimate_tokens

CONTROL_PREFIX = "/_fake/"
# Providers whose API rejects fields it does not know: Mistral with a 422 in its own format (and it
# reports usage at the end of every stream unasked), Gemini's OpenAI-compatible endpoint with a 400
# INVALID_ARGUMENT ("Unknown name ... Cannot find field"). The fake of that name behaves so.
STRICT_FIELDS = {"mistral": {"chat": frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed", "response_format", "tools",
    "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction", "parallel_tool_calls", "safe_prompt",
    "prompt_mode"})}, "google": {"chat": frozenset({
        "model", "messages", "temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "stop", "stream",
        "stream_options", "tools", "tool_choice", "response_format", "reasoning_effort", "seed", "logprobs", "top_logprobs",
        "parallel_tool_calls", "extra_body"})}}
# Output formats a provider refuses (DeepSeek has JSON mode but no structured output).
UNSUPPORTED_FORMATS = {"deepseek": frozenset({"json_schema"})}
# Providers whose OpenAI-compatible chat endpoint takes only n = 1 and ignores logprobs (Anthropic's).
SINGLE_CHOICE_CHAT = frozenset({"anthropic"})
# OpenAI's reasoning models (o1, o3-mini, o4-mini, ..., and GPT-5 and later): fields they refuse, and sampling values fixed
# at the default. GPT-4o, GPT-4.1 and earlier GPT models do not reason: they refuse reasoning fields instead.
REASONING_MODEL = re.compile(r"o\d(?:$|-)|gpt-[5-9]")
# The reasoning efforts a GPT model takes where it lacks some: GPT-6.1 Sol takes no none or minimal
GPT_EFFORTS = {"gpt-6.1-sol": ("low", "medium", "high", "xhigh", "max")}
# The tokens a GPT-5-or-later model reasons before it answers (reported: gpt-6.1-sol spent all of a 300-token limit and
# gpt-5-nano all of 512 on reasoning, content empty, finish_reason length); they count against max_completion_tokens
GPT_THOUGHTS = 1000
TOOL_ID = re.compile(r"[A-Za-z0-9]{9}")  # Mistral's tool call ids
# Mistral's chat messages, by role, and its tool calls: the fields each takes (it answers 422 to any other).
MISTRAL_MESSAGE_FIELDS = {"system": frozenset({"role", "content"}), "user": frozenset({"role", "content"}),
                          "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
                          "tool": frozenset({"role", "content", "tool_call_id", "name"})}
MISTRAL_TOOL_CALL_FIELDS = frozenset({"id", "type", "function", "index"})
WORD_ID = re.compile(r"[A-Za-z0-9_-]+")  # Anthropic's tool call ids
GEMINI_3 = re.compile(r"(?:models/)?gemini-3")  # Gemini 3 models check tool calls' thought signatures
# Claude models from before extended thinking (3.7 Sonnet was the first with it): Anthropic refuses `thinking`.
NO_THINKING_MODEL = re.compile(r"claude-(?:3-(?!7)|instant|2)")
# Claude models that take temperature or top_p, not both (Sonnet 4.5 and later)
ONE_SAMPLER = re.compile(r"claude-(?:sonnet|opus|haiku)-4-[5-9]")
# Claude models with extended thinking (3.7 Sonnet and later): while thinking they refuse sampling and forced tools
THINKING_CLAUDE = re.compile(r"claude-(?:3-7|(?:sonnet|opus|haiku)-[4-9])")
# Claude models that refuse a prefill, a conversation ending with an assistant message (Opus and Sonnet 4.6 and later)
NO_PREFILL = re.compile(r"claude-(?:sonnet|opus)-(?:4-[6-9]|[5-9])")
# Claude models that take thinking only as {type: adaptive} (Opus 4.7 and later, the Claude 5 family), and those that
# take it only as {type: enabled} (3.7 Sonnet and the 4.x models before 4.6); 4.6 takes both
ADAPTIVE_ONLY = re.compile(r"claude-(?:opus-4-[7-9]|(?:sonnet|opus|fable|mythos)-[5-9])")
ENABLED_ONLY = re.compile(r"claude-(?:3-7|(?:sonnet|opus|haiku)-4-(?:[0-5](?![0-9])|[0-9]{8}))")
# DeepSeek's thinking models on its chat API: they answer with reasoning_content and want it passed back
DEEPSEEK_THINKING = re.compile(r"deepseek-(?:reasoner|v4|flash)")  # models that think unless thinking is disabled
# Providers whose Responses API stores nothing (DeepSeek's): no stored answers, previous_response_id or conversation
STATELESS_RESPONSES = frozenset({"deepseek"})
RETIRED = {"deepseek": frozenset({"deepseek-chat"})}  # names the provider answers "Model Not Exist" to (since 2026-07-24)
# Models Together serves only on dedicated endpoints now: its serverless API answers 400 model_not_available
TOGETHER_DEDICATED = frozenset({"meta-llama/Llama-3-70b-chat-hf", "meta-llama/Llama-3-8b-chat-hf"})
# Gemini names Google's API answers 404 NOT_FOUND to (Gemini 1.x removed; 3 Pro Preview shut down on 2026-03-09)
GEMINI_GONE = frozenset({"gemini-pro", "gemini-1.0-pro", "gemini-1.5-pro", "gemini-1.5-pro-latest", "gemini-1.5-flash",
                         "gemini-3-pro-preview"})
# The tokens a Gemini 3 Flash model thinks before it answers at its default (medium) level, as reported for 3.6 Flash:
# 478 of a 500-token limit, 1,232 of 1,500; a smaller limit leaves no answer (finish_reason length)
GEMINI_THOUGHTS = 1200
GEMINI_EFFORTS = ("high", "low", "medium", "none")  # the reasoning efforts Gemini's OpenAI-compatible endpoint takes
# Gemini models without the minimal thinking level (3.7 and 3.8 Flash, 3.1 Pro): effort none, which asks for it, is refused
NO_MINIMAL_THINKING = re.compile(r"(?:models/)?gemini-3\.(?:[7-9]-flash(?!-lite)|1-pro)")
REASONING_REFUSED = ("max_tokens", "logprobs", "top_logprobs", "logit_bias")
REASONING_FIXED = (("temperature", 1), ("top_p", 1), ("presence_penalty", 0), ("frequency_penalty", 0))
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
    texts: dict[str, str] = field(default_factory=dict)  # model name -> fixed answer text (refusals, JSON, ...)
    fail_first: int = 0  # the next N requests (counted from when this is set) are answered with fail_status
    fail_status: int = 503
    break_after_chunks: int | None = None  # cut the connection after K content chunks (JSON: half the body)
    disconnect: bool = False  # close the connection without answering (a reset before the response)
    cached_share: float = 0.0  # share of prompt tokens reported as read from the prompt cache
    cache_write_share: float = 0.0  # share reported as written to it (of what was not read)

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
        if not self._authorized(req.headers):
            return await self._auth_error(resp, anthropic)
        b = self.behaviour
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
        extra = [k for k in data if k not in self.strict[api]] if api in self.strict else []
        if extra and self.name == "google":
            violations = [{"description": f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.'} for k in extra]
            await resp.send(400, [("content-type", "application/json")], orjson.dumps([{"error": {
                "code": 400, "message": "\n".join(v["description"] for v in violations), "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}]}}]))
            return 400
        if extra:
            detail = [{"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted", "input": data[k]}
                      for k in extra]
            await resp.send(422, [("content-type", "application/json")], orjson.dumps(
                {"object": "error", "message": {"detail": detail}, "type": "invalid_request_error", "param": None, "code": None}))
            return 422
        if self.name == "mistral" and api == "chat":
            detail = _mistral_message_errors(data.get("messages"))
            if detail:
                await resp.send(422, [("content-type", "application/json")], orjson.dumps(
                    {"object": "error", "message": {"detail": detail}, "type": "invalid_request_error", "param": None, "code": None}))
                return 422
            last = (data.get("messages") or [None])[-1]
            if isinstance(last, dict) and last.get("role") == "assistant" and last.get("prefix") is not True:
                await resp.send(400, [("content-type", "application/json")], orjson.dumps(
                    {"object": "error", "message": "Expected last role User or Tool (or Assistant with prefix True) for serving "
                     "but got assistant", "type": "invalid_request_error", "param": None, "code": None}))
                return 400
        if self.name == "deepseek" and api == "chat":
            developer = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict)
                              and m.get("role") == "developer"), None)
            if developer is not None:
                return await self._error(resp, 400, "Failed to deserialize the JSON body into the target type: "
                                         f"messages[{developer}].role: unknown variant `developer`, expected one of `system`, "
                                         "`user`, `assistant`, `tool`", "invalid_request_error", anthropic, code="invalid_request_error")
            listed = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict)
                           and isinstance(m.get("content"), list)), None)
            if listed is not None and not DEEPSEEK_THINKING.match(str(data.get("model"))):
                # deepseek-chat's chat API took string content only; V4 takes arrays of parts, and V4.1 Flash reads images
                column = req.body.find(b"[", req.body.find(b'"content"', _nth_message(req.body, listed))) + 1
                return await self._error(resp, 400, "Failed to deserialize the JSON body into the target type: "
                                         f"messages[{listed}]: invalid type: sequence, expected a string at line 1 column "
                                         f"{column}", "invalid_request_error", anthropic, code="invalid_request_error")
        bad_word = _bad_tool_id(data, api, lambda i: not WORD_ID.fullmatch(i)) if self.name == "anthropic" else None
        if bad_word is not None:  # Anthropic names the place with dots: messages.1.content.0.tool_use.id
            return await self._error(resp, 400, f"{'.'.join(map(str, bad_word[0]))}: String should match pattern "
                                     "'^[a-zA-Z0-9_-]+$'", "invalid_request_error", anthropic)
        unsigned = _unsigned_gemini_call(data) if self.name == "google" and api == "chat" and GEMINI_3.match(
            str(deployment or data.get("model") or "")) else None
        if unsigned is not None:  # Gemini 3 checks the first tool call of each model turn for its thought signature
            name, position = unsigned
            return await self._google_error(resp, 400, "Function call is missing a thought_signature in functionCall parts. "
                                            "This is required for tools to work correctly, and missing thought_signature may "
                                            "lead to degraded model performance. Additional data, function call "
                                            f"`default_api:{name}` , position {position}. Please refer to "
                                            "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                                            "INVALID_ARGUMENT")
        empty = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict) and m.get("tool_calls") == []),
                     None) if self.name == "openai" and api == "chat" else None
        if empty is not None:
            return await self._error(resp, 400, f"Invalid 'messages[{empty}].tool_calls': empty array. Expected an array with "
                                     "minimum length 1, but got an empty array instead.", "invalid_request_error", anthropic,
                                     param=f"messages[{empty}].tool_calls", code="empty_array")
        long_id = _bad_tool_id(data, api, lambda i: len(i) > 40) if self.name == "openai" and api == "chat" else None
        if long_id is not None:  # OpenAI with brackets: messages[1].tool_calls[0].id
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in long_id[0]).lstrip(".")
            return await self._error(resp, 400, f"Invalid '{where}': string too long. Expected a string with maximum length 40, "
                                     f"but got a string with length {len(long_id[1])} instead.", "invalid_request_error",
                                     anthropic, param=where, code="string_above_max_length")
        roles = [m.get("role") for m in data.get("messages") or [] if isinstance(m, dict)]
        if self.name == "mistral" and api == "chat" and any(a == "tool" and b == "user" for a, b in zip(roles, roles[1:])):
            await resp.send(400, [("content-type", "application/json")], orjson.dumps(
                {"object": "error", "message": "Unexpected role 'user' after role 'tool'", "type": "invalid_request_message_order",
                 "param": None, "code": "3230"}))
            return 400
        bad_id = _bad_tool_id(data, api, lambda i: not TOOL_ID.fullmatch(i)) if self.name == "mistral" and api == "chat" else None
        if bad_id is not None:
            await resp.send(400, [("content-type", "application/json")], orjson.dumps(
                {"object": "error", "message": f"Tool call id was {bad_id[1]} but must be a-z, A-Z, 0-9, with a length of 9.",
                 "type": "invalid_function_call", "param": None, "code": "3280"}))
            return 400
        fmt = data.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in UNSUPPORTED_FORMATS.get(self.name, ()):
            return await self._error(resp, 400, "This response_format type is unavailable now", "invalid_request_error", anthropic,
                                     code="invalid_request_error")
        model = deployment or data.get("model")  # a deployment path serves its own model, whatever the body says
        if not isinstance(model, str) or not model:
            return await self._error(resp, 400, "'model' is required", "invalid_request_error", anthropic, param="model")
        if self.name == "google" and model.removeprefix("models/") in GEMINI_GONE:
            return await self._google_error(resp, 404, f"models/{model.removeprefix('models/')} is not found for API version "
                                            "v1beta, or is not supported for generateContent. Call ListModels to see the list "
                                            "of available models and their supported methods.", "NOT_FOUND")
        if self.name == "together" and model in TOGETHER_DEDICATED:
            return await self._error(resp, 400, f"Unable to access non-serverless model {model}. Please visit "
                                     f"https://api.together.ai/models/{model} to create and start a new dedicated endpoint for "
                                     "the model.", "invalid_request_error", False, code="model_not_available")
        stateful = next((k for k in ("previous_response_id", "conversation", "background") if data.get(k)), None) \
            if api == "responses" and self.name in STATELESS_RESPONSES else None
        if stateful is not None:  # it keeps no responses to build on (the wording of its 400 is not known here)
            return await self._error(resp, 400, f"Unsupported parameter: '{stateful}' is not supported.", "invalid_request_error",
                                     False, param=stateful, code="unsupported_parameter")
        if model in RETIRED.get(self.name, ()):
            return await self._error(resp, 400, "Model Not Exist", "invalid_request_error", False)
        if b.models is not None and model not in b.models:
            return await self._error(resp, 404, f"The model `{model}` does not exist or you do not have access to it.",
                                     "not_found_error" if anthropic else "invalid_request_error", anthropic, code="model_not_found")
        effort = data.get("reasoning_effort") if self.name == "google" and api == "chat" else None
        if isinstance(effort, str) and effort not in GEMINI_EFFORTS:
            return await self._google_error(resp, 400, f"Invalid reasoning_effort: {effort}. Valid values are: "
                                            f"{', '.join(GEMINI_EFFORTS)}", "INVALID_ARGUMENT")
        if effort == "none" and NO_MINIMAL_THINKING.match(model):  # none asks for the minimal level, which it lacks
            return await self._google_error(resp, 400, "Thinking level is unsupported: THINKING_LEVEL_MINIMAL", "INVALID_ARGUMENT")
        claude = _claude_refusal(model, data, api) if self.name == "anthropic" else None
        if claude is not None:
            return await self._error(resp, 400, claude, "invalid_request_error", anthropic)
        pair = _successive_pair(data) if self.name == "deepseek" and api == "chat" and "reasoner" in model else None
        if pair is not None:  # as deepseek-reasoner answers two user (or assistant) messages in a row
            return await self._error(resp, 400, f"deepseek-reasoner does not support successive user or assistant messages "
                                     f"(messages[{pair}] and messages[{pair + 1}] in your input). You should interleave the "
                                     "user/assistant messages in the message sequence.", "invalid_request_error", anthropic,
                                     code="invalid_request_error")
        thinking_off = isinstance(data.get("thinking"), dict) and data["thinking"].get("type") == "disabled"
        effort = data.get("reasoning_effort") is not None or (isinstance(data.get("output_config"), dict)
                                                              and data["output_config"].get("effort") is not None)
        if self.name == "deepseek" and thinking_off and effort:  # as DeepSeek answers, in OpenAI's error form on both APIs
            return await self._error(resp, 400, "thinking options type cannot be disabled when reasoning_effort is set",
                                     "invalid_request_error", False, code="invalid_request_error")
        if self.name == "deepseek" and api in ("chat", "messages") and DEEPSEEK_THINKING.match(model) and not thinking_off \
                and _names_a_tool(data):  # as DeepSeek answers, in OpenAI's error form on its Anthropic endpoint too
            return await self._error(resp, 400, "deepseek-reasoner does not support this tool_choice", "invalid_request_error",
                                     False, code="invalid_request_error")
        thinks = self.name == "deepseek" and api == "chat" and DEEPSEEK_THINKING.match(model) is not None and not thinking_off
        unreasoned = _unreasoned_message(model, data) if thinks else None
        if unreasoned is not None:  # as DeepSeek answers an assistant message without its reasoning_content
            message = (f"Missing `reasoning_content` field in the assistant message at message index {unreasoned}. For more "
                       "information, please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                       if "reasoner" in model else "The `reasoning_content` in the thinking mode must be passed back to the API.")
            return await self._error(resp, 400, message, "invalid_request_error", anthropic, code="invalid_request_error")
        refused = None if anthropic else _reasoning_refusal(model, data, api)
        if refused is not None:
            message, param, code = refused
            return await self._error(resp, 400, message, "invalid_request_error", anthropic, param=param, code=code)
        choices = data.get("n", 1) if api in ("chat", "completions") else 1
        if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= 128:
            return await self._error(resp, 400, f"n: must be an integer from 1 to 128, got {choices!r}", "invalid_request_error",
                                     anthropic, param="n")
        single = api == "chat" and self.name in SINGLE_CHOICE_CHAT
        if single and choices != 1:
            return await self._error(resp, 400, f"n: only n = 1 is supported, got {choices}", "invalid_request_error", anthropic,
                                     param="n")
        prompt = _prompt_text(data, api)
        max_tokens = data.get("max_tokens") or data.get("max_completion_tokens") or data.get("max_output_tokens")
        limit = self.max_output.get(model)
        if limit is not None and isinstance(max_tokens, int) and max_tokens > limit:
            message = (f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of output tokens for {model}"
                       if anthropic else f"max_tokens is too large: {max_tokens}. This model supports at most {limit} "
                                         f"completion tokens, whereas you provided {max_tokens}.")
            return await self._error(resp, 400, message, "invalid_request_error", anthropic, param="max_tokens")
        thinking = data.get("thinking") if anthropic else None
        if thinking is not None and self.name == "anthropic":
            refused = _thinking_refusal(model, data)
            if refused is not None:
                return await self._error(resp, 400, refused, "invalid_request_error", anthropic)
        blank = _blank_text_refusal(data) if anthropic and self.name == "anthropic" else None
        if blank is not None:
            return await self._error(resp, 400, blank, "invalid_request_error", anthropic)
        foreign = _foreign_thinking(model, data) if anthropic and self.name == "anthropic" else None
        if foreign is not None:  # a thinking block another model signed (signatures are bound to their model)
            return await self._error(resp, 400, foreign, "invalid_request_error", anthropic)
        thinks_here = thinking is not None or DEEPSEEK_THINKING.match(model) is not None  # V4 thinks unless told not to
        if anthropic and self.name == "deepseek" and thinks_here and _tool_turn_without_thinking(data):
            # DeepSeek's Anthropic endpoint in thinking mode: every tool call turn must carry its thinking back
            return await self._error(resp, 400, "The `content[].thinking` in the thinking mode must be passed back to the API.",
                                     "invalid_request_error", anthropic)
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) and thinking.get("type") == "enabled" else None
        if isinstance(budget, int) and (budget < 1024 or not isinstance(max_tokens, int) or budget >= max_tokens):
            # Anthropic's rule for extended thinking: 1024 <= budget_tokens < max_tokens
            return await self._error(resp, 400, f"thinking.budget_tokens: {budget} must be at least 1024 and less than "
                                     f"max_tokens ({max_tokens})", "invalid_request_error", anthropic, param="thinking")
        answer = make_answer(model, prompt, max_tokens=max_tokens if isinstance(max_tokens, int) else None,
                             quality=b.quality.get(model, b.default_quality), output_tokens=b.output_tokens)
        if model in b.texts:
            answer = replace(answer, text=b.texts[model])
        if self.name == "google" and GEMINI_3.match(model) and isinstance(max_tokens, int) and max_tokens < GEMINI_THOUGHTS:
            # Gemini 3 thinks before it answers and its thoughts count against the limit: a small one is used up by them
            answer = replace(answer, text="", output_tokens=max_tokens, finish="length")
        if self.name == "openai" and model.startswith("gpt-") and REASONING_MODEL.match(model) and _effort(data, api) != "none":
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
        signed = (("" if self.name == "deepseek" else _thinking_signature(model))
                  if anthropic and isinstance(thinking, dict) and thinking.get("type") == "enabled" else None)
        if stream:
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
            payload = orjson.dumps(self._keep(_response_object(model, answer, data, f"resp_{uuid.uuid4().hex[:24]}"), data))
        else:
            payload = (_anthropic_json(model, answer, signed) if anthropic
                       else _openai_json(model, answer, api, logprobs=data.get("logprobs") is True and not single,
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
        if self.auth == "none":
            return True
        if self.auth == "bearer":
            return headers.get("authorization", "") == f"Bearer {self.key}"
        return headers.get(self.auth, "") == self.key

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
        if anthropic:
            body = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        await resp.send(status, [("content-type", "application/json"), ("x-fake-provider", self.name), *headers],
                        orjson.dumps(body))
        return status

    async def _google_error(self, resp: Reply, status: int, message: str, kind: str) -> int:
        """An error as Gemini's OpenAI-compatible endpoint sends it: a list holding Google's error object."""
        await resp.send(status, [("content-type", "application/json"), ("x-fake-provider", self.name)],
                        orjson.dumps([{"error": {"code": status, "message": message, "status": kind}}]))
        return status

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
            await resp.write(event([last], usage=_openai_usage(answer, self.name)))
        else:
            await resp.write(event([last]))
        if usage and not self.strict:
            await resp.write(event([], usage=_openai_usage(answer, self.name)))
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
            "stop_sequence": None, "usage": {**_anthropic_input(answer), "output_tokens": 1}}})
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

        opening = _response_object(model, answer, data, rid, status="in_progress")
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
        await event("response.completed", response=self._keep(_response_object(model, answer, data, rid), data))
        await resp.end()

    # ---- stored responses (OpenAI keeps answers unless store is false) -----------------

    def _keep(self, obj: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Store a finished response with its input items, as OpenAI does (bounded); returns it."""
        if data.get("store", True) is not False and self.name not in STATELESS_RESPONSES:
            if len(self.stored) >= self.max_records:
                del self.stored[next(iter(self.stored))]
            self.stored[obj["id"]] = {"response": obj, "input": _input_items(data.get("input")),
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
        tokens = max(1, estimate_tokens(_prompt_text(data, "messages")))
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

def _prompt_text(data: dict[str, Any], api: str) -> str:
    if api == "completions":
        prompt = data.get("prompt")
        return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
    if api == "responses":
        texts = [data["instructions"]] if isinstance(data.get("instructions"), str) else []
        inp = data.get("input")
        items = [{"content": inp}] if isinstance(inp, str) else inp if isinstance(inp, list) else []
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts)
    parts = []
    system = data.get("system")
    if isinstance(system, str):
        parts.append(system)
    for msg in data.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def _openai_usage(answer: Answer, provider: str = "") -> dict[str, Any]:
    """OpenAI's usage object (cached tokens counted inside prompt_tokens); DeepSeek names its cache hits itself."""
    out: dict[str, Any] = {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                           "total_tokens": answer.input_tokens + answer.output_tokens}
    if provider == "deepseek":
        out["prompt_cache_hit_tokens"] = answer.cached_tokens
        out["prompt_cache_miss_tokens"] = answer.input_tokens - answer.cached_tokens
    else:
        out["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens, "audio_tokens": 0}
        if answer.cache_write_tokens:  # reported since GPT-5.6, which bills writes at 1.25x input
            out["prompt_tokens_details"]["cache_write_tokens"] = answer.cache_write_tokens
        out["completion_tokens_details"] = {"reasoning_tokens": answer.reasoning_tokens, "audio_tokens": 0}
    return out


def _mistral_message_errors(messages: Any) -> list[dict]:
    """Mistral's validation errors for chat messages (pydantic's, by role tag): a role it does not have, a field a
    message or tool call of that role does not take."""
    out: list[dict] = []
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        allowed = MISTRAL_MESSAGE_FIELDS.get(role) if isinstance(role, str) else None
        if allowed is None:
            out.append({"type": "union_tag_invalid", "loc": ["body", "messages", i],
                        "msg": f"Input tag '{role}' found using 'role' does not match any of the expected tags: 'system', "
                               "'user', 'assistant', 'tool'", "input": m})
            continue
        out += [{"type": "extra_forbidden", "loc": ["body", "messages", i, role, k], "msg": "Extra inputs are not permitted",
                 "input": v} for k, v in m.items() if k not in allowed]
        calls = m.get("tool_calls") if role == "assistant" else None
        for j, c in enumerate(calls if isinstance(calls, list) else []):
            out += [{"type": "extra_forbidden", "loc": ["body", "messages", i, role, "tool_calls", j, k],
                     "msg": "Extra inputs are not permitted", "input": v}
                    for k, v in (c.items() if isinstance(c, dict) else ()) if k not in MISTRAL_TOOL_CALL_FIELDS]
    return out


def _nth_message(body: bytes, n: int) -> int:
    """Roughly where message n starts in a compact JSON body (for error columns)."""
    at = body.find(b'"messages"')
    for _ in range(n + 1):
        at = body.find(b'"role"', at + 1)
    return max(at, 0)


def _bad_tool_id(data: dict[str, Any], api: str, bad: Callable[[str], bool]) -> tuple[tuple[str | int, ...], str] | None:
    """The first tool call id of a conversation that a provider's rule refuses: (where, as path parts; the id), or None.
    Chat: assistant `tool_calls` and `tool` results; Anthropic: `tool_use` and `tool_result` blocks."""
    for i, m in enumerate(data.get("messages") or []):
        if not isinstance(m, dict):
            continue
        found: list[tuple[tuple[str | int, ...], Any]] = []
        if api == "messages" and isinstance(m.get("content"), list):
            for j, b in enumerate(m["content"]):
                kind = b.get("type") if isinstance(b, dict) else None
                if kind in ("tool_use", "tool_result"):
                    key = "id" if kind == "tool_use" else "tool_use_id"
                    found.append((("messages", i, "content", j, kind, key), b.get(key)))
        elif api == "chat":
            found += [(("messages", i, "tool_calls", j, "id"), c.get("id")) for j, c in enumerate(m.get("tool_calls") or [])
                      if isinstance(c, dict)]
            found.append((("messages", i, "tool_call_id"), m.get("tool_call_id")))
        for where, value in found:
            if isinstance(value, str) and bad(value):
                return where, value
    return None


def _unsigned_gemini_call(data: dict[str, Any]) -> tuple[str, int] | None:
    """(function name, position among the conversation's turns) of the first model turn whose first tool call carries no
    thought signature, or None."""
    turns = [m for m in data.get("messages") or [] if isinstance(m, dict) and m.get("role") not in ("system", "developer")]
    for position, m in enumerate(turns, 1):
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        if isinstance(calls, list) and calls and isinstance(calls[0], dict):
            extra = calls[0].get("extra_content")
            google = extra.get("google") if isinstance(extra, dict) else None
            if not (isinstance(google, dict) and isinstance(google.get("thought_signature"), str) and google["thought_signature"]):
                function = calls[0].get("function")
                return (function.get("name") if isinstance(function, dict) else None) or "unknown", position
    return None


def _tool_turn_without_thinking(data: dict[str, Any]) -> bool:
    """Thinking asked for, and some assistant message calling a tool carries no thinking block."""
    if isinstance(data.get("thinking"), dict) and data["thinking"].get("type") == "disabled":
        return False
    for m in data.get("messages") or []:
        blocks = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        types = [b.get("type") for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []
        if "tool_use" in types and "thinking" not in types and "redacted_thinking" not in types:
            return True
    return False


def _thinking_refusal(model: str, data: dict[str, Any]) -> str | None:
    """Anthropic's 400 for extended thinking on a model without it, or on a tool loop whose assistant turn did not
    start with a thinking block; None when the call is fine."""
    if isinstance(data["thinking"], dict) and data["thinking"].get("type") == "disabled":
        return None
    if NO_THINKING_MODEL.search(model):
        return f"'{model}' does not support thinking."
    messages = data.get("messages") or []
    if len(messages) >= 2 and isinstance(messages[-1], dict) and isinstance(messages[-2], dict) \
            and messages[-2].get("role") == "assistant" and isinstance(messages[-1].get("content"), list) \
            and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in messages[-1]["content"]):
        answer = messages[-2].get("content")
        first = answer[0] if isinstance(answer, list) and answer else None
        if not (isinstance(first, dict) and first.get("type") in ("thinking", "redacted_thinking")):
            return (f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                    f"`{first.get('type') if isinstance(first, dict) else 'text'}`. When `thinking` is enabled, a final "
                    "`assistant` message must start with a thinking block.")
    return None


EXTENDED_THINKING_DOCS = ("Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                          "#important-considerations-when-using-extended-thinking")


def _claude_refusal(model: str, data: dict[str, Any], api: str) -> str | None:
    """Anthropic's 400 (on either API) for temperature and top_p together to a model that takes one, a prefill to a model
    without it, or, while a Claude model thinks, for sampling other than its own or a tool_choice that forces a tool; None
    when the call is fine."""
    if ONE_SAMPLER.match(model) and data.get("temperature") is not None and data.get("top_p") is not None:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    messages = data.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if NO_PREFILL.match(model) and isinstance(last, dict) and last.get("role") == "assistant" and not last.get("tool_calls"):
        return "This model does not support assistant message prefill. The conversation must end with a user message."
    thinking = data.get("thinking")
    if not (THINKING_CLAUDE.match(model) and isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")):
        return None
    if thinking["type"] == "enabled" and ADAPTIVE_ONLY.match(model):
        return ('"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
                '"output_config.effort" to control thinking behavior.')
    if thinking["type"] == "adaptive" and ENABLED_ONLY.match(model):
        return "adaptive thinking is not supported on this model"
    if data.get("temperature") is not None and data["temperature"] != 1:
        return f"`temperature` may only be set to 1 when thinking is enabled. {EXTENDED_THINKING_DOCS}"
    top_p = data.get("top_p")
    if top_p is not None and not (isinstance(top_p, (int, float)) and top_p >= 0.95):
        return f"`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. {EXTENDED_THINKING_DOCS}"
    if data.get("top_k") is not None:
        return f"`top_k` must be unset when thinking is enabled. {EXTENDED_THINKING_DOCS}"
    choice = data.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else choice
    if kind in ("any", "tool", "required", "function"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def _effort(data: dict[str, Any], api: str) -> Any:
    """The reasoning effort a chat or Responses body asks for (None: the model's default)."""
    if api == "responses":
        reasoning = data.get("reasoning")
        return reasoning.get("effort") if isinstance(reasoning, dict) else None
    return data.get("reasoning_effort")


def _reasoning_refusal(model: str, data: dict[str, Any], api: str) -> tuple[str, str | None, str | None] | None:
    """OpenAI's 400 for a field its model does not take (a reasoning model: max_tokens, temperature, ...;
    a GPT model: reasoning effort): (message, param, code), or None."""
    efforts = GPT_EFFORTS.get(model, ())
    effort = _effort(data, api)
    if efforts and effort is not None and effort not in efforts:
        field = "reasoning_effort" if api == "chat" else "reasoning.effort"
        shown = ", ".join(f"'{e}'" for e in efforts[:-1]) + f", and '{efforts[-1]}'"
        return (f"Unsupported value: '{field}' does not support {effort!r} with this model. Supported values are: {shown}.",
                field, "unsupported_value")
    if model.startswith("gpt-") and not REASONING_MODEL.match(model):
        if api == "chat" and "reasoning_effort" in data:
            return "Unrecognized request argument supplied: reasoning_effort", None, None
        text = data.get("text")
        verbosity = data.get("verbosity") if api == "chat" else text.get("verbosity") if api == "responses" and isinstance(
            text, dict) else None
        if verbosity is not None and verbosity != "medium":  # GPT-5's; GPT-4o takes only its default
            return (f"Unsupported value: 'verbosity' does not support {verbosity!r} with this model. Supported values are: "
                    "'medium'.", "verbosity" if api == "chat" else "text.verbosity", "unsupported_value")
        reasoning = data.get("reasoning")
        if api == "responses" and isinstance(reasoning, dict) and reasoning.get("effort") is not None:
            return ("Unsupported parameter: 'reasoning.effort' is not supported with this model.", "reasoning.effort",
                    "unsupported_parameter")
        include = data.get("include") if api == "responses" else None
        if isinstance(include, list) and "reasoning.encrypted_content" in include:
            return "Encrypted content is not supported with this model.", "include", None
        items = data.get("input") if api == "responses" else None
        if isinstance(items, list) and any(isinstance(i, dict) and i.get("type") == "reasoning" for i in items):
            return ("Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items "
                    "from your input and try again.", None, None)
        return None
    if api != "chat" or not REASONING_MODEL.match(model):
        return None
    unreasoned = effort == "none" and model.startswith("gpt-")  # GPT-5.1 and later at none: sampling and logprobs work
    for name in ("max_tokens",) if unreasoned else REASONING_REFUSED:
        if name in data:
            hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
            return f"Unsupported parameter: '{name}' is not supported with this model.{hint}", name, "unsupported_parameter"
    for name, default in () if unreasoned else REASONING_FIXED:
        value = data.get(name)
        if value is not None and value != default:
            return (f"Unsupported value: '{name}' does not support {value} with this model. Only the default ({default}) value "
                    "is supported.", name, "unsupported_value")
    return None


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


def _anthropic_input(answer: Answer) -> dict[str, int]:
    """Anthropic's input fields: input_tokens excludes what was read from (or written to) the cache."""
    return {"input_tokens": answer.input_tokens - answer.cached_tokens - answer.cache_write_tokens,
            "cache_creation_input_tokens": answer.cache_write_tokens, "cache_read_input_tokens": answer.cached_tokens}


def _token_logprobs(answer: Answer) -> dict[str, Any]:
    """Per-token logprobs (chat `logprobs: true`): confident for good answers, low for weak ones."""
    tokens = answer.text.split(" ")[:256]
    base, spread = (-0.05, 0.3) if answer.good else (-1.3, 1.2)
    return {"content": [{"token": t, "logprob": round(base - spread * ((sum(map(ord, t)) % 256) / 255), 4), "bytes": None,
                         "top_logprobs": []} for t in tokens]}


def reasoning_text(model: str, answer: Answer) -> str:
    """What a fake thinking model says it thought before answering."""
    return f"The question asks for about {answer.output_tokens} tokens; {model} plans its answer before writing it."


def _names_a_tool(data: dict[str, Any]) -> bool:
    """Whether a request forces one named tool (chat tool_choice or function_call, Anthropic tool_choice)."""
    choice, legacy = data.get("tool_choice"), data.get("function_call")
    return (isinstance(choice, dict) and choice.get("type") in ("function", "tool")) or (isinstance(legacy, dict)
                                                                                         and "name" in legacy)


def _successive_pair(data: dict[str, Any]) -> int | None:
    """Index of the first of two successive user (or assistant) chat messages, which deepseek-reasoner refuses."""
    messages = data.get("messages") or []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    for i, (a, b) in enumerate(zip(roles, roles[1:])):
        if a == b and a in ("user", "assistant"):
            return i
    return None


def _unreasoned_message(model: str, data: dict[str, Any]) -> int | None:
    """Index of the first assistant message a DeepSeek thinking model refuses for want of reasoning_content (missing,
    null or empty): deepseek-reasoner checks messages with tool calls, V4 models every assistant message."""
    for i, m in enumerate(data.get("messages") or []):
        if not (isinstance(m, dict) and m.get("role") == "assistant") or (isinstance(m.get("reasoning_content"), str)
                                                                           and m["reasoning_content"]):
            continue
        if "reasoner" not in model or m.get("tool_calls"):
            return i
    return None


def _openai_json(model: str, answer: Answer, api: str, *, logprobs: bool = False, provider: str = "", choices: int = 1,
                 reasoning: bool = False) -> bytes:
    """A chat or completions answer with `choices` choices; usage counts the output of all of them."""
    usage = _openai_usage(replace(answer, output_tokens=answer.output_tokens * choices), provider)
    if api == "completions":
        return orjson.dumps({"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                             "model": model, "choices": [{"index": i, "text": answer.text, "logprobs": None, "finish_reason": answer.finish}
                                                         for i in range(choices)],
                             "usage": usage})
    return orjson.dumps({
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": i, "message": {"role": "assistant", "content": answer.text, "refusal": None,
                                             **({"reasoning_content": reasoning_text(model, answer)} if reasoning else {})},
                     "logprobs": _token_logprobs(answer) if logprobs else None, "finish_reason": answer.finish}
                    for i in range(choices)],
        "usage": usage,
    })


def _input_items(value: Any) -> list[dict[str, Any]]:
    """A Responses request's input as the input items OpenAI lists for it (each with an id)."""
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}] if isinstance(value, str) \
        else [dict(item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    return [{"id": f"msg_{uuid.uuid4().hex[:24]}", **item} for item in items]


def _response_object(model: str, answer: Answer, data: dict[str, Any], rid: str, *, status: str = "completed") -> dict[str, Any]:
    """An OpenAI Responses `response` object: the answer as one output message, usage once completed."""
    done = status == "completed"
    output = [{"id": f"msg_{rid[5:]}", "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": answer.text, "annotations": []}]}] if done else []
    details = {"cached_tokens": answer.cached_tokens, **({"cache_write_tokens": answer.cache_write_tokens}
                                                          if answer.cache_write_tokens else {})}
    usage = {"input_tokens": answer.input_tokens, "input_tokens_details": details,
             "output_tokens": answer.output_tokens, "output_tokens_details": {"reasoning_tokens": answer.reasoning_tokens},
             "total_tokens": answer.input_tokens + answer.output_tokens} if done else None
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": status, "error": None,
            "incomplete_details": None, "instructions": data.get("instructions"), "max_output_tokens": data.get("max_output_tokens"),
            "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": data.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": data.get("store", True), "temperature": 1.0,
            "text": data.get("text") or {"format": {"type": "text"}}, "tool_choice": "auto", "tools": data.get("tools") or [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


FAKE_THOUGHT = "Let me work through this step by step."
SIGNATURE_MARK = "fake-thinking"


def _thinking_signature(model: str) -> str:
    """A signature bound to the model that thought (as Anthropic's are), readable by the fakes alone."""
    return base64.b64encode(f"{SIGNATURE_MARK}|{model}|{uuid.uuid4().hex}".encode()).decode()


def _signed_by(signature: Any) -> str | None:
    """The model a fake signature was made for; None for any other signature (the fakes cannot tell those apart)."""
    try:
        mark, model, _ = base64.b64decode(signature, validate=True).decode().split("|")
    except (TypeError, ValueError):
        return None
    return model if mark == SIGNATURE_MARK else None


def _blank_text_refusal(data: dict[str, Any]) -> str | None:
    """Anthropic's 400 for an empty or whitespace-only text block (in system or messages), or a blank message but a final
    assistant one; None when there is none."""
    messages = data.get("messages") or []
    system = data.get("system")
    blocks = [b for b in system if isinstance(b, dict)] if isinstance(system, list) else []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            blocks += [b for b in content if isinstance(b, dict)]
        final_assistant = i == len(messages) - 1 and isinstance(m, dict) and m.get("role") == "assistant"
        if not final_assistant and (content == [] or (isinstance(content, str) and not content.strip())):
            return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
    texts = [b.get("text") for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
    if "" in texts:
        return "messages: text content blocks must be non-empty"
    if any(not t.strip() for t in texts):
        return "messages: text content blocks must contain non-whitespace text"
    return None


def _foreign_thinking(model: str, data: dict[str, Any]) -> str | None:
    """Anthropic's 400 for a thinking block another model signed, or one without a signature, or None."""
    for i, m in enumerate(data.get("messages") or []):
        blocks = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
        for j, block in enumerate(blocks if isinstance(blocks, list) else []):
            if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
                kind = block["type"]
                field = "signature" if kind == "thinking" else "data"
                if field not in block:
                    return f"messages.{i}.content.{j}.{kind}.{field}: Field required"
                if not block[field]:
                    return f"messages.{i}.content.{j}: Invalid `{field}` in `{kind}` block"
                made = _signed_by(block[field])
                if made is not None and made != model:
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    return None


def _anthropic_json(model: str, answer: Answer, signed: str | None = None) -> bytes:
    thought = [{"type": "thinking", "thinking": FAKE_THOUGHT, **({"signature": signed} if signed else {})}] if signed is not None else []
    return orjson.dumps({
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
        "content": [*thought, {"type": "text", "text": answer.text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {**_anthropic_input(answer), "output_tokens": answer.output_tokens},
    })
