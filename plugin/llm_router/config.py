"""One validated config schema: the YAML file, APISIX per-route JSON and Envoy route metadata."""
from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_serializer,
                      model_validator)

from llm_router.catalog import APIS, AUTO_MODELS, CAPABILITIES, MODEL_PLACEHOLDER, Tier
from llm_router.forward import ForwardApi, api_root

TierName = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
STRATEGIES = ("ladder", "quality_gate", "cost_weighted", "capability", "round_robin", "least_used", "semantic", "cascade", "hedge")
CLASSIFIERS = ("rules", "semantic", "learned", "hybrid", "none")


class ConfigError(Exception):
    """A config that cannot be used; the message names each bad field."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The field each API cannot do without: an `accept` list must keep it.
_REQUIRED_FIELDS = {"chat": ("messages",), "completions": ("prompt",), "messages": ("messages", "max_tokens"),
                    "responses": ("input",)}


class BodyConf(_Strict):
    """What a provider's API takes of an OpenAI/Anthropic body: strict providers reject unknown fields."""

    # per API: the top-level fields it accepts; others are dropped (unset: every field passes)
    accept: dict[Literal["chat", "completions", "messages", "responses"], list[str]] = Field(default_factory=dict)
    # client field -> this provider's name for it (max_completion_tokens -> max_tokens); a field the
    # body already has under the new name wins
    rename: dict[str, str] = Field(default_factory=dict)
    # ask: add stream_options.include_usage to streams (OpenAI); always: it reports usage on every
    # stream unasked and may reject stream_options, so nothing is added
    stream_usage: Literal["ask", "always"] = "ask"
    # top-level fields never sent, whatever the API (after renaming)
    drop: list[str] = Field(default_factory=list)
    # any: tool call ids go as the client sent them; alnum9: ids that are not 9 letters or digits (OpenAI's
    # call_..., Anthropic's toolu_...) are replaced by 9 derived from them; max40: ids over 40 characters
    # (DeepSeek's) by 29 derived from them; word: ids with characters other than letters, digits, _ and -
    # (functions.Bash:0) by toolu_ and 24 derived from them. Consistently in the calls and in the results.
    tool_call_ids: Literal["any", "alnum9", "max40", "word"] = "any"
    # parts: message content as the client sent it; text: content arrays of text parts only are sent as one
    # string (DeepSeek's chat API refuses arrays: "invalid type: sequence, expected a string")
    content: Literal["parts", "text"] = "parts"
    # true: a user message right after tool results gets an assistant message between them (Mistral answers 400,
    # "Unexpected role 'user' after role 'tool'", where OpenAI and Anthropic take that order)
    assistant_after_tool: bool = False
    # developer: OpenAI's `developer` role sent as is; system: sent as `system` (DeepSeek answers 400, "unknown variant
    # `developer`, expected one of `system`, `user`, `assistant`, `tool`", to what Codex-style clients send)
    developer_role: Literal["developer", "system"] = "developer"
    # per chat message role: the fields it takes (`role` always); others are left out. `tool_call`: the fields of each
    # tool call. Mistral answers 422 ("Extra inputs are not permitted", loc body.messages.3.assistant.reasoning_content)
    # to fields other providers make or take: DeepSeek's reasoning_content, a user's name, a tool call's name.
    message_fields: dict[Literal["system", "user", "assistant", "tool", "developer", "function", "tool_call"], list[str]] = \
        Field(default_factory=dict)
    # true: a last assistant message (a prefill, which OpenAI and Anthropic take) goes out marked `prefix: true` (Mistral
    # answers 400 without it: "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant")
    prefix_last_assistant: bool = False
    # Anthropic bodies asking for extended thinking: last: thinking goes out unless the tool call this turn answers was
    # made without it (Anthropic's rule); every: also unless any earlier assistant turn with a tool call holds no thinking
    # block (DeepSeek's Anthropic endpoint answers 400 "The `content[].thinking` in the thinking mode must be passed back
    # to the API." to such a history, which a conversation partly answered by a model that does not think carries)
    thinking_tool_turns: Literal["last", "every"] = "last"
    # keep: an assistant message's empty `tool_calls: []` goes as sent; drop: it is left out (OpenAI answers 400, "Invalid
    # 'messages[1].tool_calls': empty array. Expected an array with minimum length 1", to what vLLM-served models and
    # OpenAI's own parse helper answer with, and other providers take)
    empty_tool_calls: Literal["keep", "drop"] = "keep"
    # Anthropic bodies: any: thinking blocks go as they came (but those the router saw another model make); required: also
    # those without a signature go (Anthropic answers 400, "messages.1.content.0.thinking.signature: Field required", to the
    # unsigned thinking blocks DeepSeek's Anthropic endpoint answers with, and "Invalid `signature`" to an empty one)
    thinking_signatures: Literal["any", "required"] = "any"
    # Anthropic bodies: keep: text blocks go as sent; drop: empty or whitespace-only text blocks are left out of messages and
    # system, and a message (but the last) holding nothing else (Anthropic answers 400, "messages: text content blocks must
    # be non-empty" and "... must contain non-whitespace text", to what other models' and its own answers sometimes hold)
    blank_text: Literal["keep", "drop"] = "keep"
    # keep: a reasoning effort goes as sent; drop: when the body turns thinking off ({type: disabled}), reasoning_effort and
    # output_config.effort are left out (DeepSeek answers 400, "thinking options type cannot be disabled when
    # reasoning_effort is set", to the pair, which Claude Code 2.1.166 and later send for their subagents)
    effort_without_thinking: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _check(self) -> "BodyConf":
        for api, fields in self.accept.items():
            missing = [f for f in _REQUIRED_FIELDS[api] if f not in fields]
            if missing:
                raise ValueError(f"accept.{api} must keep {missing}: without it no {api} request can be sent")
        for role, fields in self.message_fields.items():
            missing = [f for f in _REQUIRED_MESSAGE_FIELDS[role] if f not in fields]
            if missing:
                raise ValueError(f"message_fields.{role} must keep {missing}: without it such a message says nothing")
        _check_rename_drop(self.rename, self.drop)
        return self


