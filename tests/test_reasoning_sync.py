"""DeepSeek reasoning shared through Redis: an answer one process saw is given back by another, not replaced by a stand-in."""
from __future__ import annotations

import asyncio
import re
from contextlib import closing
import time
import uuid

import httpx

import orjson
import pytest
import redis

from apisix_emulator import RouteConf
from conftest import RestartableRedis, free_port, wait_for
from llm_router.config import ConfigError, parse_config
from llm_router.gateways.apisix.runner import REQUEST_ID_VAR
from llm_router.message_rules import message_key, reasoning_stand_in
from llm_router.reasoning_memory import MAX_CHARS, ReasoningMemory
from llm_router.reasoning_sync import ReasoningSync
from llm_router.redis_sync import MAX_BATCH_CHARS, MAX_QUEUED_CHARS
from llm_router.request import parse_request, render_body
from llm_router.runtime import Runtime
from test_affinity_sync import runner_pair, subscribers, wait_async
from test_tool_ids import pinned

V4 = RouteConf(conf=(("llm-router", '{"policy": "v4"}'),), conf_id="reasoning")
V4_POST = RouteConf(conf=V4.conf, conf_id=V4.conf_id, plugin="ext-plugin-post-resp")
QUESTION = {"role": "user", "content": "Is it warmer in Paris than in Oslo today?"}
ANSWER = {"role": "assistant", "content": "Yes: 18 C in Paris, 4 C in Oslo.",
          "reasoning_content": "Paris 18, Oslo 4: Paris is warmer by 14 degrees."}


def shared(redis_url: str, prefix: str, state_extra: dict | None = None, **extra) -> dict:
    return {**pinned(), "state": {"backend": "redis", "url": redis_url, "prefix": prefix, "refresh_s": 0.1,
                                  **(state_extra or {})}, **extra}


def later_turn() -> list[dict]:
    """The next turn as a plain OpenAI client sends it: the answer's text, its reasoning dropped."""
    return [QUESTION, {"role": "assistant", "content": ANSWER["content"]}, {"role": "user", "content": "And tomorrow?"}]


def sent_to_v4(rt: Runtime, messages: list[dict]) -> list[dict]:
    """The messages the runtime's router would send deepseek-v4-pro."""
    model = rt.catalog.models["deepseek-v4-pro"]
    req = parse_request(orjson.dumps({"model": "auto", "messages": messages}), "chat")
    body = render_body(req, model.name, dialect=rt.catalog.dialect_of(model), reasoning=rt.router.recall_reasoning)
    return orjson.loads(body)["messages"]


def test_the_memory_tells_its_listener_only_what_this_process_kept():
    memory = ReasoningMemory(max_total=100)
    heard: list = []
    memory.listener = lambda k, t: heard.append((k, t))
    memory.remember("call:a", "x" * 30)
    memory.remember("call:a", "x" * 30)  # the same again (a retried answer): nothing new to tell
    memory.remember("call:a", "y")  # changed: told
    memory.learn("text:b", "z" * 40)  # another process's: kept, not passed on
    memory.remember("text:long", "r" * (MAX_CHARS + 5))  # cut before it is kept or told
    assert heard == [("call:a", "x" * 30), ("call:a", "y"), ("text:long", "r" * MAX_CHARS)]
    assert memory.recall("text:b") is None  # the long one pushed the others out of 100 characters
    memory.learn("text:b", "z" * 40)
    assert memory.recall("text:b") == "z" * 40 and memory.total == 40 and heard[-1][0] == "text:long"


def test_messages_from_other_processes_are_learned_and_bad_ones_counted():
    memory = ReasoningMemory()
    counts: dict[str, float] = {}
    sync = ReasoningSync(memory, "redis://127.0.0.1:1/0",
                         count=lambda what, n: counts.__setitem__(what, counts.get(what, 0) + n))
    assert sync.channel == "llmr:reasoning"
    assert sync.apply(orjson.dumps({"o": "other", "e": [["call:c1", "Think."], ["text:ab12", "Greet back."]]})) == 2
    assert memory.recall("call:c1") == "Think." and memory.recall("text:ab12") == "Greet back."
    assert sync.apply(orjson.dumps({"o": sync.origin, "e": [["call:mine", "echo"]]})) == 0  # our own echo
    assert memory.recall("call:mine") is None
    bad = [["call:ok", "fine"], [7, "int key"], ["other:x", "not an answer key"], ["call:y", 5],
           ["call:huge", "h" * (MAX_CHARS + 1)], ["call:z"]]
    assert sync.apply(orjson.dumps({"o": "other", "e": bad})) == 1
    assert sync.apply(b"not json") == 0
    assert counts == {"received": 3, "error": 2} and sync.errors == 2
    assert memory.recall("call:huge") is None and memory.recall("other:x") is None


