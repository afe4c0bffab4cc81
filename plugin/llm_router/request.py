"""Request bodies -> LLMRequest: the one place that knows the request JSON shapes."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from llm_router.catalog import BodyDialect
from llm_router.message_rules import (anthropic_messages_for, chat_messages_for, fit_thinking, takes_field, unforced_tool_choice,
                                      without_blank_system, without_encrypted_reasoning, without_reasoning_items,
                                      without_verbosity)

# How much text the classifiers see: the last user turn (head and tail when long) plus a
# short window of the turns before it. Bounded so classification cost does not grow with
# conversation length.
PROMPT_HEAD_CHARS = 1500
PROMPT_TAIL_CHARS = 500
CONTEXT_CHARS = 1000
LONG_CONTEXT_TOKENS = 32_000
IMAGE_TOKENS = 800  # a mid-size image at OpenAI/Anthropic rates; good enough for budgeting
MESSAGE_OVERHEAD_TOKENS = 4
CLIENT_TOOL_TYPES = frozenset({"function", "custom"})  # Responses tools the client runs; every other type is hosted

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
STANDING_ROLES = ("system", "developer")  # the application's instructions, sent with every call
ANTHROPIC_ROLES = frozenset({"user", "assistant"})


class RequestError(Exception):
    """A request body the router cannot accept; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.code = code


@dataclass(slots=True, init=False)
class Needs:
    """What a model must be able to do to serve a request."""

    tools: bool = False
    vision: bool = False
    json: bool = False
    long_context: bool = False
    streaming: bool = False
    hosted_tools: bool = False  # Responses tools the provider runs (web_search, file_search, ...), not the client's functions
    json_schema: bool = False  # structured output: JSON that follows the client's schema (not just any JSON)
    logprobs: bool = False  # token log-probabilities in the answer (chat `logprobs: true`, completions `logprobs: N`)
    multiple_choices: bool = False  # `n` above 1: several answers from one call
    prefill: bool = False  # the conversation ends with an assistant message for the model to continue
    stop: bool = False  # stop sequences the answer must end at (chat and completions `stop`)
    # Responses: state the provider must keep (store not false, background, previous_response_id or a conversation), which
    # providers whose Responses API stores nothing (DeepSeek's) cannot serve
    stored: bool = False

    def __init__(self, tools: bool = False, vision: bool = False, json: bool = False, long_context: bool = False,
                 streaming: bool = False, hosted_tools: bool = False, json_schema: bool = False, logprobs: bool = False,
                 multiple_choices: bool = False, prefill: bool = False, stop: bool = False, stored: bool = False) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.tools = tools
        self.vision = vision
        self.json = json
        self.long_context = long_context
        self.streaming = streaming
        self.hosted_tools = hosted_tools
        self.json_schema = json_schema
        self.logprobs = logprobs
        self.multiple_choices = multiple_choices
        self.prefill = prefill
        self.stop = stop
        self.stored = stored

    @property
    def any_capability(self) -> bool:
        """Whether some capability is needed (else every model serving the API will do)."""
        return (self.tools or self.vision or self.json or self.hosted_tools or self.logprobs or self.multiple_choices
                or self.prefill or self.stop)

    def as_capabilities(self) -> frozenset[str]:
        """The capability names these needs require of a model."""
        caps = []
        if self.tools:
            caps.append("tools")
        if self.hosted_tools:
            caps.append("hosted_tools")
        if self.vision:
            caps.append("vision")
        if self.json_schema:
            caps.append("json_schema")
        elif self.json:
            caps.append("json")
        if self.logprobs:
            caps.append("logprobs")
        if self.multiple_choices:
            caps.append("multiple_choices")
        return frozenset(caps)


@dataclass(slots=True, init=False)
class LLMRequest:
    """One LLM API request, reduced to what routing needs."""

    api: str  # "chat" | "completions" | "messages" | "responses"
    body: dict[str, Any]
    prompt: str  # the last user turn, bounded
    context: str  # earlier turns (not the system prompt), bounded
    input_tokens: int
    model: str | None = None
    max_output_tokens: int | None = None
    stream: bool = False
    include_usage: bool | None = None  # stream_options.include_usage as the client sent it
    needs: Needs = field(default_factory=Needs)
    turns: int = 1
    body_bytes: int = 0
    choices: int = 1  # `n`: answers asked for in one call (each is billed as output)
    standing_tokens: int = 0  # of input_tokens: the system prompt and tool definitions
    thinking_blocks: bool = False  # an Anthropic body that may carry thinking blocks (signed for a model, or unsigned)

    def __init__(self, api: str, body: dict[str, Any], prompt: str, context: str, input_tokens: int, model: str | None = None,
                 max_output_tokens: int | None = None, stream: bool = False, include_usage: bool | None = None,
                 needs: Needs | None = None, turns: int = 1, body_bytes: int = 0, choices: int = 1, standing_tokens: int = 0,
                 thinking_blocks: bool = False) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.api = api
        self.body = body
        self.prompt = prompt
        self.context = context
        self.input_tokens = input_tokens
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.stream = stream
        self.include_usage = include_usage
        self.needs = Needs() if needs is None else needs
        self.turns = turns
        self.body_bytes = body_bytes
        self.choices = choices
        self.standing_tokens = standing_tokens
        self.thinking_blocks = thinking_blocks

    @property
    def text(self) -> str:
        """Text the classifiers look at."""
        return self.prompt

    @property
    def conversation_tokens(self) -> int:
        """Input tokens without the system prompt and tool definitions: the length the classifiers weigh."""
        return max(1, self.input_tokens - self.standing_tokens)


