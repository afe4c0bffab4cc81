"""Conversation affinity: later turns of a conversation stay on the model that answered it.

Switching models mid-conversation throws away the provider's prompt cache of the conversation so
far (cache reads cost 10-50% of fresh input) and can change the answer's voice. A policy with
`affinity: conversation` keeps a conversation on its model while that model stays a candidate
(healthy, allowed, capable) and the new turn needs no higher tier than the model has; a harder turn
moves the conversation up, and it stays there. Per process, bounded, in memory: no I/O, no clock.
"""
from __future__ import annotations

from typing import Any

import orjson

from llm_router.request import LLMRequest

MAX_ENTRIES = 100_000  # conversations remembered per policy (least recently used go first)


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()  # content parts: deterministic text


def conversation_key(request: LLMRequest) -> tuple[int, bool] | None:
    """(a key every turn of one conversation shares, whether this request continues one), or None.

    The client's `prompt_cache_key` when it sends one (OpenAI's name for exactly this; every
    request with it continues the conversation); otherwise the conversation's opening, system
    prompt and first user message, which a request continues when it carries earlier user turns.
    A first turn only records where the conversation went.
    """
    body = request.body
    explicit = body.get("prompt_cache_key")
    if isinstance(explicit, str) and explicit:
        return hash(("key", explicit)), True
    if request.api not in ("chat", "messages"):
        return None
    system: Any = body.get("system") if request.api == "messages" else None
    first: Any = None
    for msg in body.get("messages") or ():
        role = msg.get("role")
        if role in ("system", "developer") and system is None:
            system = msg.get("content")
        elif role == "user":
            first = msg.get("content")
            break
    return hash((request.api, _text(system), _text(first))), request.turns >= 2


class AffinityTable:
    """Conversation key -> the model id that last answered it, least recently used evicted first."""

    __slots__ = ("_models", "max_entries")

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._models: dict[int, str] = {}
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._models)

    def get(self, key: int) -> str | None:
        """The conversation's model, refreshed as recently used."""
        found = self._models.pop(key, None)
        if found is not None:
            self._models[key] = found
        return found

    def put(self, key: int, model_id: str) -> None:
        models = self._models
        models.pop(key, None)
        models[key] = model_id
        if len(models) > self.max_entries:
            del models[next(iter(models))]
