"""The APISIX and Envoy adapters apply the same decision: same model, upstream header, credential, body, path."""
from __future__ import annotations

import orjson
import pytest

from llm_router.config import load_config
from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.runner import REQUEST_ID_HEADER, Conversation, Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.runtime import Exchange, Refusal, Runtime

from apisix_emulator import FAKE_KEYS, build_extra_info_resp, build_prepare_conf, build_req_call, decode_reply

CONF = '{"extends": "default", "explain": true}'
CLIENT = [("authorization", "Bearer client-key"), ("x-llm-router-upstream", "openai"), ("content-type", "application/json")]
BODIES = [
    ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hello!"}]}),
    ("/v1/chat/completions", {"model": "auto", "stream": True, "messages": [
        {"role": "system", "content": "You review code."},
        {"role": "user", "content": "Find the race condition in this Go code and prove the fix is correct:\n```go\nfunc f(){}\n```"}]}),
    ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "Summarize: " + "lorem ipsum " * 300}],
                              "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}),
    ("/v1/messages", {"model": "claude-3-5-sonnet-20240620", "max_tokens": 200,
                      "messages": [{"role": "user", "content": "Write a haiku about autumn"}]}),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 4096},
                      "messages": [{"role": "user", "content": "Prove the fix for this deadlock is correct and design a test for it."},
                                   {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "run",
                                                                      "input": {"cmd": "go test -race"}}]},
                                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                                 "content": "DATA RACE"}]}],
                      "tools": [{"name": "run", "input_schema": {"type": "object"}}]}),
    ("/v1/chat/completions", {"model": "auto", "messages": [  # content arrays, as SDKs send them (DeepSeek gets strings)
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "thanks, that helped!"}]}]}),
    ("/v1/completions", {"model": "auto", "prompt": "def fib(n):"}),
    # a prefill (Claude Sonnet 4.6 refuses one: it goes elsewhere), and a thinking turn with an agent's sampling and a
    # forced tool (sent to Claude without them)
    ("/v1/chat/completions", {"model": "auto", "messages": [
        {"role": "user", "content": "Prove rigorously that the halting problem is undecidable, step by step."},
        {"role": "assistant", "content": "Proof. Suppose"}]}),
    ("/v1/messages", {"model": "auto", "max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 2048},
                      "temperature": 0.2, "top_k": 40, "tool_choice": {"type": "any"},
                      "tools": [{"name": "run", "input_schema": {"type": "object"}}],
                      "messages": [{"role": "user", "content": "Prove the fix for this deadlock is correct and design a test."}]}),
    ("/v1/chat/completions", {"model": "auto", "messages": []}),
]


@pytest.fixture
def runtime(monkeypatch):
    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    return lambda: Runtime(load_config(None), telemetry=False)


def apisix_mutations(runtime: Runtime, path: str, body: bytes, conf: str = CONF) -> dict:
    """What the APISIX runner tells APISIX to change, as gateway-neutral mutations."""
    runner = Runner(runtime, TokenStore(ttl=100))
    conv = Conversation()
    prep = runner.on_frame(conv, 1, build_prepare_conf((("llm-router", conf),), "route#p#ext-plugin-pre-req#1"))
    token = decode_reply(1, prep[0], prep[4:]).fields["token"]
    ask = runner.on_frame(conv, 2, build_req_call(9, token, path=path, headers=CLIENT))
    assert decode_reply(2, ask[0], ask[4:]).fields == {"info": "req_body"}
    reply = runner.on_frame(conv, 3, build_extra_info_resp(body))
    rtype, n = framing.parse_header(reply)
    fields = decode_reply(2, rtype, reply[4:]).fields
    if fields["action"] == "stop":
        return {"status": fields["status"], "error": orjson.loads(fields["body"])["error"]["code"]}
    set_headers = {k: v for k, v in fields["headers"] if v is not None and k != REQUEST_ID_HEADER}
    removed = sorted(k for k, v in fields["headers"] if v is None)
    return {"path": fields["path"], "set": set_headers, "remove": removed, "body": fields["body"],
            "model": orjson.loads(fields["body"])["model"]}


def core_mutations(runtime: Runtime, path: str, body: bytes, conf: str = CONF) -> dict:
    """The same through Runtime.decide directly (what every adapter must apply)."""
    result = runtime.decide(body, path=path, ex=Exchange("x", "r", 0.0), route_conf=conf)
    if isinstance(result, Refusal):
        return {"status": result.status, "error": orjson.loads(result.body)["error"]["code"]}
    return {"path": result.path, "set": dict(result.set_headers), "remove": sorted(result.remove_headers),
            "body": result.body, "model": orjson.loads(result.body)["model"]}