MAX_CHOICES = 128  # OpenAI's upper bound for `n`

# Token estimate: one estimator for all providers, a linear fit over counts that C code
# gives cheaply (spaces, newlines, punctuation, digits, non-ASCII bytes, characters), fitted
# against cl100k_base. Error measured by `python -m llm_router.bench.estimator` (README).
_PUNCT = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_DIGITS = b"0123456789"
# One translate marks punctuation as 0x01 and digits as 0x02; two counts then read them off.
_MARKS = bytes.maketrans(_PUNCT + _DIGITS, b"\x01" * len(_PUNCT) + b"\x02" * len(_DIGITS))
# Weights fitted on prose, prompts and Python source; leave-one-source-out MAE 2-7%.
_W_SPACE, _W_DOUBLE_SPACE, _W_NEWLINE = 0.697, -1.572, 1.619
_W_PUNCT, _W_DIGIT, _W_NONASCII, _W_CHAR, _W_BASE = 0.692, 0.663, 0.589, 0.063, 1.208


# Estimates of long texts seen recently. An application sends the same system prompt and tool definitions
# with every call (a coding agent's run to thousands of tokens), and estimating them again costs far more than
# looking them up (hashing the text). Bounded: texts of 2-64 K characters, 256 of them, emptied when full.
_KEPT_ESTIMATES: dict[str, int] = {}
KEEP_ESTIMATE_CHARS = (2048, 65536)
KEEP_ESTIMATES = 256


def estimate_tokens(text: str) -> int:
    """Fast provider-neutral estimate of how many tokens a text takes."""
    if not text:
        return 0
    n = len(text)
    if KEEP_ESTIMATE_CHARS[0] <= n <= KEEP_ESTIMATE_CHARS[1]:
        found = _KEPT_ESTIMATES.get(text)
        if found is None:
            found = _estimate(text)
            if len(_KEPT_ESTIMATES) >= KEEP_ESTIMATES:
                _KEPT_ESTIMATES.clear()
            _KEPT_ESTIMATES[text] = found
        return found
    return _estimate(text)


def _counts(raw: bytes, marks: bytes) -> tuple[int, int, int, int, int]:
    """Spaces, pairs of spaces, newlines, punctuation and digits of a text's UTF-8 bytes."""
    marked = raw.translate(marks)
    return raw.count(b" "), raw.count(b"  "), raw.count(b"\n"), marked.count(b"\x01"), marked.count(b"\x02")


# The same counts in one C pass where the optional extension is built (set at the end of this module).
_estimate_counts: Callable[[bytes, bytes], tuple[int, int, int, int, int]] = _counts


def _estimate(text: str) -> int:
    raw = text.encode("utf-8", "surrogatepass")
    spaces, pairs, newlines, punct, digits = _estimate_counts(raw, _MARKS)
    est = (
        _W_SPACE * spaces
        + _W_DOUBLE_SPACE * pairs  # runs of indentation merge into few tokens
        + _W_NEWLINE * newlines
        + _W_PUNCT * punct
        + _W_DIGIT * digits
        + _W_NONASCII * (len(raw) - len(text))
        + _W_CHAR * len(text)
        + _W_BASE
    )
    return max(1, round(est))


