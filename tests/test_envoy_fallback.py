"""Fallback chains through a real Envoy: providers failing in patterns, one answer for the client.

The greeting's chain under the test policy is deepseek-v2 (deepseek) -> llama-3-70b (together)
-> mistral-large (mistral); the hard prompt's is claude-3.5-sonnet (anthropic) -> gpt-4o (openai)
-> gemini-1.5-pro (google). Fakes are told to fail through their behaviour (the same fields their
control API and `llm-router fakes --set` take).
"""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fakes, fresh_fakes, short_tmp, start_stack, wait_requests  # noqa: F401
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.gateways.envoy.stack import free_port

pytestmark = pytest.mark.envoy

GREETING = {"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]}
HARD = {"model": "auto", "messages": [{"role": "user", "content":
        "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."}]}
CHAIN = [("deepseek", "deepseek-v2", "deepseek-flash"), ("together", "llama-3-70b", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
         ("mistral", "mistral-large", "mistral-large-latest")]
KEYS = {p: f"fake-{p}-key" for p in ("deepseek", "together", "mistral", "openai", "anthropic", "google")}
FIRST_BYTE_S = 1.0


def fallback_config() -> dict:
    data = config_data(first_byte_timeout_s=FIRST_BYTE_S, answer_timeout_s=2.0)
    data["policies"]["two"] = {**data["policies"]["default"], "fallbacks": 1}
    return data


@pytest.fixture(scope="module")
def fb(fakes, tmp_path_factory):  # noqa: F811
    wd = Path(tmp_path_factory.mktemp("fallback"))
    s = start_stack(wd, fakes, fallback_config(), routes=(RouteSpec("/two/", policy="two"), RouteSpec("/")))
    try:
        yield s
    finally:
        s.stop()


def post(stack, body, path: str = "/v1/chat/completions", headers: dict | None = None, timeout: float = 30) -> httpx.Response:
    return httpx.post(stack.url + path, content=orjson.dumps(body), timeout=timeout,
                      headers={"content-type": "application/json", "authorization": "Bearer client-key", **(headers or {})})


def check_attempt(record, provider: str, model_name: str) -> None:
    """The request a fake got is that provider's call: its key only, its model, its host, no routing leftovers."""
    assert record.provider == provider
    assert record.json["model"] == model_name
    assert record.json["messages"] == GREETING["messages"] or record.json["messages"] == HARD["messages"]
    auth = record.headers.get("authorization") or record.headers.get("x-api-key") or record.headers.get("x-goog-api-key")
    assert auth in (f"Bearer {KEYS[provider]}", KEYS[provider]), (provider, auth)
    others = [k for p, k in KEYS.items() if p != provider]
    assert not any(k in str(record.headers) for k in others), record.headers
    assert "client-key" not in str(record.headers)
    assert "x-llm-router-upstream" not in record.headers
    assert int(record.headers["content-length"]) == len(record.body)


def test_an_anthropic_format_request_falls_back_from_deepseek_to_claude_on_each_ones_path(fb, fresh_fakes):
    """DeepSeek's Anthropic-compatible API fails: Claude answers the same Messages request on its own path, key and version."""
    fresh_fakes.set_behaviour("deepseek", status=503)
    body = {"model": "auto", "max_tokens": 200, "messages": GREETING["messages"]}
    r = post(fb, body, path="/v1/messages", headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    assert (r.headers["x-fake-provider"], r.headers["x-llm-router-model"]) == ("anthropic", "claude-3.5-sonnet")
    assert r.json()["type"] == "message"
    [first] = fresh_fakes.requests("deepseek")
    [second] = fresh_fakes.requests("anthropic")
    assert (first.path, second.path) == ("/anthropic/v1/messages", "/v1/messages")
    check_attempt(first, "deepseek", "deepseek-flash")
    check_attempt(second, "anthropic", "claude-sonnet-4-6")
    assert second.headers["anthropic-version"] == "2023-06-01" and second.headers["host"] == "api.anthropic.com"


def test_first_fails_the_next_model_answers_with_its_own_model_key_and_host(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=503)
    r = post(fb, GREETING)
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == "together"
    assert r.headers["x-llm-router-model"] == "llama-3-70b"  # the model that answered
    assert r.headers["x-envoy-attempt-count"] == "2"
    assert r.json()["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    [first] = fresh_fakes.requests("deepseek")
    [second] = fresh_fakes.requests("together")
    check_attempt(first, "deepseek", "deepseek-flash")
    check_attempt(second, "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")
    assert first.headers["host"] == "api.deepseek.com" and second.headers["host"] == "api.together.xyz"
    assert not fresh_fakes.requests("mistral")
    rid = r.headers["x-llm-router-request-id"]
    a1, a2 = fb.observer.attempts_for(rid, 2)
    assert (a1[0].attempt, a1[0].call.model.id, a1[1], a1[2]) == (1, "deepseek-v2", 503, None)
    assert (a2[0].attempt, a2[0].call.model.id, a2[1]) == (2, "llama-3-70b", 200)
    usage = r.json()["usage"]  # usage (cost) is accounted to the attempt that answered
    assert (a2[2].input_tokens, a2[2].output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert fb.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "server_error")]


def test_two_fail_the_third_answers(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=500)
    fresh_fakes.set_behaviour("together", status=503)
    r = post(fb, GREETING)
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == "mistral" and r.headers["x-envoy-attempt-count"] == "3"
    assert r.headers["x-llm-router-model"] == "mistral-large"
    for provider, _, name in CHAIN:
        [got] = fresh_fakes.requests(provider)
        check_attempt(got, provider, name)
    rid = r.headers["x-llm-router-request-id"]
    statuses = [(a[0].call.model.id, a[1]) for a in fb.observer.attempts_for(rid, 3)]
    assert statuses == [("deepseek-v2", 500), ("llama-3-70b", 503), ("mistral-large", 200)]
    assert fb.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "server_error"),
                                             ("llama-3-70b", "mistral-large", "server_error")]


@pytest.mark.parametrize("status, expected", [(503, 503), (500, 502), (429, 503)])
def test_all_fail_gives_one_openai_format_error(fb, fresh_fakes, status, expected):
    fresh_fakes.set_behaviour(status=status, retry_after_s=9)
    r = post(fb, GREETING)
    assert r.status_code == expected, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]  # ours, in OpenAI's format: not Envoy's text, not the last provider's own error
    assert err["code"] == "all_models_failed" and err["type"] == ("server_error" if expected >= 500 else err["type"])
    assert "deepseek-v2, llama-3-70b, mistral-large" in err["message"] and str(status) in err["message"]
    if status == 429:
        assert r.headers["retry-after"] == "9"
    assert [len(fresh_fakes.requests(p)) for p, _, _ in CHAIN] == [1, 1, 1]
    rid = r.headers["x-llm-router-request-id"]
    assert [a[1] for a in fb.observer.attempts_for(rid, 3)] == [status] * 3  # health saw every failure


