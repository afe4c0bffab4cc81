"""The runner polls its socket for APISIX's answer while it has one call in flight, and sleeps otherwise."""
from __future__ import annotations

import socket
import time

import orjson
import pytest

from llm_router.config import parse_config
from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.runner import Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.runtime import Runtime

from apisix_emulator import (
    FAKE_KEYS, Emulator, RouteConf, build_extra_info_resp, build_prepare_conf, build_req_call, decode_reply, recv_frame,
)

DEFAULT = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
BODY = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]})


def _connect(path: str) -> tuple[socket.socket, int]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(framing.frame(1, build_prepare_conf(DEFAULT.conf, DEFAULT.key)))
    return s, decode_reply(1, *recv_frame(s)).fields["token"]


def _ask(s: socket.socket, token: int, rid: int) -> None:
    """Send an HTTPReqCall and read the runner's request for the body."""
    s.sendall(framing.frame(2, build_req_call(rid, token, headers=[("authorization", "Bearer c")])))
    assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}


def _answer(s: socket.socket, rid: int) -> None:
    """Send the body and check the runner's Rewrite."""
    s.sendall(framing.frame(3, build_extra_info_resp(BODY)))
    reply = decode_reply(2, *recv_frame(s)).fields
    assert reply["id"] == rid and reply["action"] == "rewrite" and orjson.loads(reply["body"])["model"]


@pytest.mark.parametrize("poll_us, polls", [(200_000, 20), (0, 0)])
def test_one_call_at_a_time_polls_for_the_body_unless_turned_off(apisix_runner_thread, poll_us, polls):
    thread = apisix_runner_thread(poll_us)  # 0.2 s: the emulator's answer comes well within it even on a loaded machine
    em = Emulator(thread.path, timeout=30)
    try:
        for _ in range(20):
            assert em.http_req_call(DEFAULT, body=BODY).ok
    finally:
        em.close()
    stats = thread.runner.stats
    assert stats.answer_polls == polls  # one per call: the body request is the only ExtraInfo of a pre-req call
    assert (stats.answer_polls_caught >= 1) == (polls > 0)


def test_a_call_waiting_elsewhere_ends_a_poll_and_is_not_polled_for(apisix_runner_thread):
    thread = apisix_runner_thread(20_000_000)  # 20 s: were B's call ignored while polling A, B would wait that long
    stats = thread.runner.stats
    a, token = _connect(thread.path)
    b, _ = _connect(thread.path)
    try:
        _ask(a, token, 1)  # A waits for its body; the runner polls A's socket
        started = time.monotonic()
        _ask(b, token, 2)  # B's call ends A's poll; with A in flight, B's call does not poll
        assert time.monotonic() - started < 10
        assert (stats.answer_polls, stats.answer_polls_caught) == (1, 0)
        _answer(b, 2)
        _answer(a, 1)
        assert stats.answer_polls == 1
        _ask(a, token, 3)  # alone again: polls, and the body sent at once is caught
        _answer(a, 3)
        assert stats.answer_polls == 2
    finally:
        a.close()
        b.close()


def test_a_connection_closed_while_polled_leaves_the_count_right(apisix_runner_thread):
    thread = apisix_runner_thread(200_000)
    stats = thread.runner.stats
    a, token = _connect(thread.path)
    _ask(a, token, 1)
    a.close()  # APISIX gave up on the call: the poll reads the close, the event loop drops the connection
    b, token = _connect(thread.path)
    try:
        for rid in (2, 3):
            _ask(b, token, rid)
            _answer(b, rid)
        # had A's call stayed counted as in flight, B would never poll
        assert stats.answer_polls == 3
    finally:
        b.close()


def test_a_body_split_across_reads_while_polling_is_put_together(apisix_runner_thread):
    thread = apisix_runner_thread(200_000)
    s, token = _connect(thread.path)
    try:
        _ask(s, token, 9)
        frame = framing.frame(3, build_extra_info_resp(BODY))
        for i in range(0, len(frame), 5):
            s.sendall(frame[i:i + 5])
        reply = decode_reply(2, *recv_frame(s)).fields
        assert reply["id"] == 9 and reply["action"] == "rewrite"
    finally:
        s.close()


def test_one_usable_cpu_turns_polling_off(monkeypatch):
    from llm_router.gateways.apisix import runner as runner_module

    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    cfg = parse_config({"server": {"apisix_answer_poll_us": 300}})
    monkeypatch.setattr(runner_module.os, "sched_getaffinity", lambda pid: {0, 1})
    assert Runner(Runtime(cfg, telemetry=False), TokenStore(ttl=100)).answer_poll_ns == 300_000
    monkeypatch.setattr(runner_module.os, "sched_getaffinity", lambda pid: {0})  # APISIX could only answer once we stop
    assert Runner(Runtime(cfg, telemetry=False), TokenStore(ttl=100)).answer_poll_ns == 0


def test_a_call_is_prepared_while_its_body_is_awaited_and_routed_with_that_exchange(monkeypatch):
    from llm_router.gateways.apisix.runner import Conversation

    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    runner = Runner(Runtime(parse_config({}), telemetry=False), TokenStore(ttl=100))
    conv = Conversation()
    token = decode_reply(1, framing.RPC_PREPARE_CONF, runner.on_frame(
        conv, framing.RPC_PREPARE_CONF, build_prepare_conf(DEFAULT.conf, DEFAULT.key))[4:]).fields["token"]
    asked = runner.on_frame(conv, framing.RPC_HTTP_REQ_CALL, build_req_call(5, token, headers=[("authorization", "Bearer c")]))
    assert decode_reply(2, asked[0], asked[4:]).fields == {"info": "req_body"}
    runner.prepare(conv)
    ex = conv.pending.exchange
    assert ex is not None and ex.request_id and ex.route == "route:1"
    runner.prepare(conv)  # polled again: the same exchange
    assert conv.pending.exchange is ex
    reply = runner.on_frame(conv, framing.RPC_EXTRA_INFO, build_extra_info_resp(BODY))
    fields = decode_reply(2, reply[0], reply[4:]).fields
    assert fields["id"] == 5 and fields["action"] == "rewrite"
    assert ("x-llm-router-request-id", ex.request_id) in [tuple(h) for h in fields["headers"]]
    assert conv.pending is None
    runner.prepare(conv)  # nothing awaited: nothing to prepare
    assert conv.pending is None
