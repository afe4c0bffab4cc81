"""Conversation affinity across processes: each process publishes where it placed conversations and learns where the others did.

With several runner processes (`--workers N`) or processor replicas, the next turn of a conversation
may reach any of them. Each process publishes the conversations it placed or moved on a Redis
pub/sub channel and learns the others' into its own table (llm_router.redis_sync does the sharing).
Placements are also kept in Redis for `keep_s`, and a process that starts, restarts or scales out
loads them before it serves: a rolling deploy keeps conversations on their models. The default hour
covers providers' default prompt-cache lifetimes (minutes to an hour). Best effort by design: turns
are seconds apart while a placement spreads in milliseconds.
"""
from __future__ import annotations

from typing import Any

from llm_router.affinity import AffinityTable
from llm_router.redis_sync import Count, RedisSync

KEEP_S = 3600  # how long Redis keeps a placement for processes that start later


class AffinitySync(RedisSync):
    """Shares one AffinityTable (conversation key -> model id) with every other process on the same Redis channel."""

    topic = "affinity"
    subject = "conversation affinity sync"
    meanwhile = "conversations stay per process meanwhile"

    def __init__(self, table: AffinityTable, url: str, *, prefix: str = "llmr", count: Count | None = None,
                 keep_s: float = KEEP_S):
        super().__init__(table, url, prefix=prefix, count=count, keep_s=keep_s)
        self.table: AffinityTable = table

    def valid(self, key: Any, value: Any) -> bool:
        return type(key) is int and isinstance(value, str)

    def key_of(self, field: str) -> int:
        return int(field)

    def full(self, loaded: list[dict]) -> bool:
        return sum(map(len, loaded)) >= self.table.max_entries