# What a chat message of each role (or a tool call) must keep to mean anything.
_REQUIRED_MESSAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "system": ("content",), "user": ("content",), "assistant": ("content",), "developer": ("content",),
    "function": ("content", "name"), "tool": ("content", "tool_call_id"), "tool_call": ("id", "type", "function")}


def _check_rename_drop(rename: dict[str, str], drop: list[str]) -> None:
    """Renames must not touch `model` or be empty; drops must not remove a field every request needs."""
    for old, new in rename.items():
        if not old or not new or old == new or old == "model" or new == "model":
            raise ValueError(f"rename: {old!r} -> {new!r} is not a rename of a request field other than model")
    needed = sorted({"model", *(f for fields in _REQUIRED_FIELDS.values() for f in fields)} & set(drop))
    if needed:
        raise ValueError(f"drop: {needed} cannot be dropped: without it no request can be sent")


class ModelBodyConf(_Strict):
    """What one model takes beyond its provider's rules (OpenAI's reasoning models refuse max_tokens and temperature)."""

    rename: dict[str, str] = Field(default_factory=dict)  # applied after the provider's renames
    drop: list[str] = Field(default_factory=list)  # added to the provider's
    # keep: chat tool calls go as sent; fill: the first tool call of each assistant message that carries no Gemini thought
    # signature gets Google's documented stand-in (Gemini 3 answers 400, "Function call is missing a thought_signature in
    # functionCall parts", to tool calls another model made)
    tool_call_signatures: Literal["keep", "fill"] = "keep"
    # keep: chat assistant messages go as sent; fill: each one without a reasoning_content (but a last one, a prefill) gets a
    # stand-in naming the message and its tool calls (DeepSeek's thinking models answer 400, "Missing `reasoning_content`
    # field in the assistant message at message index N", to assistant messages another model wrote)
    reasoning_content: Literal["keep", "fill"] = "keep"
    # keep: temperature and top_p go as sent; drop: top_p is left out when temperature is also set (Claude Sonnet 4.5 and
    # later answer 400, "`temperature` and `top_p` cannot both be specified for this model. Please use only one.", to the
    # pair that clients written for OpenAI's models send)
    top_p_with_temperature: Literal["keep", "drop"] = "keep"
    # keep: chat messages go in the client's order; merge: successive user messages, and successive assistant messages, go
    # as one (deepseek-reasoner answers 400, "deepseek-reasoner does not support successive user or assistant messages
    # (messages[1] and messages[2] in your input). ...", to what clients written for other models send freely)
    successive_roles: Literal["keep", "merge"] = "keep"
    # keep: tool_choice goes as sent; auto: a tool_choice naming one tool goes as auto while the model thinks (DeepSeek's
    # thinking models answer 400, "deepseek-reasoner does not support this tool_choice", to the named tool that Claude
    # Code's web search and agent frameworks force)
    named_tool_choice: Literal["keep", "auto"] = "keep"
    # keep: tool_choice goes as sent; auto: any choice that forces a tool (one named, chat `required`, Anthropic `any`) goes
    # as auto while the model thinks (Claude answers 400, "Thinking may not be enabled when tool_choice forces tool use.")
    forced_tool_choice: Literal["keep", "auto"] = "keep"
    # unless_disabled: the model thinks unless the body's `thinking` says {type: disabled} (DeepSeek's V4 models);
    # when_enabled: only when it says {type: enabled} or {type: adaptive} (Claude): the rules above that apply "while the
    # model thinks" follow this
    thinks: Literal["unless_disabled", "when_enabled"] = "unless_disabled"
    # keep: sampling goes as sent; fit: while the model thinks, a temperature other than 1, a top_p below 0.95 and any
    # top_k are left out (Claude answers 400, "`temperature` may only be set to 1 when thinking is enabled.", and "`top_k`
    # must be unset when thinking is enabled.", to the sampling clients set for answers without thinking)
    sampling_while_thinking: Literal["keep", "fit"] = "keep"
    # any: `thinking` goes as sent; adaptive: {type: enabled, budget_tokens} goes as {type: adaptive} (Claude Opus 4.7 and
    # later, Sonnet 5 answer 400, '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive"
    # ...'); enabled: {type: adaptive} goes as {type: enabled} with half the output limit as budget, or no thinking where no
    # budget of 1024 fits (Claude Sonnet and Haiku 4.5 and earlier answer 400, "adaptive thinking is not supported on this
    # model")
    thinking_type: Literal["any", "enabled", "adaptive"] = "any"
    # a reasoning effort the client sends (chat `reasoning_effort`, Responses `reasoning.effort`) -> the one sent instead;
    # efforts not named go as sent. Gemini 3.7 and 3.8 Flash answer 400 ("Invalid reasoning_effort: minimal. Valid values
    # are: high, low, medium, none"; "Thinking level is unsupported: THINKING_LEVEL_MINIMAL" for none) to the lowest
    # efforts, which clients written for other models send: {minimal: low, none: low, xhigh: high}
    reasoning_efforts: dict[str, str] = Field(default_factory=dict)
    # request API -> fields set when the client did not send them (before the other rules: a drop or accept list still
    # applies), e.g. {chat: {thinking: {type: disabled}}} keeps a model that thinks by default from thinking
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "ModelBodyConf":
        _check_rename_drop(self.rename, self.drop)
        blank = sorted(f"{k!r} -> {v!r}" for k, v in self.reasoning_efforts.items() if not k.strip() or not v.strip())
        if blank:
            raise ValueError(f"reasoning_efforts: {', '.join(blank)}: each maps an effort a client sends to one the model takes")
        for api, fields in self.defaults.items():
            if api not in APIS:
                raise ValueError(f"defaults: unknown API {api!r} (APIs: {', '.join(APIS)})")
            needed = sorted({"model", *_REQUIRED_FIELDS[api]} & set(fields))
            if needed:
                raise ValueError(f"defaults.{api}: {needed} cannot have a default: the request always holds it")
        return self