def test_a_shorter_chain_stops_after_its_last_model(fb, fresh_fakes):
    fresh_fakes.set_behaviour(status=503)
    r = post(fb, GREETING, path="/two/v1/chat/completions")
    assert r.status_code == 503 and r.json()["error"]["code"] == "all_models_failed"
    assert "deepseek-v2, llama-3-70b;" in r.json()["error"]["message"]
    assert [len(fresh_fakes.requests(p)) for p, _, _ in CHAIN] == [1, 1, 0]


def test_first_n_requests_fail_then_the_provider_recovers(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", fail_first=2)
    answered = [post(fb, GREETING).headers["x-fake-provider"] for _ in range(3)]
    assert answered == ["together", "together", "deepseek"]


def test_rate_limited_first_moves_on_and_health_sees_retry_after(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=429, retry_after_s=7)
    t0 = time.perf_counter()
    r = post(fb, GREETING)
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "together"
    assert time.perf_counter() - t0 < 3  # the next provider is tried at once, not after retry-after
    rid = r.headers["x-llm-router-request-id"]
    a1, _ = fb.observer.attempts_for(rid, 2)
    assert a1[1] == 429
    assert dict(fb.observer.attempt_headers[(rid, 1)])["retry-after"] == "7"
    assert fb.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "rate_limited")]