def api_for_path(path: str) -> str | None:
    """The request API a URL path speaks, or None for paths the router does not handle."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/messages"):
        return "messages"
    if path.endswith("/responses"):  # creating a response; calls on a stored one (/responses/{id}...) are stored.py's
        return "responses"
    if path.endswith("/completions"):
        return "completions"
    return None


def parse_request(body: bytes | str, api: str = "chat") -> LLMRequest:
    """Parse a raw body for the given API; raises RequestError naming the bad field."""
    if not body:
        raise RequestError("request body is empty; expected a JSON object", field="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise RequestError(f"request body must be a JSON object, got {_kind(data)}", field="body")
    size = len(body)
    if api == "chat":
        req = _parse_chat(data)
    elif api == "completions":
        req = _parse_completions(data)
    elif api == "messages":
        req = _parse_messages(data)
    elif api == "count_tokens":  # Anthropic's /v1/messages/count_tokens: a messages body without max_tokens
        req = _parse_messages({**data, "max_tokens": 1} if "max_tokens" not in data else data)
        req.body = data  # the client's fields only: the provider refuses fields count_tokens does not take
    elif api == "responses":
        req = _parse_responses(data)
    else:
        raise RequestError(f"unsupported API {api!r}", field="path", status=404, code="not_found")
    req.body_bytes = size
    if req.api == "messages":  # a scan of the raw bytes is far cheaper than a walk over every block of a long history
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        # a thinking block names "thinking" as its type; the request's own thinking field names it once more
        first = raw.find(b'"thinking"')
        req.thinking_blocks = b'"signature"' in raw or b'"redacted_thinking"' in raw or (
            first >= 0 and ("thinking" not in data or raw.find(b'"thinking"', first + 1) >= 0))
    return req


# The fields that bound an answer's length, in every API the router parses.
OUTPUT_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
THINKING_MIN_BUDGET = 1024  # Anthropic's extended thinking: 1024 <= thinking.budget_tokens < max_tokens


def fitted_thinking(thinking: Any, asked: int, limit: int) -> dict[str, Any] | None:
    """Anthropic's `thinking` for an output limit lowered from `asked` to `limit`: the budget scaled by the same
    ratio (the client's split between thinking and answer) and kept below the limit; None when no budget of at
    least 1024 tokens fits, so the field is left out. Anything else is returned as it came."""
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < limit:
        return thinking if isinstance(thinking, dict) else None
    if limit <= THINKING_MIN_BUDGET:
        return None
    scaled = max(THINKING_MIN_BUDGET, budget * limit // max(asked, 1))
    return {**thinking, "budget_tokens": min(scaled, limit - 1)}


def _refit(body: dict[str, Any], name: str, fit: Callable[[Any], Any]) -> None:
    """A body field as `fit` makes it; the field goes when `fit` leaves nothing of it (None)."""
    if name in body:
        value = fit(body[name])
        if value is None:
            del body[name]
        else:
            body[name] = value


def render_body(req: LLMRequest, model_name: str, *, add_usage: bool = True, dialect: BodyDialect | None = None,
                max_output: int | None = None, model_id: str = "",
                thinking_origin: Callable[[str], str | None] | None = None,
                reasoning: Callable[[str], str | None] | None = None) -> bytes:
    """The body to send upstream: the chosen model, usage requested on streams, an output limit no higher than
    `max_output` (what the model writes in one call), and the fields in the provider's own dialect (renamed,
    and only those it accepts) when it has one. `thinking_origin` (signature -> the catalog model that made the thinking
    block) lets an Anthropic body leave out the thinking blocks of models other than `model_id`; `reasoning` (answer key
    -> the reasoning the answer held) gives back what a client left out of a chat for DeepSeek's thinking models."""
    body = dict(req.body)
    body["model"] = model_name
    if req.api == "messages":
        fit_thinking(body, dialect, model_id, thinking_origin, req.thinking_blocks)
    if max_output is not None and req.max_output_tokens is not None and req.max_output_tokens > max_output:
        for name in OUTPUT_LIMIT_FIELDS:
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > max_output:
                body[name] = max_output
        # a thinking budget must stay below the lowered limit, or the provider refuses the call
        asked = req.max_output_tokens
        _refit(body, "thinking", lambda thinking: fitted_thinking(thinking, asked, max_output))
    ask_usage = add_usage and req.stream and req.api in ("chat", "completions") and req.include_usage is None
    if dialect is not None:
        for name, value in dialect.defaults.get(req.api, {}).items():
            if name not in body:
                body[name] = value
        for old, new in dialect.rename:
            if old in body:
                value = body.pop(old)
                body.setdefault(new, value)
        accepted = dialect.accept.get(req.api)
        if accepted is not None:
            for name in [k for k in body if k not in accepted]:
                del body[name]
        for name in dialect.drop:
            body.pop(name, None)
        if dialect.thinking_type and req.api in ("chat", "messages"):
            kind, limit = dialect.thinking_type, _output_limit(body)
            _refit(body, "thinking", lambda thinking: thinking_as(thinking, kind, limit))
        thinks = _thinks(body.get("thinking"), dialect.thinks_when_enabled)
        if dialect.effortless_unthinking and not _thinks(body.get("thinking"), False):  # told not to think
            body.pop("reasoning_effort", None)
            _refit(body, "output_config", _without_effort)
        if dialect.efforts:
            efforts = dialect.efforts
            _refit(body, "reasoning_effort", lambda effort: efforts.get(effort, effort) if isinstance(effort, str) else effort)
            _refit(body, "reasoning", lambda reasoning: _effort_as(reasoning, efforts))
        if thinks and dialect.thinking_sampling:
            _fit_thinking_sampling(body)
        if dialect.one_sampler and body.get("temperature") is not None and body.get("top_p") is not None:
            del body["top_p"]  # temperature is the knob clients set; top_p often rides along at a default
        if (dialect.unforced_tools or dialect.unforced_any_tool) and thinks and req.api in ("chat", "messages"):
            forced = dialect.unforced_any_tool
            _refit(body, "tool_choice", lambda choice: unforced_tool_choice(choice, forced))
            _refit(body, "function_call", unforced_tool_choice)
        if req.api == "chat" and "messages" in body:
            body["messages"] = chat_messages_for(body["messages"], dialect, thinks, reasoning)
        elif req.api == "messages" and "messages" in body:
            body["messages"] = anthropic_messages_for(body["messages"], dialect)
            if dialect.drop_blank_text:
                _refit(body, "system", without_blank_system)
        elif req.api == "responses" and not takes_field(dialect, "responses", "reasoning"):  # a model that does not reason
            if "input" in body:
                body["input"] = without_reasoning_items(body["input"])
            _refit(body, "include", without_encrypted_reasoning)
            _refit(body, "text", without_verbosity)
        if dialect.usage_unasked:
            ask_usage = False
    if ask_usage:
        opts = body.get("stream_options")
        body["stream_options"] = {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
    return orjson.dumps(body)


def _thinks(thinking: Any, when_enabled: bool) -> bool:
    """Whether a model thinks on a body with this `thinking` field: unless it says disabled (DeepSeek's V4 models), or,
    `when_enabled`, only when it says enabled or adaptive (Claude)."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    return kind in ("enabled", "adaptive") if when_enabled else kind != "disabled"


THINKING_TOP_P = 0.95  # the lowest top_p Claude takes while it thinks


def _effort_as(reasoning: Any, efforts: dict[str, str]) -> Any:
    """A Responses `reasoning` object with its effort as the model takes it (anything else as sent)."""
    if not isinstance(reasoning, dict):
        return reasoning
    effort = reasoning.get("effort")
    if not isinstance(effort, str) or effort not in efforts:
        return reasoning
    return {**reasoning, "effort": efforts[effort]}


def _without_effort(config: Any) -> Any:
    """An `output_config` without its effort (None when nothing else is left)."""
    if not isinstance(config, dict) or "effort" not in config:
        return config
    kept = {k: v for k, v in config.items() if k != "effort"}
    return kept or None


def _output_limit(body: dict[str, Any]) -> int | None:
    """The output limit a chat or Messages body sets, if any."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def thinking_as(thinking: Any, kind: str, limit: int | None) -> Any:
    """Claude's `thinking` in the one form a model takes: enabled as adaptive (the budget left to the model), or adaptive
    as enabled with half the output limit as budget (None, no thinking, where no budget of 1024 fits below the limit)."""
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive") or thinking.get("type") == kind:
        return thinking
    if kind == "adaptive":
        return {**{k: v for k, v in thinking.items() if k != "budget_tokens"}, "type": "adaptive"}
    if limit is None or limit - 1 < THINKING_MIN_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": min(limit - 1, max(THINKING_MIN_BUDGET, limit // 2))}


def _fit_thinking_sampling(body: dict[str, Any]) -> None:
    """Sampling a thinking Claude takes: a temperature only at 1, a top_p only from 0.95, no top_k."""
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        del body["temperature"]
    top_p = body.get("top_p")
    if top_p is not None and not (isinstance(top_p, (int, float)) and top_p >= THINKING_TOP_P):
        del body["top_p"]
    body.pop("top_k", None)


# ---- OpenAI chat/completions ------------------------------------------------------------

def _parse_chat(data: dict[str, Any]) -> LLMRequest:
    model = _opt_str(data, "model")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise RequestError(f"'messages' must be an array of messages, got {_kind(messages)}", field="messages")
    if not messages:
        raise RequestError("'messages' must not be empty", field="messages")
    vision = False
    tokens = 0
    texts: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RequestError(f"'messages[{i}]' must be an object, got {_kind(msg)}", field=f"messages[{i}]")
        role = msg.get("role")
        if not isinstance(role, str):
            raise RequestError(f"'messages[{i}].role' must be a string, got {_kind(role)}", field=f"messages[{i}].role")
        if role not in CHAT_ROLES:
            raise RequestError(f"'messages[{i}].role' has unknown role {role!r}", field=f"messages[{i}].role")
        content = msg.get("content")
        if isinstance(content, str):  # the common case, without building the field name errors would need
            text, images = content, 0
        else:
            text, images = _chat_content(content, f"messages[{i}].content", allow_null=role in ("assistant", "tool", "function"))
            vision = vision or images > 0
        calls = msg.get("tool_calls")
        if calls is not None:  # null: no calls, as SDKs write a message without them
            if not isinstance(calls, list):
                raise RequestError(f"'messages[{i}].tool_calls' must be an array, got {_kind(calls)}",
                                   field=f"messages[{i}].tool_calls")
            tokens += estimate_tokens(orjson.dumps(calls).decode())
        tokens += images * IMAGE_TOKENS + MESSAGE_OVERHEAD_TOKENS
        texts.append((role, text))
    # One estimate over all turns: the per-call cost of the estimator is most of its cost.
    tokens += estimate_tokens("\n".join([t for _, t in texts]))
    standing = _standing(texts)
    tools = _check_tools(data)
    if tools:
        tool_tokens = estimate_tokens(orjson.dumps(data.get("tools") or data.get("functions")).decode())
        tokens += tool_tokens
        standing += tool_tokens
    json_mode = _json_format(data.get("response_format"), "response_format")
    stream = _opt_bool(data, "stream")
    include_usage = None
    opts = data.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise RequestError(f"'stream_options' must be an object, got {_kind(opts)}", field="stream_options")
        if "include_usage" in opts:
            if not isinstance(opts["include_usage"], bool):
                raise RequestError("'stream_options.include_usage' must be a boolean", field="stream_options.include_usage")
            include_usage = opts["include_usage"]
    max_out = _opt_pos_int(data, "max_completion_tokens")
    if max_out is None:
        max_out = _opt_pos_int(data, "max_tokens")
    choices = _choices(data)
    # top_logprobs is only valid with logprobs: true, so it counts as asking for them too.
    logprobs = _opt_bool(data, "logprobs") or data.get("top_logprobs") is not None
    prompt, context, turns = _window(texts, user_roles=("user",))
    return LLMRequest(
        api="chat", body=data, prompt=prompt, context=context, input_tokens=tokens + 3, model=model,
        max_output_tokens=max_out, stream=stream, include_usage=include_usage, turns=turns, choices=choices,
        standing_tokens=standing,
        needs=Needs(tools=tools, vision=vision, json=bool(json_mode), json_schema=json_mode == "json_schema",
                    long_context=tokens > LONG_CONTEXT_TOKENS, streaming=stream, logprobs=logprobs, multiple_choices=choices > 1,
                    stop=_has_stop(data),
                    prefill=_ends_with_prefill(messages)),
    )


def _chat_content(content: Any, where: str, *, allow_null: bool) -> tuple[str, int]:
    """Text and image count of an OpenAI message content."""
    if content is None:
        if allow_null:
            return "", 0
        raise RequestError(f"'{where}' must be a string or an array of content parts, got null", field=where)
    return _content(content, where, CHAT_PARTS)


def _chat_image(part: dict[str, Any], pw: str) -> tuple[str, int]:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise RequestError(f"'{pw}.image_url.url' must be a string", field=f"{pw}.image_url.url")
    return "", 1


@dataclass(frozen=True, slots=True)
class PartTypes:
    """How one API's content parts are read: which carry text, count as images, are skipped, or need their own reader."""

    noun: str  # "content parts" or "content blocks", for messages
    text: frozenset[str]
    images: frozenset[str]
    skipped: frozenset[str]
    special: Mapping[str, Callable[[dict[str, Any], str], tuple[str, int]]] = field(default_factory=dict)


def _content(content: Any, where: str, types: PartTypes) -> tuple[str, int]:
    """Text and image count of a content that is a string or an array of typed parts."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise RequestError(f"'{where}' must be a string or an array of {types.noun}, got {_kind(content)}", field=where)
    parts: list[str] = []
    images = 0
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise RequestError(f"'{pw}' must be an object, got {_kind(part)}", field=pw)
        ptype = part.get("type")
        if ptype in types.text:
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"'{pw}.text' must be a string, got {_kind(text)}", field=f"{pw}.text")
            parts.append(text)
        elif ptype in types.images:
            images += 1
        elif ptype in types.skipped:
            continue
        elif isinstance(ptype, str):
            reader = types.special.get(ptype)
            if reader is None:
                raise RequestError(f"'{pw}.type' has unsupported {types.noun[:-1]} type {ptype!r}", field=f"{pw}.type")
            text, found = reader(part, pw)
            if text:
                parts.append(text)
            images += found
        else:
            raise RequestError(f"'{pw}.type' must be a string, got {_kind(ptype)}", field=f"{pw}.type")
    return "\n".join(parts), images


def _check_tools(data: dict[str, Any]) -> bool:
    """Whether the request declares tools or legacy functions; validates their shape."""
    found = False
    for key in ("tools", "functions"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise RequestError(f"'{key}' must be an array, got {_kind(value)}", field=key)
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise RequestError(f"'{key}[{i}]' must be an object, got {_kind(item)}", field=f"{key}[{i}]")
        found = found or bool(value)
    return found


def _json_format(fmt: Any, where: str) -> str:
    """The JSON an output format object (chat `response_format`, Responses `text.format`) asks for:
    "json_object", "json_schema", or "" for plain text."""
    if fmt is None:
        return ""
    if not isinstance(fmt, dict):
        raise RequestError(f"'{where}' must be an object, got {_kind(fmt)}", field=where)
    ftype = fmt.get("type")
    if ftype not in ("text", "json_object", "json_schema"):
        raise RequestError(f"'{where}.type' must be 'text', 'json_object' or 'json_schema', got {ftype!r}", field=f"{where}.type")
    return "" if ftype == "text" else str(ftype)


# ---- OpenAI legacy completions ----------------------------------------------------------

def _parse_completions(data: dict[str, Any]) -> LLMRequest:
    model = _opt_str(data, "model")
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        text = prompt
        tokens = estimate_tokens(text)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        text = prompt[-1]
        tokens = sum(estimate_tokens(p) for p in prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        text, tokens = "", len(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        text, tokens = "", sum(len(p) for p in prompt)
    else:
        raise RequestError(f"'prompt' must be a string or a non-empty array of strings or token ids, got {_kind(prompt)}", field="prompt")
    stream = _opt_bool(data, "stream")
    opts = data.get("stream_options")
    include_usage = opts.get("include_usage") if isinstance(opts, dict) and isinstance(opts.get("include_usage"), bool) else None
    choices = _choices(data)
    logprobs = data.get("logprobs")  # legacy completions: how many top tokens per position (0-5)
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or logprobs < 0):
        raise RequestError(f"'logprobs' must be a non-negative integer, got {logprobs!r}", field="logprobs")
    prompt_text, _, _ = _window([("user", text)], user_roles=("user",))
    return LLMRequest(
        api="completions", body=data, prompt=prompt_text, context="", input_tokens=tokens, model=model,
        max_output_tokens=_opt_pos_int(data, "max_tokens"), stream=stream, include_usage=include_usage, choices=choices,
        needs=Needs(long_context=tokens > LONG_CONTEXT_TOKENS, streaming=stream, logprobs=logprobs is not None,
                    multiple_choices=choices > 1, stop=_has_stop(data)),
    )


# ---- Anthropic messages -----------------------------------------------------------------

def _parse_messages(data: dict[str, Any]) -> LLMRequest:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"'model' is required and must be a non-empty string, got {_kind(model)}", field="model")
    max_tokens = data.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(f"'max_tokens' is required and must be a positive integer, got {_kind(max_tokens)}", field="max_tokens")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array of messages", field="messages")
    texts: list[tuple[str, str]] = []
    tokens = 0
    vision = False
    system = data.get("system")
    if system is not None:
        stext, _ = _anthropic_content(system, "system")
        texts.append(("system", stext))
        tokens += estimate_tokens(stext)
    standing = tokens
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"'{where}' must be an object, got {_kind(msg)}", field=where)
        role = msg.get("role")
        if role not in ANTHROPIC_ROLES:
            raise RequestError(f"'{where}.role' must be 'user' or 'assistant', got {role!r}", field=f"{where}.role")
        content = msg.get("content")
        text, images = _anthropic_content(content, f"{where}.content")
        vision = vision or images > 0
        tokens += estimate_tokens(text) + images * IMAGE_TOKENS + MESSAGE_OVERHEAD_TOKENS
        if role == "user" and isinstance(content, list) and any(_is_tool_result(b) for b in content):
            texts += _split_tool_results(content, f"{where}.content", text)
        else:
            texts.append((role, text))
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise RequestError(f"'tools' must be an array, got {_kind(tools)}", field="tools")
    if tools:
        tool_tokens = estimate_tokens(orjson.dumps(tools).decode())
        tokens += tool_tokens
        standing += tool_tokens
    stream = _opt_bool(data, "stream")
    prompt, context, turns = _window(texts, user_roles=("user",))
    return LLMRequest(
        api="messages", body=data, prompt=prompt, context=context, input_tokens=tokens, model=model,
        max_output_tokens=max_tokens, stream=stream, include_usage=True, turns=turns, standing_tokens=standing,
        needs=Needs(tools=bool(tools), vision=vision, long_context=tokens > LONG_CONTEXT_TOKENS, streaming=stream,
                    prefill=messages[-1].get("role") == "assistant"),
    )


def _ends_with_prefill(messages: list[Any]) -> bool:
    """Whether a chat's last message is an assistant message without tool calls: a start for the model to continue."""
    last = messages[-1]
    return last.get("role") == "assistant" and not last.get("tool_calls")


def _anthropic_content(content: Any, where: str) -> tuple[str, int]:
    """Text and image count of an Anthropic content (string or blocks)."""
    return _content(content, where, ANTHROPIC_BLOCKS)


def _is_tool_result(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result"


def _split_tool_results(content: list[Any], where: str, text: str) -> list[tuple[str, str]]:
    """A user message carrying tool results (`text`: all of its text): the results as a tool turn (as OpenAI's
    `tool` messages), then any text of the user's own. The classifiers then read an agent loop's instruction,
    not the output of its tools."""
    others = [b for b in content if not _is_tool_result(b)]
    if not any(b.get("type") == "text" for b in others):  # the usual case: all of its text is the results'
        return [("tool", text)]
    results, _ = _anthropic_content([b for b in content if _is_tool_result(b)], where)
    own, _ = _anthropic_content(others, where)
    return [("tool", results), ("user", own)] if own.strip() else [("tool", results)]


def _tool_result(block: dict[str, Any], bw: str) -> tuple[str, int]:
    inner = block.get("content")
    return _content(inner, f"{bw}.content", ANTHROPIC_BLOCKS) if isinstance(inner, (str, list)) else ("", 0)


# ---- OpenAI responses -------------------------------------------------------------------

RESPONSES_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _parse_responses(data: dict[str, Any]) -> LLMRequest:
    """POST /v1/responses: `input` (text or items), `instructions`, tools, `text.format`, stream, max_output_tokens.

    Items other than messages and function calls (reasoning, hosted tool calls, item references and
    types added later) are accepted and counted, so new provider features pass through the router.
    """
    model = _opt_str(data, "model")
    texts: list[tuple[str, str]] = []
    tokens = 0
    vision = False
    instructions = data.get("instructions")
    if isinstance(instructions, str):
        texts.append(("system", instructions))
    elif isinstance(instructions, list):
        t, v, extra = _responses_items(instructions, "instructions")
        texts += [("system", text) for _, text in t]
        vision, tokens = vision or v, tokens + extra
    elif instructions is not None:
        raise RequestError(f"'instructions' must be a string or an array of input items, got {_kind(instructions)}", field="instructions")
    inp = data.get("input")
    if isinstance(inp, str):
        texts.append(("user", inp))
    elif isinstance(inp, list):
        t, v, extra = _responses_items(inp, "input")
        texts += t
        vision, tokens = vision or v, tokens + extra
    elif inp is not None:
        raise RequestError(f"'input' must be a string or an array of input items, got {_kind(inp)}", field="input")
    elif data.get("prompt") is None:
        raise RequestError("'input' is required (text or an array of input items) unless a 'prompt' template is given", field="input")
    tokens += estimate_tokens("\n".join([t for _, t in texts])) + MESSAGE_OVERHEAD_TOKENS * len(texts)
    standing = _standing(texts)
    tools = _check_tools(data)
    hosted = False
    for i, tool in enumerate(data.get("tools") or ()):
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise RequestError(f"'tools[{i}]' must be an object with a string 'type'", field=f"tools[{i}]")
        hosted = hosted or kind not in CLIENT_TOOL_TYPES
    if tools:
        tool_tokens = estimate_tokens(orjson.dumps(data.get("tools") or data.get("functions")).decode())
        tokens += tool_tokens
        standing += tool_tokens
    text_opts = data.get("text")
    if text_opts is not None and not isinstance(text_opts, dict):
        raise RequestError(f"'text' must be an object, got {_kind(text_opts)}", field="text")
    json_mode = _json_format(text_opts.get("format"), "text.format") if text_opts else ""
    for key in ("previous_response_id", "prompt_cache_key"):
        _opt_str(data, key)
    conversation = data.get("conversation")
    if conversation is not None and not isinstance(conversation, str) and not (
            isinstance(conversation, dict) and isinstance(conversation.get("id"), str)):
        raise RequestError("'conversation' must be a conversation id or an object with a string 'id'", field="conversation")
    stream = _opt_bool(data, "stream")
    include = data.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(x, str) for x in include)):
        raise RequestError(f"'include' must be an array of strings, got {_kind(include)}", field="include")
    # Token logprobs come with a positive top_logprobs or when `include` asks for the output text's logprobs.
    top = data.get("top_logprobs")
    logprobs = (isinstance(top, int) and not isinstance(top, bool) and top > 0) or "message.output_text.logprobs" in (include or ())
    prompt, context, turns = _window(texts, user_roles=("user",)) if texts else ("", "", 0)
    stored = (data.get("store") is not False or data.get("background") is True or bool(data.get("previous_response_id"))
              or conversation is not None)
    return LLMRequest(
        api="responses", body=data, prompt=prompt, context=context, input_tokens=tokens, model=model,
        max_output_tokens=_opt_pos_int(data, "max_output_tokens"), stream=stream, include_usage=True, turns=turns,
        standing_tokens=standing,
        needs=Needs(tools=bool(tools), vision=vision, json=bool(json_mode), json_schema=json_mode == "json_schema",
                    long_context=tokens > LONG_CONTEXT_TOKENS, streaming=stream, hosted_tools=hosted, logprobs=logprobs,
                    stored=stored),
    )


