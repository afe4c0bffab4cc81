"""The wire format: every reply we build decodes with the generated code; readers and framing."""
from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings, strategies as st

from llm_router.gateways.apisix import decode, encode, framing
from llm_router.gateways.apisix.framing import FrameReader, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL

from apisix_emulator import (
    ProtocolViolation, build_extra_info_resp, build_prepare_conf, build_req_call, build_resp_call, decode_reply,
)

header_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"), min_size=1, max_size=40)
header_values = st.one_of(st.none(), st.text(max_size=120))
entries = st.lists(st.tuples(header_names, header_values), max_size=8)
bodies = st.binary(max_size=3000)


def _decode(frame: bytes, request_type: int):
    rpc_type, length = framing.parse_header(frame)
    assert length == len(frame) - 4, "frame length must match the payload"
    return decode_reply(request_type, rpc_type, frame[4:])


@settings(max_examples=300, deadline=None)
@given(rid=st.integers(0, 2**32 - 1), path=st.one_of(st.none(), st.text(max_size=80)), headers=entries,
       extra=entries, resp=entries, body=bodies)
def test_rewrite_replies_decode_with_generated_code(rid, path, headers, extra, resp, body):
    cache = encode.EntryCache()
    frame = encode.rewrite_frame(rid, path=path, headers=cache.vector(tuple(headers), tuple(extra)),
                                resp_headers=cache.vector((), tuple(resp)), body=body)
    reply = _decode(frame, RPC_HTTP_REQ_CALL).fields
    assert reply["id"] == rid and reply["action"] == "rewrite"
    # A query in the path travels as args: APISIX would escape a '?' in Rewrite.path.
    bare, _, query = (None, None, "") if path is None else path.partition("?")
    assert reply["path"] == bare
    assert reply["headers"] == headers + extra
    assert reply["resp_headers"] == resp
    assert (reply["body"] or b"") == body
    assert reply["args"] == parse_qsl(query, keep_blank_values=True)


@settings(max_examples=200, deadline=None)
@given(rid=st.integers(0, 2**32 - 1), status=st.integers(0, 65535), headers=entries, body=bodies)
def test_stop_and_resp_call_replies_decode(rid, status, headers, body):
    cache = encode.EntryCache()
    stop = _decode(encode.stop_frame(rid, status, cache.vector(tuple(headers)), body), RPC_HTTP_REQ_CALL).fields
    assert (stop["id"], stop["action"], stop["status"], stop["headers"], stop["body"] or b"") == (rid, "stop", status, headers, body)
    resp = _decode(encode.resp_call_frame(rid, status, cache.vector((), tuple(headers)), body), RPC_HTTP_RESP_CALL).fields
    assert (resp["id"], resp["status"], resp["headers"], resp["body"] or b"") == (rid, status, headers, body)


def test_fixed_replies_decode():
    assert _decode(encode.prepare_conf_frame(4_000_000_007), 1).fields == {"token": 4_000_000_007}
    assert _decode(encode.TOKEN_NOT_FOUND_FRAME, 2).fields["message"] == "conf token not found"
    assert _decode(encode.BAD_REQUEST_FRAME, 1).fields["code"] == encode.BAD_REQUEST
    assert _decode(encode.SERVICE_UNAVAILABLE_FRAME, 4).fields["code"] == encode.SERVICE_UNAVAILABLE
    assert _decode(encode.REQ_BODY_FRAME, 2).fields == {"info": "req_body"}
    assert _decode(encode.RESP_BODY_FRAME, 4).fields == {"info": "resp_body"}
    assert _decode(encode.extra_info_var_frame("http_x_llm_router_request_id"), 4).fields == {
        "info": "var", "name": "http_x_llm_router_request_id"}
    passed = _decode(encode.pass_frame(12), RPC_HTTP_REQ_CALL).fields
    assert passed == {"id": 12, "action": None}
    # a type 3 frame is only acceptable interleaved in a call
    with pytest.raises(ProtocolViolation, match="unexpected type"):
        _decode(encode.REQ_BODY_FRAME, 1)


def test_frames_over_24_bits_are_refused():
    with pytest.raises(framing.FrameError, match="24-bit"):
        framing.header(2, framing.MAX_PAYLOAD + 1)
    with pytest.raises(framing.FrameError):
        encode.rewrite_frame(1, path="/p", headers=encode.EntryCache().vector(()), resp_headers=encode.EntryCache().vector(()),
                            body=b"x" * framing.MAX_PAYLOAD)


@settings(max_examples=200, deadline=None)
@given(rid=st.integers(0, 2**32 - 1), token=st.integers(0, 2**32 - 1), path=st.text(max_size=100),
       method=st.sampled_from(list(decode.METHODS)), headers=st.lists(st.tuples(header_names, st.text(max_size=50)), max_size=10))
def test_req_call_reader_matches_builder(rid, token, path, method, headers):
    payload = build_req_call(rid, token, method=method, path=path, headers=headers, args=[("a", None), ("b", "1")])
    call = decode.read_req_call(payload)
    assert (call.id, call.conf_token, call.method, call.path) == (rid, token, decode.METHODS.index(method), path)
    assert call.headers() == headers
    assert call.args() == [("a", None), ("b", "1")]


@settings(max_examples=100, deadline=None)
@given(conf=st.lists(st.tuples(header_names, st.text(max_size=200)), max_size=4), key=st.text(max_size=80),
       result=st.one_of(st.none(), bodies), status=st.integers(0, 65535), headers=entries)
