"""Forwarded APIs: embeddings, moderations, audio and images go on to one provider with its key.

The router does not route them (nothing to classify); it sends them to the provider the route's policy
names, on that provider's API root, with its key in place of the client's, the body untouched.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import (config_data, fresh_fakes, restored, running_fakes, running_stack, short_tmp,  # noqa: F401
                            start_stack, wait_for, wait_requests)
from llm_router.accounting import usage_from_json
from llm_router.config import ConfigError, parse_config
from llm_router.fakes import FakeProviders
from llm_router.forward import api_root, forward_path
from llm_router.runtime import Exchange, Refusal, Runtime

from apisix_emulator import RouteConf, runner_session

FORWARD = {"embeddings": "openai", "audio": "openai", "moderations": "google", "files": "openai", "batches": "openai"}
CLIENT = {"authorization": "Bearer sk-client-own", "x-api-key": "client-key"}
EMBED = {"model": "text-embedding-3-small", "input": ["first text", "second text"]}


def data() -> dict:
    base = config_data()
    return {**base, "policies": {**base["policies"], "default": {**base["policies"]["default"], "forward": FORWARD}}}


def test_paths_name_the_api_and_providers_their_root():
    assert forward_path("/v1/embeddings").api == "embeddings"
    found = forward_path("/team-a/v1/audio/transcriptions?timestamp=1")
    assert (found.api, found.tail, found.query) == ("audio", "/audio/transcriptions", "timestamp=1")
    assert forward_path("/v1/images/generations/").tail == "/images/generations"
    assert forward_path("/v1/files/file-abc/content").api == "files"
    assert forward_path("/v1/batches/batch_1/cancel").tail == "/batches/batch_1/cancel"
    assert forward_path("/v1/messages/batches") is None  # Anthropic's message batches are not OpenAI's Batch API
    for other in ("/v1/chat/completions", "/v1/audio", "/v1/embeddingsx", "/v1/uploads", "/v1/batches/b/results"):
        assert forward_path(other) is None, other
    assert api_root({"chat": "/v1beta/openai/chat/completions"}) == "/v1beta/openai"
    assert api_root({"messages": "/v1/messages"}) is None
    assert api_root({"chat": "/openai/deployments/{model}/chat/completions?api-version=1"}) is None


def test_bad_forwards_are_named():
    azure = {"base_url": "https://r.openai.azure.com", "auth": "api-key",
             "paths": {"chat": "/openai/deployments/{model}/chat/completions?api-version=1"}}
    cases = (({"embeddings": "nope"}, {}, "forward.embeddings: unknown provider 'nope'"),
             ({"batches": "openai"}, {}, "forward.batches: the Batch API needs files forwarded to the same provider"),
             ({"batches": "openai", "files": "google"}, {}, "forward.batches: the Batch API needs files forwarded to the same provider "
                                                            "(forward.files: 'openai'), got 'google'"),
             ({"embeddings": "azure"}, {}, "forward.embeddings: provider 'azure' has no OpenAI-style API root"),
             ({"audio": "openai"}, {"exclude_providers": ["openai"]},
              "forward.audio: provider 'openai' is not allowed by this policy's constraints"))
    for forward, constraints, says in cases:
        with pytest.raises(ConfigError) as err:
            parse_config({"providers": {"azure": azure}, "policies": {"default": {
                "ladder": {"LOW": "deepseek-v2"}, "forward": forward, "constraints": constraints}}})
        assert f"policies.default.{says}" in str(err.value), str(err.value)


def test_the_runtime_plans_a_forward_with_the_providers_key_and_root(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-secret")
    rt = Runtime(parse_config({"secrets": {"missing": "skip"}, "policies": {"default": {
        "ladder": {"LOW": "deepseek-v2"}, "forward": FORWARD}}}))
    call = rt.forwarded("/v1/embeddings?x=1", ex=Exchange("r1", "/v1/embeddings", 0.0))
    assert call is not None and not isinstance(call, Refusal)
    assert call.path == "/v1/embeddings?x=1" and call.body == b""
    assert ("authorization", "Bearer sk-openai-secret") in call.set_headers
    assert ("x-llm-router-upstream", "openai") in call.set_headers and "x-api-key" in call.remove_headers
    google = rt.forwarded("/v1/moderations", ex=Exchange("r2", "/v1/moderations", 0.0))
    assert google.path == "/v1beta/openai/moderations" and ("x-goog-api-key", "gemini-secret") in google.set_headers
    assert rt.forwarded("/v1/images/generations", ex=Exchange("r3", "x", 0.0)) is None  # not forwarded by this policy
    assert rt.forwarded("/v1/chat/completions", ex=Exchange("r4", "x", 0.0)) is None
    text = rt.metrics.exposition().decode()
    assert 'llm_router_forwarded_total{api="embeddings",provider="openai"} 1.0' in text
    assert 'llm_router_forwarded_total{api="moderations",provider="google"} 1.0' in text


def test_a_forwarded_embeddings_answer_is_priced_by_the_model_it_names(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    rt = Runtime(parse_config({"secrets": {"missing": "skip"}, "policies": {"default": {
        "ladder": {"LOW": "deepseek-v2"}, "forward": FORWARD}}}))
    for model, tokens in (("text-embedding-3-large", 500_000), ("text-embedding-9", 1000)):
        ex = Exchange(f"r-{model}", "/v1/embeddings", 0.0)
        rt.forwarded("/v1/embeddings", ex=ex)
        answer = orjson.dumps({"object": "list", "model": model, "data": [], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        rt.on_response(ex, 200, usage_from_json(answer), 0.05)
    text = rt.metrics.exposition().decode()
    assert metric(text, "llm_router_cost_usd_total", model="openai/text-embedding-3-large", route="/v1/embeddings") == pytest.approx(0.065)
    assert metric(text, "llm_router_tokens_total", model="openai/text-embedding-3-large", direction="input") == 500_000
    # A model without a price: its tokens count (under one "unpriced" label per provider, so answers cannot
    # grow the metric series), its cost cannot, and the error says so.
    assert metric(text, "llm_router_tokens_total", model="openai/unpriced", direction="input") == 1000
    assert "text-embedding-9" not in text and metric(text, "llm_router_cost_usd_total", model="openai/unpriced") == 0
    assert metric(text, "llm_router_errors_total", kind="forward_price_unknown") == 1
    assert metric(text, "llm_router_responses_total", model="openai/text-embedding-3-large", status="2xx") == 1


def test_a_spent_budget_refuses_forwarded_embeddings(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-secret")
    rt = Runtime(parse_config({"secrets": {"missing": "skip"},
                               "metrics": {"listen": "127.0.0.1:0", "decision_log": str(tmp_path / "decisions.jsonl")},
                               "accounting": {"limits": [{"scope": "route", "usd": 0.1, "window": "day"}]},
                               "policies": {"default": {"ladder": {"LOW": "deepseek-v2"}, "forward": FORWARD}}}))
    answer = orjson.dumps({"object": "list", "model": "text-embedding-3-large", "data": [],
                           "usage": {"prompt_tokens": 1_000_000, "total_tokens": 1_000_000}})

    async def go():
        await rt.start()
        try:
            ex = Exchange("r1", "/v1/embeddings", 0.0)
            first = rt.forwarded("/v1/embeddings", ex=ex, headers=[("authorization", "Bearer client-a")])
            rt.on_response(ex, 200, usage_from_json(answer), 0.05)  # $0.13 of a $0.10 budget
            await rt.shared.sync()
            second = rt.forwarded("/v1/embeddings", ex=Exchange("r2", "/v1/embeddings", 0.0))
            other = rt.forwarded("/v1/moderations", ex=Exchange("r3", "/v1/moderations", 0.0))  # not priced: not limited
            return first, second, other
        finally:
            await rt.stop()

    first, second, other = asyncio.run(go())
    assert not isinstance(first, Refusal) and not isinstance(other, Refusal)
    assert isinstance(second, Refusal) and second.status == 429
    assert orjson.loads(second.body)["error"]["code"] == "spend_limit_exceeded"
    # Both reach the decision log: the priced call, and the refusal.
    lines = [orjson.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    [priced] = [x for x in lines if x["request_id"] == "r1"]
    assert priced["forward"] == "embeddings" and priced["model"] == "openai/text-embedding-3-large"
    assert priced["cost_usd"] == pytest.approx(0.13) and priced["input_tokens"] == 1_000_000 and priced["consumer"].startswith("key:")
    [refused] = [x for x in lines if x["request_id"] == "r2"]
    assert refused["status"] == 429 and refused["error"].startswith("spend limit reached")


def test_forward_prices_must_be_non_negative():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"openai": {"base_url": "https://api.openai.com", "paths": {"chat": "/v1/chat/completions"},
                                               "forward_prices": {"text-embedding-3-small": -1}}}})
    assert "providers.openai.forward_prices.text-embedding-3-small" in str(err.value)


# ---- through the real Envoy ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes(data())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-forward", fakes, data())


@pytest.mark.envoy
def test_envoy_forwards_embeddings_with_the_providers_key(stack, fresh_fakes):
    r = httpx.post(stack.url + "/v1/embeddings", content=orjson.dumps(EMBED), timeout=30,
                   headers={"content-type": "application/json", "x-llm-router-upstream": "deepseek", **CLIENT})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2 and r.json()["usage"]["prompt_tokens"] > 0
    [sent] = wait_requests(fresh_fakes, "openai", 1)
    assert sent.path == "/v1/embeddings" and sent.json == EMBED
    assert sent.headers["authorization"] == f"Bearer {fresh_fakes.keys()['openai']}" and "x-api-key" not in sent.headers
    assert not fresh_fakes.requests("deepseek")  # the client's routing header was not followed
    # The answer's usage reaches accounting, under the request id the client got.
    rid = r.headers["x-llm-router-request-id"]
    wait_for(lambda: any(ex.request_id == rid for ex, *_ in stack.observer.responses), timeout=10, what="the forward observed")
    [(ex, status, usage, _)] = [x for x in stack.observer.responses if x[0].request_id == rid]
    assert status == 200 and ex.extra["forward"] == "embeddings"
    assert usage.model == "text-embedding-3-small" and usage.input_tokens == r.json()["usage"]["prompt_tokens"]


@pytest.mark.envoy
def test_llm_router_serve_behind_envoy_prices_forwarded_embeddings_on_its_metrics(fakes):
    """The real `llm-router serve` process with its telemetry: the answer's usage priced on /metrics."""
    from llm_router.gateways.envoy.stack import free_port

    metrics_port = free_port()
    cfg = {**data(), "metrics": {"listen": f"127.0.0.1:{metrics_port}"}}
    with short_tmp() as wd, restored(fakes):
        s = start_stack(wd, fakes, cfg, processor="cli")
        try:
            r = httpx.post(s.url + "/v1/embeddings", content=orjson.dumps(EMBED), timeout=30,
                           headers={"content-type": "application/json", **CLIENT})
            assert r.status_code == 200, r.text
            assert r.headers["x-llm-router-request-id"]
            tokens = r.json()["usage"]["prompt_tokens"]
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_for(lambda: metric(httpx.get(url, timeout=5).text, "llm_router_tokens_total",
                                    model="openai/text-embedding-3-small") == tokens, timeout=15, what="the forward priced")
            text = httpx.get(url, timeout=5).text
            assert metric(text, "llm_router_cost_usd_total", model="openai/text-embedding-3-small",
                          route="/v1/embeddings") == pytest.approx(tokens * 0.02 / 1e6)
            assert metric(text, "llm_router_forwarded_total", provider="openai", api="embeddings") == 1
            for key in fakes.keys().values():
                assert key not in text
        finally:
            s.stop()


