"""The routing ext_proc service without Envoy: messages in, ProcessingResponse bytes out (decoded with protobuf)."""
from __future__ import annotations

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import json_format, struct_pb2

from fixtures_envoy import RecordingObserver, config_data
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.gateways.envoy import wire
from llm_router.gateways.envoy.service import RoutingService, ServiceOptions
from llm_router.router import build_catalog
from llm_router.runtime import Runtime
from llm_router.secrets.env import EnvStore

KEYS = {"OPENAI_API_KEY": "sk-openai-test", "ANTHROPIC_API_KEY": "sk-ant-test", "DEEPSEEK_API_KEY": "sk-deepseek-test",
        "GEMINI_API_KEY": "g-test", "MISTRAL_API_KEY": "m-test", "TOGETHER_API_KEY": "t-test"}
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
GREETING = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello there"}]})


def make_service(**options) -> tuple[RoutingService, RecordingObserver]:
    cfg = parse_config(config_data())
    observer = RecordingObserver()
    creds = Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)], missing="skip")
    runtime = Runtime(cfg, credentials=creds, observer=observer, telemetry=False)
    clock = iter(float(i) for i in range(10_000))
    return RoutingService(runtime, ServiceOptions(**options), clock=lambda: next(clock)), observer


def headers_msg(path="/v1/chat/completions", extra=(), end=False, route_metadata: str | None = None) -> bytes:
    hs = [(":path", path), (":method", "POST"), (":authority", "gw"), ("content-type", "application/json"), *extra]
    msg = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs]), end_of_stream=end))
    if route_metadata is not None:
        msg.attributes["envoy.filters.http.ext_proc"].CopyFrom(
            struct_pb2.Struct(fields={"xds.route_metadata": struct_pb2.Value(string_value=route_metadata)}))
    return msg.SerializeToString()


def body_msg(body: bytes, end: bool) -> bytes:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=end)).SerializeToString()


def response_headers_msg(request_id: str, status: int, extra=(), end=False) -> bytes:
    hs = [(":status", str(status)), ("content-type", "application/json"), *extra]
    msg = pb.ProcessingRequest(observability_mode=True, response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs]), end_of_stream=end))
    msg.metadata_context.filter_metadata["llm_router"].CopyFrom(
        struct_pb2.Struct(fields={"x-llm-router-request-id": struct_pb2.Value(string_value=request_id)}))
    return msg.SerializeToString()


def response_msg(body: bytes, end: bool) -> bytes:
    return pb.ProcessingRequest(observability_mode=True, response_body=pb.HttpBody(body=body, end_of_stream=end)).SerializeToString()


def observe(svc, request_id: str, status: int, chunks: list[bytes], extra=(), close_early=False):
    o = svc.open_observer({})
    assert o.on_message(response_headers_msg(request_id, status, extra)) == []  # never answers: observability mode
    for i, c in enumerate(chunks):
        assert o.on_message(response_msg(c, end=(i == len(chunks) - 1) and not close_early)) == []
    if close_early:
        o.on_close()
    return o


def decode(replies: list[bytes]) -> list[pb.ProcessingResponse]:
    return [pb.ProcessingResponse.FromString(r) for r in replies]


def set_headers(resp: pb.ProcessingResponse) -> dict[str, str]:
    opts = resp.request_headers.response.header_mutation.set_headers
    assert all(o.append_action == OVERWRITE for o in opts)
    return {o.header.key: o.header.raw_value.decode() for o in opts}


def route(svc, body=GREETING, chunks=None, **kw):
    s = svc.open({})
    assert s.on_message(headers_msg(**kw)) == []  # the header reply waits for the body
    parts = chunks or [body]
    out = []
    for i, part in enumerate(parts):
        out += s.on_message(body_msg(part, end=i == len(parts) - 1))
    return s, decode(out)


def test_a_routed_request_gets_route_credential_path_length_body_and_cache_clear():
    svc, obs = make_service()
    s, (hdr, body) = route(svc, extra=[("authorization", "Bearer client"), ("x-api-key", "client"), ("x-llm-router-upstream", "openai")])
    sh = set_headers(hdr)
    assert sh["x-llm-router-upstream"] == "deepseek"
    assert sh["authorization"] == "Bearer sk-deepseek-test"
    assert sh[":path"] == "/v1/chat/completions"
    new_body = body.request_body.response.body_mutation.body
    assert int(sh["content-length"]) == len(new_body)
    assert orjson.loads(new_body)["model"] == "deepseek-flash"
    assert set(hdr.request_headers.response.header_mutation.remove_headers) >= {"x-api-key", "api-key"}
    assert hdr.request_headers.response.clear_route_cache
    meta = json_format.MessageToDict(hdr.dynamic_metadata)["llm_router"]
    assert meta["x-llm-router-model"] == "deepseek-v2" and meta["x-llm-router-tier"] == "LOW"
    assert meta["x-llm-router-request-id"] == obs.decisions[0].request_id
    assert s.finished  # the routing stream has nothing more to do; the response is observed elsewhere
    assert meta["x-llm-router-request-id"] in svc.pending


