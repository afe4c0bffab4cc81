"""Azure OpenAI as a provider: deployment in the path, api-version in the query, the key in `api-key`.

Through the real Envoy and through the APISIX runner (emulated APISIX, real Unix socket), against a
fake that answers as Azure does (404 without api-version, the deployment's model whatever the body says).
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, restored, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.catalog import provider_path
from llm_router.config import ConfigError, parse_config
from llm_router.credentials import Credentials
from llm_router.fakes import FakeProviders
from llm_router.plan import plan_call
from llm_router.request import parse_request
from llm_router.router import build_catalog
from llm_router.secrets.env import EnvStore

from apisix_emulator import Emulator, RouteConf, RunnerThread, remove_dir, socket_dir

API_VERSION = "2024-10-21"
AZURE = {"base_url": "https://example-resource.openai.azure.com", "auth": "api-key",
         "credentials": ["env://AZURE_OPENAI_API_KEY"],
         "paths": {"chat": f"/openai/deployments/{{model}}/chat/completions?api-version={API_VERSION}"}}
# The catalog id is what the router and metrics call it; `name` is the Azure deployment.
MINI = {"provider": "azure", "name": "mini-prod-eu", "input_price": 0.15, "output_price": 0.6, "context_window": 128000,
        "tier": "LOW", "quality": 0.7, "capabilities": ["tools", "json", "streaming"], "tags": ["eu"]}
EASY = {"messages": [{"role": "user", "content": "hi there, thanks!"}]}
HARD = {"model": "auto", "messages": [{"role": "user", "content":
        "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."}]}


def data() -> dict:
    base = config_data()
    default = {**base["policies"]["default"], "ladder": {**base["policies"]["default"]["ladder"], "LOW": "azure-mini"}}
    return {**base, "providers": {"azure": AZURE}, "models": {"azure-mini": MINI},
            "policies": {**base["policies"], "default": default}}


# ---- config and planning ------------------------------------------------------------------

def test_a_path_may_hold_only_the_model_placeholder_and_only_before_the_query():
    for path, says in (("/openai/deployments/{deployment}/chat/completions", "the only placeholder is {model}"),
                       ("/openai/chat/completions?deployment={model}", "may stand in the path, not in the query"),
                       ("/openai/deployments/{model}/chat/completions?api-version", None),
                       ("/v1/chat/completions?&x=1", "name=value pairs"),
                       ("/v1/chat completions", "may not hold '#' or spaces")):
        bad = {"providers": {"azure": {**AZURE, "paths": {"chat": path}}}}
        if says is None:
            parse_config(bad)
            continue
        with pytest.raises(ConfigError) as err:
            parse_config(bad)
        assert "providers.azure.paths" in str(err.value) and says in str(err.value)


def test_the_call_names_the_deployment_keeps_the_api_version_and_sends_the_key_as_api_key(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-secret")
    cfg = parse_config(data())
    catalog = build_catalog(cfg)
    creds = Credentials.resolve(catalog, [EnvStore()], providers=["azure"])
    request = parse_request(orjson.dumps(EASY))
    call = plan_call(request, catalog.models["azure-mini"], catalog, creds)
    assert call.path == f"/openai/deployments/mini-prod-eu/chat/completions?api-version={API_VERSION}"
    assert ("api-key", "azure-secret") in call.set_headers
    assert "api-key" not in call.remove_headers and {"authorization", "x-api-key"} <= set(call.remove_headers)
    assert orjson.loads(call.body)["model"] == "mini-prod-eu"


def test_provider_paths_fill_the_model_and_merge_queries_with_the_providers_own_winning():
    template = "/openai/deployments/{model}/chat/completions?api-version=1"
    assert provider_path(template, "a b/c") == "/openai/deployments/a%20b%2Fc/chat/completions?api-version=1"
    assert provider_path("/openai/v1/responses?api-version=1", "m", suffix="/resp_1/input_items",
                         query="?limit=2&api-version=9") == "/openai/v1/responses/resp_1/input_items?api-version=1&limit=2"
    assert provider_path("/v1/messages", "m", suffix="/count_tokens", query="beta=true") == "/v1/messages/count_tokens?beta=true"
    assert provider_path("/v1/messages", "m", suffix="/count_tokens") == "/v1/messages/count_tokens"


# ---- through the real Envoy -----------------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes(data())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-azure", fakes, data())



def post(stack, body, **headers) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", "authorization": "Bearer sk-client-own",
                               "api-key": "client-azure-key", **headers})


@pytest.mark.envoy
def test_envoy_sends_an_easy_request_to_the_azure_deployment_with_the_api_version_and_key(stack, fresh_fakes):
    r = post(stack, EASY)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "azure-mini" and r.json()["model"] == "mini-prod-eu"
    [sent] = wait_requests(fresh_fakes, "azure", 1)
    assert sent.path == f"/openai/deployments/mini-prod-eu/chat/completions?api-version={API_VERSION}"
    assert sent.headers["api-key"] == fresh_fakes.keys()["azure"] and "authorization" not in sent.headers
    usage = r.json()["usage"]
    _, status, seen, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and (seen.input_tokens, seen.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    hard = post(stack, HARD)
    assert hard.status_code == 200 and hard.headers["x-llm-router-model"] in ("claude-3.5-sonnet", "gpt-4o")
    assert len(fresh_fakes.requests("azure")) == 1


@pytest.mark.envoy
def test_envoy_streams_from_azure_and_reads_the_usage_chunk(stack, fresh_fakes):
    with httpx.stream("POST", stack.url + "/v1/chat/completions", content=orjson.dumps({**EASY, "stream": True}),
                      headers={"content-type": "application/json"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = b"".join(r.iter_raw()).decode()
    assert text.rstrip().endswith("data: [DONE]") and '"prompt_filter_results"' in text.split("\n\n")[0]
    [sent] = wait_requests(fresh_fakes, "azure", 1)
    assert sent.json["stream_options"] == {"include_usage": True} and "api-version=" in sent.path
    _, status, seen, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and seen.output_tokens > 0


def test_the_fake_answers_404_without_the_api_version_as_azure_does(fakes):
    r = httpx.post(fakes.url("azure") + "/openai/deployments/mini-prod-eu/chat/completions", content=orjson.dumps(EASY),
                   headers={"api-key": fakes.keys()["azure"], "content-type": "application/json"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Resource not found"


# ---- through the APISIX runner ----------------------------------------------------------------

@pytest.fixture
def apisix(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy
    from llm_router.gateways.apisix.runner import Runner
    from llm_router.gateways.apisix.tokens import TokenStore
    from llm_router.runtime import Runtime

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    cfg_data = data()
    cfg_data["providers"] = {**cfg_data["providers"], "azure": {**AZURE, "base_url": fakes.url("azure")}}
    runtime = Runtime(parse_config(cfg_data))
    d = socket_dir()
    thread = RunnerThread(os.path.join(d, "azure.sock"), Runner(runtime, TokenStore(ttl=100))).start()
    em = Emulator(thread.path, timeout=60)
    upstreams = {name: fakes.url(name) for name in fakes.providers}
    route = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true}'),), conf_id="azure")

    def send(body, path="/v1/chat/completions", **kw):
        return proxy(em, route, upstreams=upstreams, path=path, body=orjson.dumps(body),
                     headers=[("content-type", "application/json"), ("api-key", "client-azure-key")], **kw)
    with restored(fakes):
        yield send
    em.close()
    thread.stop()
    remove_dir(d)


def test_apisix_rewrite_carries_the_api_version_as_args_not_in_the_path(apisix, fakes):
    resp = apisix(EASY, path="/v1/chat/completions?api-version=2023-05-15&trace=1")
    assert resp.status == 200, resp.body
    rewrite = resp.pre.reply
    # A '?' in Rewrite.path would reach the provider escaped (%3F): the query travels as args.
    assert rewrite["path"] == "/openai/deployments/mini-prod-eu/chat/completions"
    assert rewrite["args"] == [("api-version", API_VERSION)]
    [sent] = fakes.requests("azure")
    # The provider's api-version replaces the client's; the client's other args stay, as APISIX keeps them.
    assert sent.path == f"/openai/deployments/mini-prod-eu/chat/completions?api-version={API_VERSION}&trace=1"
    assert sent.headers["api-key"] == fakes.keys()["azure"] and orjson.loads(resp.body)["model"] == "mini-prod-eu"


def test_apisix_routes_a_hard_request_past_azure_without_args(apisix, fakes):
    resp = apisix(HARD)
    assert resp.status == 200 and resp.headers["x-llm-router-model"] == "claude-3.5-sonnet"
    assert resp.pre.reply["path"] == "/v1/chat/completions" and resp.pre.reply["args"] == []
    assert not fakes.requests("azure") and fakes.requests("anthropic")[-1].path == "/v1/chat/completions"
