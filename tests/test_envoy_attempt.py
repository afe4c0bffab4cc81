"""The per-attempt rewrite and the per-attempt observer without Envoy: messages in, decoded replies out."""
from __future__ import annotations

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from test_envoy_service import GREETING, KEYS, body_msg, decode, headers_msg, make_service, set_headers

from llm_router.gateways.envoy.fallback import MAX_CHAIN, SLOTS, parse_chain, retriable, slot_headers
from llm_router.plan import fallback_reason

CHAIN = "deepseek-v2,llama-3-70b,mistral-large"
CLUSTERS = ("deepseek", "together", "mistral")


def attempt_headers(attempt: int | None, cluster: str | None, *, chain: str | None = CHAIN, api: str = "chat",
                    explain: bool = True, end: bool = False, extra=()) -> bytes:
    hs = [(":path", "/v1/chat/completions"), (":method", "POST"), ("content-type", "application/json"),
          ("authorization", f"Bearer {KEYS['DEEPSEEK_API_KEY']}"), ("anthropic-version", "2023-06-01"),
          ("x-api-key", KEYS["ANTHROPIC_API_KEY"]), *extra]
    if attempt is not None:
        hs.append(("x-envoy-attempt-count", str(attempt)))
    msg = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs]), end_of_stream=end))
    if cluster is not None:
        msg.attributes["envoy.filters.http.ext_proc"].CopyFrom(
            struct_pb2.Struct(fields={"xds.cluster_name": struct_pb2.Value(string_value=cluster)}))
    meta = {"x-llm-router-request-id": struct_pb2.Value(string_value="rid-7"), "api": struct_pb2.Value(string_value=api)}
    if chain is not None:
        meta["chain"] = struct_pb2.Value(string_value=chain)
    if explain:
        meta["x-llm-router-model"] = struct_pb2.Value(string_value="deepseek-v2")
    msg.metadata_context.filter_metadata["llm_router"].CopyFrom(struct_pb2.Struct(fields=meta))
    return msg.SerializeToString()


def response_headers(status: int, extra=()) -> bytes:
    hs = [(":status", str(status)), ("content-type", "application/json"), *extra]
    return pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs]))).SerializeToString()


ROUTED = orjson.dumps({"model": "deepseek-flash", "messages": [{"role": "user", "content": "hello there"}]})


def refused(replies: list[bytes]) -> pb.ImmediateResponse:
    [r] = decode(replies)
    assert r.HasField("immediate_response"), r
    for key in KEYS.values():  # a refusal never carries a credential
        assert key.encode() not in replies[0]
    return r.immediate_response