class ProviderConf(_Strict):
    """A provider endpoint and how to authenticate to it."""

    base_url: str
    auth: Literal["bearer", "x-api-key", "api-key", "x-goog-api-key", "none"] = "bearer"
    credentials: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    paths: dict[Literal["chat", "completions", "messages", "responses"], str]
    # Anthropic's token count (POST <messages path>/count_tokens) is served beside its Messages API;
    # false for a provider that speaks the Messages API without it: counts then go elsewhere or are estimated.
    counts_tokens: bool = True
    # true for a provider whose Responses API stores nothing (DeepSeek's: no store, previous_response_id, conversation or
    # retrieval): only Responses requests with store: false that name neither go to it, and no stored-response call
    stateless_responses: bool = False
    upstream: str | None = None
    key_rotation: Literal["spread", "first"] = "spread"
    body: BodyConf | None = None
    # USD per 1M input tokens of the models its forwarded embeddings calls name (by the name it reports)
    forward_prices: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("needs at least one of chat, completions, messages, responses")
        for api, path in v.items():
            if not path.startswith("/"):
                raise ValueError(f"path for {api} must start with '/', got {path!r}")
            bare, _, query = path.partition("?")
            if "#" in path or any(c.isspace() for c in path):
                raise ValueError(f"path for {api} may not hold '#' or spaces, got {path!r}")
            if "{" in query or "}" in query:
                raise ValueError(f"path for {api}: {{model}} may stand in the path, not in the query, got {path!r}")
            others = bare.replace(MODEL_PLACEHOLDER, "")
            if "{" in others or "}" in others:
                raise ValueError(f"path for {api}: the only placeholder is {{model}} (the model's name, e.g. an Azure "
                                 f"deployment), got {path!r}")
            if query and any(not part or part.startswith("=") for part in query.split("&")):
                raise ValueError(f"path for {api}: the query must be name=value pairs joined by '&', got {path!r}")
        return v


def utc_now() -> datetime:
    """Now, in UTC: the clock price changes and peak hours follow."""
    return datetime.now(timezone.utc)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PeakConf(_Strict):
    """Hours in which a provider bills a model at a multiple of its prices (DeepSeek doubles them on weekday peaks)."""

    factor: float = Field(gt=0)
    hours_utc: list[str] = Field(min_length=1)  # "HH:MM-HH:MM", start inclusive, end exclusive; 24:00 ends a day
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))
    off_days: list[date] = Field(default_factory=list)  # dates (UTC) without a peak: DeepSeek's public holidays

    @field_validator("hours_utc")
    @classmethod
    def _spans(cls, v: list[str]) -> list[str]:
        for span in v:
            _span_minutes(span)
        return v

    def spans(self) -> list[tuple[int, int]]:
        """The peak spans of a day, in minutes after midnight UTC."""
        return [_span_minutes(span) for span in self.hours_utc]

    def covers(self, when: datetime) -> bool:
        """Whether `when` (UTC) falls in a peak span of a peak day."""
        minute = when.hour * 60 + when.minute
        return self._peak_day(when) and any(start <= minute < end for start, end in self.spans())

    def _peak_day(self, when: datetime) -> bool:
        return WEEKDAYS[when.weekday()] in self.days and when.date() not in self.off_days

    def next_boundary(self, after: datetime) -> datetime | None:
        """The first moment after `after` at which a peak span begins or ends (within the next eight days, past days off)."""
        midnight = after.replace(hour=0, minute=0, second=0, microsecond=0)
        minutes = sorted({m for span in self.spans() for m in span})
        for day in range(9 + len(self.off_days)):  # past a run of days off
            base = midnight + timedelta(days=day)
            if not self._peak_day(base):
                continue
            for minute in minutes:
                moment = base + timedelta(minutes=minute)
                if moment > after:
                    return moment
        return None