def _responses_items(items: list[Any], where: str) -> tuple[list[tuple[str, str]], bool, int]:
    """(role, text) per message or tool output, whether images are attached, and tokens outside those texts."""
    texts: list[tuple[str, str]] = []
    vision = False
    tokens = 0
    for i, item in enumerate(items):
        iw = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"'{iw}' must be an object, got {_kind(item)}", field=iw)
        itype = item.get("type")
        if itype is not None and not isinstance(itype, str):
            raise RequestError(f"'{iw}.type' must be a string, got {_kind(itype)}", field=f"{iw}.type")
        if itype in (None, "message"):
            role = item.get("role")
            if role not in RESPONSES_ROLES:
                raise RequestError(f"'{iw}.role' must be one of user, assistant, system, developer, got {role!r}", field=f"{iw}.role")
            text, images = _responses_content(item.get("content"), f"{iw}.content")
            vision = vision or images > 0
            tokens += images * IMAGE_TOKENS
            texts.append(("system" if role == "developer" else role, text))
        elif itype == "function_call_output":
            output = item.get("output")
            if isinstance(output, str):
                texts.append(("tool", output))
            elif isinstance(output, list):
                text, images = _responses_content(output, f"{iw}.output")
                tokens += images * IMAGE_TOKENS
                texts.append(("tool", text))
            else:
                raise RequestError(f"'{iw}.output' must be a string or an array of content parts, got {_kind(output)}",
                                   field=f"{iw}.output")
        elif itype == "item_reference":
            continue  # stored at the provider: its size is unknown here
        else:  # function calls, reasoning, hosted tool calls and later item types: counted, not classified
            tokens += estimate_tokens(orjson.dumps(item).decode())
    return texts, vision, tokens


