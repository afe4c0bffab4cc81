"""The runner writes the replies of one event-loop turn together at its end, each to its own connection."""
from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.server import Activity

from apisix_emulator import RouteConf, build_extra_info_resp, build_prepare_conf, build_req_call, decode_reply, recv_frame

DEFAULT = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))


class FakeTransport:
    """What Activity uses of a transport: write and is_closing."""

    def __init__(self, closing: bool = False):
        self.written: list[bytes] = []
        self.closing = closing

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


def test_replies_of_one_turn_go_out_at_its_end_in_order():
    async def main() -> tuple[list, list, list, list]:
        activity = Activity()
        a, b, gone = FakeTransport(), FakeTransport(), FakeTransport(closing=True)
        activity.send(a, b"a1")
        activity.send(b, b"b1")
        activity.send(gone, b"lost")  # APISIX closed this connection: nothing to write to
        activity.send(a, b"a2")
        before = (list(a.written), list(b.written))
        await asyncio.sleep(0)  # the end of this turn
        after = (list(a.written), list(b.written), list(gone.written))
        stats = (activity.stats.reply_flushes, activity.stats.replies_flushed)
        activity.send(b, b"b2")  # the next turn's replies form the next flush
        await asyncio.sleep(0)
        return [before, after, stats, (list(b.written), activity.stats.reply_flushes)]

    before, after, stats, later = asyncio.run(main())
    assert before == ([], [])
    assert after == ([b"a1", b"a2"], [b"b1"], [])
    assert stats == (1, 4)
    assert later == ([b"b1", b"b2"], 2)


def test_a_direct_flush_writes_at_once_and_the_scheduled_one_finds_nothing():
    async def main() -> tuple[list, int]:
        activity = Activity()
        a = FakeTransport()
        activity.send(a, b"x")
        activity.flush()
        first = list(a.written)
        await asyncio.sleep(0)
        return [first, a.written], activity.stats.reply_flushes

    (first, final), flushes = asyncio.run(main())
    assert first == final == [b"x"]
    assert flushes == 1


@pytest.fixture
def runner_thread(apisix_runner_thread):
    return apisix_runner_thread(0)  # no answer poll: every reply goes through the turn's flush


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    return s


def test_many_connections_ready_at_once_each_get_their_own_replies(runner_thread):
    conns = [_connect(runner_thread.path) for _ in range(16)]
    try:
        for s in conns:
            s.sendall(framing.frame(1, build_prepare_conf(DEFAULT.conf, DEFAULT.key)))
        tokens = {decode_reply(1, *recv_frame(s)).fields["token"] for s in conns}
        assert len(tokens) == 1
        token = tokens.pop()
        for rounds in range(3):
            for i, s in enumerate(conns):  # every call sent before any reply is read
                s.sendall(framing.frame(2, build_req_call(100 * rounds + i, token, headers=[("authorization", "Bearer c")])))
            for s in conns:
                assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
            for i, s in enumerate(conns):
                body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": f"call {i}: say hi"}]})
                s.sendall(framing.frame(3, build_extra_info_resp(body)))
            for i, s in enumerate(conns):
                reply = decode_reply(2, *recv_frame(s)).fields
                assert reply["id"] == 100 * rounds + i and reply["action"] == "rewrite"
                assert orjson.loads(reply["body"])["messages"][0]["content"] == f"call {i}: say hi"
    finally:
        for s in conns:
            s.close()
    stats = runner_thread.runner.stats
    assert stats.rewrites == 48
    assert stats.replies_flushed == 16 + 48 * 2  # every reply went through a flush
    assert 1 <= stats.reply_flushes <= stats.replies_flushed


def test_replies_queued_before_a_protocol_error_arrive_before_the_close(runner_thread):
    first = _connect(runner_thread.path)
    first.sendall(framing.frame(1, build_prepare_conf(DEFAULT.conf, DEFAULT.key)))
    token = decode_reply(1, *recv_frame(first)).fields["token"]
    s = _connect(runner_thread.path)
    try:
        # In one write: a PrepareConf, a call (the runner asks for its body), then another call instead of the body,
        # which breaks the protocol: the two replies come, then the runner closes the connection.
        call = framing.frame(2, build_req_call(7, token))
        s.sendall(framing.frame(1, build_prepare_conf(DEFAULT.conf, DEFAULT.key)) + call + call)
        assert decode_reply(1, *recv_frame(s)).fields["token"] == token
        assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
        assert s.recv(1) == b""
    finally:
        s.close()
        first.close()
    assert runner_thread.runner.stats.bad_frames == 1
