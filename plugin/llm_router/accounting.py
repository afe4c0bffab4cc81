"""Token usage from provider responses (JSON and SSE), and cost from catalog prices."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llm_router.catalog import Model
from llm_router.message_rules import answer_key, block_signature, message_key, text_hash
from llm_router.reasoning_memory import MAX_CHARS as MAX_REASONING_CHARS

MAX_THINKING_BLOCKS = 64  # signatures kept from one answer


@dataclass(slots=True)
class Usage:
    """Tokens one call consumed, as the provider reported them (input includes any cached part)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to it (Anthropic; OpenAI's GPT-5.6 and later)
    response_id: str | None = None  # OpenAI Responses: the id a later request names as previous_response_id
    model: str | None = None  # the model the provider says answered (JSON answers; prices forwarded calls)
    thinking: tuple[str, ...] = ()  # Anthropic answers: the signatures (or redacted data) of their thinking blocks
    reasoning: tuple[str, str] | None = None  # chat answers of DeepSeek's thinking models: (answer key, reasoning_content)

    def cost(self, model: Model) -> float:
        """USD at the model's catalog prices, cache reads and writes at their own prices where the catalog has them."""
        return model.cost(self.input_tokens, self.output_tokens, cached=self.cached_input_tokens, written=self.cache_write_tokens)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read(u: dict) -> tuple[int | None, int | None, int, int]:
    """(all input tokens, output tokens, cache reads, cache writes) from a usage object; None where absent.

    OpenAI's dialects (chat: also DeepSeek, Gemini, Anthropic's OpenAI endpoint; and the Responses
    API's input_tokens_details) count cache reads and writes inside the input; Anthropic's native one
    reports them beside input_tokens. OpenAI bills cache writes at 1.25x input since GPT-5.6 and reports
    them as cache_write_tokens (OpenRouter too, on the chat API).
    """
    if "prompt_tokens" in u or "completion_tokens" in u:
        details = u.get("prompt_tokens_details")
        cached, written = _cache_parts(details)
        if cached is None:
            cached = _int(u.get("prompt_cache_hit_tokens"))  # DeepSeek
        return _int(u.get("prompt_tokens")), _int(u.get("completion_tokens")), cached or 0, written or 0
    inp = _int(u.get("input_tokens"))
    details = u.get("input_tokens_details")
    if isinstance(details, dict) or "output_tokens_details" in u:  # OpenAI Responses: cache parts counted inside input_tokens
        cached, written = _cache_parts(details)
        return inp, _int(u.get("output_tokens")), cached or 0, written or 0
    read, written = _int(u.get("cache_read_input_tokens")) or 0, _int(u.get("cache_creation_input_tokens")) or 0
    return (inp + read + written if inp is not None else None), _int(u.get("output_tokens")), read, written


def _cache_parts(details: object) -> tuple[int | None, int | None]:
    """(cache reads, cache writes) from OpenAI's prompt_tokens_details / input_tokens_details; None where absent."""
    if not isinstance(details, dict):
        return None, None
    return _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))


def _usage(inp: int, out: int, cached: int, written: int, response_id: str | None = None) -> Usage:
    """Usage whose cache parts never exceed the input they are part of."""
    cached = min(cached, inp)
    return Usage(inp, out, cached, min(written, inp - cached), response_id)


def _response_id(obj: dict) -> str | None:
    """The id of an OpenAI Responses `response` object (None for other answers)."""
    rid = obj.get("id")
    return rid if obj.get("object") == "response" and isinstance(rid, str) and 0 < len(rid) <= 200 else None


def _usage_of(obj: object) -> Usage | None:
    """Usage from a parsed response object: OpenAI or Anthropic field names."""
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    inp, out, cached, written = _read(u)
    if inp is None and out is None:
        return None
    usage = _usage(inp or 0, out or 0, cached, written, _response_id(obj))
    model = obj.get("model")
    if isinstance(model, str) and 0 < len(model) <= 200:
        usage.model = model
    content = obj.get("content") if obj.get("type") == "message" else None
    if isinstance(content, list):
        usage.thinking = tuple(sig for sig in map(block_signature, content) if sig is not None)[:MAX_THINKING_BLOCKS]
    choices = obj.get("choices")
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    reasoning = message.get("reasoning_content") if isinstance(message, dict) else None
    if isinstance(reasoning, str) and reasoning and isinstance(message, dict):
        key = message_key(message)
        if key is not None:
            usage.reasoning = (key, reasoning[:MAX_REASONING_CHARS])
    return usage