def _responses_content(content: Any, where: str) -> tuple[str, int]:
    """Text and image count of a Responses message content (a string or content parts)."""
    return _content(content, where, RESPONSES_PARTS)


# ---- shared helpers ---------------------------------------------------------------------

def _standing(texts: list[tuple[str, str]]) -> int:
    """Estimated tokens of the system and developer messages (none: 0, at no cost)."""
    standing = [t for role, t in texts if role in STANDING_ROLES]
    return estimate_tokens("\n".join(standing)) + MESSAGE_OVERHEAD_TOKENS * len(standing) if standing else 0


def _window(texts: list[tuple[str, str]], *, user_roles: tuple[str, ...]) -> tuple[str, str, int]:
    """The bounded last user turn, a bounded window of earlier turns, and the user turn count.

    The window leaves out system and developer messages: an application sends the same ones with every
    call, so they cannot tell its requests apart (a coding agent's would make every short turn look like a bug fix).
    """
    roles = [role for role, _ in texts]
    turns = sum(map(roles.count, user_roles))
    last = len(texts) - 1
    while last > 0 and roles[last] not in user_roles:
        last -= 1
    if roles[last] not in user_roles:
        last = len(texts) - 1
    prompt = texts[last][1]
    if len(prompt) > PROMPT_HEAD_CHARS + PROMPT_TAIL_CHARS:
        prompt = prompt[:PROMPT_HEAD_CHARS] + "\n" + prompt[-PROMPT_TAIL_CHARS:]
    if last == 0:
        return prompt, "", turns
    before: list[str] = []
    budget = CONTEXT_CHARS
    for role, text in reversed(texts[:last]):
        if budget <= 0:
            break
        if role in STANDING_ROLES:
            continue
        piece = text[-budget:]
        before.append(piece)
        budget -= len(piece)
    return prompt, "\n".join(reversed(before)), turns