def envoy_mutations(runtime: Runtime, path: str, body: bytes) -> dict:
    """The same through the Envoy ext_proc session (request headers, then the body in one message)."""
    from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
    from envoy.service.ext_proc.v3.external_processor_pb2 import HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse

    from llm_router.gateways.envoy.service import RoutingService

    session = RoutingService(runtime).open()
    hdrs = [HeaderValue(key=":path", raw_value=path.encode()), HeaderValue(key=":method", raw_value=b"POST")]
    hdrs += [HeaderValue(key=k, raw_value=v.encode()) for k, v in CLIENT]
    out = session.on_message(ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=hdrs))).SerializeToString())
    out += session.on_message(ProcessingRequest(request_body=HttpBody(body=body, end_of_stream=True)).SerializeToString())
    replies = [ProcessingResponse.FromString(b) for b in out]
    immediate = [r for r in replies if r.WhichOneof("response") == "immediate_response"]
    if immediate:
        r = immediate[0].immediate_response
        return {"status": r.status.code, "error": orjson.loads(r.body)["error"]["code"]}
    head = next(r for r in replies if r.WhichOneof("response") == "request_headers").request_headers.response
    sets = {o.header.key: (o.header.raw_value or o.header.value.encode()).decode() for o in head.header_mutation.set_headers}
    new_path = sets.pop(":path")
    sets.pop("content-length", None)
    # Envoy's own fallback machinery (retry slots, retry-policy headers): gateway-specific, not the decision
    sets = {k: v for k, v in sets.items() if not k.startswith(("x-llm-router-try-", "x-envoy-"))}
    new_body = next(r for r in replies if r.WhichOneof("response") == "request_body").request_body.response.body_mutation.body
    removed = sorted(h for h in head.header_mutation.remove_headers if not h.startswith(("x-envoy-", "x-llm-router-try-")))
    return {"path": new_path, "set": sets, "remove": removed, "body": new_body,
            "model": orjson.loads(new_body)["model"]}


@pytest.mark.parametrize("path,data", BODIES, ids=[f"{i}" for i in range(len(BODIES))])
def test_apisix_applies_exactly_the_core_decision(runtime, path, data):
    body = orjson.dumps(data)
    assert apisix_mutations(runtime(), path, body) == core_mutations(runtime(), path, body)


@pytest.mark.parametrize("path,data", BODIES, ids=[f"{i}" for i in range(len(BODIES))])
def test_apisix_and_envoy_adapters_agree(runtime, path, data):
    pytest.importorskip("envoy.service.ext_proc.v3.external_processor_pb2", reason="xds-protos is not installed")
    try:
        import llm_router.gateways.envoy.service  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the Envoy adapter is not importable yet: {exc}")
    body = orjson.dumps(data)
    apisix = apisix_mutations(runtime(), path, body)
    envoy = envoy_mutations(runtime(), path, body)
    assert apisix == envoy
    if "model" in apisix:
        assert apisix["set"]["x-llm-router-upstream"]  # the routing header is part of what must agree


def test_both_adapters_keep_a_conversation_on_its_model(monkeypatch):
    """Conversation affinity lives in the core, so it holds through either gateway (one runtime each)."""
    pytest.importorskip("envoy.service.ext_proc.v3.external_processor_pb2", reason="xds-protos is not installed")
    from llm_router.config import default_data, parse_config

    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    data = default_data()
    data["policies"]["default"]["affinity"] = "conversation"
    opening = [{"role": "system", "content": "You review code."},
               {"role": "user", "content": "Find the race condition in this Go code and prove the fix is correct:\n"
                                           "```go\nfunc f(){ go g(); x++ }\n```"}]
    follow = {"model": "auto", "messages": opening + [{"role": "assistant", "content": "The race is on x."},
                                                      {"role": "user", "content": "thanks!"}]}
    alone = core_mutations(Runtime(load_config(None), telemetry=False), "/v1/chat/completions", orjson.dumps(follow))
    for mutations in (apisix_mutations, envoy_mutations):
        rt = Runtime(parse_config(data), telemetry=False)
        first = mutations(rt, "/v1/chat/completions", orjson.dumps({"model": "auto", "messages": opening}))
        second = mutations(rt, "/v1/chat/completions", orjson.dumps(follow))
        assert second["model"] == first["model"] != alone["model"], mutations.__name__
        assert second["set"]["x-llm-router-upstream"] == first["set"]["x-llm-router-upstream"]


