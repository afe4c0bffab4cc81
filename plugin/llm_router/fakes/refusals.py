"""What each fake provider refuses, and how: the 400s (and 404s, 422s) real providers answer to requests they do not take.

Each rule here mirrors an error users report from the real API, in that provider's own format and wording.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_router.fakes.shapes import signed_by

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
# OpenAI's models that refuse function tools on the chat completions API unless reasoning_effort is none (GPT-5.4 and
# later; reported for GPT-5.6 Sol, Terra and Luna, GPT-6 Sol and, without an effort none, GPT-6 Astra at every effort)
TOOLS_ON_RESPONSES = re.compile(r"gpt-(?:5\.(?:[4-9]|\d\d)|[6-9])")
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
REASONING_REFUSED = ("max_tokens", "logprobs", "top_logprobs", "logit_bias", "stop")
REASONING_FIXED = (("temperature", 1), ("top_p", 1), ("presence_penalty", 0), ("frequency_penalty", 0))


@dataclass(frozen=True, slots=True)
class Refusal:
    """A provider's error answer to a request it does not take: status, JSON body, and whether it comes with the fake's
    x-fake-provider header (validation errors from Mistral's and Google's front layers do not)."""

    status: int
    body: Any
    tagged: bool = True


def api_error(status: int, message: str, kind: str, anthropic: bool, *, param: str | None = None,
              code: str | None = None) -> Refusal:
    """An error in Anthropic's format or in OpenAI's (which the OpenAI-compatible providers share)."""
    if anthropic:
        return Refusal(status, {"type": "error", "error": {"type": kind, "message": message}})
    return Refusal(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def google_error(status: int, message: str, kind: str) -> Refusal:
    """An error as Gemini's OpenAI-compatible endpoint sends it: a list holding Google's error object."""
    return Refusal(status, [{"error": {"code": status, "message": message, "status": kind}}])


def mistral_error(status: int, message: Any, kind: str, code: str | None = None) -> Refusal:
    """An error in Mistral's own format (its 422 validation errors carry pydantic's detail list as the message)."""
    return Refusal(status, {"object": "error", "message": message, "type": kind, "param": None, "code": code}, tagged=False)


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request asks a fake for, read once for the provider's checks and for the answer."""

    model: Any  # the deployment's model, else the body's (the checks refuse anything but a non-empty string)
    max_tokens: Any
    choices: Any  # n on the chat and completions APIs, else 1
    thinking: Any  # Anthropic's thinking object on the Messages API, else None
    thinking_off: bool  # thinking: {type: disabled}, on any API

    @classmethod
    def read(cls, api: str, deployment: str | None, data: dict[str, Any]) -> "Ask":
        """Read a parsed body sent to one of a provider's APIs."""
        thinking = data.get("thinking")
        return cls(model=deployment or data.get("model"),  # a deployment path serves its own model, whatever the body says
                   max_tokens=data.get("max_tokens") or data.get("max_completion_tokens") or data.get("max_output_tokens"),
                   choices=data.get("n", 1) if api in ("chat", "completions") else 1,
                   thinking=thinking if api == "messages" else None,
                   thinking_off=isinstance(thinking, dict) and thinking.get("type") == "disabled")

    def deepseek_thinks(self, provider: str, api: str) -> bool:
        """Whether DeepSeek's chat API thinks on this request (its V4 models do unless told not to)."""
        return provider == "deepseek" and api == "chat" and DEEPSEEK_THINKING.match(str(self.model)) is not None \
            and not self.thinking_off


