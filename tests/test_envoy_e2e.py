"""llm-router as Envoy's ext_proc processor, end to end: real Envoy, real HTTP/2 gRPC, fake providers."""
from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from fixtures_envoy import BODY_LIMIT, fakes, fresh_fakes, stack, wait_requests  # noqa: F401  (fixtures)

pytestmark = pytest.mark.envoy

GREETING = {"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]}
HARD = {"model": "auto", "messages": [{"role": "user", "content":
        "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."}]}


def post(stack, path: str, body, headers: dict | None = None, timeout: float = 30.0) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(stack.url + path, content=content, headers={"content-type": "application/json", **(headers or {})},
                      timeout=timeout)


def test_routes_to_the_chosen_provider_with_rewritten_body_and_its_key(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", GREETING)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    assert r.headers["x-llm-router-tier"] == "LOW"
    assert r.headers["x-llm-router-reason"]
    assert r.headers["x-fake-provider"] == "deepseek"  # the cluster of the chosen model answered
    [got] = wait_requests(fresh_fakes, "deepseek")
    assert got.path == "/v1/chat/completions"
    assert got.json["model"] == "deepseek-flash"
    assert got.json["messages"] == GREETING["messages"]
    assert got.headers["authorization"] == "Bearer fake-deepseek-key"
    assert all(not fresh_fakes.requests(p) for p in fresh_fakes.providers if p != "deepseek")


def test_anthropic_gets_its_own_header_and_version(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", HARD)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-3.5-sonnet"
    [got] = wait_requests(fresh_fakes, "anthropic")
    assert got.headers["x-api-key"] == "fake-anthropic-key"
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in got.headers
    assert got.json["model"] == "claude-sonnet-4-6"


def test_client_routing_header_and_credentials_are_overwritten(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", GREETING, headers={
        "x-llm-router-upstream": "openai", "authorization": "Bearer sk-client-secret",
        "x-api-key": "client-x-api-key", "api-key": "client-azure-key", "x-goog-api-key": "client-goog"})
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == "deepseek"
    assert not fresh_fakes.requests("openai")
    [got] = wait_requests(fresh_fakes, "deepseek")
    assert got.headers["authorization"] == "Bearer fake-deepseek-key"
    for name in ("x-api-key", "api-key", "x-goog-api-key", "x-llm-router-upstream"):
        assert name not in got.headers, name
    assert "sk-client-secret" not in str(got.headers)


def test_content_length_is_that_of_the_rewritten_body(stack, fresh_fakes):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello " * 50}]}  # model name changes length
    r = post(stack, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    got = fresh_fakes.requests()[-1]
    assert got.json["model"] != "gpt-4o" or got.provider == "openai"
    assert int(got.headers["content-length"]) == len(got.body)
    assert "transfer-encoding" not in got.headers


def test_streamed_answer_arrives_incrementally(stack, fresh_fakes):
    fresh_fakes.set_behaviour(chunk_ms=120, chunks=5)
    body = orjson.dumps({**GREETING, "stream": True})
    arrivals = []
    t0 = time.perf_counter()
    with httpx.stream("POST", stack.url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"content-type": "application/json"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_raw():
            if chunk:
                arrivals.append(time.perf_counter() - t0)
    # Five content events 120 ms apart: they must not arrive all at once at the end.
    assert arrivals[-1] - arrivals[0] > 0.4, arrivals
    assert arrivals[0] < arrivals[-1] - 0.3


def test_first_chunk_is_not_delayed_compared_with_a_direct_call(stack, fresh_fakes):
    fresh_fakes.set_behaviour(chunk_ms=300, chunks=3)
    routed_body = orjson.dumps({**GREETING, "stream": True})
    direct_body = orjson.dumps({**GREETING, "model": "deepseek-flash", "thinking": {"type": "disabled"}, "stream": True})

    def first_chunk(url: str, body: bytes, headers: dict) -> float:
        t0 = time.perf_counter()
        with httpx.stream("POST", url, content=body, timeout=30, headers={"content-type": "application/json", **headers}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                if chunk:
                    return time.perf_counter() - t0
        raise AssertionError("no chunk")

    routed = min(first_chunk(stack.url + "/v1/chat/completions", routed_body, {}) for _ in range(3))
    direct = min(first_chunk(fresh_fakes.url("deepseek") + "/v1/chat/completions", direct_body,
                             {"authorization": "Bearer fake-deepseek-key"}) for _ in range(3))
    # The first event is written before the first 300 ms pause; through Envoy it must not wait for the next one.
    assert routed - direct < 0.1, (routed, direct)


def test_usage_from_a_json_answer_reaches_on_response(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", GREETING)
    assert r.status_code == 200
    rid = r.headers["x-llm-router-request-id"]
    ex, status, usage, latency = stack.observer.response_for(rid)
    reported = r.json()["usage"]
    assert status == 200
    assert (usage.input_tokens, usage.output_tokens) == (reported["prompt_tokens"], reported["completion_tokens"])
    assert ex.decision.model.id == "deepseek-v2"
    assert latency > 0


def test_usage_from_a_gzip_answer_reaches_on_response(stack, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", gzip=True)
    r = post(stack, "/v1/chat/completions", GREETING, headers={"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    reported = r.json()["usage"]  # httpx inflates
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert (usage.input_tokens, usage.output_tokens) == (reported["prompt_tokens"], reported["completion_tokens"])


def test_a_client_accepting_brotli_gets_a_gzip_stream_whose_usage_is_read(stack, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", gzip_stream=True)
    r = post(stack, "/v1/chat/completions", {**GREETING, "stream": True}, headers={"accept-encoding": "br, gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert fresh_fakes.requests("deepseek")[-1].headers["accept-encoding"] == "gzip"  # br dropped: unreadable here
    last = [line for line in r.text.splitlines() if line.startswith("data: {") and '"usage"' in line][-1]  # httpx inflates
    reported = orjson.loads(last[6:])["usage"]
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200
    assert (usage.input_tokens, usage.output_tokens) == (reported["prompt_tokens"], reported["completion_tokens"])


def test_usage_from_an_openai_stream_reaches_on_response(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", {**GREETING, "stream": True})
    assert r.status_code == 200
    last = [line for line in r.text.splitlines() if line.startswith("data: {") and '"usage"' in line][-1]
    reported = orjson.loads(last[6:])["usage"]
    sent = fresh_fakes.requests("deepseek")[-1].json
    assert sent["stream_options"] == {"include_usage": True}  # the router asked for usage on the stream
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200
    assert (usage.input_tokens, usage.output_tokens) == (reported["prompt_tokens"], reported["completion_tokens"])


@pytest.mark.parametrize("prompt, provider, upstream_path", [
    ("hello!", "deepseek", "/anthropic/v1/messages"),  # DeepSeek's Anthropic-compatible API
    (HARD["messages"][0]["content"], "anthropic", "/v1/messages")])
def test_usage_from_an_anthropic_stream_reaches_on_response(stack, fresh_fakes, prompt, provider, upstream_path):
    body = {"model": "auto", "max_tokens": 300, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    r = post(stack, "/v1/messages", body)
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == provider
    assert fresh_fakes.requests(provider)[-1].path == upstream_path
    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]["input_tokens"]
    out = next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"]
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert (status, usage.input_tokens, usage.output_tokens) == (200, start, out)


def test_an_anthropic_format_request_is_routed_between_claude_and_deepseeks_messages_api(stack, fresh_fakes):
    """Anthropic-format clients (Claude Code, the Anthropic SDK) get routing too: a simple turn goes to
    DeepSeek's Anthropic-compatible API with DeepSeek's key, a hard one to Claude; both answer in Anthropic's format."""
    client = {"x-api-key": "client-anthropic-key", "anthropic-version": "2023-06-01"}
    easy = {"model": "claude-3-5-sonnet-latest", "max_tokens": 200, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there, thanks!"}]}]}
    r = post(stack, "/v1/messages", easy, headers=client)
    assert r.status_code == 200, r.text
    assert (r.headers["x-llm-router-model"], r.headers["x-fake-provider"]) == ("deepseek-v2", "deepseek")
    answer = r.json()
    assert answer["type"] == "message" and answer["content"][0]["type"] == "text"  # the format the client asked in
    [got] = wait_requests(fresh_fakes, "deepseek")
    assert got.path == "/anthropic/v1/messages"
    assert got.json["model"] == "deepseek-flash"
    assert (got.json["system"], got.json["messages"], got.json["max_tokens"]) == ("Be brief.", easy["messages"], 200)
    assert got.headers["authorization"] == "Bearer fake-deepseek-key"
    assert "x-api-key" not in got.headers and "client-anthropic-key" not in str(got.headers)
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert (status, usage.input_tokens, usage.output_tokens) == (200, answer["usage"]["input_tokens"],
                                                                answer["usage"]["output_tokens"])
    hard = post(stack, "/v1/messages", {**easy, "messages": HARD["messages"]}, headers=client)
    assert hard.status_code == 200, hard.text
    assert (hard.headers["x-llm-router-model"], hard.headers["x-fake-provider"]) == ("claude-3.5-sonnet", "anthropic")
    [claude] = wait_requests(fresh_fakes, "anthropic")
    assert claude.path == "/v1/messages" and claude.headers["x-api-key"] == "fake-anthropic-key"
    assert claude.json["model"] == "claude-sonnet-4-6"


def test_provider_errors_reach_on_response_with_their_status(stack, fresh_fakes):
    fresh_fakes.set_behaviour("deepseek", status=429)
    r = post(stack, "/v1/chat/completions", GREETING)
    assert r.status_code == 200, r.text  # the next model of the chain answered
    assert r.headers["x-fake-provider"] == "together" and r.headers["x-envoy-attempt-count"] == "2"
    rid = r.headers["x-llm-router-request-id"]
    first, second = stack.observer.attempts_for(rid, 2)
    assert (first[0].call.model.id, first[1], first[2]) == ("deepseek-v2", 429, None)
    assert (second[0].call.model.id, second[1]) == ("llama-3-70b", 200)
    # Rate-limit headers of the failed attempt reach health without a response-headers round trip.
    headers = dict(stack.observer.attempt_headers[(rid, 1)])
    assert headers["retry-after"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"


def test_anthropic_rate_limit_headers_reach_health_through_envoy(stack, fresh_fakes):
    """Anthropic's own dialect (anthropic-ratelimit-*, RFC 3339 resets) passes Envoy's observer filter and is understood."""
    from llm_router.health import OPEN, Health, HealthConfig
    from llm_router.state import MemoryStore, SharedState

    state = SharedState(MemoryStore())
    health = Health(state, ["claude-3.5-sonnet"], HealthConfig(cooldown_s=1))
    r = post(stack, "/v1/chat/completions", HARD)
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "anthropic"
    rid = r.headers["x-llm-router-request-id"]
    _, status, _, _ = stack.observer.response_for(rid)
    headers = dict(stack.observer.headers[rid])
    assert int(headers["anthropic-ratelimit-requests-remaining"]) < int(headers["anthropic-ratelimit-requests-limit"])
    assert "anthropic-ratelimit-output-tokens-reset" in headers and not any(k.startswith("x-ratelimit") for k in headers)
    health.observe("claude-3.5-sonnet", status, 0.1, stack.observer.headers[rid], time.time())
    asyncio.run(state.sync(time.time()))
    assert 0.0 < health.remaining("claude-3.5-sonnet") < 1.0

    fresh_fakes.set_behaviour("anthropic", status=429, retry_after_s=30)
    r = post(stack, "/v1/chat/completions", HARD)
    assert r.status_code == 200 and r.headers["x-envoy-attempt-count"] == "2"  # the chain's next model answered
    rid = r.headers["x-llm-router-request-id"]
    first, _ = stack.observer.attempts_for(rid, 2)
    assert first[1] == 429
    limited = stack.observer.attempt_headers[(rid, 1)]
    assert dict(limited)["anthropic-ratelimit-requests-remaining"] == "0" and dict(limited)["retry-after"] == "30"
    t = time.time()
    health.observe("claude-3.5-sonnet", 429, 0.1, limited, t)
    asyncio.run(state.sync(t + 20))
    assert health.mode["claude-3.5-sonnet"] == OPEN and health.remaining("claude-3.5-sonnet") == 0.0  # 30 s, not 1 s


@pytest.mark.parametrize("path, stream", [("/v1/chat/completions", False), ("/v1/chat/completions", True),
                                          ("/v1/messages", False), ("/v1/messages", True)])
def test_prompt_cache_tokens_reach_on_response_and_cost_less(stack, fresh_fakes, path, stream):
    """Cache reads and writes in both dialects (inside prompt_tokens on the chat API, beside input_tokens on Anthropic's
    own): counted in the input and priced apart."""
    fresh_fakes.set_behaviour("anthropic", cached_share=0.75, cache_write_share=0.5 if path == "/v1/messages" else 0.0)
    body = {**HARD, "stream": stream, **({"max_tokens": 200} if path == "/v1/messages" else {})}
    r = post(stack, path, body)
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "anthropic"
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.cached_input_tokens > 0
    if not stream:
        reported = r.json()["usage"]
        if path == "/v1/messages":
            assert usage.cached_input_tokens == reported["cache_read_input_tokens"]
            assert usage.cache_write_tokens == reported["cache_creation_input_tokens"] > 0
            assert usage.input_tokens == (reported["input_tokens"] + reported["cache_read_input_tokens"]
                                          + reported["cache_creation_input_tokens"])
        else:
            assert usage.input_tokens == reported["prompt_tokens"]
            assert usage.cached_input_tokens == reported["prompt_tokens_details"]["cached_tokens"]
    assert (usage.cache_write_tokens > 0) == (path == "/v1/messages")
    claude = stack.processor.runtime.router.catalog.models["claude-3.5-sonnet"]
    assert usage.cost(claude) < claude.cost(usage.input_tokens, usage.output_tokens)
    assert usage.cost(claude) == pytest.approx(claude.cost(usage.input_tokens, usage.output_tokens) + (
        usage.cached_input_tokens * (0.30 - 3.0) + usage.cache_write_tokens * (3.75 - 3.0)) / 1e6)


def test_malformed_json_gets_400_in_openai_format_and_the_next_request_works(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", b'{"model": "auto", "messages": [')
    assert r.status_code == 400
    err = r.json()["error"]
    assert "not valid JSON" in err["message"]
    assert err["type"] == "invalid_request_error" and err["param"] == "body"
    assert not fresh_fakes.requests()
    r = post(stack, "/v1/chat/completions", {"model": "auto", "messages": "hello"})
    assert r.status_code == 400
    assert "'messages' must be an array" in r.json()["error"]["message"]
    assert post(stack, "/v1/chat/completions", GREETING).status_code == 200


def test_unknown_model_is_refused_naming_it(stack, fresh_fakes):
    # The 'pinned' route honours the client's model: an unknown one is an error that names it.
    r = post(stack, "/pinned/v1/chat/completions", {**GREETING, "model": "gpt-17-ultra"})
    assert r.status_code == 400
    assert "gpt-17-ultra" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "model"
    r = post(stack, "/pinned/v1/chat/completions", {**GREETING, "model": "gpt-4o"})
    assert r.status_code == 200 and r.headers["x-fake-provider"] == "openai"
    # This policy does not ask for explanations: only the request id is shown.
    assert r.headers["x-llm-router-request-id"]
    assert not [h for h in r.headers if h.startswith("x-llm-router-") and h != "x-llm-router-request-id"]


@pytest.mark.parametrize("size", [BODY_LIMIT + 1024, 3 * 1024 * 1024])
def test_a_body_above_the_limit_gets_a_clear_413(stack, fresh_fakes, size):
    text = "x" * size
    r = post(stack, "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": text}]}, timeout=60)
    assert r.status_code == 413
    err = r.json()["error"]
    assert str(BODY_LIMIT) in err["message"] and err["code"] == "request_too_large"
    assert not fresh_fakes.requests()
    assert post(stack, "/v1/chat/completions", GREETING).status_code == 200


def test_a_body_in_many_chunks_just_under_the_limit_is_routed_whole(stack, fresh_fakes):
    text = "word " * ((BODY_LIMIT - 200) // 5)
    r = post(stack, "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": text}]}, timeout=60)
    assert r.status_code == 200, r.text
    got = fresh_fakes.requests()[-1]
    assert got.json["messages"][0]["content"] == text
    assert int(got.headers["content-length"]) == len(got.body) > BODY_LIMIT - 200


def test_route_metadata_selects_the_policy(stack, fresh_fakes):
    r = post(stack, "/v1/chat/completions", HARD)
    assert r.headers["x-llm-router-model"] == "claude-3.5-sonnet"
    r = post(stack, "/cheap/v1/chat/completions", HARD)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    got = fresh_fakes.requests("deepseek")[-1]
    assert got.path == "/v1/chat/completions"  # the provider's path, not the client-facing one
    ex = stack.observer.response_for(r.headers["x-llm-router-request-id"])[0]
    assert ex.decision.policy == "cheap"


def test_other_paths_pass_through_untouched(stack, fresh_fakes):
    r = httpx.post(stack.url + "/internal/status?verbose=1", content=b"raw \x00 bytes",
                   headers={"authorization": "Bearer client-own-key", "x-custom": "kept", "x-llm-router-upstream": "anthropic"},
                   timeout=30)
    # The default route's provider answered (its 404 for an unknown path), with the request as sent.
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    got = fresh_fakes.requests("openai")
    assert len(got) == 1, [x.provider for x in fresh_fakes.requests()]
    got = got[0]
    assert got.path == "/internal/status?verbose=1"
    assert got.body == b"raw \x00 bytes"
    assert got.headers["authorization"] == "Bearer client-own-key"
    assert got.headers["x-custom"] == "kept"
    assert "x-llm-router-upstream" not in got.headers
    assert not fresh_fakes.requests("anthropic")
    assert "x-llm-router-model" not in r.headers


def test_the_model_list_is_answered_by_the_processor_per_route(stack, fresh_fakes):
    r = httpx.get(stack.url + "/v1/models", headers={"authorization": "Bearer client-own-key"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-llm-router-request-id"]
    ids = [m["id"] for m in r.json()["data"]]
    assert ids[0] == "auto" and {"gpt-4o", "deepseek-v2", "claude-3.5-sonnet"} <= set(ids)
    cheap = httpx.get(stack.url + "/cheap/v1/models/deepseek-v2", timeout=30)
    assert cheap.status_code == 200 and cheap.json()["owned_by"] == "deepseek"
    not_here = httpx.get(stack.url + "/cheap/v1/models/gpt-4o", timeout=30)
    assert not_here.status_code == 404 and "deepseek-v2" in not_here.json()["error"]["message"]
    anthropic = httpx.get(stack.url + "/v1/models", headers={"anthropic-version": "2023-06-01"}, timeout=30)
    assert anthropic.json()["first_id"] == "auto" and anthropic.json()["data"][1]["type"] == "model"
    assert not fresh_fakes.requests()  # no provider was asked


def test_a_shadow_route_serves_the_asked_model_and_reports_what_routing_would_choose(stack, fresh_fakes):
    r = post(stack, "/shadow/v1/chat/completions", GREETING, headers={"authorization": "Bearer client-own-key"})
    assert r.status_code == 200, r.text
    assert (r.headers["x-llm-router-model"], r.headers["x-llm-router-shadow-model"]) == ("gpt-4o", "deepseek-v2")
    [sent] = wait_requests(fresh_fakes, "openai")
    assert sent.json["model"] == "gpt-4o" and sent.headers["authorization"] == "Bearer fake-openai-key"
    assert not fresh_fakes.requests("deepseek")
    ex, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.input_tokens > 0 and (ex.decision.model.id, ex.decision.shadow.id) == ("gpt-4o", "deepseek-v2")
    asked = post(stack, "/shadow/v1/chat/completions", {**GREETING, "model": "claude-3.5-sonnet"})
    assert asked.headers["x-llm-router-model"] == "claude-3.5-sonnet" and wait_requests(fresh_fakes, "anthropic")
    plain = post(stack, "/v1/chat/completions", GREETING)
    assert plain.headers["x-llm-router-model"] == "deepseek-v2" and "x-llm-router-shadow-model" not in plain.headers


def test_a_client_picks_a_policy_its_route_allows_by_model_name(stack, fresh_fakes):
    hard = {"model": "auto-cheap", "messages": [{"role": "user", "content": "Prove rigorously, step by step, that sqrt(2) is irrational."}]}
    r = post(stack, "/v1/chat/completions", hard)
    assert r.status_code == 200 and r.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fresh_fakes, "deepseek")
    assert sent.json["model"] == "deepseek-flash"
    ex = stack.observer.response_for(r.headers["x-llm-router-request-id"])[0]
    assert ex.decision.policy == "cheap" and ex.policy.name == "cheap"
    assert post(stack, "/v1/chat/completions", {**hard, "model": "auto"}).headers["x-llm-router-model"] != "deepseek-v2"
    listed = httpx.get(stack.url + "/v1/models", timeout=30).json()["data"]
    assert [m["id"] for m in listed[:2]] == ["auto", "auto-cheap"]


def test_an_anthropic_token_count_is_counted_by_anthropic_with_its_key(stack, fresh_fakes):
    body = {"model": "auto", "system": "Be brief.", "messages": [{"role": "user", "content": "Count the tokens of this, please."}]}
    r = post(stack, "/v1/messages/count_tokens?beta=true", body,
             headers={"x-api-key": "client-own-key", "anthropic-version": "2023-06-01", "x-llm-router-upstream": "openai"})
    assert r.status_code == 200 and r.json()["input_tokens"] > 5
    [sent] = wait_requests(fresh_fakes, "anthropic")
    assert sent.path == "/v1/messages/count_tokens?beta=true" and sent.json["model"] == "claude-sonnet-4-6"
    assert sent.headers["x-api-key"] == "fake-anthropic-key" and sent.json["system"] == "Be brief."
    assert set(sent.json) == {"model", "system", "messages"}
    assert int(sent.headers["content-length"]) == len(sent.body)
    assert not fresh_fakes.requests("openai")
    bad = post(stack, "/v1/messages/count_tokens", {"model": "auto", "messages": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


def test_get_on_an_llm_path_is_refused_cleanly(stack, fresh_fakes):
    r = httpx.get(stack.url + "/v1/chat/completions", timeout=30)
    assert r.status_code == 400
    assert "empty" in r.json()["error"]["message"]
    assert post(stack, "/v1/chat/completions", GREETING).status_code == 200


def test_many_concurrent_requests_all_route(stack, fresh_fakes):
    import concurrent.futures

    bodies = [GREETING, HARD] * 20
    with httpx.Client(timeout=30) as c, concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: c.post(stack.url + "/v1/chat/completions", content=orjson.dumps(b),
                                                 headers={"content-type": "application/json"}), bodies))
    assert [r.status_code for r in results] == [200] * len(bodies)
    assert [r.headers["x-llm-router-model"] for r in results] == ["deepseek-v2", "claude-3.5-sonnet"] * 20