def test_apisix_sends_claude_sonnet_4_6_only_what_it_takes(runtime):
    """Through the runner: the prefill goes to a model that takes one, and the thinking turn reaches Claude without the
    sampling and the forced tool it would refuse while thinking."""
    prefill, thinking = BODIES[-3], BODIES[-2]
    assert apisix_mutations(runtime(), prefill[0], orjson.dumps(prefill[1]))["model"] != "claude-sonnet-4-6"
    out = apisix_mutations(runtime(), thinking[0], orjson.dumps(thinking[1]))
    sent = orjson.loads(out["body"])
    assert out["model"] == "claude-sonnet-4-6" and out["path"] == "/v1/messages"
    assert sent["tool_choice"] == {"type": "auto"} and not {"temperature", "top_k"} & set(sent)
    assert sent["thinking"] == thinking[1]["thinking"]


def test_apisix_sends_gemini_3_8_flash_an_effort_it_takes_and_a_small_limit_elsewhere(runtime):
    """Through the runner, on a route whose ladder is the Gemini slot: the lowest effort goes as low; a request that leaves
    no room for its thoughts goes to another model (both exactly as the core decides)."""
    conf = orjson.dumps({"extends": "default", "explain": True,
                         "ladder": {t: "gemini-1.5-pro" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}}).decode()
    question = [{"role": "user", "content": "Compare B-trees and LSM trees for a write-heavy workload."}]
    effort = orjson.dumps({"model": "auto", "reasoning_effort": "minimal", "messages": question})
    out = apisix_mutations(runtime(), "/v1/chat/completions", effort, conf)
    assert out == core_mutations(runtime(), "/v1/chat/completions", effort, conf)
    assert out["model"] == "gemini-3.8-flash" and orjson.loads(out["body"])["reasoning_effort"] == "low"
    small = orjson.dumps({"model": "auto", "max_tokens": 500, "messages": question})
    out = apisix_mutations(runtime(), "/v1/chat/completions", small, conf)
    assert out == core_mutations(runtime(), "/v1/chat/completions", small, conf)
    assert out["model"] != "gemini-3.8-flash" and orjson.loads(out["body"])["max_tokens"] == 500


def test_apisix_sends_gpt_6_1_sol_what_it_takes_once_the_gpt_4o_slot_moves_to_it(runtime):
    """Through the runner, on a route whose ladder is the GPT-4o slot, in a runtime that has taken the 2027-01-14 change:
    max_tokens as max_completion_tokens, no sampling, effort none as low; a small limit goes elsewhere (as the core decides)."""
    import asyncio
    from datetime import datetime, timezone

    conf = orjson.dumps({"extends": "default", "explain": True,
                         "ladder": {t: "gpt-4o" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}}).decode()
    question = [{"role": "user", "content": "Prove that there are infinitely many primes of the form 4k + 3."}]

    def moved() -> Runtime:
        rt = runtime()
        assert "gpt-4o" in asyncio.run(rt.take_changes(datetime(2027, 1, 14, tzinfo=timezone.utc)))
        return rt

    body = orjson.dumps({"model": "auto", "max_tokens": 8000, "temperature": 0.2, "reasoning_effort": "none",
                         "messages": question})
    out = apisix_mutations(moved(), "/v1/chat/completions", body, conf)
    assert out == core_mutations(moved(), "/v1/chat/completions", body, conf)
    sent = orjson.loads(out["body"])
    assert out["model"] == "gpt-6.1-sol" and sent["max_completion_tokens"] == 8000 and sent["reasoning_effort"] == "low"
    assert not {"max_tokens", "temperature"} & set(sent)
    small = orjson.dumps({"model": "auto", "max_tokens": 500, "messages": question})
    out = apisix_mutations(moved(), "/v1/chat/completions", small, conf)
    assert out == core_mutations(moved(), "/v1/chat/completions", small, conf)
    assert out["model"] not in ("gpt-6.1-sol", "gpt-4o") and orjson.loads(out["body"])["max_tokens"] == 500
    before = apisix_mutations(runtime(), "/v1/chat/completions", body, conf)
    assert before["model"] == "gpt-4o" and orjson.loads(before["body"])["max_tokens"] == 8000
