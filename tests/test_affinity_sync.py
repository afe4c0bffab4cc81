"""Conversation affinity shared through Redis: a later turn that reaches another process stays on the conversation's model."""
from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
import redis
import yaml

from apisix_emulator import Emulator, RouteConf, RunnerProcess, remove_dir, socket_dir
from conftest import TEST_KEYS, free_port, wait_for
from llm_router.affinity import AffinityTable
from llm_router.affinity_sync import AffinitySync
from llm_router.config import parse_config
from llm_router.metrics import scrape_totals
from llm_router.runtime import Runtime
from test_affinity import EASY, HARD, LADDER, turns

ROUTE = RouteConf(conf=(("llm-router", '{"policy": "default"}'),), conf_id="affinity")


def policy_data(redis_url: str, prefix: str, state_extra: dict | None = None, **extra) -> dict:
    return {"state": {"backend": "redis", "url": redis_url, "prefix": prefix, "refresh_s": 0.1, **(state_extra or {})},
            "policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "affinity": "conversation"}},
            **extra}


def subscribers(redis_url: str, channel: str) -> int:
    with redis.Redis.from_url(redis_url) as r:
        return dict(r.pubsub_numsub(channel)).get(channel.encode(), 0)


def test_messages_from_other_processes_are_learned_and_bad_ones_counted():
    table = AffinityTable()
    counts: dict[str, float] = {}
    sync = AffinitySync(table, "redis://127.0.0.1:1/0", count=lambda what, n: counts.__setitem__(what, counts.get(what, 0) + n))
    assert sync.apply(orjson.dumps({"o": "other", "e": [[7, "gpt-4o"], [-9, "deepseek-v2"]]})) == 2
    assert table.get(7) == "gpt-4o" and table.get(-9) == "deepseek-v2"
    assert sync.apply(orjson.dumps({"o": sync.origin, "e": [[8, "gpt-4o"]]})) == 0  # our own echo
    assert table.get(8) is None
    assert sync.apply(b"not json") == 0 and sync.apply(b'{"o": "x", "e": 3}') == 0
    assert sync.apply(orjson.dumps({"o": "other", "e": [[1, "m"], ["2", "m"], [3], [4.5, "m"]]})) == 1
    assert counts == {"received": 3, "error": 3} and sync.errors == 3
    heard: list = []
    table.listener = lambda k, m: heard.append((k, m))
    table.learn(10, "m")  # learned changes are not passed on
    table.put(11, "a")
    table.put(11, "a")  # unchanged: nothing to tell
    table.put(11, "b")
    assert heard == [(11, "a"), (11, "b")]


def test_two_runtimes_share_conversations_through_redis(redis_url, provider_keys):
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        a, b = (Runtime(parse_config(policy_data(redis_url, prefix))) for _ in range(2))
        alone = Runtime(parse_config({**policy_data(redis_url, prefix), "state": {}}))  # memory state: no sharing
        await a.start()
        await b.start()
        try:
            await wait_async(lambda: subscribers(redis_url, f"{prefix}:affinity") == 2, "both processes to subscribe")
            _, first = a.router.route(turns(HARD))
            assert first.model.id == "gpt-4o"
            await wait_async(lambda: b.affinity_sync.received == 1, "b to learn the conversation")
            _, follow = b.router.route(turns(HARD, EASY))
            assert (follow.model.id, follow.strategy) == ("gpt-4o", "affinity")
            _, unshared = alone.router.route(turns(HARD, EASY))
            assert unshared.model.id == "deepseek-v2"  # what b would have done on its own
            # The other way round: a conversation b moves up is kept on a.
            b.router.route(turns(EASY))
            _, up = b.router.route(turns(EASY, HARD))
            assert up.model.id == "gpt-4o"
            await wait_async(lambda: a.affinity_sync.received == 2, "a to learn both of b's placements")
            _, kept = a.router.route(turns(EASY, HARD, "ok, thanks"))
            assert (kept.model.id, kept.strategy) == ("gpt-4o", "affinity")
            assert a.affinity_sync.sent == 1 and b.affinity_sync.sent == 2  # new or moved conversations only
            scraped = a.metrics.exposition().decode()
            assert 'llm_router_affinity_shared_total{direction="received"} 2.0' in scraped
            assert 'llm_router_affinity_shared_total{direction="sent"} 1.0' in scraped
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_a_process_started_later_loads_the_kept_conversations(redis_url, provider_keys):
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        first = Runtime(parse_config(policy_data(redis_url, prefix)))
        await first.start()
        try:
            assert first.router.route(turns(HARD))[1].model.id == "gpt-4o"
            await wait_async(lambda: first.affinity_sync.sent == 1, "the placement to be published")
        finally:
            await first.stop()  # e.g. a rolling deploy replaces the process
        with redis.Redis.from_url(redis_url) as r:
            buckets = r.keys(f"{prefix}:affinity:*")
            assert len(buckets) == 1 and 0 < r.ttl(buckets[0]) <= 3600 + 2 * 600  # expires by itself
        later = Runtime(parse_config(policy_data(redis_url, prefix)))
        await later.start()
        try:
            assert later.affinity_sync.loaded == 1
            _, follow = later.router.route(turns(HARD, EASY))
            assert (follow.model.id, follow.strategy) == ("gpt-4o", "affinity")
        finally:
            await later.stop()
        short = Runtime(parse_config(policy_data(redis_url, f"{prefix}x", state_extra={"affinity_keep_s": 60})))
        assert short.affinity_sync.keep_s == 60

    asyncio.run(scenario())


