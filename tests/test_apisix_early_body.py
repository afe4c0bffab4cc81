"""An idle runner asks for a routed call's body before it reads the call; calls that need no body never fetch it."""
from __future__ import annotations

import socket
import threading

import orjson
import pytest

from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.runner import Runner

from apisix_emulator import (
    Emulator, RouteConf, build_extra_info_resp, build_prepare_conf, build_req_call, decode_reply, recv_frame,
)

DEFAULT = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
BAD = RouteConf(conf=(("llm-router", '{"policy": "no-such-policy"}'),), conf_id="bad")
BODY = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]})
HEADERS = [("authorization", "Bearer c"), ("content-type", "application/json")]


def _connect(path: str, route: RouteConf = DEFAULT) -> tuple[socket.socket, int]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(framing.frame(1, build_prepare_conf(route.conf, route.key)))
    return s, decode_reply(1, *recv_frame(s)).fields["token"]


def test_the_body_request_goes_out_before_the_call_is_read(apisix_runner_thread, monkeypatch):
    thread = apisix_runner_thread(200_000)
    asked_first: list[bool] = []
    client_has_request = threading.Event()
    read = Runner._on_req_call

    def reading(self, conv, payload):
        # the client signals once it holds the body request: were it sent after this read, that never happens here
        asked_first.append(client_has_request.wait(20))
        return read(self, conv, payload)

    monkeypatch.setattr(Runner, "_on_req_call", reading)
    s, token = _connect(thread.path)
    try:
        s.sendall(framing.frame(2, build_req_call(1, token, headers=HEADERS)))
        assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
        client_has_request.set()
        s.sendall(framing.frame(3, build_extra_info_resp(BODY)))
        reply = decode_reply(2, *recv_frame(s)).fields
        assert reply["id"] == 1 and reply["action"] == "rewrite" and orjson.loads(reply["body"])["messages"]
    finally:
        s.close()
    assert asked_first == [True]
    assert thread.runner.stats.early_body_asks == 1 and thread.runner.stats.early_body_unused == 0


@pytest.mark.parametrize("early", [True, False])
def test_routed_calls_get_the_same_rewrite_with_and_without_the_early_request(apisix_runner_thread, early):
    thread = apisix_runner_thread(200_000, apisix_early_body=early)
    em = Emulator(thread.path, timeout=30)
    try:
        outs = [em.http_req_call(DEFAULT, headers=HEADERS, body=BODY) for _ in range(5)]
    finally:
        em.close()
    for out in outs:
        assert out.ok and [i["info"] for i in out.extra_info] == ["req_body"]
        assert orjson.loads(out.upstream_body)["messages"] == orjson.loads(BODY)["messages"]
    assert len({orjson.loads(o.upstream_body)["model"] for o in outs}) == 1
    stats = thread.runner.stats
    assert (stats.early_body_asks, stats.early_body_unused, stats.rewrites) == ((5 if early else 0), 0, 5)


def test_calls_that_need_no_body_are_read_first_and_never_fetch_it(apisix_runner_thread):
    thread = apisix_runner_thread(200_000)
    em = Emulator(thread.path, timeout=30)
    try:
        listed = em.http_req_call(DEFAULT, method="GET", path="/v1/models", headers=HEADERS)
        assert listed.status == 200 and listed.extra_info == []
        passed = em.http_req_call(DEFAULT, method="POST", path="/v1/files", headers=HEADERS, body=b"x" * 100)
        assert passed.ok and passed.extra_info == []  # not an LLM API: passes untouched
        large = em.http_req_call(DEFAULT, headers=[*HEADERS, ("content-length", str(40 << 20))], body=BODY)
        assert large.status == 413 and large.extra_info == []  # refused before the body crosses the socket
        assert em.http_req_call(DEFAULT, headers=HEADERS, body=BODY).ok  # the next call still asks early
    finally:
        em.close()
    assert (thread.runner.stats.early_body_asks, thread.runner.stats.early_body_unused) == (1, 0)


