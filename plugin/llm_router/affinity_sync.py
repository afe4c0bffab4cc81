"""Conversation affinity across processes: each process publishes where it placed conversations and learns where the others did.

With several runner processes (`--workers N`) or processor replicas, the next turn of a conversation
may reach any of them. Each process publishes the conversations it placed or moved on a Redis
pub/sub channel and learns the others' into its own table. Nothing on the hot path waits: the
table's listener appends to a list and wakes a background task. Placements are also kept in Redis
for `keep_s` (in hashes per time bucket, so they expire without a sweep), and a process that
starts, restarts or scales out loads them before it serves: a rolling deploy keeps conversations
on their models. The default hour covers providers' default prompt-cache lifetimes (minutes to an hour).
Best effort by design: turns are seconds apart while a placement spreads in milliseconds, and
while Redis is unreachable each process keeps its own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

import orjson

from llm_router.affinity import AffinityTable
from llm_router.background import BackgroundTask

log = logging.getLogger("llm_router.affinity")

MAX_QUEUED = 50_000  # placements waiting while Redis is unreachable; the oldest half goes first
MAX_BATCH = 2_000  # placements per published message
RETRY_S = 1.0
KEEP_S = 3600  # how long Redis keeps a placement for processes that start later
BUCKETS = 6  # placements are stored in hashes of KEEP_S / BUCKETS seconds each
LOAD_TIMEOUT_S = 3.0

Count = Callable[[str, float], None]  # (what happened: sent, received, error; how many)


class AffinitySync:
    """Shares one AffinityTable with every other process on the same Redis channel."""

    def __init__(self, table: AffinityTable, url: str, *, prefix: str = "llmr", count: Count | None = None,
                 keep_s: float = KEEP_S):
        import redis.asyncio as aioredis

        self.table = table
        self.channel = f"{prefix}:affinity"
        self.keep_s = keep_s
        self._bucket_s = max(1, int(keep_s // BUCKETS))
        self.origin = os.urandom(8).hex()  # our own messages come back to us; this tells them apart
        # No socket_timeout: the subscriber's read blocks until a message comes.
        self._redis = aioredis.from_url(url, socket_connect_timeout=1.0)
        self._count = count or (lambda what, n: None)
        self._queue: list[tuple[int, str]] = []
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.sent = self.received = self.errors = self.loaded = 0
        self._tasks = (BackgroundTask(self._publishing, "llm-router-affinity-publish"),
                       BackgroundTask(self._listening, "llm-router-affinity-listen"))
        table.listener = self._heard

    # ---- the hot path: a list append ---------------------------------------------------------

    def _heard(self, key: int, model_id: str) -> None:
        queue = self._queue
        queue.append((key, model_id))
        if len(queue) > MAX_QUEUED:
            del queue[: len(queue) // 2]
        if len(queue) == 1 and self._wake is not None:
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            elif self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._wake.set)
                except RuntimeError:  # the loop closed meanwhile: the placement stays local
                    pass

    # ---- background --------------------------------------------------------------------------

    def _bucket_key(self, bucket: int) -> str:
        return f"{self.channel}:{bucket}"

    async def load(self) -> int:
        """Learn the placements Redis still keeps, at startup: the newest buckets, as many as the table holds."""
        now = int(time.time()) // self._bucket_s
        found: list[dict] = []
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                for bucket in range(now, now - BUCKETS - 1, -1):
                    found.append(await self._redis.hgetall(self._bucket_key(bucket)))
                    if sum(map(len, found)) >= self.table.max_entries:
                        break
        except Exception as exc:
            self._failed("loading kept conversations", exc)
        for entries in reversed(found):  # oldest first, so a conversation's latest placement wins
            for key, model_id in entries.items():
                try:
                    self.table.learn(int(key), model_id.decode())
                except (ValueError, UnicodeDecodeError):
                    continue
                self.loaded += 1
        return self.loaded

    def start(self) -> None:
        """Start publishing and listening on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        if self._queue:
            self._wake.set()
        for task in self._tasks:
            task.start()

    async def stop(self) -> None:
        """Stop, publish what is queued (briefly), and close the connections."""
        for task in self._tasks:
            await task.stop()
        try:
            await asyncio.wait_for(self._publish_queued(), 1.0)
        except Exception:  # Redis gone at shutdown: those placements stay local, as they would have anyway
            pass
        await self._redis.aclose()

    async def _publishing(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._publish_queued()
            except Exception as exc:
                self._failed("publish", exc)
                await asyncio.sleep(RETRY_S)
                self._wake.set()  # try the queue again

    async def _publish_queued(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            bucket = self._bucket_key(int(time.time()) // self._bucket_s)
            pipe = self._redis.pipeline(transaction=False)  # one round trip: keep, expire, tell
            pipe.hset(bucket, mapping={str(key): model_id for key, model_id in batch})
            pipe.expire(bucket, int(self.keep_s) + 2 * self._bucket_s)
            pipe.publish(self.channel, orjson.dumps({"o": self.origin, "e": batch}))
            await pipe.execute()
            del self._queue[: len(batch)]  # only once sent: a failure keeps them queued
            self.sent += len(batch)
            self._count("sent", len(batch))

    async def _listening(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("subscription", exc)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
            await asyncio.sleep(RETRY_S)

    def apply(self, data: bytes) -> int:
        """Learn the placements in one published message from another process; returns how many."""
        try:
            msg = orjson.loads(data)
            if not isinstance(msg, dict) or not isinstance(msg.get("e"), list):
                raise ValueError("expected {\"o\": origin, \"e\": [[key, model], ...]}")
        except ValueError as exc:
            self._failed("message", exc)
            return 0
        if msg.get("o") == self.origin:
            return 0
        learned = 0
        for entry in msg["e"]:
            if (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and isinstance(entry[1], str)):
                self.table.learn(entry[0], entry[1])
                learned += 1
        if learned:
            self.received += learned
            self._count("received", learned)
        if learned != len(msg["e"]):
            self._failed("message", ValueError(f"{len(msg['e']) - learned} malformed entries"))
        return learned

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self._count("error", 1)
        if self.errors <= 3 or self.errors % 100 == 0:
            log.warning("conversation affinity sync: %s failed (%s: %s); conversations stay per process meanwhile",
                        what, type(exc).__name__, exc)