def refusal(provider: str, api: str, ask: Ask, data: dict[str, Any], body: bytes, *, strict: frozenset[str] | None,
            models: tuple[str, ...] | None, max_output: dict[str, int]) -> Refusal | None:
    """The error a provider answers to a request it does not take, checked in the order the fakes always have; None
    when it takes it. strict: the top-level fields the API takes (None: any); models: the names it serves (None: any)."""
    anthropic = api == "messages"
    extra = [k for k in data if k not in strict] if strict is not None else []
    if extra and provider == "google":
        violations = [{"description": f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.'} for k in extra]
        return Refusal(400, [{"error": {
            "code": 400, "message": "\n".join(v["description"] for v in violations), "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}]}}], tagged=False)
    if extra:
        return mistral_error(422, {"detail": [{"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted",
                                               "input": data[k]} for k in extra]}, "invalid_request_error")
    if provider == "mistral" and api == "chat":
        detail = _mistral_message_errors(data.get("messages"))
        if detail:
            return mistral_error(422, {"detail": detail}, "invalid_request_error")
        last = (data.get("messages") or [None])[-1]
        if isinstance(last, dict) and last.get("role") == "assistant" and last.get("prefix") is not True:
            return mistral_error(400, "Expected last role User or Tool (or Assistant with prefix True) for serving but got "
                                 "assistant", "invalid_request_error")
    if provider == "deepseek" and api == "chat":
        developer = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict)
                          and m.get("role") == "developer"), None)
        if developer is not None:
            return api_error(400, "Failed to deserialize the JSON body into the target type: "
                             f"messages[{developer}].role: unknown variant `developer`, expected one of `system`, "
                             "`user`, `assistant`, `tool`", "invalid_request_error", anthropic, code="invalid_request_error")
        listed = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict)
                       and isinstance(m.get("content"), list)), None)
        if listed is not None and not DEEPSEEK_THINKING.match(str(data.get("model"))):
            # deepseek-chat's chat API took string content only; V4 takes arrays of parts, and V4.1 Flash reads images
            column = body.find(b"[", body.find(b'"content"', _nth_message(body, listed))) + 1
            return api_error(400, "Failed to deserialize the JSON body into the target type: "
                             f"messages[{listed}]: invalid type: sequence, expected a string at line 1 column "
                             f"{column}", "invalid_request_error", anthropic, code="invalid_request_error")
    bad_word = _bad_tool_id(data, api, lambda i: not WORD_ID.fullmatch(i)) if provider == "anthropic" else None
    if bad_word is not None:  # Anthropic names the place with dots: messages.1.content.0.tool_use.id
        return api_error(400, f"{'.'.join(map(str, bad_word[0]))}: String should match pattern '^[a-zA-Z0-9_-]+$'",
                         "invalid_request_error", anthropic)
    unsigned = _unsigned_gemini_call(data) if provider == "google" and api == "chat" and GEMINI_3.match(
        str(ask.model or "")) else None
    if unsigned is not None:  # Gemini 3 checks the first tool call of each model turn for its thought signature
        name, position = unsigned
        return google_error(400, "Function call is missing a thought_signature in functionCall parts. This is required for "
                            "tools to work correctly, and missing thought_signature may lead to degraded model performance. "
                            f"Additional data, function call `default_api:{name}` , position {position}. Please refer to "
                            "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.", "INVALID_ARGUMENT")
    empty = next((i for i, m in enumerate(data.get("messages") or []) if isinstance(m, dict) and m.get("tool_calls") == []),
                 None) if provider == "openai" and api == "chat" else None
    if empty is not None:
        return api_error(400, f"Invalid 'messages[{empty}].tool_calls': empty array. Expected an array with minimum length 1, "
                         "but got an empty array instead.", "invalid_request_error", anthropic,
                         param=f"messages[{empty}].tool_calls", code="empty_array")
    long_id = _bad_tool_id(data, api, lambda i: len(i) > 40) if provider == "openai" and api == "chat" else None
    if long_id is not None:  # OpenAI with brackets: messages[1].tool_calls[0].id
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in long_id[0]).lstrip(".")
        return api_error(400, f"Invalid '{where}': string too long. Expected a string with maximum length 40, but got a string "
                         f"with length {len(long_id[1])} instead.", "invalid_request_error", anthropic, param=where,
                         code="string_above_max_length")
    roles = [m.get("role") for m in data.get("messages") or [] if isinstance(m, dict)]
    if provider == "mistral" and api == "chat" and any(a == "tool" and b == "user" for a, b in zip(roles, roles[1:])):
        return mistral_error(400, "Unexpected role 'user' after role 'tool'", "invalid_request_message_order", "3230")
    bad_id = _bad_tool_id(data, api, lambda i: not TOOL_ID.fullmatch(i)) if provider == "mistral" and api == "chat" else None
    if bad_id is not None:
        return mistral_error(400, f"Tool call id was {bad_id[1]} but must be a-z, A-Z, 0-9, with a length of 9.",
                             "invalid_function_call", "3280")
    fmt = data.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in UNSUPPORTED_FORMATS.get(provider, ()):
        return api_error(400, "This response_format type is unavailable now", "invalid_request_error", anthropic,
                         code="invalid_request_error")
    model = ask.model
    if not isinstance(model, str) or not model:
        return api_error(400, "'model' is required", "invalid_request_error", anthropic, param="model")
    if provider == "google" and model.removeprefix("models/") in GEMINI_GONE:
        return google_error(404, f"models/{model.removeprefix('models/')} is not found for API version v1beta, or is not "
                            "supported for generateContent. Call ListModels to see the list of available models and their "
                            "supported methods.", "NOT_FOUND")
    if provider == "together" and model in TOGETHER_DEDICATED:
        return api_error(400, f"Unable to access non-serverless model {model}. Please visit "
                         f"https://api.together.ai/models/{model} to create and start a new dedicated endpoint for the model.",
                         "invalid_request_error", False, code="model_not_available")
    stateful = next((k for k in ("previous_response_id", "conversation", "background") if data.get(k)), None) \
        if api == "responses" and provider in STATELESS_RESPONSES else None
    if stateful is not None:  # it keeps no responses to build on (the wording of its 400 is not known here)
        return api_error(400, f"Unsupported parameter: '{stateful}' is not supported.", "invalid_request_error", False,
                         param=stateful, code="unsupported_parameter")
    if model in RETIRED.get(provider, ()):
        return api_error(400, "Model Not Exist", "invalid_request_error", False)
    if models is not None and model not in models:
        return api_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                         "not_found_error" if anthropic else "invalid_request_error", anthropic, code="model_not_found")
    effort = data.get("reasoning_effort") if provider == "google" and api == "chat" else None
    if isinstance(effort, str) and effort not in GEMINI_EFFORTS:
        return google_error(400, f"Invalid reasoning_effort: {effort}. Valid values are: {', '.join(GEMINI_EFFORTS)}",
                            "INVALID_ARGUMENT")
    if effort == "none" and NO_MINIMAL_THINKING.match(model):  # none asks for the minimal level, which it lacks
        return google_error(400, "Thinking level is unsupported: THINKING_LEVEL_MINIMAL", "INVALID_ARGUMENT")
    claude = _claude_refusal(model, data, api) if provider == "anthropic" else None
    if claude is not None:
        return api_error(400, claude, "invalid_request_error", anthropic)
    pair = _successive_pair(data) if provider == "deepseek" and api == "chat" and "reasoner" in model else None
    if pair is not None:  # as deepseek-reasoner answers two user (or assistant) messages in a row
        return api_error(400, f"deepseek-reasoner does not support successive user or assistant messages (messages[{pair}] "
                         f"and messages[{pair + 1}] in your input). You should interleave the user/assistant messages in "
                         "the message sequence.", "invalid_request_error", anthropic, code="invalid_request_error")
    effort_set = data.get("reasoning_effort") is not None or (isinstance(data.get("output_config"), dict)
                                                              and data["output_config"].get("effort") is not None)
    if provider == "deepseek" and ask.thinking_off and effort_set:  # as DeepSeek answers, in OpenAI's form on both APIs
        return api_error(400, "thinking options type cannot be disabled when reasoning_effort is set",
                         "invalid_request_error", False, code="invalid_request_error")
    if provider == "deepseek" and api in ("chat", "messages") and DEEPSEEK_THINKING.match(model) and not ask.thinking_off \
            and _names_a_tool(data):  # as DeepSeek answers, in OpenAI's error form on its Anthropic endpoint too
        return api_error(400, "deepseek-reasoner does not support this tool_choice", "invalid_request_error", False,
                         code="invalid_request_error")
    unreasoned = _unreasoned_message(model, data) if ask.deepseek_thinks(provider, api) else None
    if unreasoned is not None:  # as DeepSeek answers an assistant message without its reasoning_content
        message = (f"Missing `reasoning_content` field in the assistant message at message index {unreasoned}. For more "
                   "information, please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                   if "reasoner" in model else "The `reasoning_content` in the thinking mode must be passed back to the API.")
        return api_error(400, message, "invalid_request_error", anthropic, code="invalid_request_error")
    refused = None if anthropic else _reasoning_refusal(model, data, api)
    if refused is not None:
        message, param, code = refused
        return api_error(400, message, "invalid_request_error", anthropic, param=param, code=code)
    choices = ask.choices
    if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= 128:
        return api_error(400, f"n: must be an integer from 1 to 128, got {choices!r}", "invalid_request_error", anthropic,
                         param="n")
    if api == "chat" and provider in SINGLE_CHOICE_CHAT and choices != 1:
        return api_error(400, f"n: only n = 1 is supported, got {choices}", "invalid_request_error", anthropic, param="n")
    max_tokens, limit = ask.max_tokens, max_output.get(model)
    if limit is not None and isinstance(max_tokens, int) and max_tokens > limit:
        message = (f"max_tokens: {max_tokens} > {limit}, which is the maximum allowed number of output tokens for {model}"
                   if anthropic else f"max_tokens is too large: {max_tokens}. This model supports at most {limit} "
                                     f"completion tokens, whereas you provided {max_tokens}.")
        return api_error(400, message, "invalid_request_error", anthropic, param="max_tokens")
    thinking = ask.thinking
    if thinking is not None and provider == "anthropic":
        thinking_refused = _thinking_refusal(model, data)
        if thinking_refused is not None:
            return api_error(400, thinking_refused, "invalid_request_error", anthropic)
    blank = _blank_text_refusal(data) if anthropic and provider == "anthropic" else None
    if blank is not None:
        return api_error(400, blank, "invalid_request_error", anthropic)
    foreign = _foreign_thinking(model, data) if anthropic and provider == "anthropic" else None
    if foreign is not None:  # a thinking block another model signed (signatures are bound to their model)
        return api_error(400, foreign, "invalid_request_error", anthropic)
    thinks_here = thinking is not None or DEEPSEEK_THINKING.match(model) is not None  # V4 thinks unless told not to
    if anthropic and provider == "deepseek" and thinks_here and _tool_turn_without_thinking(data):
        # DeepSeek's Anthropic endpoint in thinking mode: every tool call turn must carry its thinking back
        return api_error(400, "The `content[].thinking` in the thinking mode must be passed back to the API.",
                         "invalid_request_error", anthropic)
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) and thinking.get("type") == "enabled" else None
    if isinstance(budget, int) and (budget < 1024 or not isinstance(max_tokens, int) or budget >= max_tokens):
        # Anthropic's rule for extended thinking: 1024 <= budget_tokens < max_tokens
        return api_error(400, f"thinking.budget_tokens: {budget} must be at least 1024 and less than max_tokens ({max_tokens})",
                         "invalid_request_error", anthropic, param="thinking")
    return None


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


