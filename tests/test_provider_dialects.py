"""Provider body dialects: a strict provider (Mistral) gets only the fields it accepts, under its names.

Mistral answers 422 to any field it does not know (stream_options, store, max_completion_tokens, ...);
its fake does the same, so a request routed there from an OpenAI client must be rewritten to pass.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, restored, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import ConfigError, load_config, parse_config
from llm_router.fakes import FakeProviders
from llm_router.request import parse_request, render_body
from llm_router.router import build_catalog

from apisix_emulator import RouteConf, runner_session

# What an OpenAI SDK client sends: fields Mistral rejects, and two it knows under other names.
OPENAI_STYLE = {"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}], "temperature": 0.2,
                "max_completion_tokens": 64, "seed": 7, "store": False, "user": "u-42", "metadata": {"team": "a"}}
MISTRAL_NAME = "mistral-large-latest"


def body(**extra) -> dict:
    return {**OPENAI_STYLE, **extra}


# ---- rendering --------------------------------------------------------------------------------

def test_mistral_gets_its_names_and_only_its_fields_and_no_stream_options():
    catalog = build_catalog(load_config(None))
    req = parse_request(orjson.dumps(body(stream=True, stream_options={"include_usage": True})))
    sent = orjson.loads(render_body(req, MISTRAL_NAME, dialect=catalog.providers["mistral"].body))
    assert sent == {"model": MISTRAL_NAME, "messages": OPENAI_STYLE["messages"], "temperature": 0.2, "stream": True,
                    "max_tokens": 64, "random_seed": 7}
    # OpenAI keeps every field, and a stream asks for usage.
    openai = orjson.loads(render_body(parse_request(orjson.dumps(body(stream=True))), "gpt-4o",
                                      dialect=catalog.providers["openai"].body))
    assert openai["max_completion_tokens"] == 64 and openai["stream_options"] == {"include_usage": True}
    assert openai["store"] is False and openai["user"] == "u-42"


def test_a_field_already_under_the_providers_name_wins_over_the_renamed_one():
    catalog = build_catalog(load_config(None))
    req = parse_request(orjson.dumps(body(max_tokens=10)))
    for provider in ("mistral", "deepseek", "together"):
        sent = orjson.loads(render_body(req, "m", dialect=catalog.providers[provider].body))
        assert sent["max_tokens"] == 10 and "max_completion_tokens" not in sent, provider
    assert orjson.loads(render_body(req, "m", dialect=catalog.providers["deepseek"].body))["store"] is False


def test_bad_body_rules_are_named():
    base = {"base_url": "https://example.com", "paths": {"chat": "/v1/chat/completions"}}
    for rules, says in (({"accept": {"chat": ["model", "temperature"]}}, "accept.chat must keep ['messages']"),
                        ({"rename": {"model": "engine"}}, "is not a rename of a request field other than model"),
                        ({"stream_usage": "sometimes"}, "stream_usage"),
                        ({"accept": {"embeddings": ["input"]}}, "accept.embeddings")):
        with pytest.raises(ConfigError) as err:
            parse_config({"providers": {"strict": {**base, "body": rules}}})
        assert "providers.strict.body" in str(err.value) and says in str(err.value), str(err.value)


# ---- through the real Envoy, with the chain falling back onto Mistral ---------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes({})


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-dialects", fakes, config_data(first_byte_timeout_s=2.0, answer_timeout_s=5.0))



def test_the_mistral_fake_rejects_what_mistral_rejects(fakes):
    r = httpx.post(fakes.url("mistral") + "/v1/chat/completions", timeout=30,
                   content=orjson.dumps({**OPENAI_STYLE, "model": MISTRAL_NAME, "stream_options": {"include_usage": True}}),
                   headers={"authorization": f"Bearer {fakes.keys()['mistral']}", "content-type": "application/json"})
    assert r.status_code == 422
    rejected = [d["loc"][1] for d in r.json()["message"]["detail"]]
    assert rejected == ["max_completion_tokens", "seed", "store", "user", "metadata", "stream_options"]


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_falls_back_onto_mistral_with_a_body_it_accepts_and_reads_its_usage(stack, fresh_fakes, stream):
    # The greeting's chain is deepseek -> together -> mistral: the first two fail, Mistral answers.
    fresh_fakes.set_behaviour("deepseek", status=503)
    fresh_fakes.set_behaviour("together", status=503)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    r = httpx.post(stack.url + "/v1/chat/completions", content=orjson.dumps(body(**extra)), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "mistral-large"
    [deepseek] = wait_requests(fresh_fakes, "deepseek", 1)
    [mistral] = wait_requests(fresh_fakes, "mistral", 1)
    assert mistral.status == 200 and mistral.json == {k: v for k, v in {
        "model": MISTRAL_NAME, "messages": OPENAI_STYLE["messages"], "temperature": 0.2, "max_tokens": 64, "random_seed": 7,
        "stream": True if stream else None}.items() if v is not None}
    # DeepSeek, which takes OpenAI's fields, got them (its limit under its own name).
    assert deepseek.json["store"] is False and deepseek.json["max_tokens"] == 64
    if stream:
        assert deepseek.json["stream_options"] == {"include_usage": True}
        assert r.text.rstrip().endswith("data: [DONE]")
    attempts = stack.observer.attempts_for(r.headers["x-llm-router-request-id"], 3)
    assert [a[1] for a in attempts] == [503, 503, 200]
    assert attempts[-1][2] is not None and attempts[-1][2].output_tokens > 0  # usage from Mistral's answer


# ---- through the APISIX runner ------------------------------------------------------------------

def test_apisix_runner_sends_mistral_its_dialect(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy
    from llm_router.runtime import Runtime

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    ladder = {t: "mistral-large" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}
    runtime = Runtime(parse_config({"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": ladder}}}))
    with runner_session(runtime, "dialect") as em, restored(fakes):
        resp = proxy(em, RouteConf(conf=(("llm-router", "{}"),), conf_id="dialect"), post_resp=True,
                     upstreams={name: fakes.url(name) for name in fakes.providers},
                     body=orjson.dumps(body(stream=True)), headers=[("content-type", "application/json")])
        assert resp.status == 200, resp.body
        [sent] = fakes.requests("mistral")
        assert sent.status == 200 and "stream_options" not in sent.json and sent.json["max_tokens"] == 64
        assert resp.body.rstrip().endswith(b"data: [DONE]") and b'"usage"' in resp.body


# ---- Gemini's OpenAI-compatible endpoint -------------------------------------------------------

GEMINI_NAME = "gemini-3.8-flash"
# OpenAI SDK fields Gemini's endpoint does not know (it answers 400 "Unknown name ...: Cannot find field").
SDK_ONLY = {"store": False, "user": "u-42", "metadata": {"team": "a"}, "prompt_cache_key": "k-1", "service_tier": "auto",
            "frequency_penalty": 0.3, "presence_penalty": 0.1}


def test_gemini_gets_only_the_fields_it_takes_and_keeps_stream_options():
    catalog = build_catalog(load_config(None))
    req = parse_request(orjson.dumps(body(stream=True, **SDK_ONLY)))
    sent = orjson.loads(render_body(req, GEMINI_NAME, dialect=catalog.providers["google"].body))
    assert sent == {"model": GEMINI_NAME, "messages": OPENAI_STYLE["messages"], "temperature": 0.2, "max_completion_tokens": 64,
                    "seed": 7, "stream": True, "stream_options": {"include_usage": True}}


def test_the_gemini_fake_rejects_what_gemini_rejects(fakes):
    r = httpx.post(fakes.url("google") + "/v1beta/openai/chat/completions", timeout=30,
                   content=orjson.dumps({"model": GEMINI_NAME, "messages": OPENAI_STYLE["messages"], "prompt_cache_key": "k-1"}),
                   headers={"x-goog-api-key": fakes.keys()["google"], "content-type": "application/json"})
    assert r.status_code == 400
    [err] = r.json()
    assert err["error"]["status"] == "INVALID_ARGUMENT"
    assert err["error"]["message"] == 'Invalid JSON payload received. Unknown name "prompt_cache_key": Cannot find field.'
    penalty = httpx.post(fakes.url("google") + "/v1beta/openai/chat/completions", timeout=30,
                         content=orjson.dumps({"model": GEMINI_NAME, "messages": OPENAI_STYLE["messages"], "frequency_penalty": 0.3}),
                         headers={"x-goog-api-key": fakes.keys()["google"], "content-type": "application/json"})
    assert penalty.status_code == 400 and 'Unknown name "frequency_penalty"' in penalty.json()[0]["error"]["message"]


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_sends_gemini_an_openai_sdk_request_it_accepts(tmp_path_factory, fakes, stream):
    data = config_data()
    data["policies"]["default"] = {**data["policies"]["default"], "ladder": {t: "gemini-1.5-pro" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}}
    # room for Gemini 3.8 Flash's thoughts (min_output_tokens: a smaller limit goes to a model that does not think first)
    extra = {"stream": True, "max_completion_tokens": 4096} if stream else {"max_completion_tokens": 4096}
    for s in running_stack(tmp_path_factory, "envoy-gemini-dialect", fakes, data):
        with restored(fakes):
            r = httpx.post(s.url + "/v1/chat/completions", content=orjson.dumps(body(**SDK_ONLY, **extra)), timeout=30,
                           headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            assert r.headers["x-llm-router-model"] == "gemini-1.5-pro"
            [sent] = wait_requests(fakes, "google", 1)
            assert sent.status == 200 and not set(SDK_ONLY) & set(sent.json)
            assert sent.json["max_completion_tokens"] == 4096 and sent.json["seed"] == 7
            if stream:
                assert sent.json["stream_options"] == {"include_usage": True}
                assert b'"usage"' in r.content