def test_a_reply_that_needs_no_body_waits_for_the_early_bodys_answer(apisix_runner_thread):
    thread = apisix_runner_thread(200_000)
    stats = thread.runner.stats
    s, token = _connect(thread.path)
    b, bad_token = _connect(thread.path, BAD)
    try:
        for sock, tok, rid in ((s, token + 7777, 1), (b, bad_token, 2)):
            sock.sendall(framing.frame(2, build_req_call(rid, tok, headers=HEADERS)))
            assert decode_reply(2, *recv_frame(sock)).fields == {"info": "req_body"}  # asked before the call was read
            sock.sendall(framing.frame(3, build_extra_info_resp(BODY)))
            rpc_type, payload = recv_frame(sock)
            if rid == 1:  # an unknown token: APISIX sends PrepareConf again and retries
                assert rpc_type == 0 and decode_reply(2, rpc_type, payload).fields["message"] == "conf token not found"
            else:  # a route whose conf is invalid: refused with the reason
                reply = decode_reply(2, rpc_type, payload).fields
                assert reply["action"] == "stop" and reply["status"] == 500
                assert orjson.loads(reply["body"])["error"]["code"] == "bad_route_config"
        assert (stats.early_body_asks, stats.early_body_unused) == (2, 2)
        # the connection goes on with a routed call
        s.sendall(framing.frame(2, build_req_call(3, token, headers=HEADERS)))
        assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
        s.sendall(framing.frame(3, build_extra_info_resp(BODY)))
        reply = decode_reply(2, *recv_frame(s)).fields
        assert reply["id"] == 3 and reply["action"] == "rewrite"
    finally:
        s.close()
        b.close()


def test_another_frame_instead_of_the_bodys_answer_closes_the_connection(apisix_runner_thread):
    thread = apisix_runner_thread(200_000)
    s, token = _connect(thread.path)
    try:
        s.sendall(framing.frame(2, build_req_call(1, token + 7777, headers=HEADERS)))  # its error reply is held
        assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
        s.sendall(framing.frame(2, build_req_call(2, token, headers=HEADERS)))  # not the answer APISIX owes
        assert s.recv(1) == b""  # closed, and the held reply never sent
    finally:
        s.close()
    assert thread.runner.stats.bad_frames == 1
    em = Emulator(thread.path, timeout=30)
    try:
        assert em.http_req_call(DEFAULT, headers=HEADERS, body=BODY).ok  # the runner serves on
    finally:
        em.close()


def test_a_call_arriving_while_another_is_in_flight_is_read_first(apisix_runner_thread):
    thread = apisix_runner_thread(0)
    stats = thread.runner.stats
    a, token = _connect(thread.path)
    b, _ = _connect(thread.path)
    try:
        a.sendall(framing.frame(2, build_req_call(1, token, headers=HEADERS)))
        assert decode_reply(2, *recv_frame(a)).fields == {"info": "req_body"}
        b.sendall(framing.frame(2, build_req_call(2, token, headers=HEADERS)))  # A's call is in flight: not idle
        assert decode_reply(2, *recv_frame(b)).fields == {"info": "req_body"}
        assert stats.early_body_asks == 1
        for sock, rid in ((b, 2), (a, 1)):
            sock.sendall(framing.frame(3, build_extra_info_resp(BODY)))
            reply = decode_reply(2, *recv_frame(sock)).fields
            assert reply["id"] == rid and reply["action"] == "rewrite"
        # a call split across reads is read whole before its body is asked for
        frame = framing.frame(2, build_req_call(3, token, headers=HEADERS))
        a.sendall(frame[:10])
        a.sendall(frame[10:])
        assert decode_reply(2, *recv_frame(a)).fields == {"info": "req_body"}
        a.sendall(framing.frame(3, build_extra_info_resp(BODY)))
        assert decode_reply(2, *recv_frame(a)).fields["id"] == 3
    finally:
        a.close()
        b.close()