def test_a_fallback_attempt_becomes_its_providers_call():
    svc, _ = make_service()
    s = svc.open_attempt({})
    [cont] = decode(s.on_message(attempt_headers(2, "together")))
    assert cont.HasField("request_headers") and not cont.request_headers.response.HasField("header_mutation")
    [reply] = decode(s.on_message(body_msg(ROUTED, end=True)))
    common = reply.request_body.response
    sets = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    assert sets["authorization"] == f"Bearer {KEYS['TOGETHER_API_KEY']}"
    assert sets[":path"] == "/v1/chat/completions"
    body = orjson.loads(common.body_mutation.body)
    assert body["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo" and body["messages"] == [{"role": "user", "content": "hello there"}]
    assert sets["content-length"] == str(len(common.body_mutation.body))
    removed = set(common.header_mutation.remove_headers)
    assert {"x-api-key", "anthropic-version", "api-key", "x-goog-api-key"} <= removed  # an earlier attempt's leftovers
    assert "x-llm-router-upstream" not in sets
    # The answering model for the explanation header.
    assert reply.dynamic_metadata.fields["llm_router"].struct_value.fields["x-llm-router-model"].string_value == "llama-3-70b"
    assert not s.finished  # the response headers come next
    [after] = decode(s.on_message(response_headers(200)))
    assert after.HasField("response_headers") and s.finished


def test_anthropic_attempt_gets_its_header_style():
    svc, _ = make_service()
    s = svc.open_attempt({})
    s.on_message(attempt_headers(2, "anthropic", chain="gpt-4o,claude-3.5-sonnet"))
    [reply] = decode(s.on_message(body_msg(ROUTED, end=True)))
    common = reply.request_body.response
    sets = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    assert sets["x-api-key"] == KEYS["ANTHROPIC_API_KEY"] and sets["anthropic-version"] == "2023-06-01"
    assert "authorization" in common.header_mutation.remove_headers
    assert orjson.loads(common.body_mutation.body)["model"] == "claude-sonnet-4-6"


def test_without_explain_no_model_metadata_is_written():
    svc, _ = make_service()
    s = svc.open_attempt({})
    s.on_message(attempt_headers(2, "together", explain=False))
    [reply] = decode(s.on_message(body_msg(ROUTED, end=True)))
    assert not reply.HasField("dynamic_metadata")


@pytest.mark.parametrize("attempt, cluster, chain, why", [
    (2, "mistral", CHAIN, "lives on 'together'"),  # the cluster of this attempt is not the slot's model's
    (2, "together", None, "no fallback chain"),
    (4, "together", CHAIN, "outside the fallback chain"),
    (None, "together", CHAIN, "outside the fallback chain"),
    (2, None, CHAIN, "cluster is unknown"),
    (2, "together", "deepseek-v2,gpt-17", "not in the catalog"),
])
def test_an_attempt_it_cannot_place_is_refused_before_the_provider_sees_it(attempt, cluster, chain, why):
    svc, _ = make_service()
    s = svc.open_attempt({})
    imm = refused(s.on_message(attempt_headers(attempt, cluster, chain=chain)))
    assert imm.status.code == 502
    err = orjson.loads(imm.body)["error"]
    assert err["code"] == "fallback_refused" and why in err["message"]
    assert s.finished


def test_an_api_the_provider_does_not_serve_is_refused():
    svc, _ = make_service()
    s = svc.open_attempt({})
    imm = refused(s.on_message(attempt_headers(2, "together", api="messages")))
    assert "does not serve the messages API" in orjson.loads(imm.body)["error"]["message"]


def test_an_attempt_without_a_body_or_with_a_bad_body_is_refused():
    svc, _ = make_service()
    s = svc.open_attempt({})
    refused(s.on_message(attempt_headers(2, "together", end=True)))
    s = svc.open_attempt({})
    s.on_message(attempt_headers(2, "together"))
    imm = refused(s.on_message(body_msg(b'{"messages": 3', end=True)))
    assert "cannot be rewritten" in orjson.loads(imm.body)["error"]["message"]


@pytest.mark.parametrize("status, expected", [(503, 503), (429, 503), (500, 502), (529, 502), (404, 502), (401, 502)])
def test_the_last_models_failure_becomes_one_clear_error(status, expected):
    svc, _ = make_service()
    s = svc.open_attempt({})
    s.on_message(attempt_headers(3, "mistral"))
    s.on_message(body_msg(ROUTED, end=True))
    imm = refused(s.on_message(response_headers(status, extra=[("retry-after", "12")])))
    assert imm.status.code == expected
    err = orjson.loads(imm.body)["error"]
    assert err["code"] == "all_models_failed" and CHAIN.replace(",", ", ") in err["message"]
    hdrs = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
    assert hdrs["x-llm-router-request-id"] == "rid-7"
    assert ("retry-after" in hdrs) == (status == 429)


@pytest.mark.parametrize("attempt, status", [(2, 503), (2, 404), (3, 200), (3, 400), (3, 422)])
def test_other_responses_pass(attempt, status):
    svc, _ = make_service()
    s = svc.open_attempt({})
    s.on_message(attempt_headers(attempt, CLUSTERS[attempt - 1]))
    s.on_message(body_msg(ROUTED, end=True))
    [r] = decode(s.on_message(response_headers(status)))
    assert r.HasField("response_headers")


# ---- the per-attempt observer ---------------------------------------------------------------

def routed(svc) -> str:
    """Route the greeting; returns its request id."""
    s = svc.open({})
    s.on_message(headers_msg())
    [hdr, _] = decode(s.on_message(body_msg(GREETING, end=True)))
    sets = set_headers(hdr)
    assert sets["x-llm-router-try-1"] == "deepseek" and sets["x-llm-router-try-2"] == "together"
    assert sets["x-envoy-attempt-count"] == "0" and sets["x-envoy-max-retries"] == "2"
    assert {"x-llm-router-try-4", "x-envoy-retry-on"} <= set(hdr.request_headers.response.header_mutation.remove_headers)
    meta = hdr.dynamic_metadata.fields["llm_router"].struct_value.fields
    assert meta["chain"].string_value == CHAIN and meta["api"].string_value == "chat"
    return meta["x-llm-router-request-id"].string_value


def observer_request(rid: str, attempt: int) -> bytes:
    msg = pb.ProcessingRequest(observability_mode=True, request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key="x-envoy-attempt-count", raw_value=str(attempt).encode())])))
    msg.metadata_context.filter_metadata["llm_router"].CopyFrom(
        struct_pb2.Struct(fields={"x-llm-router-request-id": struct_pb2.Value(string_value=rid)}))
    return msg.SerializeToString()


