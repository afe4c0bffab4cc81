"""Fake providers: realistic JSON and SSE, auth per provider, errors and rate limits, records, control API, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from llm_router.config import load_config
from llm_router.fakes import Behaviour, FakeProviders
from llm_router.gateways.envoy.stack import FakesProcess, stop_all

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say something nice about Tuesdays."}]}


@pytest.fixture(scope="module")
def fakes():
    f = FakeProviders.from_config(load_config(None)).start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def clean(fakes):
    saved = {n: p.behaviour for n, p in fakes.providers.items()}
    fakes.clear()
    yield fakes
    for n, p in fakes.providers.items():
        p.set_behaviour(saved[n])


def post(fakes, provider, path, body, headers=None, **kw):
    return httpx.post(fakes.url(provider) + path, content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", **(headers or {})}, **kw)


OPENAI = {"authorization": "Bearer fake-openai-key"}
ANTHROPIC = {"x-api-key": "fake-anthropic-key", "anthropic-version": "2023-06-01"}


def test_openai_json_answer_with_usage(clean):
    r = post(clean, "openai", "/v1/chat/completions", CHAT, OPENAI)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion" and data["model"] == "gpt-4o"
    assert data["choices"][0]["message"]["role"] == "assistant" and data["choices"][0]["finish_reason"] == "stop"
    u = data["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    assert int(r.headers["x-ratelimit-remaining-requests"]) < int(r.headers["x-ratelimit-limit-requests"])
    # Deterministic: the same prompt and model give the same answer.
    again = post(clean, "openai", "/v1/chat/completions", CHAT, OPENAI).json()
    assert again["choices"][0]["message"]["content"] == data["choices"][0]["message"]["content"]


def test_openai_stream_has_usage_last_only_when_asked(clean):
    r = post(clean, "openai", "/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}, OPENAI)
    assert r.headers["content-type"] == "text/event-stream"
    lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(x) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"])
    assert text.startswith("[gpt-4o")
    r = post(clean, "openai", "/v1/chat/completions", {**CHAT, "stream": True}, OPENAI)
    assert '"usage"' not in r.text


def test_legacy_completions(clean):
    r = post(clean, "together", "/v1/completions", {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "prompt": "Once upon"},
             {"authorization": "Bearer fake-together-key"})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"


def test_anthropic_json_and_event_sequence(clean):
    body = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    r = post(clean, "anthropic", "/v1/messages", body, ANTHROPIC)
    data = r.json()
    assert data["type"] == "message" and data["content"][0]["type"] == "text" and data["stop_reason"] == "end_turn"
    assert data["usage"]["output_tokens"] <= 50
    r = post(clean, "anthropic", "/v1/messages", {**body, "stream": True}, ANTHROPIC)
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in names and "content_block_delta" in names and "content_block_stop" in names
    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[0]["message"]["usage"]["input_tokens"] > 0
    assert next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("provider,path,good,bad", [
    ("openai", "/v1/chat/completions", {"authorization": "Bearer fake-openai-key"}, {"authorization": "Bearer sk-real"}),
    ("anthropic", "/v1/messages", {"x-api-key": "fake-anthropic-key"}, {"authorization": "Bearer fake-anthropic-key"}),
    ("google", "/v1beta/openai/chat/completions", {"x-goog-api-key": "fake-google-key"}, {"x-goog-api-key": "nope"}),
])
def test_each_fake_checks_its_own_credential(clean, provider, path, good, bad):
    model = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6", "google": "gemini-3.8-flash"}[provider]
    body = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    assert post(clean, provider, path, body, good).status_code == 200
    r = post(clean, provider, path, body, bad)
    assert r.status_code == 401
    if provider == "anthropic":
        assert r.json() == {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    else:
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert [x.status for x in clean.requests(provider)] == [200, 401]


def test_rate_limits_and_server_errors(clean):
    clean.set_behaviour("openai", status=429, retry_after_s=7)
    r = post(clean, "openai", "/v1/chat/completions", CHAT, OPENAI)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    clean.set_behaviour("anthropic", status=529)
    r = post(clean, "anthropic", "/v1/messages", {"model": "claude-sonnet-4-6", "max_tokens": 5,
                                                  "messages": [{"role": "user", "content": "x"}]}, ANTHROPIC)
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"


def test_error_rate_is_roughly_respected(clean):
    clean.set_behaviour("openai", error_rate=0.3)
    with httpx.Client(timeout=30) as c:
        codes = [c.post(clean.url("openai") + "/v1/chat/completions", content=orjson.dumps(CHAT), headers=OPENAI).status_code
                 for _ in range(200)]
    assert 30 <= codes.count(500) <= 90 and codes.count(200) == 200 - codes.count(500)


def test_latency_first_byte_and_per_chunk(clean):
    clean.set_behaviour("openai", first_byte_ms=150, chunk_ms=60, chunks=4)
    t0 = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", clean.url("openai") + "/v1/chat/completions", headers=OPENAI, timeout=30,
                      content=orjson.dumps({**CHAT, "stream": True})) as r:
        for chunk in r.iter_raw():
            arrivals.append(time.perf_counter() - t0)
    assert arrivals[0] >= 0.14
    assert arrivals[-1] - arrivals[0] >= 0.2  # four 60 ms pauses between events


def test_per_model_quality_and_unknown_models(clean):
    clean.set_behaviour("openai", quality={"gpt-4o": 0.0})
    r = post(clean, "openai", "/v1/chat/completions", CHAT, OPENAI)
    assert r.headers["x-fake-quality"] == "weak" and "(weak)" in r.json()["choices"][0]["message"]["content"]
    clean.set_behaviour("openai", quality={"gpt-4o": 1.0})
    assert post(clean, "openai", "/v1/chat/completions", CHAT, OPENAI).headers["x-fake-quality"] == "good"
    r = post(clean, "openai", "/v1/chat/completions", {**CHAT, "model": "gpt-9"}, OPENAI)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_bad_requests_get_provider_errors(clean):
    r = httpx.post(clean.url("openai") + "/v1/chat/completions", content=b"{bad", headers=OPENAI, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(clean.url("openai") + "/v1/chat/completions", headers=OPENAI, timeout=30)
    assert r.status_code == 405
    r = httpx.post(clean.url("openai") + "/v1/nothing", content=b"{}", headers=OPENAI, timeout=30)
    assert r.status_code == 404


def test_records_and_chunked_request_bodies(clean):
    def gen():
        yield orjson.dumps(CHAT)[:10]
        yield orjson.dumps(CHAT)[10:]
    r = httpx.post(clean.url("openai") + "/v1/chat/completions?x=1", content=gen(), headers={**OPENAI, "x-trace": "t1"}, timeout=30)
    assert r.status_code == 200
    [rec] = clean.requests("openai")
    assert rec.path == "/v1/chat/completions?x=1" and rec.json == CHAT
    assert rec.headers["x-trace"] == "t1" and rec.headers["transfer-encoding"] == "chunked"


def test_control_api_over_http(clean):
    base = clean.url("deepseek")
    r = httpx.post(base + "/_fake/behaviour", json={"status": 503}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == 503
    assert post(clean, "deepseek", "/v1/chat/completions", {**CHAT, "model": "deepseek-flash", "thinking": {"type": "disabled"}},
                {"authorization": "Bearer fake-deepseek-key"}).status_code == 503
    recs = httpx.get(base + "/_fake/requests", timeout=30).json()
    assert recs[-1]["status"] == 503 and json.loads(recs[-1]["body"])["model"] == "deepseek-flash"
    assert httpx.post(base + "/_fake/behaviour", json={"nonsense": 1}, timeout=30).status_code == 400
    httpx.post(base + "/_fake/reset", timeout=30)
    assert httpx.get(base + "/_fake/requests", timeout=30).json() == []
    assert clean.providers["deepseek"].behaviour.status is None


def test_behaviour_rejects_unknown_fields():
    with pytest.raises(TypeError, match="nonsense"):
        Behaviour().merged(nonsense=1)


def test_fakes_cli_writes_ports_and_stops_on_sigterm(tmp_path):
    proc = FakesProcess(tmp_path, extra=["--provider", "openai", "--provider", "anthropic", "--first-byte-ms", "1"]).start()
    try:
        proc.wait_ready(60)
        assert set(proc.ports) == {"openai", "anthropic"}
        assert proc.env == {"OPENAI_API_KEY": "fake-openai-key", "ANTHROPIC_API_KEY": "fake-anthropic-key"}
        r = httpx.post(f"http://127.0.0.1:{proc.ports['openai']}/v1/chat/completions", content=orjson.dumps(CHAT),
                       headers=OPENAI, timeout=30)
        assert r.status_code == 200
    finally:
        stop_all([proc])
    assert proc.popen.returncode == 0
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "fakes", "--error-rate", "2"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--error-rate" in out.stderr


# ---- failure patterns ---------------------------------------------------------------------

DEEPSEEK = {"authorization": "Bearer fake-deepseek-key"}
DS_CHAT = {**CHAT, "model": "deepseek-flash", "thinking": {"type": "disabled"}}


def test_the_first_n_requests_fail_then_it_recovers(clean):
    clean.set_behaviour("deepseek", fail_first=2, fail_status=502)
    codes = [post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK).status_code for _ in range(4)]
    assert codes == [502, 502, 200, 200]
    clean.set_behaviour("deepseek", fail_first=1)  # setting it again starts a new count
    assert post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK).status_code == 502
    assert post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK).status_code == 200


def test_a_stream_broken_after_k_chunks_is_cut_without_its_end(clean):
    clean.set_behaviour("deepseek", break_after_chunks=2, chunks=6)
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", clean.url("deepseek") + "/v1/chat/completions", headers=DEEPSEEK, timeout=30,
                          content=orjson.dumps({**DS_CHAT, "stream": True})) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                got.append(chunk)
    data = [line for line in b"".join(got).decode().splitlines() if line.startswith("data: ")]
    assert len(data) == 3 and "[DONE]" not in data[-1]  # the role event and two content events
    # JSON answers are cut halfway; the fake keeps serving new connections.
    with pytest.raises(httpx.RemoteProtocolError):
        post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK)
    clean.set_behaviour("deepseek", break_after_chunks=None)
    assert post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK).status_code == 200


def test_disconnect_closes_without_an_answer(clean):
    clean.set_behaviour("deepseek", disconnect=True)
    with pytest.raises(httpx.RemoteProtocolError):
        post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK)


def test_patterns_can_be_changed_at_run_time_over_http(clean):
    base = clean.url("deepseek")
    assert httpx.post(base + "/_fake/behaviour", json={"fail_first": 1, "fail_status": 500}, timeout=30).status_code == 200
    codes = [post(clean, "deepseek", "/v1/chat/completions", DS_CHAT, DEEPSEEK).status_code for _ in range(2)]
    assert codes == [500, 200]


def test_cli_patterns_are_set_at_start_and_bad_ones_named(tmp_path):
    from llm_router.fakes.patterns import behaviour_changes

    changes = behaviour_changes(["deepseek", "together"], fail="deepseek", sets=["together.fail_first=2", "*.chunk_ms=5"])
    assert changes == {"deepseek": {"status": 503, "chunk_ms": 5}, "together": {"fail_first": 2, "chunk_ms": 5}}
    for bad, why in ((["nobody.status=500"], "unknown provider 'nobody'"), (["deepseek.colour=red"], "unknown field 'colour'"),
                     (["deepseek.fail_first=-1"], "deepseek.fail_first"), (["deepseek"], "PROVIDER.FIELD=VALUE")):
        with pytest.raises(ValueError, match=why):
            behaviour_changes(["deepseek"], sets=bad)
    proc = FakesProcess(tmp_path, extra=["--provider", "deepseek", "--provider", "together", "--fail", "deepseek",
                                         "--set", "together.fail_first=1"]).start()
    try:
        proc.wait_ready(60)
        ds = f"http://127.0.0.1:{proc.ports['deepseek']}/v1/chat/completions"
        tg = f"http://127.0.0.1:{proc.ports['together']}/v1/chat/completions"
        assert httpx.post(ds, content=orjson.dumps(DS_CHAT), headers=DEEPSEEK, timeout=30).status_code == 503
        tg_body = orjson.dumps({**CHAT, "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"})
        tg_auth = {"authorization": "Bearer fake-together-key"}
        assert [httpx.post(tg, content=tg_body, headers=tg_auth, timeout=30).status_code for _ in range(2)] == [503, 200]
    finally:
        stop_all([proc])
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "fakes", "--fail", "nobody"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "unknown provider 'nobody'" in out.stderr
