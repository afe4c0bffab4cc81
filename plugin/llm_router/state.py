"""Windowed counters and flags for pools, quotas, budgets and health: in memory or in Redis.

Writers batch increments; readers take periodic snapshots. The hot path never waits on either:
adapters call `SharedState.record()` (a queue append) and read the last snapshot from memory.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from llm_router.background import BackgroundTask

log = logging.getLogger("llm_router.state")

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400}


def bucket(window: str | int, now: float) -> str:
    """The id of the window bucket `now` falls in: calendar UTC periods for named windows."""
    if isinstance(window, int):
        return str(int(now // window))
    second = int(now)
    hit = _BUCKETS.get(window)
    if hit is not None and hit[0] == second:
        return hit[1]
    fmt = _FORMATS.get(window)
    if fmt is None:
        raise ValueError(f"unknown window {window!r} (minute, hour, day, month or seconds)")
    out = time.strftime(fmt, time.gmtime(now))
    _BUCKETS[window] = (second, out)
    return out


_FORMATS = {"minute": "%Y%m%d%H%M", "hour": "%Y%m%d%H", "day": "%Y%m%d", "month": "%Y%m"}
_BUCKETS: dict[str, tuple[int, str]] = {}  # window -> (second, bucket id): strftime once per second


def ttl_of(window: str | int) -> int:
    """How long a bucket must live: its window plus slack."""
    return (window if isinstance(window, int) else WINDOWS[window] + 86400) + 60


@dataclass(slots=True)
class Incr:
    """Add `amount` to counter `name` in the bucket of `window` at time `at`."""

    name: str
    window: str | int
    amount: float
    at: float


@dataclass(slots=True)
class Flag:
    """Set `name` to `value` (a number) for `ttl` seconds; `keep_max` keeps the larger of old and new."""

    name: str
    value: float
    ttl: float
    keep_max: bool = True


class Store(Protocol):
    """A backend: applies batches atomically per operation, reads counters and flags."""

    async def apply(self, ops: list[Incr | Flag]) -> None: ...

    async def read(self, counters: list[tuple[str, str | int, float]], flags: list[str], now: float) -> tuple[list[float], list[float | None]]:
        """Values of (name, window, at) counters and of flags (None when unset or expired)."""


class MemoryStore:
    """One process: a dict with expiry."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], tuple[float, float]] = {}  # (name, bucket) -> (value, expires)
        self._flags: dict[str, tuple[float, float]] = {}

    async def apply(self, ops: list[Incr | Flag]) -> None:
        self.apply_now(ops)

    async def read(self, counters, flags, now):
        return self.read_now(counters, flags, now)

    def apply_now(self, ops: list[Incr | Flag]) -> None:
        """apply(), for callers off an event loop."""
        now = time.time()
        for op in ops:
            if isinstance(op, Incr):
                key = (op.name, bucket(op.window, op.at))
                value, _ = self._counters.get(key, (0.0, 0.0))
                self._counters[key] = (value + op.amount, now + ttl_of(op.window))
            else:
                old = self._flags.get(op.name)
                value = op.value
                if op.keep_max and old is not None and old[1] > now:
                    value = max(value, old[0])
                self._flags[op.name] = (value, now + op.ttl)
        if len(self._counters) > 100_000:
            self._expire(now)

    def read_now(self, counters: list[tuple[str, str | int, float]], flags: list[str],
                 now: float) -> tuple[list[float], list[float | None]]:
        """read(), for callers off an event loop."""
        vals = [self._counters.get((name, bucket(window, at)), (0.0, 0.0))[0] for name, window, at in counters]
        out: list[float | None] = []
        for name in flags:
            found = self._flags.get(name)
            out.append(found[0] if found is not None and found[1] > now else None)
        return vals, out

    def _expire(self, now: float) -> None:
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._flags = {k: v for k, v in self._flags.items() if v[1] > now}


