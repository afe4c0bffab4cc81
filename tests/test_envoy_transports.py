"""The alternative processor transports (grpclib, grpcio) behave like the default one through a real Envoy."""
from __future__ import annotations

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fakes, fresh_fakes, short_tmp, start_stack, wait_requests  # noqa: F401
from llm_router.fakes import FakeProviders
from llm_router.gateways.envoy.bootstrap import RouteSpec

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module", params=["grpclib", "grpcio"])
def transport_stack(request, fakes: FakeProviders):
    from test_envoy_orchestrate import orchestrate_config

    with short_tmp() as wd:
        s = start_stack(wd, fakes, orchestrate_config(fakes), name=f"envoy-{request.param}", transport=request.param,
                        routes=(RouteSpec("/cascade/", policy="cascade"), RouteSpec("/")))
        try:
            yield s
        finally:
            s.stop()


def test_routes_refuses_and_observes(transport_stack, fresh_fakes):
    url = transport_stack.url + "/v1/chat/completions"
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello!"}]}
    r = httpx.post(url, content=orjson.dumps(body), timeout=30)
    assert r.status_code == 200, r.text
    [got] = wait_requests(fresh_fakes, "deepseek")
    assert got.headers["authorization"] == "Bearer fake-deepseek-key" and got.json["model"] == "deepseek-flash"
    _, status, usage, _ = transport_stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.output_tokens == r.json()["usage"]["completion_tokens"]
    r = httpx.post(url, content=orjson.dumps({**body, "stream": True}), timeout=30)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    _, status, usage, _ = transport_stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert usage is not None and usage.output_tokens > 0
    r = httpx.post(url, content=b"[1, 2", timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_fallback_and_a_processor_answered_cascade(transport_stack, fresh_fakes):
    """The per-attempt rewrite and a deferred (awaited) reply work over these transports too."""
    url = transport_stack.url
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello!"}]}
    fresh_fakes.set_behaviour("deepseek", status=503)
    r = httpx.post(url + "/v1/chat/completions", content=orjson.dumps(body), timeout=30)
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "together", r.text
    [got] = wait_requests(fresh_fakes, "together")
    assert got.headers["authorization"] == "Bearer fake-together-key" and got.json["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    fresh_fakes.set_behaviour("deepseek", status=None, first_byte_ms=600)  # longer than Envoy's 500 ms message timeout
    r = httpx.post(url + "/cascade/v1/chat/completions", content=orjson.dumps(body), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-steps"].startswith("deepseek-v2")
    assert "x-envoy-attempt-count" not in fresh_fakes.requests("deepseek")[-1].headers  # the processor's own call