def reasoning_effort(data: dict[str, Any], api: str) -> Any:
    """The reasoning effort a chat or Responses body asks for (None: the model's default)."""
    if api == "responses":
        reasoning = data.get("reasoning")
        return reasoning.get("effort") if isinstance(reasoning, dict) else None
    return data.get("reasoning_effort")


def _reasoning_refusal(model: str, data: dict[str, Any], api: str) -> tuple[str, str | None, str | None] | None:
    """OpenAI's 400 for a field its model does not take (a reasoning model: max_tokens, temperature, ...;
    a GPT model: reasoning effort): (message, param, code), or None."""
    efforts = GPT_EFFORTS.get(model, ())
    effort = reasoning_effort(data, api)
    if efforts and effort is not None and effort not in efforts:
        field = "reasoning_effort" if api == "chat" else "reasoning.effort"
        shown = ", ".join(f"'{e}'" for e in efforts[:-1]) + f", and '{efforts[-1]}'"
        return (f"Unsupported value: '{field}' does not support {effort!r} with this model. Supported values are: {shown}.",
                field, "unsupported_value")
    if api == "chat" and TOOLS_ON_RESPONSES.match(model) and effort != "none" and _function_tools(data):
        return (f"Function tools with reasoning_effort are not supported for {model} in /v1/chat/completions. To use "
                "function tools, use /v1/responses or set reasoning_effort to 'none'.", "reasoning_effort", None)
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



def _function_tools(data: dict[str, Any]) -> bool:
    """Whether a chat request offers the model functions to call (tools of type function, or legacy functions)."""
    tools, functions = data.get("tools"), data.get("functions")
    return (isinstance(tools, list) and any(isinstance(t, dict) and t.get("type", "function") == "function" for t in tools)) \
        or (isinstance(functions, list) and bool(functions))


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
                made = signed_by(block[field])
                if made is not None and made != model:
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    return None