def test_loading_takes_the_newest_placement_and_stops_when_the_table_is_full(redis_url):
    import time

    prefix = f"t{uuid.uuid4().hex[:8]}"
    now = int(time.time()) // 600
    with redis.Redis.from_url(redis_url) as r:
        r.hset(f"{prefix}:affinity:{now - 3}", mapping={"1": "old-model", "5": "m5"})
        r.hset(f"{prefix}:affinity:{now - 1}", mapping={"1": "new-model", "2": "m2"})
        r.hset(f"{prefix}:affinity:{now - 99}", mapping={"9": "expired-bucket"})  # older than the keep time

    async def load(max_entries: int) -> AffinityTable:
        table = AffinityTable(max_entries=max_entries)
        sync = AffinitySync(table, redis_url, prefix=prefix)
        await sync.load()
        await sync.stop()
        return table

    full = asyncio.run(load(100))
    assert (full.get(1), full.get(2), full.get(5), full.get(9)) == ("new-model", "m2", "m5", None)
    small = asyncio.run(load(2))  # the newest bucket fills it: older ones are not read
    assert (small.get(1), small.get(2), small.get(5)) == ("new-model", "m2", None)


def test_a_close_that_never_finishes_does_not_hang_the_shutdown(redis_url, monkeypatch):
    """redis-py's closes have been reported to wait forever on a socket that never finishes closing (redis-py #3941): a
    process stopping with its subscription open must still stop."""
    import redis.asyncio.client as aioclient

    from llm_router import redis_sync

    async def forever(self) -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        sync = AffinitySync(AffinityTable(), redis_url, prefix=prefix)
        sync.start()
        await wait_async(lambda: subscribers(redis_url, f"{prefix}:affinity") == 1, "the subscription")
        monkeypatch.setattr(aioclient.PubSub, "aclose", forever)
        monkeypatch.setattr(aioclient.Redis, "aclose", forever)
        try:
            await asyncio.wait_for(sync.stop(), 60)  # two bounded closes: CLOSE_TIMEOUT_S each
        except TimeoutError:
            pytest.fail("stop() hung on a close that never finished")

    monkeypatch.setattr(redis_sync, "CLOSE_TIMEOUT_S", 0.5)
    asyncio.run(scenario())


def test_a_bad_keep_time_is_named(redis_url, provider_keys):
    from llm_router.config import ConfigError

    for bad in (0, -5, "1h", True):
        with pytest.raises(ConfigError, match=r"state\.affinity_keep_s: must be a positive number of seconds"):
            Runtime(parse_config(policy_data(redis_url, "x", state_extra={"affinity_keep_s": bad})))