def stream_events(r: httpx.Response) -> tuple[list[float], list[bytes]]:
    """Arrival times (s) and raw chunks of a streamed answer."""
    t0 = time.perf_counter()
    times, chunks = [], []
    for chunk in r.iter_raw():
        if chunk:
            times.append(time.perf_counter() - t0)
            chunks.append(chunk)
    return times, chunks


def sse_data(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]


def test_slow_first_byte_moves_on_and_the_stream_arrives_intact_and_incrementally(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", first_byte_ms=FIRST_BYTE_S * 1000 + 2000)
    fresh_fakes.set_behaviour("together", chunk_ms=150, chunks=5)
    t0 = time.perf_counter()
    with httpx.stream("POST", fb.url + "/v1/chat/completions", content=orjson.dumps({**GREETING, "stream": True}),
                      headers={"content-type": "application/json"}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-fake-provider"] == "together" and r.headers["x-envoy-attempt-count"] == "2"
        started = time.perf_counter() - t0
        times, chunks = stream_events(r)
    assert FIRST_BYTE_S - 0.05 < started < FIRST_BYTE_S + 1.5  # the per-try (first-byte) timeout, then the fallback
    assert times[-1] - times[0] > 0.5, times  # events 150 ms apart arrive as they are made, not at the end
    data = sse_data(b"".join(chunks))
    assert data[-1] == "[DONE]"
    events = [orjson.loads(d) for d in data[:-1]]
    assert all(e["model"] == "meta-llama/Llama-3.3-70B-Instruct-Turbo" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text.startswith("[meta-llama/Llama-3.3-70B-Instruct-Turbo")
    rid = r.headers["x-llm-router-request-id"]
    a1, a2 = fb.observer.attempts_for(rid, 2)
    assert (a1[1], a2[1]) == (0, 200)  # the first attempt never answered: reported as no response
    assert a2[2] is not None and a2[2].output_tokens == events[-1]["usage"]["completion_tokens"]
    assert fb.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "no_response")]


def test_a_stream_falls_back_after_a_503_and_streams_incrementally(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=503)
    fresh_fakes.set_behaviour("together", chunk_ms=150, chunks=5)
    body = {"model": "auto", "max_tokens": 300, "stream": True, "messages": [{"role": "user", "content": "hi there, thanks!"}]}
    with httpx.stream("POST", fb.url + "/v1/chat/completions", content=orjson.dumps(body),
                      headers={"content-type": "application/json"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-fake-provider"] == "together"
        times, chunks = stream_events(r)
    assert times[-1] - times[0] > 0.5, times
    assert sse_data(b"".join(chunks))[-1] == "[DONE]"
    [sent] = fresh_fakes.requests("together")
    assert sent.json["stream"] is True and sent.json["stream_options"] == {"include_usage": True}


def test_a_stream_that_breaks_after_its_first_chunks_is_cut_observably_and_not_retried(fb, fresh_fakes):
    """Once the answer has started, Envoy cannot retry: the client gets the chunks sent so far and then
    the connection is reset (no terminating chunk, no [DONE]): an error, not a silently short answer."""
    fresh_fakes.set_behaviour("deepseek", break_after_chunks=2, chunk_ms=50)
    got = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", fb.url + "/v1/chat/completions", content=orjson.dumps({**GREETING, "stream": True}),
                          headers={"content-type": "application/json"}, timeout=30) as r:
            assert r.status_code == 200 and r.headers["x-fake-provider"] == "deepseek"
            for chunk in r.iter_raw():
                got.append(chunk)
    data = sse_data(b"".join(got))
    assert 1 <= len(data) <= 3 and "[DONE]" not in data  # the role event and up to two content events
    assert not fresh_fakes.requests("together") and not fresh_fakes.requests("mistral")
    # The next request is routed normally.
    fresh_fakes.set_behaviour("deepseek", break_after_chunks=None)
    assert post(fb, GREETING).status_code == 200


def test_client_sent_slots_and_retry_controls_are_overwritten(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=503)
    r = post(fb, GREETING, headers={"x-llm-router-try-1": "openai", "x-llm-router-try-2": "openai",
                                    "x-llm-router-try-5": "anthropic", "x-envoy-attempt-count": "3",
                                    "x-envoy-max-retries": "0", "x-envoy-retry-on": "4xx",
                                    "x-envoy-upstream-rq-per-try-timeout-ms": "1"})
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "together"
    assert not fresh_fakes.requests("openai") and not fresh_fakes.requests("anthropic")
    [second] = fresh_fakes.requests("together")
    assert "x-llm-router-try-5" not in second.headers and "x-envoy-retry-on" not in second.headers


def test_fallback_across_auth_styles_sets_only_the_new_providers_credential(fb, fresh_fakes):
    """Anthropic (x-api-key + anthropic-version) fails; OpenAI (Bearer) must get neither Anthropic header."""
    fresh_fakes.set_behaviour("anthropic", status=529)
    r = post(fb, HARD)
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == "openai" and r.headers["x-llm-router-model"] == "gpt-4o"
    [first] = fresh_fakes.requests("anthropic")
    [second] = fresh_fakes.requests("openai")
    assert first.headers["x-api-key"] == KEYS["anthropic"] and first.headers["anthropic-version"] == "2023-06-01"
    assert second.headers["authorization"] == f"Bearer {KEYS['openai']}"
    assert "x-api-key" not in second.headers and "anthropic-version" not in second.headers
    assert second.json["model"] == "gpt-4o" and second.path == "/v1/chat/completions"


def test_a_large_body_is_replayed_whole_on_the_fallback(fb, fresh_fakes):
    from fixtures_envoy import BODY_LIMIT

    text = "word " * ((BODY_LIMIT - 300) // 5)
    fresh_fakes.set_behaviour("deepseek", status=503)
    r = post(fb, {"model": "auto", "messages": [{"role": "user", "content": "hi " + text}]}, timeout=60)
    assert r.status_code == 200, r.text
    got = fresh_fakes.requests()[-1]
    assert got.provider != "deepseek" and got.json["messages"][0]["content"] == "hi " + text
    assert int(got.headers["content-length"]) == len(got.body)


def test_a_refused_connection_moves_on_with_the_next_slot_aligned(fresh_fakes):
    """A connect failure never reaches the per-attempt filter but still counts as an attempt."""
    with short_tmp() as wd:
        dead = free_port()
        ports = {**fresh_fakes.ports, "deepseek": dead}
        stack = start_stack(wd, fresh_fakes, fallback_config(), local_ports=ports)
        try:
            r = post(stack, GREETING)
            assert r.status_code == 200, r.text
            assert r.headers["x-fake-provider"] == "together" and r.headers["x-envoy-attempt-count"] == "2"
            [got] = fresh_fakes.requests("together")
            check_attempt(got, "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")
            rid = r.headers["x-llm-router-request-id"]
            a1, a2 = stack.observer.attempts_for(rid, 2)
            assert (a1[1], a2[1]) == (0, 200)
            assert stack.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "no_response")]
        finally:
            stack.stop()


def test_per_attempt_filter_failure_fails_closed(fresh_fakes):
    """When the per-attempt rewrite errors, the fallback is not sent at all (never with the first key)."""
    class Broken:
        finished = False

        def on_message(self, data):
            raise RuntimeError("boom")

        def on_close(self):
            pass

    def services(svc):
        table = svc.services()
        table.services["attempt"] = lambda meta: Broken()
        return table.open

    with short_tmp() as wd:
        stack = start_stack(wd, fresh_fakes, fallback_config(), services=services)
        try:
            fresh_fakes.set_behaviour("deepseek", status=503)
            r = post(stack, GREETING)
            assert r.status_code == 500
            assert r.json()["error"]["type"] == "server_error"  # Envoy's reply, in OpenAI's format
            assert len(fresh_fakes.requests("deepseek")) == 1
            assert not fresh_fakes.requests("together") and not fresh_fakes.requests("mistral")
            fresh_fakes.set_behaviour("deepseek", status=None)
            assert post(stack, GREETING).status_code == 200  # attempt 1 never needs the per-attempt filter
        finally:
            stack.stop()


def test_without_fallback_a_failure_reaches_the_client(fresh_fakes):
    with short_tmp() as wd:
        stack = start_stack(wd, fresh_fakes, config_data(fallback=False))
        try:
            fresh_fakes.set_behaviour("deepseek", status=503)
            r = post(stack, GREETING)
            assert r.status_code == 503 and r.headers["x-fake-provider"] == "deepseek"
            assert not fresh_fakes.requests("together")
        finally:
            stack.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0


def test_fallbacks_are_counted_health_opens_the_breaker_and_cost_goes_to_the_answering_model(fresh_fakes):
    """The real `llm-router serve` with its telemetry: metrics, breakers and spend per attempt."""
    from llm_router.gateways.envoy.stack import wait_for

    metrics_port = free_port()
    data = fallback_config()
    data["metrics"] = {"listen": f"127.0.0.1:{metrics_port}"}
    data["health"] = {"min_requests": 3, "error_rate": 0.5, "cooldown_s": 120}
    data["state"] = {"refresh_s": 0.05}
    with short_tmp() as wd:
        stack = start_stack(wd, fresh_fakes, data, processor="cli")
        try:
            fresh_fakes.set_behaviour("deepseek", status=503)
            seen = []
            for _ in range(12):
                r = post(stack, GREETING)
                assert r.status_code == 200, r.text  # every request answered
                seen.append((r.headers["x-envoy-attempt-count"], r.headers["x-llm-router-model"]))
                if seen[-1][0] == "1":
                    break
            # First the chain falls back to the next rung; once the breaker is open deepseek-v2 leaves selection and the
            # cheapest model rated above it (Mistral Large 3) answers at the first attempt.
            assert seen[0] == ("2", "llama-3-70b")
            assert seen[-1] == ("1", "mistral-large"), seen
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_for(lambda: metric(httpx.get(url, timeout=5).text, "llm_router_responses_total", model="llama-3-70b",
                                    status="2xx") >= len(seen) - 1, timeout=10, what="responses accounted")
            wait_for(lambda: metric(httpx.get(url, timeout=5).text, "llm_router_responses_total", model="mistral-large",
                                    status="2xx") == 1, timeout=10, what="the last response accounted")
            text = httpx.get(url, timeout=5).text
            falls = metric(text, "llm_router_fallbacks_total", from_model="deepseek-v2", to_model="llama-3-70b",
                           reason="server_error")
            assert falls == len(seen) - 1
            assert metric(text, "llm_router_responses_total", model="deepseek-v2", status="5xx") == falls
            assert metric(text, "llm_router_breaker_open", model="deepseek-v2") == 1
            assert metric(text, "llm_router_cost_usd_total", model="llama-3-70b") > 0
            assert metric(text, "llm_router_cost_usd_total", model="mistral-large") > 0
            assert metric(text, "llm_router_cost_usd_total", model="deepseek-v2") == 0
            for key in KEYS.values():
                assert key not in text
        finally:
            stack.stop()


def test_a_rate_limited_key_is_passed_over_while_the_providers_other_key_has_quota(fresh_fakes):
    """DeepSeek with two keys (a file:// secret whose quota is spent, and the env key): the 429 on the first cools that
    key down for the model; the model keeps answering with the other key instead of leaving selection."""
    from llm_router.config import default_data

    with short_tmp() as wd:
        (wd / "deepseek-spent").write_text("fake-deepseek-spent-key\n")
        data = fallback_config()
        data["providers"] = {"deepseek": {**default_data()["providers"]["deepseek"],
                                          "credentials": [f"file://{wd}/deepseek-spent", "env://DEEPSEEK_API_KEY"]}}
        stack = start_stack(wd, fresh_fakes, data, processor="cli")
        try:
            fresh_fakes.set_behaviour("deepseek", rate_limited_keys=("fake-deepseek-spent-key",), retry_after_s=60)
            answered = []
            for _ in range(6):
                r = post(stack, GREETING)
                assert r.status_code == 200, r.text  # every request answered
                answered.append(r.headers["x-llm-router-model"])
            keys = [rec.headers["authorization"] for rec in fresh_fakes.requests("deepseek")]
            # The first call carried the spent key and fell back; every later one went to DeepSeek with the other key.
            assert keys[0] == "Bearer fake-deepseek-spent-key" and answered[0] == "llama-3-70b", (keys, answered)
            assert answered[1:] == ["deepseek-v2"] * 5, answered
            assert keys[1:] == [f"Bearer {KEYS['deepseek']}"] * 5, keys
        finally:
            stack.stop()


def test_a_provider_that_drops_the_connection_is_skipped(fb, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", disconnect=True)
    r = post(fb, GREETING)
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "together"
    rid = r.headers["x-llm-router-request-id"]
    assert [a[1] for a in fb.observer.attempts_for(rid, 2)] == [0, 200]
    assert fb.observer.fallbacks_for(rid) == [("deepseek-v2", "llama-3-70b", "no_response")]


def test_two_models_on_one_cluster_each_get_their_own_name_and_anthropic_streams_survive(fresh_fakes):
    """The chain may hold two models of one provider: the slot, not the cluster, says which model an attempt is for."""
    data = fallback_config()
    data["models"] = {"claude-3-haiku": {"provider": "anthropic", "name": "claude-3-haiku-20240307", "input_price": 0.25,
                                         "output_price": 1.25, "context_window": 200000, "tier": "LOW", "quality": 0.75,
                                         "capabilities": ["tools", "vision", "json", "code", "streaming"]}}
    data["policies"]["claude"] = {"classifier": "rules", "strategy": "ladder", "explain": True, "fallbacks": 1,
                                  "ladder": {t: "claude-3.5-sonnet" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                  "constraints": {"models": ["claude-3.5-sonnet", "claude-3-haiku"]}}
    fresh_fakes.set_behaviour("anthropic", models=None, fail_first=1, chunk_ms=100, chunks=4)
    with short_tmp() as wd:
        stack = start_stack(wd, fresh_fakes, data, routes=(RouteSpec("/claude/", policy="claude"), RouteSpec("/")))
        try:
            body = {"model": "auto", "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "hello!"}]}
            with httpx.stream("POST", stack.url + "/claude/v1/messages", content=orjson.dumps(body),
                              headers={"content-type": "application/json"}, timeout=30) as r:
                assert r.status_code == 200, r.read()
                assert r.headers["x-envoy-attempt-count"] == "2" and r.headers["x-llm-router-model"] == "claude-3-haiku"
                times, chunks = stream_events(r)
            assert times[-1] - times[0] > 0.25  # still streamed event by event
            names = [line[7:] for line in b"".join(chunks).decode().splitlines() if line.startswith("event: ")]
            assert names[0] == "message_start" and names[-1] == "message_stop"
            first, second = fresh_fakes.requests("anthropic")
            assert first.json["model"] == "claude-sonnet-4-6" and second.json["model"] == "claude-3-haiku-20240307"
            assert second.path == "/v1/messages" and second.headers["x-api-key"] == KEYS["anthropic"]
            rid = r.headers["x-llm-router-request-id"]
            a1, a2 = stack.observer.attempts_for(rid, 2)
            assert (a1[0].call.model.id, a1[1]) == ("claude-3.5-sonnet", 503)
            assert (a2[0].call.model.id, a2[1]) == ("claude-3-haiku", 200) and a2[2].output_tokens > 0
        finally:
            stack.stop()


def test_a_model_its_provider_no_longer_knows_falls_back_to_the_next(fb, fresh_fakes):
    """A 404 (a retired model name, as Anthropic answers for claude-3-5-sonnet-20240620 since 2025-10-22) is the model's
    failure, not the request's: the next model answers, and the fallback is counted as refused."""
    fresh_fakes.set_behaviour("deepseek", status=404)
    r = post(fb, GREETING)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "llama-3-70b" and r.headers["x-envoy-attempt-count"] == "2"
    [first] = fresh_fakes.requests("deepseek")
    assert first.status == 404
    rid = r.headers["x-llm-router-request-id"]
    a1, a2 = fb.observer.attempts_for(rid, 2)
    assert (a1[1], a2[1]) == (404, 200)
    fresh_fakes.set_behaviour("deepseek", status=400)  # a 400 is about the request: the client gets it as it is
    bad = post(fb, GREETING)
    assert bad.status_code == 400 and bad.headers["x-llm-router-model"] == "deepseek-v2"
    assert not fresh_fakes.requests("together")[1:]