def _span_minutes(span: str) -> tuple[int, int]:
    """("HH:MM-HH:MM") -> (start, end) in minutes after midnight; ValueError naming the span."""
    try:
        start, end = (int(h) * 60 + int(m) for h, m in (part.strip().split(":") for part in span.split("-")))
    except ValueError:
        raise ValueError(f"{span!r} is not a span of hours like '01:00-04:00'") from None
    if not 0 <= start < end <= 24 * 60:
        raise ValueError(f"{span!r}: a span must start before it ends, within one day (00:00-24:00)")
    return start, end


class LongContextConf(_Strict):
    """Prices for one call whose input exceeds a size: OpenAI bills GPT-5.4 and later at twice the input (and cache) prices and
    1.5x the output price for the whole call when it holds more than 272K input tokens."""

    above_input_tokens: int = Field(gt=0)
    input_factor: float = Field(default=1.0, gt=0)  # applied to the input, cache read and cache write prices
    output_factor: float = Field(default=1.0, gt=0)


class ModelChangeConf(_Strict):
    """What changes about a model from a given day on (its provider re-prices it, or retires the name it calls and the
    slot calls the successor); fields not given stay as they were."""

    name: str | None = None
    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)
    cached_input_price: float | None = Field(default=None, ge=0)
    cache_write_price: float | None = Field(default=None, ge=0)
    long_context_prices: LongContextConf | None = None
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[str] | None = None
    body: ModelBodyConf | None = None
    prefill: bool | None = None
    chat_tools: bool | None = None
    stop_sequences: bool | None = None
    min_output_tokens: int | None = Field(default=None, gt=0)
    quality: float | None = Field(default=None, ge=0, le=1)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _known_capabilities(v)

    @model_validator(mode="after")
    def _some(self) -> "ModelChangeConf":
        if not self.model_fields_set:
            raise ValueError(f"a change needs at least one of {', '.join(ModelChangeConf.model_fields)}")
        required = sorted(f for f in ("input_price", "output_price", "context_window", "capabilities", "prefill", "chat_tools",
                                      "stop_sequences", "quality")
                          if f in self.model_fields_set and getattr(self, f) is None)
        if required:
            raise ValueError(f"{', '.join(required)} may not be null (a model always has one)")
        return self

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any) -> Any:
        # only the fields the change sets: a dumped config loaded again holds the same change (not every field set to null)
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set} if isinstance(data, dict) else data

    def given(self) -> dict[str, Any]:
        """The fields this change sets (null included: it unsets an optional one)."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self.model_fields_set}


def _known_capabilities(v: list[str]) -> list[str]:
    bad = [c for c in v if c not in CAPABILITIES]
    if bad:
        raise ValueError(f"unknown capabilities {bad}; known: {sorted(CAPABILITIES)}")
    return v


PRICES = ("input_price", "output_price", "cached_input_price", "cache_write_price")  # what a peak multiplies


class ModelConf(_Strict):
    """A routable model and its prices (USD per 1M tokens)."""

    provider: str
    name: str | None = None
    input_price: float = Field(ge=0)
    output_price: float = Field(ge=0)
    # Prompt caching: input tokens read from the provider's cache, and (Anthropic) written to it.
    # Unset: billed at input_price.
    cached_input_price: float | None = Field(default=None, ge=0)
    cache_write_price: float | None = Field(default=None, ge=0)
    context_window: int = Field(gt=0)
    # the most output tokens one call may ask for (providers answer 400 above it); unset: the context window
    max_output_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[str] = Field(default_factory=list)
    tier: TierName = "MEDIUM"
    quality: float = Field(default=0.8, ge=0, le=1)
    upstream: str | None = None
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    tags: list[str] = Field(default_factory=list)
    body: ModelBodyConf | None = None  # this model's own body rules, over its provider's
    # false: the model refuses a conversation that ends with an assistant message (a prefill), so such requests go to
    # other models (Claude 4.6 and later answer 400, "This model does not support assistant message prefill. The
    # conversation must end with a user message.")
    prefill: bool = True
    # false: the model refuses function tools on the chat completions API, so chat requests with tools go to other models
    # (OpenAI's GPT-5.4 and later while they reason: "Function tools with reasoning_effort are not supported for gpt-5.6-sol
    # in /v1/chat/completions. To use function tools, use /v1/responses or set reasoning_effort to 'none'."; GPT-6.1 Sol has
    # no effort none); its Responses API takes them
    chat_tools: bool = True
    # false: the model refuses stop sequences, so requests that set `stop` go to other models (OpenAI's reasoning models
    # without an effort none: "Unsupported parameter: 'stop' is not supported with this model."); leaving them out would
    # let the answer run past where the client wants it cut
    stop_sequences: bool = True
    # the smallest output limit (max_tokens) a request may set and still go to this model, for models that think before
    # they answer, always, with thoughts that count against the limit (Gemini 3: a 500-token limit left 3.6 Flash 18 tokens
    # of answer, and finish_reason length); requests that set less go to other models; unset: any limit
    min_output_tokens: int | None = Field(default=None, gt=0)
    # prices for calls with very long inputs (OpenAI's GPT-5.4 and later above 272K input tokens); unset: the same prices
    long_context_prices: LongContextConf | None = None
    # day (YYYY-MM-DD, UTC) -> what changes from that day on: prices where an introductory price ends; the name, prices,
    # limits and body rules where the provider shuts the called model down and the slot calls its successor
    changes: dict[date, ModelChangeConf] = Field(default_factory=dict)
    # hours in which every price above is multiplied by a factor (DeepSeek's weekday peak: twice its off-peak prices, which
    # are then the ones written). A config holds the model as in effect when it is loaded; a running process takes each
    # change at its moment (midnight UTC of a change's day, the start and end of each peak span).
    peak: PeakConf | None = None
    _written: dict[str, Any] = PrivateAttr(default_factory=dict)  # what the changes touch, as written, before any change

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> Any:
        # dumped as written, so that a dumped config loaded again holds the same schedule (not a peak price doubled again,
        # not the successor's name in the slot before its day)
        data = handler(self)
        if isinstance(data, dict):
            for name, value in self._written.items():
                if name in data:
                    data[name] = value.model_dump() if isinstance(value, BaseModel) else value
        return data

    @model_validator(mode="after")
    def _as_of_now(self) -> "ModelConf":
        self._written = {name: getattr(self, name) for name in ModelChangeConf.model_fields}
        return self.as_of(utc_now())

    def as_of(self, when: datetime) -> "ModelConf":
        """This model as in effect at `when` (UTC): changes taken, peak prices applied (itself when nothing differs)."""
        values = dict(self._written)
        for day in sorted(self.changes):
            if day <= when.date():
                values.update(self.changes[day].given())
        if self.peak is not None and self.peak.covers(when):
            factor = self.peak.factor
            values.update({name: None if values[name] is None else values[name] * factor for name in PRICES})
        if all(getattr(self, name) == value for name, value in values.items()):
            return self
        return self.model_copy(update=values)

    def next_change(self, after: datetime) -> datetime | None:
        """The first moment after `after` at which this model changes, or None."""
        days = [datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) for day in self.changes]
        moments = [m for m in days if m > after]
        if self.peak is not None:
            boundary = self.peak.next_boundary(after)
            if boundary is not None:
                moments.append(boundary)
        return min(moments, default=None)

    @field_validator("capabilities")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        return _known_capabilities(v)

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class RuleConf(_Strict):
    """One rule of the rules classifier: keywords, prompt prefixes and/or a regex."""

    name: str
    keywords: list[str] = Field(default_factory=list)
    starts_with: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    weight: float = 0.0
    category: str | None = None
    min_tier: TierName | None = None
    max_tier: TierName | None = None
    per_hit: bool = False

    @field_validator("patterns", mode="before")
    @classmethod
    def _regex(cls, v: Any) -> Any:
        import re

        v = [v] if isinstance(v, str) else v
        for i, pattern in enumerate(v if isinstance(v, list) else []):
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"patterns[{i}] is not a valid regex: {exc}") from None
        return v

    @model_validator(mode="after")
    def _something(self) -> "RuleConf":
        if not (self.keywords or self.starts_with or self.patterns):
            raise ValueError(f"rule {self.name!r} needs keywords, starts_with or patterns")
        return self


class LengthConf(_Strict):
    """The length term: up to `weight` of the score, full at `full_at_tokens` of conversation (no system prompt, no tools)."""

    weight: float = 0.35
    full_at_tokens: int = Field(default=3000, gt=1)


def _ascending_cuts(v: list[float]) -> list[float]:
    if len(v) != 3 or not all(0 <= x <= 1 for x in v) or not v[0] < v[1] < v[2]:
        raise ValueError(f"must be three ascending numbers in 0..1, got {v}")
    return v


class RulesConf(_Strict):
    """Rules classifier settings."""

    cuts: list[float] = Field(default_factory=lambda: [0.2, 0.45, 0.7])
    length: LengthConf = Field(default_factory=LengthConf)
    base: float = 0.05
    rules: list[RuleConf] = Field(default_factory=list)
    add: list[RuleConf] = Field(default_factory=list)  # appended to `rules` (to extend the defaults)

    _cuts = field_validator("cuts")(_ascending_cuts)


class SemanticConf(_Strict):
    """Semantic classifier settings (embeddings vs labelled examples)."""

    examples: str | None = None  # path to a JSONL of labelled examples; None = the built-in set
    backend: Literal["static", "onnx"] = "static"
    # Defaults chosen by cross-validation on the built-in examples (python -m llm_router.bench.semantic tune).
    k: int = Field(default=4096, ge=1, le=4096)
    cuts: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.7])
    # knn: every example votes with weight exp((cos - best) / temperature) when k >= the number of
    # examples (the default), else the k nearest; centroid: the same over per-archetype centroids.
    # `python -m llm_router.bench.semantic quality`: knn-softmax 0.673 tier / 0.65 category in 5-fold
    # CV and 0.77 category agreement on real data sets; centroid 0.627 / 0.64 and 0.65, ~40 us faster.
    mode: Literal["knn", "centroid"] = "knn"
    temperature: float = Field(default=0.05, gt=0, le=1)  # similarity softmax: lower = nearest dominates
    length_weight: float = Field(default=0.2, ge=0, le=1)  # share of the score from the conversation's length
    # votes of this many recent texts kept, so an agent loop's later calls (same instruction) skip the embedding
    # and the vote; 0: off. Same results either way.
    memo: int = Field(default=2048, ge=0, le=1_000_000)
    _cuts = field_validator("cuts")(_ascending_cuts)


class LearnedConf(_Strict):
    """Learned classifier settings: a model file made by `llm-router train`."""

    model: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)  # data-set model name -> catalog model id


class ClassifiersConf(_Strict):
    rules: RulesConf = Field(default_factory=RulesConf)
    semantic: SemanticConf = Field(default_factory=SemanticConf)
    learned: LearnedConf = Field(default_factory=LearnedConf)


class ConstraintsConf(_Strict):
    """Which models a policy may use at all."""

    models: list[str] | None = None  # allow-list of model ids
    exclude_models: list[str] = Field(default_factory=list)
    providers: list[str] | None = None  # allow-list of providers
    exclude_providers: list[str] = Field(default_factory=list)
    max_input_price: float | None = Field(default=None, ge=0)
    max_output_price: float | None = Field(default=None, ge=0)
    require_tags: list[str] = Field(default_factory=list)  # e.g. data residency: [eu]
    forbid_tags: list[str] = Field(default_factory=list)  # e.g. compliance: [cn]


class PolicyConf(_Strict):
    """Classifier + strategy + thresholds + constraints for a set of requests."""

    classifier: Literal["rules", "semantic", "learned", "hybrid", "none"] = "rules"
    strategy: Literal["ladder", "quality_gate", "cost_weighted", "capability", "round_robin", "least_used", "semantic", "cascade", "hedge"] = "ladder"
    ladder: dict[TierName, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    constraints: ConstraintsConf = Field(default_factory=ConstraintsConf)
    fallbacks: int = Field(default=2, ge=0, le=8)
    expected_output_tokens: int = Field(default=300, ge=1)
    reference_model: str | None = None
    client_model: Literal["route", "honor", "ceiling"] = "route"
    # A request asking for more output tokens than a model writes in one call (Claude Code asks for 32,000):
    # refuse: that model is not a candidate (400 when none is); clamp: it is, and the limit it is sent is lowered to
    # its max_output_tokens, so the answer may stop there (finish_reason length) where the client allowed more.
    output_limit: Literal["refuse", "clamp"] = "refuse"
    explain: bool = False
    failure_mode: Literal["open", "closed"] = "closed"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    seed: int | None = None
    # Share of requests sent to a model drawn uniformly from the candidates, so the decision log
    # holds outcomes of every model for `llm-router train` (each line records its propensity).
    explore: float = Field(default=0.0, ge=0.0, le=1.0)
    # conversation: later turns stay on the model that answered the conversation (its prompt cache)
    # unless they need a higher tier; see llm_router.affinity.
    affinity: Literal["off", "conversation"] = "off"
    # shadow: serve the model the client asked for (else reference_model) and only record what the
    # router would have chosen, with its cost: measure the saving on live traffic before routing it.
    # true (or 1.0) shadows every request; a share such as 0.9 shadows 90% and routes the rest (a rollout).
    shadow: float = Field(default=0.0, ge=0.0, le=1.0)
    # Model names a client of this policy's routes may send to be routed by another policy instead,
    # e.g. {"auto-cheap": "cheap", "auto-best": "best"}: one base URL, a per-call choice. Only the
    # names listed here switch, so a route's constraints cannot be escaped by a name it does not allow.
    client_policies: dict[str, str] = Field(default_factory=dict)
    # APIs the router does not route, sent on to one provider with its key: {embeddings: openai, audio: openai}
    forward: dict[ForwardApi, str] = Field(default_factory=dict)

    @field_validator("ladder", mode="before")
    @classmethod
    def _ladder_keys(cls, v: Any) -> Any:
        return {k.upper(): m for k, m in v.items()} if isinstance(v, dict) else v


class Config(_Strict):
    """The whole configuration."""

    providers: dict[str, ProviderConf]
    models: dict[str, ModelConf]
    classifiers: ClassifiersConf = Field(default_factory=ClassifiersConf)
    policies: dict[str, PolicyConf]
    default_policy: str = "default"
    seed: int | None = None
    # Sections owned by the adapters and edges; validated by their own modules.
    server: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    accounting: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> "Config":
        problems: list[str] = []
        for mid, m in self.models.items():
            if m.provider not in self.providers:
                problems.append(f"models.{mid}.provider: unknown provider {m.provider!r} (known: {sorted(self.providers)})")
        if self.default_policy not in self.policies:
            problems.append(f"default_policy: unknown policy {self.default_policy!r} (known: {sorted(self.policies)})")
        for pname, p in self.policies.items():
            problems += policy_problems(p, f"policies.{pname}", self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def as_of(self, when: datetime) -> "Config":
        """This config with every model as in effect at `when` (UTC; itself when none changes)."""
        models = {mid: m.as_of(when) for mid, m in self.models.items()}
        if all(models[mid] is m for mid, m in self.models.items()):
            return self
        return self.model_copy(update={"models": models})

    def next_change(self, after: datetime) -> datetime | None:
        """The first moment after `after` at which some model changes, or None."""
        return min((m for m in (model.next_change(after) for model in self.models.values()) if m is not None),
                   default=None)


def policy_problems(p: PolicyConf, where: str, cfg: "Config") -> list[str]:
    """Cross-reference problems of one policy against the catalog."""
    problems: list[str] = []
    known = sorted(cfg.models)
    for tier, mid in p.ladder.items():
        if mid not in cfg.models:
            problems.append(f"{where}.ladder.{tier}: unknown model {mid!r} (known: {known})")
    if p.reference_model is not None and p.reference_model not in cfg.models:
        problems.append(f"{where}.reference_model: unknown model {p.reference_model!r} (known: {known})")
    c = p.constraints
    for mid in [*(c.models or []), *c.exclude_models]:
        if mid not in cfg.models:
            problems.append(f"{where}.constraints: unknown model {mid!r} (known: {known})")
    for prov in [*(c.providers or []), *c.exclude_providers]:
        if prov not in cfg.providers:
            problems.append(f"{where}.constraints: unknown provider {prov!r} (known: {sorted(cfg.providers)})")
    for key in ("pool", "chain"):
        for mid in p.params.get(key, []) or []:
            if mid not in cfg.models:
                problems.append(f"{where}.params.{key}: unknown model {mid!r} (known: {known})")
    for label, mid in (p.params.get("map") or {}).items():
        if mid not in cfg.models:
            problems.append(f"{where}.params.map.{label}: unknown model {mid!r} (known: {known})")
    mix = p.params.get("mix") if p.strategy == "quality_gate" else None
    for task, shares in (mix.items() if isinstance(mix, dict) else ()):
        for mid in shares if isinstance(shares, dict) else ():
            if mid not in cfg.models:
                problems.append(f"{where}.params.mix.{task}.{mid}: unknown model {mid!r} (known: {known})")
    if p.strategy in ("cascade", "hedge"):
        from llm_router.orchestrate.params import param_problems

        problems += [f"{where}.{problem}" for problem in param_problems(p.strategy, p.params, cfg.models)]
    if p.strategy == "quality_gate":
        from llm_router.strategies.quality_gate import param_problems as gate_problems

        problems += [f"{where}.{problem}" for problem in gate_problems(p.params)]
    if p.strategy == "ladder" and not p.ladder:
        problems.append(f"{where}.ladder: the ladder strategy needs a ladder (tier -> model)")
    if p.affinity != "off" and p.strategy in ("cascade", "hedge"):
        problems.append(f"{where}.affinity: keeps a conversation on one model, but the {p.strategy} strategy asks "
                        "several models per request by design")
    for name, target in p.client_policies.items():
        if target not in cfg.policies:
            problems.append(f"{where}.client_policies.{name}: unknown policy {target!r} (known: {sorted(cfg.policies)})")
        if not name.strip() or name.lower() in AUTO_MODELS:
            problems.append(f"{where}.client_policies: {name!r} cannot name a policy (empty, or a name that means 'route me')")
        elif name in cfg.models or any(m.name == name for m in cfg.models.values()):
            problems.append(f"{where}.client_policies.{name}: is also a model of the catalog; pick a name that is not")
    problems += _forward_problems(p, where, cfg)
    if p.classifier == "learned" and not cfg.classifiers.learned.model:
        problems.append(f"{where}.classifier: 'learned' needs classifiers.learned.model (a file from `llm-router train`)")
    if not problems and not allowed_models(p, cfg):
        problems.append(f"{where}.constraints: no model of the catalog satisfies these constraints")
    return problems


def _forward_problems(p: PolicyConf, where: str, cfg: "Config") -> list[str]:
    """A forward must name a provider with an OpenAI-style API root that the policy's constraints allow."""
    problems = []
    c = p.constraints
    for api, name in p.forward.items():
        prov = cfg.providers.get(name)
        if prov is None:
            problems.append(f"{where}.forward.{api}: unknown provider {name!r} (known: {sorted(cfg.providers)})")
        elif api_root({str(k): v for k, v in prov.paths.items()}) is None:
            problems.append(f"{where}.forward.{api}: provider {name!r} has no OpenAI-style API root to send it to (a chat, "
                            "completions or responses path without {model})")
        elif (c.providers is not None and name not in c.providers) or name in c.exclude_providers:
            problems.append(f"{where}.forward.{api}: provider {name!r} is not allowed by this policy's constraints")
    files, batches = p.forward.get("files"), p.forward.get("batches")
    if batches is not None and files != batches:
        # A batch names a file uploaded to the same provider, and its results are fetched as that provider's files.
        problems.append(f"{where}.forward.batches: the Batch API needs files forwarded to the same provider "
                        f"(forward.files: {batches!r}), got {files!r}")
    return problems