# Flags keep the larger value atomically: compare-and-set inside Redis.
_SET_MAX = """
local old = redis.call('GET', KEYS[1])
local new = tonumber(ARGV[1])
if old and tonumber(ARGV[3]) == 1 and tonumber(old) > new then new = tonumber(old) end
redis.call('SET', KEYS[1], tostring(new), 'PX', ARGV[2])
return tostring(new)
"""


class RedisStore:
    """Shared by several runner processes and gateway instances; every op is atomic in Redis."""

    def __init__(self, url: str, *, prefix: str = "llmr"):
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self._set_max = self._redis.register_script(_SET_MAX)

    def _ckey(self, name: str, window: str | int, at: float) -> str:
        return f"{self._prefix}:c:{name}:{bucket(window, at)}"

    async def apply(self, ops: list[Incr | Flag]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        flags: list[Flag] = []
        for op in ops:
            if isinstance(op, Incr):
                key = self._ckey(op.name, op.window, op.at)
                pipe.incrbyfloat(key, op.amount)
                pipe.expire(key, ttl_of(op.window))
            else:
                flags.append(op)
        if len(pipe):
            await pipe.execute()
        for f in flags:
            await self._set_max(keys=[f"{self._prefix}:f:{f.name}"], args=[f.value, max(1, int(f.ttl * 1000)), int(f.keep_max)])

    async def read(self, counters, flags, now):
        keys = [self._ckey(n, w, a) for n, w, a in counters] + [f"{self._prefix}:f:{n}" for n in flags]
        if not keys:
            return [], []
        raw = await self._redis.mget(keys)
        vals = [float(v) if v is not None else 0.0 for v in raw[: len(counters)]]
        fl = [float(v) if v is not None else None for v in raw[len(counters):]]
        return vals, fl

    async def close(self) -> None:
        await self._redis.aclose()


class SharedState:
    """Batched writes and periodic snapshots over a Store; what the hot path reads."""

    def __init__(self, store: Store, *, refresh_s: float = 0.25):
        self.store = store
        self.refresh_s = refresh_s
        self._queue: list[Incr | Flag] = []
        self._sums: dict[tuple[str, str | int, str], list] = {}  # (name, window, bucket) -> [amount, at]
        self._watch_counters: list[tuple[str, str | int]] = []
        self._watch_sliding: list[tuple[str, int, int]] = []  # (name, bucket seconds, buckets)
        self._watch_flags: list[str] = []
        self.counters: dict[tuple[str, str | int], float] = {}
        self.sliding: dict[str, float] = {}
        self.flags: dict[str, float] = {}
        self.errors = 0
        self._task = BackgroundTask(self.run, "llm-router-state")
        self._listeners: list = []

    def watch(self, *, counters: Iterable[tuple[str, str | int]] = (), sliding: Iterable[tuple[str, int, int]] = (),
              flags: Iterable[str] = ()) -> None:
        """Keys to read at every refresh."""
        self._watch_counters += [c for c in counters if c not in self._watch_counters]
        self._watch_sliding += [s for s in sliding if s not in self._watch_sliding]
        self._watch_flags += [f for f in flags if f not in self._watch_flags]

    def on_refresh(self, fn) -> None:
        """Call fn(state, now) after every snapshot (derived views recompute here, off the hot path)."""
        self._listeners.append(fn)

    def record(self, op: Incr | Flag) -> None:
        """Queue a write; applied at the next flush. Increments to one bucket are summed locally."""
        if type(op) is Incr:
            key = (op.name, op.window, bucket(op.window, op.at))
            found = self._sums.get(key)
            if found is None:
                self._sums[key] = [op.amount, op.at]
            else:
                found[0] += op.amount
            return
        self._queue.append(op)
        if len(self._queue) > 50_000:  # the backend is gone for a while: drop the oldest half
            del self._queue[: len(self._queue) // 2]

    async def sync(self, now: float | None = None) -> None:
        """Flush queued writes, then read a fresh snapshot."""
        now = time.time() if now is None else now
        sums, self._sums = self._sums, {}
        ops = [Incr(name, window, amount, at) for (name, window, _), (amount, at) in sums.items()] + self._queue
        self._queue = []
        try:
            if ops:
                await self.store.apply(ops)
            counters = [(n, w, now) for n, w in self._watch_counters]
            sliding = [(n, size, now - i * size) for n, size, count in self._watch_sliding for i in range(count)]
            vals, flags = await self.store.read(counters + sliding, self._watch_flags, now)
        except Exception as exc:  # Redis down: keep serving from the last snapshot
            self.errors += 1
            self._queue = ops + self._queue
            if len(self._queue) > 50_000:
                del self._queue[: len(self._queue) // 2]
            log.warning("shared state unavailable (%s); using the last snapshot", type(exc).__name__)
            return
        self.counters = {(n, w): v for (n, w, _), v in zip(counters, vals)}
        sums: dict[str, float] = {}
        for (n, _, _), v in zip(sliding, vals[len(counters):]):
            sums[n] = sums.get(n, 0.0) + v
        self.sliding = sums
        self.flags = {n: v for n, v in zip(self._watch_flags, flags) if v is not None}
        for fn in self._listeners:
            fn(self, now)

    async def run(self) -> None:
        """Sync forever (until cancelled)."""
        while True:
            await self.sync()
            await asyncio.sleep(self.refresh_s)

    def start(self) -> None:
        """Start the background sync task on the running loop."""
        self._task.start()

    async def stop(self) -> None:
        """Stop syncing and flush what is queued."""
        await self._task.stop()
        await self.sync()
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()


# Set in the processes of `serve --apisix --workers N`: their memory state is one MemoryStore, held by a process of
# its own (serve_memory) and reached over this Unix socket, so budgets, quotas and breakers count every process's calls.
MEMORY_SOCKET: str | None = None


class SocketStore:
    """The memory state of another process (`serve_memory`), over a Unix socket; one request at a time."""

    def __init__(self, path: str):
        self.path = path
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock: asyncio.Lock | None = None

    async def _ask(self, kind: str, *args):
        from llm_router.local_rpc import frame, read_message

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                if self._conn is None:
                    self._conn = await asyncio.open_unix_connection(self.path)
                reader, writer = self._conn
                writer.write(frame((kind, args)))
                await writer.drain()
                ok, result = await read_message(reader)
            except BaseException:
                self._drop()
                raise
        if not ok:
            raise RuntimeError(result)
        return result

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def apply(self, ops: list[Incr | Flag]) -> None:
        await self._ask("apply", ops)

    async def read(self, counters, flags, now):
        return await self._ask("read", counters, flags, now)

    async def close(self) -> None:
        self._drop()


async def serve_memory(path: str, stop: asyncio.Event) -> None:
    """Hold one MemoryStore for the processes that reach it at `path` (SocketStore), until `stop` is set."""
    from llm_router.local_rpc import frame, read_message

    store = MemoryStore()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind, args = await read_message(reader)
                try:
                    out = (True, store.apply_now(*args) if kind == "apply" else store.read_now(*args))
                except Exception as exc:  # a bad request: the asking process logs it and keeps its snapshot
                    out = (False, f"{type(exc).__name__}: {exc}")
                writer.write(frame(out))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path=path)
    try:
        await stop.wait()
    finally:
        server.close()


def make_store(conf: dict) -> Store:
    """The backend named by config `state`: {backend: memory} or {backend: redis, url: ...}."""
    backend = conf.get("backend", "memory")
    if backend == "memory":
        return SocketStore(MEMORY_SOCKET) if MEMORY_SOCKET else MemoryStore()
    if backend == "redis":
        return RedisStore(conf.get("url", "redis://127.0.0.1:6379/0"), prefix=conf.get("prefix", "llmr"))
    raise ValueError(f"state.backend: unknown backend {backend!r} (memory or redis)")