def usage_from_json(body: bytes) -> Usage | None:
    """Usage from a complete JSON response body, or None."""
    if b'"usage"' not in body:
        return None
    try:
        return _usage_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class SSEUsage:
    """Incremental usage extraction from a server-sent-events stream.

    Feed body chunks as they pass; only `data:` lines that mention "usage" are parsed, and only
    the unfinished last line is kept between chunks, so the stream is never buffered.
    OpenAI chat sends usage in a final chunk (when stream_options.include_usage is set), the
    Responses API in its closing response.completed event; Anthropic sends input tokens in
    message_start and the output count in message_delta.
    """

    __slots__ = ("_tail", "input_tokens", "output_tokens", "cached", "written", "seen", "done", "response_id", "thinking",
                 "_reasoning", "_reasoned", "_text", "_call_id")

    MAX_LINE = 1 << 20  # a runaway line without newline is dropped, not accumulated

    def __init__(self) -> None:
        self._tail = b""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached = 0
        self.written = 0
        self.seen = False
        self.done = False
        self.response_id: str | None = None
        self.thinking: list[str] = []  # Anthropic: signatures (signature_delta) and redacted data of thinking blocks
        # DeepSeek's thinking models: reasoning_content deltas (once one arrives, every later line is read), with the
        # answer's text digest and first tool call id, which key it (message_rules.answer_key)
        self._reasoning: list[str] | None = None
        self._reasoned = 0
        self._text: Any = None  # text_hash(), made at the first text of a thinking answer (most streams have none)
        self._call_id: str | None = None

    def feed(self, chunk: bytes) -> None:
        """Observe the next piece of the stream."""
        if not chunk:
            return
        data = self._tail + chunk if self._tail else chunk
        if b'"usage"' not in data and b"[DONE]" not in data and b"signature_delta" not in data and b"redacted_thinking" not in data \
                and self._reasoning is None and b'"reasoning_content"' not in data:
            nl = data.rfind(b"\n")
            self._tail = data[nl + 1:] if nl >= 0 else data
            if len(self._tail) > self.MAX_LINE:
                self._tail = b""
            return
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > self.MAX_LINE:
            self._tail = b""
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def finish(self) -> None:
        """End of stream: parse what is left."""
        if self._tail:
            self._line(self._tail.rstrip(b"\r"))
            self._tail = b""

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        if self._reasoning is not None or b'"reasoning_content"' in payload:
            self._reasoning_line(payload)
        if b'"usage"' not in payload:
            if b"signature_delta" in payload or b"redacted_thinking" in payload:
                self._thinking_line(payload)
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            obj = obj["message"]
        elif isinstance(kind, str) and kind.startswith("response.") and isinstance(obj.get("response"), dict):
            # OpenAI Responses: usage arrives in response.completed (or .incomplete / .failed)
            if kind in _RESPONSE_ENDS:
                self.done = True
            obj = obj["response"]
            self.response_id = _response_id(obj) or self.response_id
        u = obj.get("usage")
        if not isinstance(u, dict):
            return
        self.seen = True
        inp, out, cached, written = _read(u)
        if inp is not None and (inp > 0 or self.input_tokens is None):
            self.input_tokens = inp
            self.cached, self.written = cached, written
        if out is not None:
            self.output_tokens = out

    def _thinking_line(self, payload: bytes) -> None:
        """An Anthropic event that completes a thinking block: its signature, or a redacted block's data."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict) or len(self.thinking) >= MAX_THINKING_BLOCKS:
            return
        delta = obj.get("delta") if obj.get("type") == "content_block_delta" else None
        if isinstance(delta, dict) and delta.get("type") == "signature_delta":
            sig = delta.get("signature")
            if isinstance(sig, str) and sig:
                self.thinking.append(sig)
        elif obj.get("type") == "content_block_start":
            sig = block_signature(obj.get("content_block"))
            if sig is not None:
                self.thinking.append(sig)

    def _reasoning_line(self, payload: bytes) -> None:
        """A chat chunk of a thinking answer: its reasoning, text and first tool call id so far."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        choices = obj.get("choices") if isinstance(obj, dict) else None
        delta = choices[0].get("delta") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if not isinstance(delta, dict):
            return
        piece = delta.get("reasoning_content")
        if isinstance(piece, str) and piece:
            if self._reasoning is None:
                self._reasoning = []
            if self._reasoned < MAX_REASONING_CHARS:
                self._reasoning.append(piece)
                self._reasoned += len(piece)
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._text is None:
                self._text = text_hash()
            self._text.update(text.encode("utf-8", "surrogatepass"))
        calls = delta.get("tool_calls")
        if self._call_id is None and isinstance(calls, list) and calls and isinstance(calls[0], dict):
            cid = calls[0].get("id")
            self._call_id = cid if isinstance(cid, str) and cid else None

    @property
    def usage(self) -> Usage | None:
        """What the stream reported so far, or None."""
        if not self.seen:
            return None
        usage = _usage(self.input_tokens or 0, self.output_tokens or 0, self.cached, self.written, self.response_id)
        usage.thinking = tuple(self.thinking)
        if self._reasoning:
            key = answer_key(self._call_id, self._text.hexdigest() if self._text is not None else None)
            if key is not None:
                usage.reasoning = (key, "".join(self._reasoning)[:MAX_REASONING_CHARS])
        return usage