def observer_response(status: int, end: bool = True) -> bytes:
    return pb.ProcessingRequest(observability_mode=True, response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=":status", raw_value=str(status).encode())]), end_of_stream=end)).SerializeToString()


def test_each_attempt_is_reported_as_its_own_models_call_and_each_move_is_counted():
    svc, observer = make_service()
    rid = routed(svc)
    first = svc.open_observer({})
    first.on_message(observer_request(rid, 1))
    first.on_message(observer_response(503, end=False))  # Envoy abandons it: the stream closes later
    second = svc.open_observer({})
    second.on_message(observer_request(rid, 2))
    assert observer.fallbacks == [(observer.fallbacks[0][0], "deepseek-v2", "llama-3-70b", "server_error")]
    first.on_close()
    third = svc.open_observer({})
    second.on_message(observer_response(429))  # no body: reported now
    third.on_message(observer_request(rid, 3))
    third.on_close()  # connect failure or per-try timeout: no response
    assert [(ex.attempt, ex.call.model.id, status) for ex, status, _, _ in observer.responses] == [
        (1, "deepseek-v2", 503), (2, "llama-3-70b", 429), (3, "mistral-large", 0)]
    assert [f[1:] for f in observer.fallbacks] == [("deepseek-v2", "llama-3-70b", "server_error"),
                                                   ("llama-3-70b", "mistral-large", "rate_limited")]
    assert rid not in svc.pending  # the chain's last attempt finished the request


def test_a_success_ends_the_request_and_later_streams_are_ignored():
    svc, observer = make_service()
    rid = routed(svc)
    o = svc.open_observer({})
    o.on_message(observer_request(rid, 1))
    o.on_message(observer_response(200))
    assert rid not in svc.pending and len(observer.responses) == 1
    late = svc.open_observer({})
    late.on_message(observer_request(rid, 2))
    assert late.finished and len(observer.responses) == 1


def test_fallback_helpers():
    assert slot_headers(("a", "b")) == ((("x-llm-router-try-1", "a"), ("x-llm-router-try-2", "b")), SLOTS[2:])
    assert len(slot_headers(tuple("abcdefghijkl"))[0]) == MAX_CHAIN
    assert parse_chain("a,b,,c") == ("a", "b", "c") and parse_chain("") == ()
    assert [retriable(s) for s in (0, 200, 400, 404, 422, 429, 500, 503)] == [True, False, False, True, False, True, True, True]
    assert [fallback_reason(s) for s in (None, 0, 429, 502, 404, 401)] == [
        "no_response", "no_response", "rate_limited", "server_error", "refused", "refused"]