@pytest.mark.envoy
def test_envoy_forwards_an_audio_upload_whole(stack, fresh_fakes):
    audio = os.urandom(300_000)
    files = {"file": ("speech.mp3", audio, "audio/mpeg")}
    r = httpx.post(stack.url + "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}, timeout=30, headers=CLIENT)
    assert r.status_code == 200, r.text
    [sent] = wait_requests(fresh_fakes, "openai", 1)
    assert sent.path == "/v1/audio/transcriptions" and audio in sent.body
    assert r.json()["text"] == f"(a fake transcript of {len(sent.body)} bytes)"
    assert sent.headers["content-type"].startswith("multipart/form-data")
    # Above Envoy's buffer (the largest policy max_body_bytes, 64 KiB here, plus 1 MiB): a 413, and nothing sent on.
    big = httpx.post(stack.url + "/v1/audio/transcriptions", files={"file": ("long.mp3", os.urandom(1_200_000), "audio/mpeg")},
                     timeout=30, headers=CLIENT)
    assert big.status_code == 413 and len(fresh_fakes.requests("openai")) == 1


@pytest.mark.envoy
def test_envoy_passes_an_api_the_policy_does_not_forward_untouched(stack, fresh_fakes):
    r = httpx.post(stack.url + "/v1/images/generations", content=orjson.dumps({"prompt": "a cat"}), timeout=30,
                   headers={"content-type": "application/json", **CLIENT})
    # Not forwarded: it reaches the default upstream with the client's own credential, which the fake refuses.
    assert r.status_code == 401
    [sent] = wait_requests(fresh_fakes, "openai", 1)
    assert sent.headers["authorization"] == "Bearer sk-client-own"


@pytest.mark.envoy
def test_envoy_forwards_the_batch_api(stack, fresh_fakes):
    lines = b"\n".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{i}"}]}}) for i in range(3))
    up = httpx.post(stack.url + "/v1/files", files={"file": ("batch.jsonl", lines, "application/jsonl")}, data={"purpose": "batch"},
                    timeout=30, headers=CLIENT)
    assert up.status_code == 200, up.text
    file_id = up.json()["id"]
    assert up.json()["bytes"] == len(lines) and up.json()["purpose"] == "batch"
    made = httpx.post(stack.url + "/v1/batches", timeout=30, headers={"content-type": "application/json", **CLIENT},
                      content=orjson.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
    assert made.status_code == 200, made.text
    batch_id = made.json()["id"]
    got = httpx.get(stack.url + f"/v1/batches/{batch_id}", timeout=30, headers=CLIENT)
    assert got.status_code == 200 and got.json()["input_file_id"] == file_id
    assert httpx.post(stack.url + f"/v1/batches/{batch_id}/cancel", timeout=30, headers=CLIENT).json()["status"] == "cancelling"
    content = httpx.get(stack.url + f"/v1/files/{file_id}/content", timeout=30, headers=CLIENT)
    assert content.status_code == 200 and content.content == lines
    sent = wait_requests(fresh_fakes, "openai", 5)
    assert [(r.method, r.path) for r in sent] == [("POST", "/v1/files"), ("POST", "/v1/batches"), ("GET", f"/v1/batches/{batch_id}"),
                                                  ("POST", f"/v1/batches/{batch_id}/cancel"), ("GET", f"/v1/files/{file_id}/content")]
    assert all(r.headers["authorization"] == f"Bearer {fresh_fakes.keys()['openai']}" and "x-api-key" not in r.headers for r in sent)
    assert all(r.status == 200 for r in sent)


# ---- through the APISIX runner -------------------------------------------------------------------

def test_apisix_runner_forwards_without_fetching_the_body(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    runtime = Runtime(parse_config(data()))
    with runner_session(runtime, "forward") as em, restored(fakes):
        resp = proxy(em, RouteConf(conf=(("llm-router", "{}"),), conf_id="forward"), path="/v1/embeddings", post_resp=True,
                     upstreams={name: fakes.url(name) for name in fakes.providers}, body=orjson.dumps(EMBED),
                     headers=[("content-type", "application/json"), *CLIENT.items()])
        assert resp.status == 200, resp.body
        assert resp.pre.extra_info == []  # the body never crossed the socket
        [sent] = fakes.requests("openai")
        assert sent.path == "/v1/embeddings" and sent.json == EMBED
        assert sent.headers["authorization"] == f"Bearer {fakes.keys()['openai']}" and "x-api-key" not in sent.headers
        # post-resp: the answer's usage priced at OpenAI's embeddings price
        tokens = orjson.loads(resp.body)["usage"]["prompt_tokens"]
        text = runtime.metrics.exposition().decode()
        assert metric(text, "llm_router_cost_usd_total", model="openai/text-embedding-3-small") == pytest.approx(tokens * 0.02 / 1e6)


def test_apisix_runner_forwards_the_batch_api(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    openai = fakes.providers["openai"]
    openai.files["file-b1"] = ({"id": "file-b1", "object": "file"}, b"{}")
    openai.batches["batch_b1"] = {"id": "batch_b1", "object": "batch", "input_file_id": "file-b1", "status": "in_progress"}
    try:
        with runner_session(Runtime(parse_config(data())), "batches") as em, restored(fakes):
            route = RouteConf(conf=(("llm-router", "{}"),), conf_id="batches")
            upstreams = {name: fakes.url(name) for name in fakes.providers}
            got = proxy(em, route, path="/v1/batches/batch_b1", method="GET", upstreams=upstreams, headers=list(CLIENT.items()))
            assert got.status == 200, got.body
            assert orjson.loads(got.body)["status"] == "in_progress"
            cancel = proxy(em, route, path="/v1/batches/batch_b1/cancel", upstreams=upstreams, body=b"", headers=list(CLIENT.items()))
            assert cancel.status == 200 and orjson.loads(cancel.body)["status"] == "cancelling"
            sent = fakes.requests("openai")
            assert [r.path for r in sent] == ["/v1/batches/batch_b1", "/v1/batches/batch_b1/cancel"]
            assert all(r.headers["authorization"] == f"Bearer {fakes.keys()['openai']}" for r in sent)
    finally:
        openai.files.pop("file-b1", None)
        openai.batches.pop("batch_b1", None)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
    return 0.0