def test_big_reasoning_goes_in_bounded_messages_and_a_stalled_queue_stays_bounded():
    sync = ReasoningSync(ReasoningMemory(), "redis://127.0.0.1:1/0")
    big = "r" * MAX_CHARS
    for i in range(40):
        sync.heard(f"call:{i}", big)
    batch = sync._next_batch()
    assert 1 <= len(batch) and sum(len(v) for _, v in batch) <= MAX_BATCH_CHARS
    assert len(batch) == MAX_BATCH_CHARS // MAX_CHARS
    for i in range(40, 400):  # Redis unreachable: the queue keeps its newest entries within its character bound
        sync.heard(f"call:{i}", big)
    assert sync._queued_chars <= MAX_QUEUED_CHARS and sync._queued_chars == len(sync._queue) * MAX_CHARS
    assert sync._queue[-1][0] == "call:399"
    one = ReasoningSync(ReasoningMemory(), "redis://127.0.0.1:1/0")
    one.heard("call:only", "x" * (MAX_BATCH_CHARS + 10))  # never happens (64 K per answer), but never an empty batch
    assert len(one._next_batch()) == 1


def test_two_runtimes_share_reasoning_through_redis(redis_url, provider_keys):
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        a, b = (Runtime(parse_config(shared(redis_url, prefix))) for _ in range(2))
        await a.start()
        await b.start()
        try:
            await wait_async(lambda: subscribers(redis_url, f"{prefix}:reasoning") == 2, "both processes to subscribe")
            before = sent_to_v4(b, later_turn())
            assert before[1]["reasoning_content"] == reasoning_stand_in(1, later_turn()[1])  # b never saw the answer
            a.router.reasoning.remember(message_key(ANSWER), ANSWER["reasoning_content"])  # as a's on_response does
            await wait_async(lambda: b.reasoning_sync.received == 1, "b to learn the reasoning")
            assert sent_to_v4(b, later_turn())[1]["reasoning_content"] == ANSWER["reasoning_content"]
            assert a.reasoning_sync.sent == 1 and b.reasoning_sync.sent == 0
            scraped = b.metrics.exposition().decode()
            assert 'llm_router_reasoning_shared_total{direction="received"} 1.0' in scraped
            assert 'llm_router_reasoning_shared_total{direction="sent"} 0.0' in scraped
            # b sent one stand-in (before it learned the reasoning), then the kept reasoning
            assert 'llm_router_reasoning_filled_total{source="stand_in"} 1.0' in scraped
            assert 'llm_router_reasoning_filled_total{source="kept"} 1.0' in scraped
        finally:
            await a.stop()
            await b.stop()
        later = Runtime(parse_config(shared(redis_url, prefix)))  # e.g. a new replica: loads what Redis keeps
        await later.start()
        try:
            assert later.reasoning_sync.loaded == 1
            assert sent_to_v4(later, later_turn())[1]["reasoning_content"] == ANSWER["reasoning_content"]
        finally:
            await later.stop()
        with redis.Redis.from_url(redis_url) as r:
            buckets = r.keys(f"{prefix}:reasoning:*")
            assert len(buckets) == 1 and 0 < r.ttl(buckets[0]) <= 3600 + 2 * 600  # expires by itself

    asyncio.run(scenario())


def test_the_keep_time_is_configurable_and_a_bad_one_is_named(redis_url, provider_keys):
    rt = Runtime(parse_config(shared(redis_url, "x", state_extra={"reasoning_keep_s": 120})))
    assert rt.reasoning_sync.keep_s == 120 and rt.affinity_sync.keep_s == 3600
    assert Runtime(parse_config(pinned())).reasoning_sync is None  # memory state: per process
    for bad in (0, -5, "1h", True):
        with pytest.raises(ConfigError, match=r"state\.reasoning_keep_s: must be a positive number of seconds"):
            Runtime(parse_config(shared(redis_url, "x", state_extra={"reasoning_keep_s": bad})))


