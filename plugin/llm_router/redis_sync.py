"""Tables each process keeps in memory, shared with every other process through Redis (pub/sub, plus hashes for later starters).

A subclass names its channel and says how its entries are stored, checked and learned. Each process
publishes what it added on `<prefix>:<topic>` and learns the others' into its own table. Nothing on the
hot path waits: the table's listener appends to a list and wakes a background task. Entries are also
kept in Redis for `keep_s` (in hashes per time bucket, so they expire without a sweep), and a process
that starts, restarts or scales out loads them before it serves, and a process whose subscription was lost (Redis
restarted, the network failed) reads them again once it is back. Best effort by design: while Redis is unreachable
each process keeps its own, and what it added meanwhile is published when Redis returns.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from llm_router.background import BackgroundTask

log = logging.getLogger("llm_router.redis_sync")

MAX_QUEUED = 50_000  # entries waiting while Redis is unreachable; the oldest half goes first
MAX_QUEUED_CHARS = 16_000_000  # and their values' characters together
MAX_BATCH = 2_000  # entries per published message
MAX_BATCH_CHARS = 1_000_000  # and their values' characters (a message is one Redis command)
RETRY_S = 1.0
BUCKETS = 6  # entries are stored in hashes of keep_s / BUCKETS seconds each
LOAD_TIMEOUT_S = 3.0
# Closing a subscription or the client is bounded: redis-py's closes have been reported to wait forever on a socket that
# never finishes closing (redis-py #3941), which would hang a process's shutdown.
CLOSE_TIMEOUT_S = 2.0

Count = Callable[[str, float], None]  # (what happened: sent, received, error; how many)


class SharedTable(Protocol):
    """What a shared table offers: `learn` takes another process's entry; `listener` hears this process's own."""

    listener: Callable[[Any, str], None] | None

    def learn(self, key: Any, value: str) -> None: ...


class RedisSync:
    """Shares one in-memory table with every other process on the same Redis channel."""

    topic = "table"  # the channel is <prefix>:<topic>
    subject = "table sync"  # names the sync in warnings
    meanwhile = "each process keeps its own meanwhile"  # what a failure means, for the warning

    def __init__(self, table: SharedTable, url: str, *, prefix: str = "llmr", count: Count | None = None,
                 keep_s: float = 3600):
        import redis.asyncio as aioredis

        self.channel = f"{prefix}:{self.topic}"
        self.keep_s = keep_s
        self._bucket_s = max(1, int(keep_s // BUCKETS))
        self.origin = os.urandom(8).hex()  # our own messages come back to us; this tells them apart
        # No socket_timeout: the subscriber's read blocks until a message comes.
        self._redis = aioredis.from_url(url, socket_connect_timeout=1.0)
        self._count = count or (lambda what, n: None)
        self._queue: list[tuple[Any, str]] = []
        self._queued_chars = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.sent = self.received = self.errors = self.loaded = 0
        self.caught_up = 0  # times the subscription came back and the kept entries were read again
        self._tasks = (BackgroundTask(self._publishing, f"llm-router-{self.topic}-publish"),
                       BackgroundTask(self._listening, f"llm-router-{self.topic}-listen"))
        self.table = table
        table.listener = self.heard

    # ---- what a subclass says about its entries ------------------------------------------------

    def valid(self, key: Any, value: Any) -> bool:
        """Whether a published entry has the table's key and value types."""
        raise NotImplementedError

    def key_of(self, field: str) -> Any:
        """A table key from its Redis hash field (ValueError when it is not one)."""
        raise NotImplementedError

    def learn(self, key: Any, value: str) -> None:
        """Take an entry another process added (not published again)."""
        self.table.learn(key, value)

    def full(self, loaded: list[dict]) -> bool:
        """Whether the buckets read so far fill the table (loading stops there)."""
        raise NotImplementedError

    # ---- the hot path: a list append ---------------------------------------------------------

    def heard(self, key: Any, value: str) -> None:
        """An entry this process added: queued for publishing."""
        queue = self._queue
        queue.append((key, value))
        self._queued_chars += len(value)
        if len(queue) > MAX_QUEUED or self._queued_chars > MAX_QUEUED_CHARS:
            gone = len(queue) // 2 or 1
            self._queued_chars -= sum(len(v) for _, v in queue[:gone])
            del queue[:gone]
        if len(queue) == 1 and self._wake is not None:
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            elif self._loop is not None and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._wake.set)
                except RuntimeError:  # the loop closed meanwhile: the entry stays local
                    pass

    # ---- background --------------------------------------------------------------------------

    def _bucket_key(self, bucket: int) -> str:
        return f"{self.channel}:{bucket}"

    async def load(self, skip: frozenset = frozenset()) -> int:
        """Learn the entries Redis still keeps (at startup, and after the subscription was lost): the newest buckets, as
        many as the table holds; keys in `skip` (changed here, not yet published) keep their own value."""
        now = int(time.time()) // self._bucket_s
        found: list[dict] = []
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                for bucket in range(now, now - BUCKETS - 1, -1):
                    found.append(await self._redis.hgetall(self._bucket_key(bucket)))
                    if self.full(found):
                        break
        except Exception as exc:
            self._failed("loading kept entries", exc)
        for entries in reversed(found):  # oldest first, so an entry's latest value wins
            for field, value in entries.items():
                try:
                    key = self.key_of(field.decode())
                    if key in skip:
                        continue
                    self.learn(key, value.decode())
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
        except Exception:  # Redis gone at shutdown: those entries stay local, as they would have anyway
            pass
        await _bounded_close(self._redis)

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

    def _next_batch(self) -> list[tuple[Any, str]]:
        chars = 0
        for n, (_, value) in enumerate(self._queue[:MAX_BATCH]):
            chars += len(value)
            if chars > MAX_BATCH_CHARS and n:
                return self._queue[:n]
        return self._queue[:MAX_BATCH]

    async def _publish_queued(self) -> None:
        while self._queue:
            batch = self._next_batch()
            bucket = self._bucket_key(int(time.time()) // self._bucket_s)
            pipe = self._redis.pipeline(transaction=False)  # one round trip: keep, expire, tell
            pipe.hset(bucket, mapping={str(key): value for key, value in batch})
            pipe.expire(bucket, int(self.keep_s) + 2 * self._bucket_s)
            pipe.publish(self.channel, orjson.dumps({"o": self.origin, "e": batch}))
            await pipe.execute()
            del self._queue[: len(batch)]  # only once sent: a failure keeps them queued
            self._queued_chars -= sum(len(v) for _, v in batch)
            self.sent += len(batch)
            self._count("sent", len(batch))

    async def _listening(self) -> None:
        lost = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if lost:  # what others published while we were not listening is in the buckets: subscribed first, so no gap
                    await self.load(skip=frozenset(key for key, _ in self._queue))
                    self.caught_up += 1
                    lost = False
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("subscription", exc)
            finally:
                await _bounded_close(pubsub)
            lost = True  # however the subscription ended, messages may have gone by unheard
            await asyncio.sleep(RETRY_S)

    def apply(self, data: bytes) -> int:
        """Learn the entries in one published message from another process; returns how many."""
        try:
            msg = orjson.loads(data)
            if not isinstance(msg, dict) or not isinstance(msg.get("e"), list):
                raise ValueError("expected {\"o\": origin, \"e\": [[key, value], ...]}")
        except ValueError as exc:
            self._failed("message", exc)
            return 0
        if msg.get("o") == self.origin:
            return 0
        learned = 0
        for entry in msg["e"]:
            if isinstance(entry, list) and len(entry) == 2 and self.valid(entry[0], entry[1]):
                self.learn(entry[0], entry[1])
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
            log.warning("%s: %s failed (%s: %s); %s", self.subject, what, type(exc).__name__, exc, self.meanwhile)


async def _bounded_close(closable: Any) -> None:
    """`await closable.aclose()`, given up after CLOSE_TIMEOUT_S (a close that fails or hangs leaves nothing to keep)."""
    try:
        await asyncio.wait_for(closable.aclose(), CLOSE_TIMEOUT_S)
    except Exception:
        pass
