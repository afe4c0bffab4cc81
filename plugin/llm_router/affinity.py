"""Conversation affinity: later turns of a conversation stay on the model that answered it.

Switching models mid-conversation throws away the provider's prompt cache of the conversation so
far (cache reads cost 10-50% of fresh input) and can change the answer's voice. A policy with
`affinity: conversation` keeps a conversation on its model while that model stays a candidate
(healthy, allowed, capable) and the new turn needs no higher tier than the model has; a harder turn
moves the conversation up, and it stays there. The table is bounded and in memory: no I/O, no clock on the hot path. Keys are
stable across processes, so `llm_router.affinity_sync` can share the table through Redis.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from llm_router.request import LLMRequest

MAX_ENTRIES = 200_000  # conversations remembered per process, every policy together (least recently used go first)
ANSWER_ITEMS = frozenset({"function_call", "function_call_output", "reasoning"})  # Responses items a model answered with


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()  # content parts: deterministic text


def _digest(*parts: str) -> int:
    """A signed 64-bit key of the parts, the same in every process (unlike hash(), salted per process)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return int.from_bytes(h.digest(), "big", signed=True)


def conversation_key(request: LLMRequest, scope: str = "") -> tuple[int, bool] | None:
    """(a key every turn of one conversation shares, whether this request continues one), or None.

    The client's `prompt_cache_key` when it sends one (OpenAI's name for exactly this; every
    request with it continues the conversation); otherwise the conversation's opening, system
    prompt and first user message, which a request continues when it carries earlier user turns.
    A first turn only records where the conversation went. `scope` (the policy) is part of the key.
    """
    body = request.body
    explicit = body.get("prompt_cache_key")
    if isinstance(explicit, str) and explicit:
        return _digest(scope, "key", explicit), True
    if request.api == "responses":
        return _responses_key(request, scope)
    if request.api not in ("chat", "messages"):
        return None
    system: Any = body.get("system") if request.api == "messages" else None
    first: Any = None
    messages = body.get("messages") or ()
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer") and system is None:
            system = msg.get("content")
        elif role == "user":
            first = msg.get("content")
            break
    # An agent loop's calls after the first carry the model's answers (tool calls) and their results,
    # often with no second user turn: any earlier answer makes the request a continuation.
    answered = request.turns >= 2 or any(msg.get("role") == "assistant" for msg in messages)
    return _digest(scope, request.api, _text(system), _text(first)), answered


def response_key(scope: str, response_id: str) -> int:
    """The key under which a Responses answer's id is remembered, for the request that continues from it."""
    return _digest(scope, "response", response_id)


def thinking_key(signature: str) -> int:
    """The key under which the model that made a thinking block (by its signature or redacted data) is kept."""
    return _digest("thinking", signature)


def _responses_key(request: LLMRequest, scope: str) -> tuple[int, bool] | None:
    """OpenAI Responses: a `conversation` id ties every request to it; a `previous_response_id` to
    the model that gave that response (recorded by `response_key` when it came back); else the
    opening, as for chat.
    """
    body = request.body
    conv = body.get("conversation")
    conv_id = conv.get("id") if isinstance(conv, dict) else conv
    if isinstance(conv_id, str) and conv_id:
        return _digest(scope, "conversation", conv_id), True
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous:
        return response_key(scope, previous), True
    inp = body.get("input")
    first: Any = inp if isinstance(inp, str) else None
    for item in inp if isinstance(inp, list) else ():
        if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message":
            first = item.get("content")
            break
    answered = request.turns >= 2 or any(
        isinstance(item, dict) and (item.get("role") == "assistant" or item.get("type") in ANSWER_ITEMS)
        for item in (inp if isinstance(inp, list) else ()))
    return _digest(scope, "responses", _text(body.get("instructions")), _text(first)), answered


class AffinityTable:
    """Conversation key -> the model id that last answered it, least recently used evicted first.

    `listener(key, model_id)` hears every local change (a new conversation, or one that moved), so
    a sync can share it; `learn` takes changes heard from other processes without echoing them.
    """

    __slots__ = ("_models", "max_entries", "listener")

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._models: dict[int, str] = {}
        self.max_entries = max_entries
        self.listener: Callable[[int, str], None] | None = None

    def __len__(self) -> int:
        return len(self._models)

    def get(self, key: int) -> str | None:
        """The conversation's model, refreshed as recently used."""
        found = self._models.pop(key, None)
        if found is not None:
            self._models[key] = found
        return found

    def put(self, key: int, model_id: str) -> None:
        """Record the conversation's model; the listener hears it when it is new or changed."""
        if self._store(key, model_id) != model_id and self.listener is not None:
            self.listener(key, model_id)

    def learn(self, key: int, model_id: str) -> None:
        """Record a change another process made (not passed on to the listener)."""
        self._store(key, model_id)

    def _store(self, key: int, model_id: str) -> str | None:
        models = self._models
        old = models.pop(key, None)
        models[key] = model_id
        if len(models) > self.max_entries:
            del models[next(iter(models))]
        return old
