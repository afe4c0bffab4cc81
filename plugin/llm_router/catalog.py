"""Models and providers the router can choose from, with prices and capabilities."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any
from urllib.parse import quote


class Tier(IntEnum):
    """How demanding a request is; also the highest tier a model is rated to serve."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: "str | int | Tier") -> "Tier":
        """Tier from a name (any case) or a number."""
        if isinstance(value, Tier):
            return value
        if isinstance(value, int):
            return cls(value)
        return cls[str(value).strip().upper()]


TIER_NAMES = tuple(t.name for t in Tier)  # by Tier value: Enum.name is a slow property for hot paths


# Capability names used in config and by capability matching.
# hosted_tools: tools the provider runs itself in OpenAI's Responses API (web_search, file_search, code_interpreter, ...).
# json: JSON mode (response_format json_object); json_schema: structured output that follows the client's schema.
CAPABILITIES = frozenset({"tools", "vision", "json", "json_schema", "code", "completions", "long_context", "streaming",
                          "hosted_tools", "logprobs", "multiple_choices"})
# Model names by which a client asks to be routed (no particular model).
AUTO_MODELS = frozenset({"", "auto", "router", "llm-router", "default"})
# Request APIs a provider may accept.
APIS = ("chat", "completions", "messages", "responses")
# The one placeholder a provider path may hold: the model's provider-side name (an Azure deployment).
MODEL_PLACEHOLDER = "{model}"


@dataclass(frozen=True, slots=True)
class BodyDialect:
    """How a provider's API differs from the body a client sends: fields it takes, names it uses."""

    accept: dict[str, frozenset[str]] = field(default_factory=dict)  # request API -> fields it accepts
    rename: tuple[tuple[str, str], ...] = ()  # (client name, provider name), applied in order
    usage_unasked: bool = False  # streams carry usage without stream_options (which may be rejected)
    drop: frozenset[str] = frozenset()  # fields never sent (after renaming)
    tool_call_ids: str = "any"  # "alnum9" / "max40" / "word": tool call ids rewritten to fit (Mistral / OpenAI / Anthropic)
    text_content: bool = False  # chat message content arrays of text parts sent as one string (DeepSeek)
    assistant_after_tool: bool = False  # a user message right after tool results is preceded by an assistant one (Mistral)
    developer_as_system: bool = False  # chat messages of role developer sent as system (DeepSeek)
    # chat message role (or "tool_call") -> the fields it takes, others left out (Mistral); a role not named keeps all
    message_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    prefix_last_assistant: bool = False  # a last assistant message goes out with prefix: true (Mistral)
    thinking_every_tool_turn: bool = False  # thinking only if every assistant tool call turn holds a thinking block (DeepSeek)
    drop_empty_tool_calls: bool = False  # chat messages' empty tool_calls arrays left out (OpenAI)
    signed_thinking_only: bool = False  # Anthropic thinking blocks without a signature left out (Anthropic)
    drop_blank_text: bool = False  # Anthropic empty or whitespace-only text blocks left out (Anthropic)
    fill_tool_signatures: bool = False  # unsigned chat tool calls get Gemini's stand-in thought signature (Gemini 3)
    fill_reasoning: bool = False  # chat assistant messages without reasoning_content get a stand-in (DeepSeek thinking models)
    one_sampler: bool = False  # top_p left out when temperature is also set (Claude Sonnet 4.5 and later)
    merge_successive: bool = False  # successive user (or assistant) chat messages sent as one (deepseek-reasoner)
    unforced_tools: bool = False  # a tool_choice naming one tool sent as auto while thinking (DeepSeek thinking models)
    unforced_any_tool: bool = False  # any tool_choice forcing a tool (named, required, any) sent as auto while thinking (Claude)
    thinks_when_enabled: bool = False  # thinks only when `thinking` is enabled or adaptive (Claude), not unless disabled
    thinking_sampling: bool = False  # while thinking: temperature other than 1, top_p below 0.95, top_k left out (Claude)
    thinking_type: str = ""  # "enabled" / "adaptive": the one form of `thinking` the model takes (Claude); "": either
    effortless_unthinking: bool = False  # thinking {type: disabled}: reasoning_effort, output_config.effort left out (DeepSeek)
    efforts: dict[str, str] = field(default_factory=dict)  # reasoning effort sent -> the one the model takes (Gemini 3.8 Flash)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # request API -> fields set when the client sent none


@dataclass(frozen=True, slots=True)
class Provider:
    """Where a provider lives and how it wants to be called."""

    name: str
    base_url: str
    upstream: str
    auth: str  # "bearer" | "x-api-key" | "api-key" | "x-goog-api-key" | "none"
    # request API -> upstream path, e.g. {"chat": "/v1/chat/completions"}; may hold {model} and a query
    paths: dict[str, str]
    credentials: tuple[str, ...] = ()  # secret references, e.g. "env://OPENAI_API_KEY"
    headers: tuple[tuple[str, str], ...] = ()  # extra fixed headers, e.g. anthropic-version
    key_rotation: str = "spread"  # "spread" (round-robin per request) | "first"
    forward_prices: dict[str, float] = field(default_factory=dict)  # embeddings model name -> USD per 1M input tokens
    body: BodyDialect | None = None  # None: the body passes as the client wrote it (model set, usage asked on streams)
    counts_tokens: bool = True  # serves <messages path>/count_tokens (Anthropic's token count)
    stateless_responses: bool = False  # its Responses API stores nothing (no store, previous_response_id, retrieval)

    @property
    def host(self) -> str:
        """Host name of base_url, without scheme or port."""
        rest = self.base_url.split("://", 1)[-1]
        return rest.split("/", 1)[0].split(":", 1)[0]


