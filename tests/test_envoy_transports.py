"""The alternative processor transports (grpclib, grpcio) behave like the default one through a real Envoy."""
from __future__ import annotations

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fakes, fresh_fakes, short_tmp, start_stack, wait_requests  # noqa: F401
from llm_router.fakes import FakeProviders

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module", params=["grpclib", "grpcio"])
def transport_stack(request, fakes: FakeProviders):
    with short_tmp() as wd:
        s = start_stack(wd, fakes, config_data(), name=f"envoy-{request.param}", transport=request.param)
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
    assert got.headers["authorization"] == "Bearer fake-deepseek-key" and got.json["model"] == "deepseek-chat"
    _, status, usage, _ = transport_stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.output_tokens == r.json()["usage"]["completion_tokens"]
    r = httpx.post(url, content=orjson.dumps({**body, "stream": True}), timeout=30)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    _, status, usage, _ = transport_stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert usage is not None and usage.output_tokens > 0
    r = httpx.post(url, content=b"[1, 2", timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