def test_other_readers_match_builders(conf, key, result, status, headers):
    pc = decode.read_prepare_conf(build_prepare_conf(conf, key))
    assert (pc.conf, pc.key) == (conf, key)
    assert decode.read_extra_info_result(build_extra_info_resp(result)) == result
    plain = [(n, v if v is not None else "") for n, v in headers]
    rc = decode.read_resp_call(build_resp_call(7, 9, status, plain))
    assert (rc.id, rc.status, rc.headers, rc.conf_token) == (7, status, plain, 9)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_readers_reject_garbage_with_decode_error_only(data):
    for read in (decode.read_prepare_conf, decode.read_req_call, decode.read_extra_info_result, decode.read_resp_call):
        try:
            read(data)
        except decode.DecodeError:
            pass


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=6), cuts=st.lists(st.integers(1, 50), max_size=30))
def test_frame_reader_reassembles_any_split(frames, cuts):
    stream = b"".join(framing.frame(t, p) for t, p in frames)
    reader = FrameReader()
    got = []
    pos = 0
    for cut in cuts:
        got += list(reader.feed(stream[pos:pos + cut]))
        pos += cut
    got += list(reader.feed(stream[pos:]))
    assert got == frames
    assert reader.pending == 0


def test_frame_reader_keeps_partial_frames():
    reader = FrameReader()
    frame = framing.frame(RPC_EXTRA_INFO, b"abc")
    assert list(reader.feed(frame[:2])) == []
    assert reader.pending == 2
    assert list(reader.feed(frame[2:] + framing.frame(0, b""))) == [(RPC_EXTRA_INFO, b"abc"), (0, b"")]


@pytest.mark.skipif(shutil.which("flatc") is None, reason="flatc (Debian flatbuffers-compiler) is not installed")
def test_committed_generated_code_is_current(tmp_path):
    subprocess.run([sys.executable, "-m", "llm_router.gateways.apisix.gen_proto", "--out", str(tmp_path)], check=True)
    committed = Path(encode.__file__).parent / "proto" / "A6"
    fresh = tmp_path / "A6"
    names = sorted(p.relative_to(fresh) for p in fresh.rglob("*.py"))
    assert names == sorted(p.relative_to(committed) for p in committed.rglob("*.py"))
    mismatch = [str(n) for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert not mismatch, f"regenerate with python -m llm_router.gateways.apisix.gen_proto: {mismatch}"


@settings(max_examples=200, deadline=None)
@given(headers=st.lists(st.tuples(header_names.map(str.lower), st.text(max_size=30)), max_size=12),
       length=st.integers(0, 10**10))
def test_content_length_lookup(headers, length):
    others = [(n, v) for n, v in headers if n != "content-length"]
    payload = build_req_call(1, 2, headers=others + [("content-length", str(length))] + others[:2])
    assert decode.req_header(payload, b"content-length") == str(length).encode()
    if length >= 1_000_000:
        assert decode.may_be_large(payload)
    assert decode.req_header(build_req_call(1, 2, headers=others), b"content-length") is None


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_runner_survives_mutated_frames(data):
    """Bit-flipped and truncated versions of real requests: never an exception, always a reply or a close."""
    from llm_router.config import load_config
    from llm_router.gateways.apisix.runner import Conversation, Runner
    from llm_router.gateways.apisix.tokens import TokenStore
    from llm_router.runtime import Runtime

    global _FUZZ_RUNNER
    if _FUZZ_RUNNER is None:
        from conftest import TEST_KEYS
        from llm_router.credentials import Credentials
        from llm_router.router import build_catalog
        from llm_router.secrets.env import EnvStore

        cfg = load_config(None)
        creds = Credentials.resolve(build_catalog(cfg), [EnvStore(TEST_KEYS)])
        _FUZZ_RUNNER = Runner(Runtime(cfg, credentials=creds, telemetry=False), TokenStore(ttl=100, base=1000))
    runner = _FUZZ_RUNNER
    conv = Conversation()
    token = runner.tokens.put("route#f#ext-plugin-pre-req#1", (("llm-router", "{}"),)).token
    if runner.tokens.get(token).compiled is None:
        runner.tokens.get(token).compiled = runner.compile(runner.tokens.get(token))
    originals = {
        1: build_prepare_conf([("llm-router", '{"policy": "default"}')], "route#f#ext-plugin-pre-req#2"),
        2: build_req_call(3, token, headers=[("content-length", "20"), ("authorization", "Bearer x")]),
        3: build_extra_info_resp(b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'),
        4: build_resp_call(4, token, 200, [("content-type", "application/json")]),
    }
    for _ in range(data.draw(st.integers(1, 6))):
        rpc_type = data.draw(st.sampled_from([1, 2, 2, 3, 4, 0, 7]))
        payload = bytearray(originals.get(rpc_type, b"\x00" * 8))
        for _ in range(data.draw(st.integers(0, 4))):
            if payload:
                i = data.draw(st.integers(0, len(payload) - 1))
                payload[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(payload)))
        reply = runner.on_frame(conv, rpc_type, bytes(payload[:cut] if data.draw(st.booleans()) else payload))
        assert isinstance(reply, bytes)
        if not reply:  # the runner dropped the connection: a new one starts clean
            conv = Conversation()
            continue
        rtype, n = framing.parse_header(reply)
        assert n == len(reply) - 4 and rtype in (0, 1, 2, 3, 4)
    assert runner.stats.internal_errors == 0


_FUZZ_RUNNER = None
