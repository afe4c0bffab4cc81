"""Structured output (response_format json_schema) goes only to models that can follow a schema.

DeepSeek has JSON mode but answers 400 to json_schema; its fake does the same, so a structured-output
request routed there would fail. The capability `json_schema` keeps such requests away from it.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, restored, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import load_config, parse_config
from llm_router.decision import Decision, RouteError
from llm_router.fakes import FakeProviders
from llm_router.request import parse_request
from llm_router.router import Router

SCHEMA = {"type": "json_schema", "json_schema": {"name": "people", "strict": True, "schema": {
    "type": "object", "properties": {"people": {"type": "array", "items": {"type": "string"}}},
    "required": ["people"], "additionalProperties": False}}}
EXTRACT = [{"role": "user", "content": "List the people named here: Ana met Bo."}]


def chat(fmt: dict | None) -> bytes:
    return orjson.dumps({"model": "auto", "messages": EXTRACT, **({"response_format": fmt} if fmt else {})})


def test_the_parser_tells_a_schema_from_json_mode():
    assert parse_request(chat(SCHEMA)).needs.as_capabilities() == frozenset({"json_schema"})
    assert parse_request(chat({"type": "json_object"})).needs.as_capabilities() == frozenset({"json"})
    assert parse_request(chat({"type": "text"})).needs.as_capabilities() == frozenset()
    responses = parse_request(orjson.dumps({"model": "auto", "input": "Ana met Bo.", "text": {"format": {
        "type": "json_schema", "name": "people", "schema": SCHEMA["json_schema"]["schema"]}}}), "responses")
    assert responses.needs.json_schema and responses.needs.as_capabilities() == frozenset({"json_schema"})


def test_a_schema_request_skips_models_without_structured_output_and_json_mode_does_not():
    router = Router(load_config(None))
    _, plain = router.route(chat({"type": "json_object"}))
    _, schema = router.route(chat(SCHEMA))
    assert isinstance(plain, Decision) and isinstance(schema, Decision)
    assert plain.model.id == "deepseek-v2"  # JSON mode: the cheap model serves it
    assert "json_schema" in schema.model.capabilities and schema.model.id != "deepseek-v2"
    assert all("json_schema" in m.capabilities for m in schema.fallbacks)


def test_a_policy_without_structured_output_refuses_naming_the_need():
    cfg = parse_config({"policies": {"default": {"ladder": {t: "deepseek-v2" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                                 "constraints": {"models": ["deepseek-v2"]}}}})
    _, refused = Router(cfg).route(chat(SCHEMA))
    assert isinstance(refused, RouteError) and refused.status == 400
    assert refused.message == "no model in policy 'default' supports json_schema"


# ---- through the real Envoy -------------------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes({})


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-schema", fakes, config_data())


def test_the_deepseek_fake_refuses_a_schema_as_deepseek_does(fakes):
    r = httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                   content=orjson.dumps({"model": "deepseek-flash", "thinking": {"type": "disabled"}, "messages": EXTRACT, "response_format": SCHEMA}),
                   headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "This response_format type is unavailable now"


@pytest.mark.envoy
def test_envoy_routes_a_schema_request_to_a_model_that_follows_it(stack, fakes):
    with restored(fakes):
        plain = httpx.post(stack.url + "/v1/chat/completions", content=chat({"type": "json_object"}), timeout=30,
                           headers={"content-type": "application/json"})
        assert plain.status_code == 200 and plain.headers["x-llm-router-model"] == "deepseek-v2"
        r = httpx.post(stack.url + "/v1/chat/completions", content=chat(SCHEMA), timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        model = r.headers["x-llm-router-model"]
        provider = stack.cfg.models[model].provider
        assert model != "deepseek-v2" and "json_schema" in stack.cfg.models[model].capabilities
        [sent] = wait_requests(fakes, provider, 1)
        assert sent.json["response_format"] == SCHEMA
        assert len(fakes.requests("deepseek")) == 1  # only the JSON-mode request
