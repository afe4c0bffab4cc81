"""Shared state: windowed counters and flags, in memory and in a real redis-server."""
from __future__ import annotations

import asyncio
import time

import pytest

from llm_router.state import Flag, Incr, MemoryStore, RedisStore, SharedState, bucket


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "redis"])
def make_store(request):
    """A factory of stores of one backend; Redis stores share one real server and a fresh prefix."""
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{time.monotonic_ns()}"
    yield lambda: RedisStore(url, prefix=prefix)


def test_buckets_follow_calendar_windows():
    t = 1_790_000_000.0  # 2026-09-21 UTC
    assert bucket("day", t) == time.strftime("%Y%m%d", time.gmtime(t))
    assert bucket("month", t) == time.strftime("%Y%m", time.gmtime(t))
    assert bucket("minute", t) != bucket("minute", t + 60)
    assert bucket(10, t) == bucket(10, t - (t % 10))
    with pytest.raises(ValueError, match="unknown window"):
        bucket("fortnight", t)


def test_counters_windows_and_flags(make_store):
    async def go():
        store = make_store()
        now = time.time()
        await store.apply([Incr("spend", "day", 1.5, now), Incr("spend", "day", 2.0, now), Incr("spend", "minute", 1.0, now),
                           Incr("spend", "minute", 5.0, now - 3600), Flag("open:m", now + 30, 60), Flag("open:m", now + 10, 60)])
        vals, flags = await store.read([("spend", "day", now), ("spend", "minute", now), ("spend", "minute", now - 3600),
                                        ("other", "day", now)], ["open:m", "missing"], now)
        assert vals == [3.5, 1.0, 5.0, 0.0]
        assert flags[0] == pytest.approx(now + 30)  # keep_max kept the later deadline
        assert flags[1] is None
        await store.apply([Flag("remaining:m", 0.2, 60, keep_max=False), Flag("remaining:m", 0.1, 60, keep_max=False)])
        _, flags = await store.read([], ["remaining:m"], now)
        assert flags == [0.1]
        await store.apply([Flag("short", 1.0, 0.2)])

        async def expired():
            while (await store.read([], ["short"], time.time()))[1][0] is not None:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(expired(), 10)
        if hasattr(store, "close"):
            await store.close()
    run(go())


def test_shared_state_batches_writes_and_reads_snapshots(make_store):
    async def go():
        a, b = SharedState(make_store()), SharedState(make_store())
        for s in (a, b):
            s.watch(counters=[("req", "day")], sliding=[("err", 5, 3)], flags=["open:x"])
        now = time.time()
        for _ in range(10):
            a.record(Incr("req", "day", 1, now))
        a.record(Incr("err", 5, 1, now))
        a.record(Incr("err", 5, 1, now - 5))
        a.record(Incr("err", 5, 1, now - 60))  # outside the 15 s sliding window
        a.record(Flag("open:x", now + 100, 200))
        await a.sync(now)
        await b.sync(now)  # a second process sees what the first wrote (redis) / the same dict (memory)
        for s in (a, b):
            assert s.counters[("req", "day")] == 10
            assert s.sliding["err"] == 2
            assert s.flags["open:x"] == pytest.approx(now + 100)
        seen = []
        b.on_refresh(lambda st, t: seen.append(t))
        await b.sync(now)
        assert seen == [now]
        for s in (a, b):
            await s.stop()
    run(go())


def test_redis_counters_are_atomic_across_writers(redis_url):
    """Several writers (as several runner processes would) increment concurrently; nothing is lost."""
    async def go():
        prefix = f"atomic{time.monotonic_ns()}"
        states = [SharedState(RedisStore(redis_url, prefix=prefix)) for _ in range(4)]
        now = time.time()

        async def writer(s):
            for i in range(250):
                s.record(Incr("spend", "day", 0.01, now))
                if i % 10 == 0:
                    await s.sync(now)
            await s.sync(now)
        await asyncio.gather(*(writer(s) for s in states))
        reader = SharedState(RedisStore(redis_url, prefix=prefix))  # a restarted runner sees the totals
        reader.watch(counters=[("spend", "day")])
        await reader.sync(now)
        assert reader.counters[("spend", "day")] == pytest.approx(10.0)
        for s in [*states, reader]:
            await s.stop()
    run(go())


def test_redis_outage_keeps_the_last_snapshot_and_retries_writes(redis_url):
    async def go():
        good = SharedState(RedisStore(redis_url, prefix=f"out{time.monotonic_ns()}"))
        good.watch(counters=[("req", "day")])
        now = time.time()
        good.record(Incr("req", "day", 1, now))
        await good.sync(now)
        assert good.counters[("req", "day")] == 1
        down = SharedState(RedisStore("redis://127.0.0.1:1/0"))  # nothing listens on port 1
        down.watch(counters=[("req", "day")])
        down.counters = {("req", "day"): 7.0}
        down.record(Incr("req", "day", 1, now))
        await down.sync(now)  # must not raise
        assert down.errors == 1 and down.counters[("req", "day")] == 7.0
        assert len(down._queue) == 1  # kept for the next attempt
        await good.stop()
        down._queue.clear()
    run(go())
