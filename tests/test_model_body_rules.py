"""Per-model body rules (`body:` on a model, over its provider's): OpenAI's reasoning models.

o1 / o3-mini answer 400 to `max_tokens` ("Use 'max_completion_tokens' instead") and to any
temperature but 1, which most chat clients send. A model's `rename` and `drop` make a request
written for gpt-4o acceptable to such a model, on top of whatever its provider's rules do.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, restored, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import ConfigError, default_data, parse_config
from llm_router.fakes import FakeProviders
from llm_router.request import parse_request, render_body
from llm_router.router import build_catalog

from apisix_emulator import RouteConf, runner_session

O3_MINI = {"provider": "openai", "name": "o3-mini", "input_price": 1.1, "output_price": 4.4, "context_window": 200000,
           "max_output_tokens": 100000, "capabilities": ["tools", "json", "json_schema", "code", "streaming"], "tier": "CRITICAL",
           "quality": 0.93, "body": {"rename": {"max_tokens": "max_completion_tokens"},
                                     "drop": ["temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs",
                                              "top_logprobs", "logit_bias"]}}
# What a chat client written for gpt-4o sends.
CLIENT = {"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}], "temperature": 0.2, "top_p": 0.9,
          "max_tokens": 64, "seed": 7, "user": "u-42"}
LADDER = {t: "o3-mini" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}


def with_o3(**policy) -> dict:
    data = config_data()
    data["models"] = {"o3-mini": O3_MINI}
    default = data["policies"]["default"]
    data["policies"]["default"] = {**default, "ladder": LADDER, "client_policies": {**default["client_policies"], "auto-gpt": "gpt"},
                                   **policy}
    data["policies"]["gpt"] = {"classifier": "rules", "strategy": "ladder", "explain": True,
                               "ladder": {t: "gpt-4o" for t in LADDER}, "constraints": {"models": ["gpt-4o"]}}
    return data


def test_a_models_rules_apply_over_its_providers_and_only_to_it():
    catalog = build_catalog(parse_config(with_o3()))
    req = parse_request(orjson.dumps(CLIENT))
    o3 = catalog.models["o3-mini"]
    sent = orjson.loads(render_body(req, o3.name, dialect=o3.body))
    assert sent == {"model": "o3-mini", "messages": CLIENT["messages"], "max_completion_tokens": 64, "seed": 7, "user": "u-42"}
    # gpt-4o, on the same provider, has only its own rule (no reasoning effort): the rest passes as written.
    gpt = catalog.models["gpt-4o"]
    asked = parse_request(orjson.dumps({**CLIENT, "reasoning_effort": "high"}))
    assert orjson.loads(render_body(asked, gpt.name, dialect=gpt.body)) == {**CLIENT, "model": "gpt-4o"}
    # A model of a provider with rules keeps them and adds its own.
    mistral = dict(default_data()["models"]["mistral-large"], body={"drop": ["safe_prompt"]})
    m = build_catalog(parse_config({"models": {"mistral-large": mistral}})).models["mistral-large"]
    assert m.body is not None and ("max_completion_tokens", "max_tokens") in m.body.rename and "safe_prompt" in m.body.drop
    assert m.body.usage_unasked and "messages" in m.body.accept["chat"]


@pytest.mark.parametrize("rules, says", [({"drop": ["messages"]}, "drop: ['messages'] cannot be dropped"),
                                         ({"drop": ["model"]}, "drop: ['model'] cannot be dropped"),
                                         ({"rename": {"model": "engine"}}, "is not a rename of a request field other than model"),
                                         ({"accept": {"chat": ["messages"]}}, "accept")])
def test_bad_model_rules_are_named(rules, says):
    with pytest.raises(ConfigError) as err:
        parse_config({"models": {"o3-mini": {**O3_MINI, "body": rules}}})
    assert "models.o3-mini.body" in str(err.value) and says in str(err.value), str(err.value)


def test_check_shows_a_models_own_rules(tmp_path, capsys):
    import yaml

    from llm_router.cli import main

    path = tmp_path / "o3.yaml"
    path.write_text(yaml.safe_dump({"models": {"o3-mini": O3_MINI}}))
    assert main(["check", str(path)]) == 0
    assert "body over openai's: max_tokens as max_completion_tokens; never sent: temperature, top_p" in capsys.readouterr().out


# ---- the fake answers as OpenAI does -----------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes(with_o3())


def _post_openai(fakes: FakeProviders, body: dict) -> httpx.Response:
    return httpx.post(fakes.url("openai") + "/v1/chat/completions", content=orjson.dumps(body), timeout=30,
                      headers={"authorization": f"Bearer {fakes.keys()['openai']}", "content-type": "application/json"})


def test_the_openai_fake_refuses_what_reasoning_models_refuse(fakes):
    with restored(fakes):
        r = _post_openai(fakes, {**CLIENT, "model": "o3-mini"})
        assert r.status_code == 400 and r.json()["error"] == {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}
        r = _post_openai(fakes, {"model": "o3-mini", "messages": CLIENT["messages"], "temperature": 0.2})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_value"
        assert r.json()["error"]["message"].startswith("Unsupported value: 'temperature' does not support 0.2 with this model.")
        ok = _post_openai(fakes, {"model": "o3-mini", "messages": CLIENT["messages"], "temperature": 1, "max_completion_tokens": 64})
        assert ok.status_code == 200
        assert _post_openai(fakes, {**CLIENT, "model": "gpt-4o"}).status_code == 200  # gpt-4o takes them
        # ... but not a reasoning effort, in chat or in Responses.
        r = _post_openai(fakes, {**CLIENT, "model": "gpt-4o", "reasoning_effort": "low"})
        assert r.status_code == 400 and r.json()["error"] == {
            "message": "Unrecognized request argument supplied: reasoning_effort", "type": "invalid_request_error", "param": None,
            "code": None}
        r = httpx.post(fakes.url("openai") + "/v1/responses", timeout=30,
                       content=orjson.dumps({"model": "gpt-4o", "input": "hi", "reasoning": {"effort": "low"}}),
                       headers={"authorization": f"Bearer {fakes.keys()['openai']}", "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning.effort"
        # ... nor GPT-5's verbosity other than its default
        r = _post_openai(fakes, {**CLIENT, "model": "gpt-4o", "verbosity": "low"})
        assert r.status_code == 400 and r.json()["error"] == {
            "message": "Unsupported value: 'verbosity' does not support 'low' with this model. Supported values are: 'medium'.",
            "type": "invalid_request_error", "param": "verbosity", "code": "unsupported_value"}
        assert _post_openai(fakes, {**CLIENT, "model": "gpt-4o", "verbosity": "medium"}).status_code == 200
        r = httpx.post(fakes.url("openai") + "/v1/responses", timeout=30,
                       content=orjson.dumps({"model": "gpt-4o", "input": "hi", "text": {"verbosity": "high"}}),
                       headers={"authorization": f"Bearer {fakes.keys()['openai']}", "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "text.verbosity"


# ---- through the real Envoy and the APISIX runner ----------------------------------------------

@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-model-body", fakes, with_o3())


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_sends_a_reasoning_model_a_body_it_takes(stack, fakes, stream):
    with restored(fakes):
        r = httpx.post(stack.url + "/v1/chat/completions", content=orjson.dumps({**CLIENT, "stream": stream}), timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-router-model"] == "o3-mini"
        [sent] = wait_requests(fakes, "openai", 1)
        assert sent.status == 200 and sent.json["max_completion_tokens"] == 64
        assert not {"max_tokens", "temperature", "top_p"} & set(sent.json) and sent.json["seed"] == 7


@pytest.mark.envoy
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_envoy_sends_gpt_4o_no_reasoning_effort(stack, fakes, api):
    body = ({**CLIENT, "model": "auto-gpt", "reasoning_effort": "high", "verbosity": "low"} if api == "chat"
            else {"model": "auto-gpt", "input": "hi there, thanks!", "reasoning": {"effort": "high"},
                  "text": {"verbosity": "low", "format": {"type": "text"}}})
    with restored(fakes):
        r = httpx.post(stack.url + ("/v1/chat/completions" if api == "chat" else "/v1/responses"), content=orjson.dumps(body),
                       timeout=30, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-router-model"] == "gpt-4o"
        [sent] = wait_requests(fakes, "openai", 1)
        assert sent.status == 200 and "reasoning_effort" not in sent.json and "reasoning" not in sent.json
        assert "verbosity" not in sent.json and sent.json.get("text", {"format": {"type": "text"}}) == {"format": {"type": "text"}}


def test_apisix_runner_sends_a_reasoning_model_a_body_it_takes(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy
    from llm_router.runtime import Runtime

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    with runner_session(Runtime(parse_config(with_o3())), "o3") as em, restored(fakes):
        resp = proxy(em, RouteConf(conf=(("llm-router", "{}"),), conf_id="o3"), post_resp=True,
                     upstreams={name: fakes.url(name) for name in fakes.providers},
                     body=orjson.dumps(CLIENT), headers=[("content-type", "application/json")])
        assert resp.status == 200, resp.body
        [sent] = fakes.requests("openai")
        assert sent.status == 200 and sent.json["max_completion_tokens"] == 64 and "temperature" not in sent.json