def test_routing_and_local_reasoning_go_on_while_redis_is_unreachable(provider_keys, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> None:
        rt = Runtime(parse_config(shared(dead, "down")))
        await rt.start()
        try:
            rt.router.reasoning.remember(message_key(ANSWER), ANSWER["reasoning_content"])
            assert sent_to_v4(rt, later_turn())[1]["reasoning_content"] == ANSWER["reasoning_content"]
            await wait_async(lambda: rt.reasoning_sync.errors >= 2, "the sync to report the unreachable Redis")
            assert 'kind="reasoning_sync"' in rt.metrics.exposition().decode()
        finally:
            await asyncio.wait_for(rt.stop(), 15)

    asyncio.run(scenario())
    assert "reasoning sync: " in caplog.text and "reasoning stays per process meanwhile" in caplog.text


def test_what_went_by_while_redis_was_down_reaches_every_process_when_it_returns(tmp_path, provider_keys):
    """Redis restarts: reasoning kept meanwhile is published once it is back, and a process that lost its subscription
    reads what it missed, whichever comes first."""
    server = RestartableRedis(tmp_path)
    url, prefix = server.url, f"t{uuid.uuid4().hex[:8]}"
    meanwhile = {"role": "assistant", "content": "Oslo is colder.", "reasoning_content": "4 C is below 18 C."}

    async def scenario() -> None:
        a, b = (Runtime(parse_config(shared(url, prefix))) for _ in range(2))
        await a.start()
        await b.start()
        try:
            await wait_async(lambda: subscribers(url, f"{prefix}:reasoning") == 2, "both processes to subscribe")
            server.stop()  # Redis goes away
            await wait_async(lambda: b.reasoning_sync.errors >= 1 and a.reasoning_sync.errors >= 1,
                             "both processes to lose their subscription")
            a.router.reasoning.remember(message_key(ANSWER), ANSWER["reasoning_content"])  # queued: nowhere to publish
            b.router.reasoning.remember(message_key(meanwhile), meanwhile["reasoning_content"])
            server.start()  # and comes back, empty
            await wait_async(lambda: b.router.reasoning.recall(message_key(ANSWER)) is not None
                             and a.router.reasoning.recall(message_key(meanwhile)) is not None,
                             "each process to learn what the other kept while Redis was down", timeout=60)
            assert sent_to_v4(b, later_turn())[1]["reasoning_content"] == ANSWER["reasoning_content"]
            assert a.reasoning_sync.sent == 1 and b.reasoning_sync.sent == 1  # published once Redis was back
            assert a.reasoning_sync.caught_up >= 1 and b.reasoning_sync.caught_up >= 1
        finally:
            await asyncio.wait_for(a.stop(), 15)
            await asyncio.wait_for(b.stop(), 15)

    with closing(server):
        asyncio.run(scenario())


def test_a_process_that_lost_its_subscription_reads_what_it_missed(tmp_path):
    """Published while this process was not subscribed (Redis restarted): the message is gone, the bucket is not."""
    server = RestartableRedis(tmp_path)
    url, prefix = server.url, f"t{uuid.uuid4().hex[:8]}"
    channel = f"{prefix}:reasoning"
    memory = ReasoningMemory()
    sync = ReasoningSync(memory, url, prefix=prefix)

    async def scenario() -> None:
        sync.start()
        try:
            await wait_async(lambda: subscribers(url, channel) == 1, "the process to subscribe")
            server.stop()
            await wait_async(lambda: sync.errors >= 1, "the process to lose its subscription")
            # Blocking calls: this loop (and so the process's listener) waits while Redis comes back and another
            # process publishes, so nobody is subscribed when the message goes out.
            server.start()
            with redis.Redis.from_url(url) as r:
                assert dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) == 0
                r.hset(f"{channel}:{int(time.time()) // sync._bucket_s}", mapping={"call:missed": "Thought it over."})
                r.publish(channel, orjson.dumps({"o": "other", "e": [["call:missed", "Thought it over."]]}))
            await wait_async(lambda: memory.recall("call:missed") is not None, "the process to read what it missed", 60)
            assert sync.received == 0 and sync.caught_up == 1  # from the bucket: the message went by unheard
        finally:
            await asyncio.wait_for(sync.stop(), 15)

    with closing(server):
        asyncio.run(scenario())