def allowed_models(p: PolicyConf, cfg: "Config") -> list[str]:
    """Model ids a policy's constraints allow."""
    c = p.constraints
    out = []
    for mid, m in cfg.models.items():
        if c.models is not None and mid not in c.models:
            continue
        if mid in c.exclude_models:
            continue
        if c.providers is not None and m.provider not in c.providers:
            continue
        if m.provider in c.exclude_providers:
            continue
        if c.max_input_price is not None and m.input_price > c.max_input_price:
            continue
        if c.max_output_price is not None and m.output_price > c.max_output_price:
            continue
        if c.require_tags and not set(c.require_tags) <= set(m.tags):
            continue
        if set(c.forbid_tags) & set(m.tags):
            continue
        out.append(mid)
    return out


# ---- loading ------------------------------------------------------------------------------

def default_data() -> dict[str, Any]:
    """The built-in defaults as plain data."""
    text = resources.files("llm_router").joinpath("data/defaults.yaml").read_text()
    return yaml.safe_load(text)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """User config over defaults: providers, models and policies merge by key (null removes)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key in ("providers", "models", "policies") and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            for name, entry in value.items():
                if entry is None:
                    merged.pop(name, None)
                else:
                    merged[name] = entry
            out[key] = merged
        elif key == "classifiers" and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            for name, entry in value.items():
                if isinstance(entry, dict) and isinstance(merged.get(name), dict):
                    merged[name] = {**merged[name], **entry}
                else:
                    merged[name] = entry
            out[key] = merged
        else:
            out[key] = value
    return out


def format_validation(exc: ValidationError) -> list[str]:
    """Pydantic errors as 'field.path: problem' lines."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def parse_config(data: dict[str, Any] | None, *, source: str = "config", with_defaults: bool = True) -> Config:
    """Validate config data (merged over the defaults); raises ConfigError naming fields."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source)
    merged = merge(default_data(), data or {}) if with_defaults else (data or {})
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc), source) from None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a YAML config file, or the built-in defaults when path is None."""
    if path is None:
        return parse_config({}, source="built-in defaults")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror}"], str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"], str(p)) from None
    return parse_config(data, source=str(p))