def fill_model(template: str, model_name: str) -> str:
    """A provider path with `{model}` replaced by the model's URL-quoted name (an Azure deployment)."""
    return template.replace(MODEL_PLACEHOLDER, quote(model_name, safe="")) if MODEL_PLACEHOLDER in template else template


def provider_path(template: str, model_name: str, *, suffix: str = "", query: str = "") -> str:
    """A provider's path for one call: `{model}` filled in, `suffix` added to the path part, and the
    client's `query` after the provider's own parameters, which win when both name one."""
    path, _, own = fill_model(template, model_name).partition("?")
    if suffix:
        path = path.rstrip("/") + suffix
    query = query.lstrip("?")
    if query and own:
        ours = {part.partition("=")[0] for part in own.split("&")}
        query = "&".join(part for part in query.split("&") if part and part.partition("=")[0] not in ours)
    joined = "&".join(q for q in (own, query) if q)
    return path + "?" + joined if joined else path


@dataclass(frozen=True, slots=True, eq=False)
class Model:
    """One routable model with its prices (USD per 1M tokens) and abilities.

    Compared by identity: a catalog holds one object per model id, and identity keeps the
    hot path's membership tests cheap.
    """

    id: str
    provider: str
    name: str  # the model name sent to the provider
    input_price: float
    output_price: float
    context_window: int
    capabilities: frozenset[str]
    tier: Tier
    quality: float  # 0..1, higher is better
    upstream: str  # gateway cluster / upstream id
    rpm: int | None = None
    tpm: int | None = None
    tags: frozenset[str] = field(default_factory=frozenset)
    cached_input_price: float | None = None  # input tokens read from the provider's prompt cache (None: input_price)
    cache_write_price: float | None = None  # input tokens written to it (Anthropic; None: input_price)
    max_output: int | None = None  # the most output tokens a call may ask for (None: bounded by the context window)
    body: BodyDialect | None = None  # the body rules of its provider with its own over them (None: none)
    prefill: bool = True  # takes a conversation that ends with an assistant message
    chat_tools: bool = True  # takes function tools on the chat completions API (else on its other APIs only)
    stop_sequences: bool = True  # takes stop sequences (chat and completions `stop`)
    min_output: int | None = None  # the smallest output limit a request may set for it (it thinks first; None: any)
    # (input tokens above which, input-side price factor, output price factor) for a whole call; None: one price
    long_context: tuple[int, float, float] | None = None

    def cost(self, input_tokens: int, output_tokens: int, *, cached: int = 0, written: int = 0) -> float:
        """USD for a call with these token counts; cached and written are parts of input_tokens."""
        usd = input_tokens * self.input_price
        if cached and self.cached_input_price is not None:
            usd += cached * (self.cached_input_price - self.input_price)
        if written and self.cache_write_price is not None:
            usd += written * (self.cache_write_price - self.input_price)
        out = output_tokens * self.output_price
        if self.long_context is not None and input_tokens > self.long_context[0]:
            usd, out = usd * self.long_context[1], out * self.long_context[2]
        return (usd + out) / 1_000_000

    @property
    def blended_price(self) -> float:
        """A single price for ordering: input and output weighted 3:1, as typical chat traffic."""
        return (3 * self.input_price + self.output_price) / 4


@dataclass(frozen=True, slots=True)
class Catalog:
    """All providers and models, looked up by id."""

    providers: dict[str, Provider]
    models: dict[str, Model]

    def get(self, model_id: str) -> Model | None:
        """The model with this id or provider-side name, if any."""
        found = self.models.get(model_id)
        if found is not None:
            return found
        for model in self.models.values():
            if model.name == model_id:
                return model
        return None

    def provider_of(self, model: Model) -> Provider:
        """The provider that serves a model."""
        return self.providers[model.provider]

    def dialect_of(self, model: Model) -> BodyDialect | None:
        """The body rules a model's calls follow: its own (over its provider's) or its provider's."""
        return model.body if model.body is not None else self.providers[model.provider].body

    def serves(self, model: Model, api: str) -> bool:
        """Whether the model's provider accepts this request API."""
        return api in self.providers[model.provider].paths and (api != "completions" or "completions" in model.capabilities)

    def keeps_responses(self, model: Model) -> bool:
        """Whether the model's provider serves the Responses API and keeps what it answers (stored responses, chains)."""
        return self.serves(model, "responses") and not self.providers[model.provider].stateless_responses