def test_a_change_not_yet_published_is_not_overwritten_by_what_redis_kept(redis_url):
    """Reading the kept entries again leaves alone what this process changed while Redis was away (queued to publish)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    memory = ReasoningMemory()
    sync = ReasoningSync(memory, redis_url, prefix=prefix)
    with redis.Redis.from_url(redis_url) as r:
        r.hset(f"{prefix}:reasoning:{int(time.time()) // sync._bucket_s}",
               mapping={"call:x": "what another process kept", "call:y": "older reasoning of y"})
    memory.remember("call:y", "newer reasoning of y")  # changed here, not yet published

    async def reload() -> int:
        try:
            return await sync.load(skip=frozenset(key for key, _ in sync._queue))
        finally:
            await sync.stop()

    assert asyncio.run(reload()) == 1
    assert memory.recall("call:x") == "what another process kept" and memory.recall("call:y") == "newer reasoning of y"


def test_an_answer_one_runner_process_saw_is_given_back_by_another(redis_url, tmp_path):
    """Two real `serve --apisix` processes sharing one Redis: a learns the reasoning at post-resp, b gives it back."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    ports: list[int] = []

    def config(metrics: dict) -> dict:
        ports.append(int(metrics["listen"].rsplit(":", 1)[1]))
        return shared(redis_url, prefix, metrics=metrics)

    def filled() -> dict[str, float]:
        """Runner b's llm_router_reasoning_filled_total by source, scraped from its /metrics."""
        text = httpx.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=5).text
        found = re.findall(r'^llm_router_reasoning_filled_total\{source="(\w+)"\} ([0-9.]+)$', text, re.M)
        return {source: float(value) for source, value in found}

    with runner_pair(tmp_path, config, redis_url, f"{prefix}:reasoning", "llm_router_reasoning_shared_total",
                     never_logged=ANSWER["reasoning_content"]) as (a, b, received):  # shared, never logged
        first = a.http_req_call(V4, body=orjson.dumps({"model": "auto", "messages": [QUESTION]}))
        assert orjson.loads(first.upstream_body)["model"] == "deepseek-v4-pro"
        answer = orjson.dumps({"id": "c1", "object": "chat.completion", "model": "deepseek-v4-pro",
                               "choices": [{"index": 0, "message": ANSWER, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 20, "completion_tokens": 30}})
        assert a.http_resp_call(V4_POST, headers=[("content-type", "application/json")]).ok
        out = a.http_resp_call(V4_POST, body=answer, headers=[("content-type", "application/json"),
                                                              ("content-length", str(len(answer)))],
                               variables={REQUEST_ID_VAR: first.upstream_headers["x-llm-router-request-id"]})
        assert out.ok
        wait_for(lambda: received() >= 1, 60, "runner b to learn the reasoning")
        follow = b.http_req_call(V4, body=orjson.dumps({"model": "auto", "messages": later_turn()}))
        sent = orjson.loads(follow.upstream_body)["messages"]
        assert sent[1]["reasoning_content"] == ANSWER["reasoning_content"]  # the real reasoning, not a stand-in
        other = [QUESTION, {"role": "assistant", "content": "An answer nobody kept."}, {"role": "user", "content": "Why?"}]
        unknown = orjson.loads(b.http_req_call(V4, body=orjson.dumps({"model": "auto", "messages": other})).upstream_body)
        assert unknown["messages"][1]["reasoning_content"] == reasoning_stand_in(1, other[1])
        assert filled() == {"kept": 1.0, "stand_in": 1.0}


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_answer_one_envoy_replica_saw_is_given_back_by_another(redis_url, stream):
    """Two Envoy replicas, each with its own `serve --envoy` process, sharing one Redis: replica a observes DeepSeek's
    answer (JSON, or streamed) and keeps its reasoning; the client's next turn, sent to replica b without that reasoning,
    reaches DeepSeek with it."""
    from contextlib import ExitStack

    from fixtures_envoy import running_fakes, short_tmp, start_stack
    from llm_router.gateways.envoy.bootstrap import RouteSpec

    data = shared(redis_url, f"t{uuid.uuid4().hex[:8]}")
    routes = (RouteSpec("/v4/", policy="v4"), RouteSpec("/"))
    headers = {"content-type": "application/json"}
    with ExitStack() as stack:
        fakes_gen = stack.enter_context(closing(running_fakes(data)))
        fakes = next(fakes_gen)
        wd = stack.enter_context(short_tmp())
        a = start_stack(wd, fakes, data, processor="subprocess", routes=routes, name="a")
        stack.callback(a.stop)
        b = start_stack(wd, fakes, data, processor="subprocess", routes=routes, name="b")
        stack.callback(b.stop)
        body = orjson.dumps({"model": "auto", "messages": [QUESTION], "stream": stream})
        with httpx.stream("POST", a.url + "/v4/v1/chat/completions", content=body, timeout=30, headers=headers) as r:
            assert r.status_code == 200 and r.headers["x-llm-router-model"] == "deepseek-v4-pro"
            raw = r.read()
        if stream:
            chunks = [orjson.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
            said = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
        else:
            said = [orjson.loads(raw)["choices"][0]["message"]]
        text = "".join(d.get("content") or "" for d in said)
        reasoning = "".join(d.get("reasoning_content") or "" for d in said)
        assert text and reasoning
        later = [QUESTION, {"role": "assistant", "content": text}, {"role": "user", "content": "And tomorrow?"}]

        def given_back() -> bool:
            """Send the next turn to replica b: whether DeepSeek got the real reasoning back (polled, as b learns it from
            Redis shortly after a kept it)."""
            seen = len(fakes.requests("deepseek"))
            answer = httpx.post(b.url + "/v4/v1/chat/completions", timeout=30, headers=headers,
                                content=orjson.dumps({"model": "auto", "messages": later}))
            assert answer.status_code == 200, answer.text
            return fakes.requests("deepseek")[seen].json["messages"][1]["reasoning_content"] == reasoning

        wait_for(given_back, 60, "replica b to give back the reasoning replica a kept")
