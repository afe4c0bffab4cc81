"""OpenAI's Responses API through the APISIX runner: emulated APISIX, real Unix socket, fake providers over HTTP."""
from __future__ import annotations

import os

import orjson
import pytest

from llm_router.config import parse_config
from llm_router.fakes import Behaviour
from llm_router.gateways.apisix.emulator import proxy
from llm_router.gateways.apisix.runner import Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.runtime import Runtime

from apisix_emulator import Emulator, RouteConf, RunnerThread, remove_dir, socket_dir

ROUTE = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true}'),), conf_id="responses")
MINI = {"provider": "openai", "name": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6, "context_window": 128000,
        "tier": "LOW", "quality": 0.7, "capabilities": ["tools", "vision", "json", "streaming"]}
CLIENT = [("content-type", "application/json"), ("authorization", "Bearer client-own-key")]


@pytest.fixture
def gw(fakes, on_fakes):
    base = on_fakes().model_dump()
    cfg = parse_config({"providers": base["providers"], "models": {"gpt-4o-mini": MINI},
                        "policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": {
                            "LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}}}})
    fakes.providers["openai"].set_behaviour(Behaviour(models=None, default_quality=1.0, cached_share=0.25))
    runtime = Runtime(cfg)
    runner = Runner(runtime, TokenStore(ttl=100))
    d = socket_dir()
    thread = RunnerThread(os.path.join(d, "resp.sock"), runner).start()
    em = Emulator(thread.path, timeout=60)
    upstreams = {name: fakes.url(name) for name in cfg.providers}
    def send(body, route: RouteConf = ROUTE, **kw):
        kw = {"path": "/v1/responses", "headers": CLIENT, **kw}
        return proxy(em, route, upstreams=upstreams, body=orjson.dumps(body) if body is not None else b"", **kw)

    yield send, runtime
    em.close()
    thread.stop()
    remove_dir(d)


def test_routed_with_the_key_and_json_usage_accounted_at_post_resp(gw, fakes):
    send, runtime = gw
    resp = send({"model": "auto", "input": "hello, thanks!"}, post_resp=True)
    assert resp.status == 200, resp.body
    assert resp.headers["x-llm-router-model"] == "gpt-4o-mini"
    answer = orjson.loads(resp.body)
    assert answer["object"] == "response" and answer["model"] == "gpt-4o-mini"
    [sent] = fakes.requests("openai")
    assert (sent.path, sent.json["model"], sent.headers["authorization"]) == ("/v1/responses", "gpt-4o-mini", "Bearer fake-openai-key")
    text = runtime.metrics.exposition().decode()
    usage = answer["usage"]
    assert f'llm_router_tokens_total{{direction="input",model="gpt-4o-mini"}} {float(usage["input_tokens"])}' in text
    assert f'llm_router_tokens_total{{direction="output",model="gpt-4o-mini"}} {float(usage["output_tokens"])}' in text
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert cached > 0 and f'llm_router_cache_tokens_total{{kind="read",model="gpt-4o-mini"}} {float(cached)}' in text


def test_a_stream_passes_whole_and_a_bad_body_is_stopped_with_its_field(gw, fakes):
    send, _ = gw
    resp = send({"model": "auto", "input": "hello, thanks!", "stream": True}, post_resp=True)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.body.rstrip().endswith(b"}") and b"event: response.completed" in resp.body
    bad = send({"model": "auto", "input": "x", "text": {"format": {"type": "yaml"}}})
    assert bad.status == 400
    assert orjson.loads(bad.body)["error"]["param"] == "text.format.type"


def test_a_previous_response_id_keeps_the_model_whose_json_answer_it_names(gw, fakes):
    send, _ = gw
    sticky = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true, "affinity": "conversation"}'),),
                       conf_id="sticky")
    hard = "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."
    first = send({"model": "auto", "input": hard}, route=sticky, post_resp=True)
    assert first.headers["x-llm-router-model"] == "gpt-4o"
    rid = orjson.loads(first.body)["id"]
    follow = send({"model": "auto", "input": "thanks!", "previous_response_id": rid}, route=sticky, post_resp=True)
    assert follow.headers["x-llm-router-model"] == "gpt-4o" and "affinity" in follow.headers["x-llm-router-reason"]
    plain = send({"model": "auto", "input": "thanks!", "previous_response_id": rid}, post_resp=True)
    assert plain.headers["x-llm-router-model"] == "gpt-4o-mini"  # the route without affinity decides afresh


def test_stored_responses_are_read_and_deleted_at_their_provider_with_its_key(gw, fakes):
    send, runtime = gw
    created = send({"model": "auto", "input": "hello, thanks!"}, post_resp=True)
    rid = orjson.loads(created.body)["id"]
    spoofed = [*CLIENT, ("x-llm-router-upstream", "deepseek")]
    got = send(None, path=f"/v1/responses/{rid}", method="GET", headers=spoofed, post_resp=True)
    assert got.status == 200 and orjson.loads(got.body) == orjson.loads(created.body)
    assert got.headers["x-llm-router-request-id"] and "x-llm-router-model" not in got.headers
    items = send(None, path=f"/v1/responses/{rid}/input_items?limit=5&order=asc", method="GET", headers=spoofed)
    assert items.status == 200 and orjson.loads(items.body)["data"][0]["content"][0]["text"] == "hello, thanks!"
    assert send(None, path=f"/v1/responses/{rid}", method="DELETE", headers=spoofed).status == 200
    assert send(None, path=f"/v1/responses/{rid}", method="GET", headers=spoofed).status == 404  # the provider's answer
    calls = fakes.requests("openai")[1:]
    assert [(c.method, c.path) for c in calls] == [("GET", f"/v1/responses/{rid}"),
                                                  ("GET", f"/v1/responses/{rid}/input_items?limit=5&order=asc"),
                                                  ("DELETE", f"/v1/responses/{rid}"), ("GET", f"/v1/responses/{rid}")]
    assert {c.headers["authorization"] for c in calls} == {"Bearer fake-openai-key"}
    bad = send(None, path="/v1/responses/not an id", method="GET", headers=spoofed)
    assert bad.status == 400 and orjson.loads(bad.body)["error"]["param"] == "path"
    assert len(fakes.requests("openai")) == 5 and not fakes.requests("deepseek")