def test_routing_and_local_affinity_go_on_while_redis_is_unreachable(provider_keys, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        rt = Runtime(parse_config(policy_data(dead, "down")))
        await rt.start()
        try:
            assert rt.router.route(turns(HARD))[1].model.id == "gpt-4o"
            _, follow = rt.router.route(turns(HARD, EASY))
            assert (follow.model.id, follow.strategy) == ("gpt-4o", "affinity")
            await wait_async(lambda: rt.affinity_sync.errors >= 2, "the sync to report the unreachable Redis")
            assert "errors_total" in rt.metrics.exposition().decode()
            assert 'kind="affinity_sync"' in rt.metrics.exposition().decode()
        finally:
            await asyncio.wait_for(rt.stop(), 15)

    asyncio.run(scenario())
    assert "conversation affinity sync" in caplog.text and "conversations stay per process" in caplog.text


@contextlib.contextmanager
def runner_pair(tmp_path, config_for: Callable[[dict], dict], redis_url: str, channel: str, metric: str,
                never_logged: str | None = None) -> Iterator[tuple]:
    """Two real `serve --apisix` processes (separate hash salts) sharing one Redis, each with its emulator, once both
    listen on `channel`; yields (a, b, shared(): b's `metric` total). Stopped by PID afterwards; their logs hold no
    traceback, nor `never_logged`."""
    sockdir = socket_dir()
    runners, ports = [], []
    try:
        for name in ("a", "b"):
            port = free_port()
            cfg = tmp_path / f"{name}.yaml"
            cfg.write_text(yaml.safe_dump(config_for({"listen": f"127.0.0.1:{port}"})))
            runners.append(RunnerProcess(os.path.join(sockdir, f"{name}.sock"), config=str(cfg), env=TEST_KEYS).start())
            ports.append(port)
        wait_for(lambda: subscribers(redis_url, channel) == 2, 60, "both runners to subscribe")

        def shared() -> float:
            text = httpx.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=5).text
            return scrape_totals(text).get(metric, 0.0)

        a, b = (Emulator(r.path) for r in runners)
        try:
            yield a, b, shared
        finally:
            a.close()
            b.close()
    finally:
        for r in runners:
            r.stop()
        remove_dir(sockdir)
    for r in runners:
        assert "Traceback" not in r.log()
        assert never_logged is None or never_logged not in r.log()


def test_a_later_turn_on_another_runner_process_stays_on_the_model(redis_url, tmp_path):
    """The first turn is routed by one runner process, the follow-up by the other: it stays on the model."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with runner_pair(tmp_path, lambda metrics: policy_data(redis_url, prefix, metrics=metrics), redis_url,
                     f"{prefix}:affinity", "llm_router_affinity_shared_total") as (a, b, received):
        assert orjson.loads(a.http_req_call(ROUTE, body=turns(HARD)).upstream_body)["model"] == "gpt-4o"
        wait_for(lambda: received() >= 1, 60, "runner b to learn the conversation")
        follow = b.http_req_call(ROUTE, body=turns(HARD, EASY))
        assert orjson.loads(follow.upstream_body)["model"] == "gpt-4o"
        other = b.http_req_call(ROUTE, body=turns(HARD, EASY, system="A different opening."))
        assert orjson.loads(other.upstream_body)["model"] == "deepseek-flash"  # deepseek-v2: not every conversation is kept


async def wait_async(check, what: str, timeout: float = 30.0) -> None:
    """Poll `check()` on the running loop (background tasks keep running between polls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_check_says_whether_conversations_are_shared(tmp_path, capsys):
    from llm_router.cli import main

    shared, local = tmp_path / "shared.yaml", tmp_path / "local.yaml"
    shared.write_text(yaml.safe_dump(policy_data("redis://127.0.0.1:6379/0", "llmr")))
    local.write_text(yaml.safe_dump({**policy_data("redis://127.0.0.1:6379/0", "llmr"), "state": {}}))
    assert main(["check", str(shared)]) == 0
    assert "(shared by every process through Redis)" in capsys.readouterr().out
    assert main(["check", str(local)]) == 0
    assert "(per process; state: {backend: redis} shares it between processes)" in capsys.readouterr().out


def test_decisions_after_the_loop_closed_never_fail(redis_url, provider_keys):
    """A placement heard after shutdown (another thread, loop closed) stays local instead of raising."""
    import threading

    rt = Runtime(parse_config(policy_data(redis_url, f"t{uuid.uuid4().hex[:8]}")))

    async def up_and_down() -> None:
        await rt.start()
        await rt.stop()

    asyncio.run(up_and_down())
    errors: list[BaseException] = []

    def late() -> None:
        try:
            for text in (HARD, "another opening", "and one more"):
                assert rt.router.route(turns(text))[1].model is not None
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    t = threading.Thread(target=late)
    t.start()
    t.join(30)
    assert not errors and len(rt.affinity_sync._queue) == 3
