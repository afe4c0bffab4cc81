"""Anthropic's /v1/messages/count_tokens: counted by a Messages provider with its key, else estimated and marked."""
from __future__ import annotations

import os

import orjson
import pytest

from llm_router.config import default_data, parse_config
from llm_router.credentials import Credentials
from llm_router.gateways.apisix.emulator import proxy
from llm_router.gateways.apisix.runner import Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.secrets.env import EnvStore
from llm_router.token_count import is_count_path

from apisix_emulator import Emulator, RouteConf, RunnerThread, remove_dir, socket_dir

KEYS = {"OPENAI_API_KEY": "sk-o", "DEEPSEEK_API_KEY": "sk-d", "ANTHROPIC_API_KEY": "sk-ant", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "m"}
LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
POLICIES = {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER},
            "no-anthropic": {"classifier": "rules", "strategy": "ladder", "ladder": {t: "gpt-4o" for t in LADDER},
                             "constraints": {"providers": ["openai"]}}}
COUNT = {"messages": [{"role": "user", "content": "How many tokens is this sentence, give or take?"}],
         "system": "You count.", "tools": [{"name": "t", "input_schema": {"type": "object"}}]}


def runtime(keys: dict[str, str] = KEYS) -> Runtime:
    cfg = parse_config({"policies": POLICIES, "secrets": {"missing": "skip"}})
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)], missing="skip"))


def count(rt: Runtime, model: str, path: str = "/v1/messages/count_tokens?beta=true", conf=None, **body):
    ex = Exchange(rt.new_request_id(), "r", 0.0)
    return rt.decide(orjson.dumps({"model": model, **COUNT, **body}), path=path, ex=ex, route_conf=conf), ex


def test_the_path_and_that_adapters_fetch_its_body():
    assert is_count_path("/v1/messages/count_tokens") and is_count_path("/anthropic/v1/messages/count_tokens/?beta=true")
    assert not is_count_path("/v1/messages") and not is_count_path("/v1/count_tokens")
    assert runtime().handles("/v1/messages/count_tokens?beta=true")


def test_a_count_goes_to_anthropic_with_its_key_and_a_model_name_it_knows():
    rt = runtime()
    call, ex = count(rt, "auto")
    assert not isinstance(call, Refusal) and ex.decision is None  # not routed, not billed
    assert (call.provider.name, call.path) == ("anthropic", "/v1/messages/count_tokens?beta=true")
    assert ("x-api-key", "sk-ant") in call.set_headers and "authorization" in call.remove_headers
    assert orjson.loads(call.body)["model"] == "claude-sonnet-4-6" and orjson.loads(call.body)["tools"]
    assert "max_tokens" not in orjson.loads(call.body)  # only the client's fields: count_tokens takes no max_tokens
    by_id, _ = count(rt, "claude-3.5-sonnet")
    assert orjson.loads(by_id.body)["model"] == "claude-sonnet-4-6"
    newer, _ = count(rt, "claude-sonnet-4-5")  # not in the catalog: Anthropic may know it, so it is kept
    assert orjson.loads(newer.body)["model"] == "claude-sonnet-4-5" and newer.provider.name == "anthropic"
    unchanged = orjson.dumps({"model": "claude-sonnet-4-6", **COUNT})
    same = rt.decide(unchanged, path="/v1/messages/count_tokens", ex=Exchange("x", "r", 0.0))
    assert same.body == unchanged  # nothing to rewrite: the client's bytes
    assert 'llm_router_token_counts_total{counted_by="anthropic"} 4.0' in rt.metrics.exposition().decode()


def test_without_a_messages_provider_or_its_key_the_router_estimates_and_says_so():
    for rt, conf in ((runtime(), orjson.dumps({"policy": "no-anthropic"})),
                     (runtime({k: v for k, v in KEYS.items() if k != "ANTHROPIC_API_KEY"}), None)):
        reply, _ = count(rt, "auto", conf=conf)
        assert isinstance(reply, Refusal) and reply.status == 200
        assert ("x-llm-router-token-count", "estimated") in reply.headers
        assert 10 < orjson.loads(reply.body)["input_tokens"] < 200
        assert 'llm_router_token_counts_total{counted_by="estimate"} 1.0' in rt.metrics.exposition().decode()


@pytest.mark.parametrize("body, field", [({"messages": "x"}, "messages"), ({"messages": []}, "messages"),
                                         ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role")])
def test_a_bad_count_body_is_a_400_naming_the_field(body, field):
    rt = runtime()
    reply = rt.decide(orjson.dumps({"model": "auto", **body}), path="/v1/messages/count_tokens", ex=Exchange("1", "r", 0.0))
    assert isinstance(reply, Refusal) and reply.status == 400 and orjson.loads(reply.body)["error"]["param"] == field


def test_through_the_apisix_runner_to_the_anthropic_fake(fakes, on_fakes):
    runtime = Runtime(on_fakes({"default": POLICIES["default"]}))
    runner = Runner(runtime, TokenStore(ttl=100))
    d = socket_dir()
    thread = RunnerThread(os.path.join(d, "count.sock"), runner).start()
    em = Emulator(thread.path, timeout=60)
    try:
        upstreams = {name: fakes.url(name) for name in runtime.config.providers}
        route = RouteConf(conf=(("llm-router", '{"policy": "default"}'),), conf_id="count")
        resp = proxy(em, route, upstreams=upstreams, path="/v1/messages/count_tokens?beta=true", post_resp=True,
                     headers=[("content-type", "application/json"), ("x-api-key", "client-own"), ("anthropic-version", "2023-06-01")],
                     body=orjson.dumps({"model": "auto", **COUNT}))
        assert resp.status == 200 and orjson.loads(resp.body)["input_tokens"] > 5
        [sent] = fakes.requests("anthropic")
        assert sent.path == "/v1/messages/count_tokens?beta=true" and sent.json["model"] == "claude-sonnet-4-6"
        assert sent.headers["x-api-key"] == fakes.env()["ANTHROPIC_API_KEY"]
        assert runner.stats.rewrites == 1 and not runtime.metrics.requests.values  # not counted as a routed request
    finally:
        em.close()
        thread.stop()
        remove_dir(d)


def test_counts_go_only_to_providers_that_count_tokens():
    """DeepSeek serves Anthropic's Messages API but not its token count (`counts_tokens: false` in the defaults):
    without Anthropic's key the router estimates; a provider that says it counts gets the count on its own path."""
    no_anthropic = {k: v for k, v in KEYS.items() if k != "ANTHROPIC_API_KEY"}
    rt = runtime(no_anthropic)
    assert rt.catalog.serves(rt.catalog.models["deepseek-v2"], "messages")
    reply, _ = count(rt, "auto")
    assert isinstance(reply, Refusal) and ("x-llm-router-token-count", "estimated") in reply.headers
    deepseek = {**default_data()["providers"]["deepseek"], "counts_tokens": True}
    cfg = parse_config({"policies": POLICIES, "secrets": {"missing": "skip"}, "providers": {"deepseek": deepseek}})
    counting = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(no_anthropic)], missing="skip"))
    call, ex = count(counting, "auto")
    assert not isinstance(call, Refusal) and ex.decision is None
    assert (call.provider.name, call.path) == ("deepseek", "/anthropic/v1/messages/count_tokens?beta=true")
    assert ("authorization", "Bearer sk-d") in call.set_headers and orjson.loads(call.body)["model"] == "deepseek-flash"