def _kind(value: Any) -> str:
    """JSON type name of a value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"'{key}' must be a string, got {_kind(value)}", field=key)
    return value


def _opt_bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be a boolean, got {_kind(value)}", field=key)
    return value


def _has_stop(data: dict[str, Any]) -> bool:
    """Whether a chat or completions body sets stop sequences (a string, or an array holding one)."""
    stop = data.get("stop")
    return bool(stop) if isinstance(stop, (str, list)) else False


def _choices(data: dict[str, Any]) -> int:
    """`n`: how many answers one call asks for (OpenAI takes 1..128)."""
    n = _opt_pos_int(data, "n") or 1
    if n > MAX_CHOICES:
        raise RequestError(f"'n' must be at most {MAX_CHOICES}, got {n}", field="n")
    return n


def _opt_pos_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(f"'{key}' must be a positive integer, got {value!r}", field=key)
    return value


# Content part types per API (after the readers they name).
CHAT_PARTS = PartTypes("content parts", frozenset({"text"}), frozenset(), frozenset({"input_audio", "file", "refusal"}),
                       {"image_url": _chat_image})
ANTHROPIC_BLOCKS = PartTypes("content blocks", frozenset({"text"}), frozenset({"image", "document"}),
                             frozenset({"tool_use", "thinking", "redacted_thinking"}), {"tool_result": _tool_result})
RESPONSES_PARTS = PartTypes("content parts", frozenset({"input_text", "output_text"}), frozenset({"input_image"}),
                            frozenset({"refusal", "input_file", "input_audio"}))


# At the end: the classify package imports this module, so its kernels are looked up once this module is whole.
from llm_router.classify import native as _native  # noqa: E402

if _native.KERNELS is not None:
    _estimate_counts = _native.KERNELS.estimate_counts
