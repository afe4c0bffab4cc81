"""Answer options a model must honour: several choices (`n` > 1) and token log-probabilities.

Anthropic's OpenAI-compatible endpoint answers 400 to n != 1 and silently ignores logprobs and
response_format; its fake does the same. Requests asking for them go only to models whose catalog
entry lists `multiple_choices` / `logprobs` (/ `json`), and `n` answers are priced as n outputs.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, restored, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import default_data, load_config, parse_config
from llm_router.decision import Decision, RouteError
from llm_router.fakes import FakeProviders
from llm_router.request import RequestError, parse_request
from llm_router.router import Router

SIMPLE = [{"role": "user", "content": "Suggest a name for a grey cat."}]
HARD = [{"role": "user", "content": "Explain the trade-offs between optimistic and pessimistic locking in a booking system."}]


def chat(messages=SIMPLE, **extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": messages, **extra})


def test_the_parser_reads_n_and_logprobs():
    req = parse_request(chat(n=3))
    assert req.choices == 3 and req.needs.as_capabilities() == frozenset({"multiple_choices"})
    assert parse_request(chat(n=1)).needs.as_capabilities() == frozenset()
    assert parse_request(chat(logprobs=True)).needs.as_capabilities() == frozenset({"logprobs"})
    assert parse_request(chat(logprobs=True, top_logprobs=3)).needs.logprobs
    assert not parse_request(chat(logprobs=False)).needs.logprobs
    for extra in ({"top_logprobs": 3}, {"include": ["message.output_text.logprobs"]}):
        assert parse_request(orjson.dumps({"model": "auto", "input": "hi", **extra}), "responses").needs.logprobs, extra
    assert not parse_request(orjson.dumps({"model": "auto", "input": "hi", "top_logprobs": 0}), "responses").needs.logprobs
    with pytest.raises(RequestError) as err:
        parse_request(orjson.dumps({"model": "auto", "input": "hi", "include": "logprobs"}), "responses")
    assert err.value.field == "include"
    legacy = parse_request(orjson.dumps({"model": "auto", "prompt": "Once upon", "logprobs": 2, "n": 2}), "completions")
    assert legacy.needs.as_capabilities() == frozenset({"logprobs", "multiple_choices"}) and legacy.choices == 2


@pytest.mark.parametrize("extra, field", [({"n": 0}, "n"), ({"n": "2"}, "n"), ({"n": True}, "n"), ({"n": 10**12}, "n"),
                                          ({"logprobs": "yes"}, "logprobs")])
def test_bad_answer_options_name_the_field(extra, field):
    with pytest.raises(RequestError) as err:
        parse_request(chat(**extra))
    assert err.value.field == field and field in err.value.message


def test_bad_legacy_logprobs_names_the_field():
    with pytest.raises(RequestError) as err:
        parse_request(orjson.dumps({"model": "auto", "prompt": "x", "logprobs": -1}), "completions")
    assert err.value.field == "logprobs" and "non-negative integer" in err.value.message


def test_requests_go_only_to_models_that_honour_them():
    router = Router(load_config(None))
    _, plain = router.route(chat())
    _, several = router.route(chat(n=2))
    _, probs = router.route(chat(logprobs=True))
    assert isinstance(plain, Decision) and isinstance(several, Decision) and isinstance(probs, Decision)
    assert plain.model.id == "deepseek-v2"
    assert probs.model.id == "deepseek-v2"  # DeepSeek returns logprobs: the cheap model still serves it
    assert "multiple_choices" in several.model.capabilities and several.model.id != "deepseek-v2"
    assert all("multiple_choices" in m.capabilities for m in several.fallbacks)
    # Every one of the n answers is billed as output.
    assert several.expected_output_tokens == 2 * plain.expected_output_tokens
    assert several.estimated_cost == pytest.approx(several.model.cost(several.input_tokens, several.expected_output_tokens))


def test_hard_prompts_asking_for_json_or_logprobs_skip_claude_on_the_chat_api():
    router = Router(load_config(None))
    _, hard = router.route(chat(HARD))
    assert isinstance(hard, Decision) and hard.model.id == "claude-3.5-sonnet"  # what the ladder gives such a prompt
    for extra in ({"logprobs": True}, {"response_format": {"type": "json_object"}}, {"n": 2}):
        _, d = router.route(chat(HARD, **extra))
        assert isinstance(d, Decision) and d.model.id != "claude-3.5-sonnet", extra
        assert "claude-3.5-sonnet" not in [m.id for m in d.fallbacks], extra


def test_a_policy_that_cannot_honour_them_refuses_naming_the_need():
    claude_only = {"ladder": {t: "claude-3.5-sonnet" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                   "constraints": {"models": ["claude-3.5-sonnet"]}}
    router = Router(parse_config({"policies": {"default": claude_only}}))
    _, refused = router.route(chat(n=2))
    assert isinstance(refused, RouteError) and refused.status == 400
    assert refused.message == "no model in policy 'default' supports multiple_choices"
    _, refused = router.route(chat(logprobs=True))
    assert isinstance(refused, RouteError) and refused.message == "no model in policy 'default' supports logprobs"


def test_a_user_catalog_can_grant_the_capabilities():
    claude = default_data()["models"]["claude-3.5-sonnet"]
    claude = {**claude, "capabilities": [*claude["capabilities"], "multiple_choices"]}
    cfg = parse_config({"models": {"claude-3.5-sonnet": claude},
                        "policies": {"default": {"ladder": {t: "claude-3.5-sonnet" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                                 "constraints": {"models": ["claude-3.5-sonnet"]}}}})
    _, d = Router(cfg).route(chat(n=2))
    assert isinstance(d, Decision) and d.model.id == "claude-3.5-sonnet"


# ---- the fakes answer as the providers do ------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes({})


def _post(fakes: FakeProviders, provider: str, body: dict) -> httpx.Response:
    key = fakes.keys()[provider]
    auth = {"anthropic": {"x-api-key": key}, "google": {"x-goog-api-key": key}}.get(provider, {"authorization": f"Bearer {key}"})
    return httpx.post(fakes.url(provider) + load_config(None).providers[provider].paths["chat"], content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", **auth})


def test_the_anthropic_fake_takes_only_one_choice_and_ignores_logprobs(fakes):
    with restored(fakes):
        r = _post(fakes, "anthropic", {"model": "claude-sonnet-4-6", "messages": SIMPLE, "n": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        r = _post(fakes, "anthropic", {"model": "claude-sonnet-4-6", "messages": SIMPLE, "logprobs": True})
        assert r.status_code == 200 and r.json()["choices"][0]["logprobs"] is None


def test_an_openai_fake_answers_n_choices_and_bills_them(fakes):
    with restored(fakes):
        one = _post(fakes, "openai", {"model": "gpt-4o", "messages": SIMPLE}).json()
        two = _post(fakes, "openai", {"model": "gpt-4o", "messages": SIMPLE, "n": 2, "logprobs": True}).json()
        assert [c["index"] for c in two["choices"]] == [0, 1]
        assert all(c["logprobs"]["content"] for c in two["choices"])
        assert two["usage"]["completion_tokens"] == 2 * one["usage"]["completion_tokens"]


# ---- through the real Envoy -------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-answer-options", fakes, config_data())


@pytest.mark.envoy
def test_envoy_sends_n_choices_to_a_model_that_returns_them(stack, fakes):
    with restored(fakes):
        r = httpx.post(stack.url + "/v1/chat/completions", content=chat(HARD, n=2), timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        model = r.headers["x-llm-router-model"]
        assert "multiple_choices" in stack.cfg.models[model].capabilities
        assert len(r.json()["choices"]) == 2
        [sent] = wait_requests(fakes, stack.cfg.models[model].provider, 1)
        assert sent.json["n"] == 2
        assert fakes.requests("anthropic") == []


@pytest.mark.envoy
def test_envoy_refuses_what_no_model_in_the_policy_honours(tmp_path_factory, fakes):
    data = config_data()
    data["policies"] = {"default": {"ladder": {t: "claude-3.5-sonnet" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                    "constraints": {"models": ["claude-3.5-sonnet"]}}}
    for s in running_stack(tmp_path_factory, "envoy-answer-options-claude", fakes, data):
        with restored(fakes):
            r = httpx.post(s.url + "/v1/chat/completions", content=chat(n=2), timeout=30, headers={"content-type": "application/json"})
            assert r.status_code == 400
            assert r.json()["error"]["message"] == "no model in policy 'default' supports multiple_choices"
            assert fakes.requests("anthropic") == []


# ---- through the APISIX runner ------------------------------------------------------------------

def test_apisix_runner_sends_n_choices_where_they_are_returned(fakes, monkeypatch):
    from apisix_emulator import RouteConf, runner_session
    from llm_router.gateways.apisix.emulator import proxy
    from llm_router.runtime import Runtime

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    runtime = Runtime(parse_config(config_data()))
    with runner_session(runtime, "choices") as em, restored(fakes):
        resp = proxy(em, RouteConf(conf=(("llm-router", "{}"),), conf_id="choices"), post_resp=True,
                     upstreams={name: fakes.url(name) for name in fakes.providers},
                     body=chat(HARD, n=2), headers=[("content-type", "application/json")])
        assert resp.status == 200, resp.body
        assert len(orjson.loads(resp.body)["choices"]) == 2
        assert fakes.requests("anthropic") == []
        served = [name for name in fakes.providers if fakes.requests(name)]
        assert served and all(any("multiple_choices" in m.capabilities for m in runtime.config.models.values()
                                  if m.provider == name) for name in served)
