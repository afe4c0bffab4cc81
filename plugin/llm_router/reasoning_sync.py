"""DeepSeek reasoning across processes: each process publishes the reasoning it kept and learns what the others kept.

An answer's next turn may reach another runner process or processor replica than the one that saw the
answer; without this, that process could only send a stand-in where the client dropped the reasoning.
llm_router.redis_sync does the sharing; Redis keeps each answer's reasoning for `keep_s` for processes that
start later (about DeepSeek answers per second x their reasoning's size x keep_s of Redis memory).
"""
from __future__ import annotations

from typing import Any

from llm_router.reasoning_memory import MAX_CHARS, ReasoningMemory
from llm_router.redis_sync import Count, RedisSync

KEEP_S = 3600  # how long Redis keeps an answer's reasoning for processes that start later


class ReasoningSync(RedisSync):
    """Shares one ReasoningMemory (answer key -> reasoning) with every other process on the same Redis channel."""

    topic = "reasoning"
    subject = "reasoning sync"
    meanwhile = "reasoning stays per process meanwhile (an answer another process saw gets the stand-in)"

    def __init__(self, memory: ReasoningMemory, url: str, *, prefix: str = "llmr", count: Count | None = None,
                 keep_s: float = KEEP_S):
        super().__init__(memory, url, prefix=prefix, count=count, keep_s=keep_s)
        self.table: ReasoningMemory = memory

    def valid(self, key: Any, value: Any) -> bool:
        return isinstance(key, str) and key.startswith(("call:", "text:")) and isinstance(value, str) \
            and len(value) <= MAX_CHARS

    def key_of(self, field: str) -> str:
        if not field.startswith(("call:", "text:")):
            raise ValueError(f"not an answer key: {field[:40]!r}")
        return field

    def full(self, loaded: list[dict]) -> bool:
        return sum(len(v) for entries in loaded for v in entries.values()) >= self.table.max_total