def test_a_body_in_several_chunks_is_replaced_as_a_whole():
    svc, _ = make_service()
    parts = [GREETING[:10], GREETING[10:30], GREETING[30:], b""]
    s, replies = route(svc, chunks=parts)
    assert len(replies) == 1 + len(parts)  # one reply per message Envoy sent, in order
    hdr, *bodies = replies
    assert [b.request_body.response.body_mutation.clear_body for b in bodies[:-1]] == [True] * 3
    assert orjson.loads(bodies[-1].request_body.response.body_mutation.body)["model"] == "deepseek-flash"


def test_anthropic_requests_get_the_anthropic_key_and_version():
    svc, _ = make_service()
    hard = ("Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works, "
            "then derive the consequences for static analysis of programs.")
    body = orjson.dumps({"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": hard}]})
    _, (hdr, _) = route(svc, body=body, path="/v1/messages")
    sh = set_headers(hdr)
    assert sh["x-llm-router-upstream"] == "anthropic" and sh[":path"] == "/v1/messages"
    assert sh["x-api-key"] == "sk-ant-test" and sh["anthropic-version"] == "2023-06-01"
    assert "authorization" in hdr.request_headers.response.header_mutation.remove_headers


def test_a_simple_anthropic_request_goes_to_deepseeks_anthropic_api_with_its_bearer_key():
    svc, _ = make_service()
    body = orjson.dumps({"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]})
    _, (hdr, _) = route(svc, body=body, path="/v1/messages")
    sh = set_headers(hdr)
    assert sh["x-llm-router-upstream"] == "deepseek" and sh[":path"] == "/anthropic/v1/messages"
    assert sh["authorization"] == "Bearer sk-deepseek-test" and "anthropic-version" not in sh
    assert "x-api-key" in hdr.request_headers.response.header_mutation.remove_headers


def test_bad_json_is_an_immediate_openai_error_marked_as_ours():
    svc, obs = make_service()
    s, (resp,) = route(svc, body=b"{nope")
    ir = resp.immediate_response
    assert ir.status.code == 400
    err = orjson.loads(ir.body)["error"]
    assert "not valid JSON" in err["message"] and err["param"] == "body"
    assert ("content-type", "application/json") in {(h.header.key, h.header.raw_value.decode()) for h in ir.headers.set_headers}
    assert json_format.MessageToDict(resp.dynamic_metadata)["llm_router"]["local_reply"] == "llm-router"
    assert s.finished
    assert obs.decisions[0].error.status == 400


def test_a_body_over_the_limit_is_refused_before_it_ends():
    svc, _ = make_service(max_body_bytes=1000)
    s = svc.open({})
    s.on_message(headers_msg())
    assert s.on_message(body_msg(b"x" * 600, end=False)) == []
    (resp,) = decode(s.on_message(body_msg(b"x" * 600, end=False)))
    assert resp.immediate_response.status.code == 413
    assert "1000 bytes" in orjson.loads(resp.immediate_response.body)["error"]["message"]
    assert s.finished


def test_other_paths_pass_through_and_lose_a_client_route_header():
    svc, obs = make_service()
    s = svc.open({})
    (resp,) = decode(s.on_message(headers_msg("/healthz", end=True)))
    assert resp.HasField("request_headers") and not resp.request_headers.response.HasField("header_mutation")
    assert s.finished and not obs.decisions
    # With a body coming, every chunk (Envoy may send them before the header reply) gets its reply
    # before the stream ends.
    s = svc.open({})
    (resp,) = decode(s.on_message(headers_msg("/upload")))
    assert resp.HasField("request_headers") and not s.finished
    (resp,) = decode(s.on_message(body_msg(b"part one", False)))
    assert resp.HasField("request_body") and not s.finished
    (resp,) = decode(s.on_message(body_msg(b"part two", True)))
    assert resp.HasField("request_body") and s.finished and not obs.decisions
    s = svc.open({})
    (resp,) = decode(s.on_message(headers_msg("/admin", extra=[("x-llm-router-upstream", "openai")])))
    assert list(resp.request_headers.response.header_mutation.remove_headers) == ["x-llm-router-upstream"]
    assert resp.request_headers.response.clear_route_cache


def test_route_metadata_picks_the_policy_and_a_broken_one_is_a_named_error():
    svc, obs = make_service()
    hard = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Prove rigorously, step by step, a theorem"}]})
    text = 'filter_metadata { key: "llm_router" value { fields { key: "policy" value { string_value: "cheap" } } } }'
    _, (hdr, _) = route(svc, body=hard, route_metadata=text)
    assert set_headers(hdr)["x-llm-router-upstream"] == "deepseek"
    inline = ('filter_metadata { key: "llm_router" value { fields { key: "strategy" value { string_value: "ladder" } } '
              'fields { key: "ladder" value { struct_value { fields { key: "HIGH" value { string_value: "gpt-4o" } } '
              'fields { key: "LOW" value { string_value: "gpt-4o" } } } } } } }')
    _, (hdr, _) = route(svc, body=hard, route_metadata=inline)
    assert set_headers(hdr)["x-llm-router-upstream"] == "openai"
    bad = 'filter_metadata { key: "llm_router" value { fields { key: "policy" value { string_value: "nope" } } } }'
    _, (resp,) = route(svc, route_metadata=bad)
    assert resp.immediate_response.status.code == 500
    assert "unknown policy 'nope'" in orjson.loads(resp.immediate_response.body)["error"]["message"]
    other = 'filter_metadata { key: "somebody_else" value { } }'
    _, (hdr, _) = route(svc, route_metadata=other)
    assert set_headers(hdr)["x-llm-router-upstream"] == "deepseek"


def rid_of(obs) -> str:
    return obs.decisions[-1].request_id


def test_json_usage_status_latency_and_rate_limit_headers_reach_on_response():
    svc, obs = make_service()
    route(svc)
    answer = orjson.dumps({"id": "x", "usage": {"prompt_tokens": 11, "completion_tokens": 22}})
    o = observe(svc, rid_of(obs), 200, [answer[:15], answer[15:], b""],
                extra=[("x-ratelimit-remaining-requests", "41"), ("x-other", "no")])
    ex, status, usage, latency = obs.responses[0]
    assert (status, usage.input_tokens, usage.output_tokens) == (200, 11, 22)
    assert latency > 0 and o.finished
    assert obs.headers[ex.request_id] == [("x-ratelimit-remaining-requests", "41")]
    o.on_close()
    assert len(obs.responses) == 1 and not svc.pending  # reported once, forgotten


def test_sse_usage_is_read_as_chunks_pass():
    svc, obs = make_service()
    route(svc, body=orjson.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}))
    events = (b'data: {"choices":[{"delta":{"content":"hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    observe(svc, rid_of(obs), 200, [events[i:i + 17] for i in range(0, len(events), 17)] + [b""])  # cuts inside lines
    _, status, usage, _ = obs.responses[0]
    assert (status, usage.input_tokens, usage.output_tokens) == (200, 5, 2)


def test_a_client_accepting_brotli_is_asked_for_gzip_so_usage_stays_readable():
    svc, _ = make_service()
    _, (hdr, _) = route(svc, extra=[("accept-encoding", "br, gzip;q=0.8, zstd")])
    assert set_headers(hdr)["accept-encoding"] == "gzip;q=0.8"
    _, (hdr, _) = route(svc, extra=[("accept-encoding", "br")])
    assert set_headers(hdr)["accept-encoding"] == "identity"
    _, (hdr, _) = route(svc, extra=[("accept-encoding", "gzip, deflate")])
    assert "accept-encoding" not in set_headers(hdr)  # already readable: left as the client sent it
    svc, _ = make_service(observe_responses=False)
    _, (hdr, _) = route(svc, extra=[("accept-encoding", "br, gzip")])
    assert "accept-encoding" not in set_headers(hdr)  # nothing reads the answer: the client's choice stands


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_sse_usage_is_read_from_a_compressed_stream(encoding):
    import zlib

    svc, obs = make_service()
    route(svc, body=orjson.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}))
    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    events = [b'data: {"choices":[{"delta":{"content":"hel"}}]}\n\n', b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
              b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n', b"data: [DONE]\n\n"]
    packed = b"".join(z.compress(e) + z.flush(zlib.Z_SYNC_FLUSH) for e in events) + z.flush()
    observe(svc, rid_of(obs), 200, [packed[i:i + 9] for i in range(0, len(packed), 9)] + [b""],
            extra=[("content-encoding", encoding)])
    _, status, usage, _ = obs.responses[0]
    assert (status, usage.input_tokens, usage.output_tokens) == (200, 5, 2)


def test_a_stream_that_is_not_what_its_encoding_says_reports_without_usage():
    svc, obs = make_service()
    route(svc, body=orjson.dumps({"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}))
    observe(svc, rid_of(obs), 200, [b'data: {"choices":[],"usage":{"prompt_tokens":5}}\n\n', b""],
            extra=[("content-encoding", "gzip")])
    _, status, usage, _ = obs.responses[0]
    assert status == 200 and usage is None


def test_a_response_that_ends_early_still_reports():
    svc, obs = make_service()
    route(svc)
    observe(svc, rid_of(obs), 502, [b'{"partial'], close_early=True)
    _, status, usage, _ = obs.responses[0]
    assert status == 502 and usage is None


def test_responses_of_requests_we_did_not_route_are_ignored():
    svc, obs = make_service()
    o = observe(svc, "someone-else", 200, [b"{}"])
    assert o.finished and obs.responses == []


def test_without_response_observation_nothing_waits_for_a_response():
    svc, obs = make_service(observe_responses=False)
    s, _ = route(svc)
    assert s.finished and not svc.pending


def test_pending_responses_are_bounded():
    svc, obs = make_service(max_pending=50)
    for _ in range(120):
        route(svc)
    assert len(svc.pending) <= 50
    assert rid_of(obs) in svc.pending  # the newest survive


def test_other_message_kinds_get_their_matching_empty_reply():
    svc, _ = make_service()
    s = svc.open({})
    for kind, field in (("request_trailers", "request_trailers"), ("response_trailers", "response_trailers"),
                        ("response_headers", "response_headers")):
        msg = pb.ProcessingRequest(**{kind: pb.HttpTrailers() if "trailers" in kind else pb.HttpHeaders()}).SerializeToString()
        (resp,) = decode(s.on_message(msg))
        assert resp.WhichOneof("response") == field


@pytest.mark.parametrize("value", ["", "x" * 300, "naïve ünïcode"])
def test_wire_shapes_decode_with_protobuf(value):
    hm = wire.header_mutation([("a", value), ("b", b"\x01\x02")], ["c", "d"])
    m = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse(
        header_mutation=pb.HeaderMutation.FromString(hm), clear_route_cache=True)))
    ours = pb.ProcessingResponse.FromString(wire.request_headers_reply(wire.common_response(headers=hm, clear_route_cache=True)))
    assert ours == m
    meta = pb.ProcessingResponse.FromString(wire.request_headers_reply(b"", wire.dynamic_metadata("ns", {"k": value})))
    assert json_format.MessageToDict(meta.dynamic_metadata) == {"ns": {"k": value}}
    body = ("B" * 1000 + value).encode()
    rb = pb.ProcessingResponse.FromString(wire.request_body_reply(wire.common_response(body=body)))
    assert rb.request_body.response.body_mutation.body == body
    for size in (0, 100, 20_000, 3_000_000):
        big = (value.encode() or b"z") * (size // max(1, len(value.encode())) + 1)
        assert pb.ProcessingResponse.FromString(wire.request_body_replacement(big)).request_body.response.body_mutation.body == big
    enc = wire.MetadataEncoder("ns")
    assert json_format.MessageToDict(pb.ProcessingResponse.FromString(
        wire.request_headers_reply(b"", enc.encode([("a", value), ("b", "x" * 200)]))).dynamic_metadata) == \
        {"ns": {"a": value, "b": "x" * 200}}
    imm = pb.ProcessingResponse.FromString(wire.immediate_reply(429, body, [("retry-after", "3")], details="d"))
    assert (imm.immediate_response.status.code, imm.immediate_response.body, imm.immediate_response.details) == (429, body, "d")
    assert pb.ProcessingResponse.FromString(wire.REQUEST_BODY_CLEAR).request_body.response.body_mutation.clear_body
    assert pb.ProcessingResponse.FromString(wire.RESPONSE_BODY_CONTINUE).HasField("response_body")
    assert wire.varint(300) == b"\xac\x02" and wire.field(20, b"x")[:2] == b"\xa2\x01"


def test_services_are_picked_by_stream_metadata():
    from llm_router.gateways.envoy.service import Services

    opened = []
    services = Services({"route": lambda md: opened.append(("route", md)) or "r", "attempt": lambda md: "a"})
    assert services.open({}) == "r" and services.open(None) == "r"
    assert services.open({"x-llm-router-service": "attempt"}) == "a"
    with pytest.raises(LookupError, match="nope"):
        services.open({"x-llm-router-service": "nope"})