def parse_policy(data: Any, cfg: Config, *, source: str = "route config") -> tuple[str, PolicyConf]:
    """A per-route policy: {"policy": NAME}, {"policy": {...}} or the policy fields inline."""
    if isinstance(data, (str, bytes)):
        import orjson

        try:
            data = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError as exc:
            raise ConfigError([f"not valid JSON: {exc}"], source) from None
    if not isinstance(data, dict):
        raise ConfigError([f"must be a JSON object, got {type(data).__name__}"], source)
    if not data:
        return cfg.default_policy, cfg.policies[cfg.default_policy]
    if set(data) == {"policy"} and isinstance(data["policy"], str):
        name = data["policy"]
        if name not in cfg.policies:
            raise ConfigError([f"policy: unknown policy {name!r} (known: {sorted(cfg.policies)})"], source)
        return name, cfg.policies[name]
    inline = data.get("policy") if set(data) == {"policy"} else data
    if not isinstance(inline, dict):
        raise ConfigError(["policy: must be a policy name or an object of policy fields"], source)
    base = {}
    if isinstance(inline.get("extends"), str):
        parent = inline["extends"]
        if parent not in cfg.policies:
            raise ConfigError([f"extends: unknown policy {parent!r} (known: {sorted(cfg.policies)})"], source)
        base = cfg.policies[parent].model_dump(exclude_unset=True)
        inline = {k: v for k, v in inline.items() if k != "extends"}
    try:
        policy = PolicyConf.model_validate({**base, **inline})
    except ValidationError as exc:
        raise ConfigError(format_validation(exc), source) from None
    problems = policy_problems(policy, "policy", cfg)
    if problems:
        raise ConfigError(problems, source)
    return "inline", policy


def tier_of(name: str) -> Tier:
    """Tier from a config tier name."""
    return Tier[name]


__all__ = [
    "APIS", "CLASSIFIERS", "Config", "ConfigError", "PolicyConf", "STRATEGIES", "load_config",
    "parse_config", "parse_policy", "allowed_models",
]
