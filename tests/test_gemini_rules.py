"""The built-in Gemini slot calls Gemini 3.8 Flash, at Google's prices, with the rules its 400s ask for.

Google removed Gemini 1.5 Pro from its API (404 NOT_FOUND) and retires gemini-2.5-pro on 2026-12-01, naming
gemini-3.8-flash its replacement. 3.8 Flash thinks at low, medium or high only: Gemini's OpenAI-compatible endpoint answers
400 to reasoning_effort minimal ("Invalid reasoning_effort: minimal. Valid values are: high, low, medium, none") and to none
("Thinking level is unsupported: THINKING_LEVEL_MINIMAL"). Like every Gemini 3 model it answers 400 to tool calls without its
thought signature. Its half price ends on 2026-12-31: the slot carries the change, and a running process takes it at
midnight UTC.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import orjson
import pytest

from fixtures_envoy import fresh_fakes, running_fakes, running_stack, slot_policies, wait_requests  # noqa: F401
from llm_router.config import default_data, parse_config, utc_now
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from test_tool_ids import TOOLS, check_output, conversation, refusal

FLASH = "gemini-3.8-flash"
QUESTION = "Compare three ways to shard a time-series database and say which suits a write-heavy IoT workload."
CHAT = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}


def data() -> dict:
    return slot_policies("gemini-1.5-pro", "gemini", "only-gemini")


def sent(body: dict, api: str = "chat") -> dict:
    """The body the built-in Gemini slot is sent for a client's body."""
    router = Router(parse_config(data()))
    model = router.catalog.models["gemini-1.5-pro"]
    assert model.name == FLASH
    req = parse_request(orjson.dumps(body), api)
    return orjson.loads(render_body(req, model.name, dialect=router.catalog.dialect_of(model), model_id=model.id))


def test_each_effort_goes_as_a_level_gemini_3_8_flash_takes():
    for asked, expected in (("minimal", "low"), ("none", "low"), ("xhigh", "high"), ("low", "low"), ("medium", "medium"),
                            ("high", "high")):
        assert sent({**CHAT, "reasoning_effort": asked})["reasoning_effort"] == expected, asked
    assert "reasoning_effort" not in sent(CHAT)  # nothing asked: its default (medium), as before


def test_a_responses_effort_is_mapped_for_a_model_that_asks_it():
    data = {"models": {"o-like": {"provider": "openai", "name": "o-like", "input_price": 1.0, "output_price": 4.0,
                                  "context_window": 200000, "body": {"reasoning_efforts": {"minimal": "low"}}}}}
    router = Router(parse_config(data))
    model = router.catalog.models["o-like"]
    body = {"model": "auto", "input": QUESTION, "reasoning": {"effort": "minimal", "summary": "auto"}}
    out = orjson.loads(render_body(parse_request(orjson.dumps(body), "responses"), model.name,
                                   dialect=router.catalog.dialect_of(model), model_id=model.id))
    assert out["reasoning"] == {"effort": "low", "summary": "auto"}


def at(text: str) -> datetime:
    """A moment in UTC from an ISO date or date and time."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_the_slot_bills_google_prices_and_takes_the_change_on_its_day():
    cfg = parse_config(None)
    now = cfg.as_of(at("2026-12-31T23:59")).models["gemini-1.5-pro"]
    assert (now.input_price, now.output_price, now.cached_input_price) == (0.75, 3.75, 0.075)
    later = cfg.as_of(at("2027-01-01"))
    assert (later.models["gemini-1.5-pro"].input_price, later.models["gemini-1.5-pro"].output_price,
            later.models["gemini-1.5-pro"].cached_input_price) == (1.5, 7.5, 0.15)
    assert later.as_of(at("2026-12-31")).models["gemini-1.5-pro"].output_price == 3.75  # any moment, either way
    assert later.models["gpt-4o"] is cfg.models["gpt-4o"]  # models without changes stay as they are
    assert cfg.models["gemini-1.5-pro"].next_change(at("2026-11-30")) == at("2027-01-01")
    assert cfg.models["gemini-1.5-pro"].next_change(at("2027-01-01")) is None
    today = cfg.models["gemini-1.5-pro"]  # a config holds the prices of the moment it is loaded
    assert today.output_price == (7.5 if utc_now() >= at("2027-01-01") else 3.75)


def test_bad_efforts_are_refused_naming_the_field():
    slot = default_data()["models"]["gemini-1.5-pro"]
    assert "reasoning_efforts" in refusal({"models": {"g": {**slot, "body": {"reasoning_efforts": {"minimal": ""}}}}})
    assert "reasoning_efforts" in refusal({"models": {"g": {**slot, "body": {"reasoning_efforts": ["low"]}}}})
    assert "models.g.min_output_tokens" in refusal({"models": {"g": {**slot, "min_output_tokens": 0}}})


def test_check_describes_the_slot_and_notes_a_gemini_without_the_rules(tmp_path, capsys):
    out = check_output(tmp_path, {}, capsys)
    assert "reasoning effort sent as: minimal as low, none as low, xhigh as high" in out
    assert "from 2027-01-01: input_price $1.5, output_price $7.5, cached_input_price $0.15" in out
    assert "warning: calls gemini" not in out and "note: named like a Gemini" not in out
    slot = {k: v for k, v in default_data()["models"]["gemini-1.5-pro"].items() if k != "body"}
    out = check_output(tmp_path, {"models": {"gemini-1.5-pro": slot}}, capsys)
    assert "add body: {reasoning_efforts: {minimal: low, none: low}}" in out
    assert "add body: {tool_call_signatures: fill}" in out
    assert "add min_output_tokens: 4096" in check_output(
        tmp_path, {"models": {"gemini-1.5-pro": {k: v for k, v in slot.items() if k != "min_output_tokens"}}}, capsys)
    old = check_output(tmp_path, {"models": {"gemini-1.5-pro": {**slot, "name": "gemini-2.5-pro"}}}, capsys)
    assert "Google retires it on 2026-12-01: its calls then go to gemini-3.8-flash" in old


def test_a_small_output_limit_goes_to_a_model_that_does_not_think_first():
    router = Router(parse_config(data()))
    for limit, expected in ((None, "gemini-1.5-pro"), (4096, "gemini-1.5-pro"), (16000, "gemini-1.5-pro")):
        body = orjson.dumps({**CHAT, **({"max_tokens": limit} if limit else {})})
        _, d = router.route(body, policy=router.policies["gemini"])
        assert d.model.id == expected, limit
    _, small = router.route(orjson.dumps({**CHAT, "max_completion_tokens": 500}), policy=router.policies["gemini"])
    assert small.model.id != "gemini-1.5-pro" and "gemini-1.5-pro" not in [m.id for m in small.fallbacks]
    _, refused = router.route(orjson.dumps({**CHAT, "max_tokens": 500}), policy=router.policies["only-gemini"])
    assert refused.status == 400 and refused.message == (
        "request limits the answer to 500 output tokens (max_tokens); the models of policy 'only-gemini' that serve it think "
        "before they answer and need a limit of at least 4096")


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(data())


def _google(fakes, body: dict) -> httpx.Response:
    return httpx.post(fakes.url("google") + "/v1beta/openai/chat/completions", content=orjson.dumps(body), timeout=30,
                      headers={"x-goog-api-key": fakes.keys()["google"], "content-type": "application/json"})


def test_the_gemini_fake_refuses_as_gemini_does(fakes):
    def error(r: httpx.Response) -> dict:
        [item] = r.json()
        return item["error"]

    minimal = _google(fakes, {**CHAT, "model": FLASH, "reasoning_effort": "minimal"})
    assert minimal.status_code == 400 and error(minimal) == {
        "code": 400, "message": "Invalid reasoning_effort: minimal. Valid values are: high, low, medium, none",
        "status": "INVALID_ARGUMENT"}
    none = _google(fakes, {**CHAT, "model": FLASH, "reasoning_effort": "none"})
    assert none.status_code == 400 and error(none)["message"] == "Thinking level is unsupported: THINKING_LEVEL_MINIMAL"
    assert _google(fakes, {**CHAT, "model": FLASH, "reasoning_effort": "low"}).status_code == 200
    gone = _google(fakes, {**CHAT, "model": "gemini-1.5-pro"})
    assert gone.status_code == 404 and error(gone)["status"] == "NOT_FOUND"
    assert error(gone)["message"].startswith("models/gemini-1.5-pro is not found for API version v1beta")
    cut = _google(fakes, {**CHAT, "model": FLASH, "max_tokens": 500})  # its thoughts use the limit up
    assert cut.status_code == 200 and cut.json()["choices"][0]["finish_reason"] == "length"
    assert cut.json()["choices"][0]["message"]["content"] == "" and cut.json()["usage"]["completion_tokens"] == 500
    roomy = _google(fakes, {**CHAT, "model": FLASH, "max_tokens": 4096})
    assert roomy.json()["choices"][0]["finish_reason"] == "stop" and roomy.json()["choices"][0]["message"]["content"]
    unsigned = _google(fakes, {"model": FLASH, "messages": conversation(), "tools": TOOLS})
    assert unsigned.status_code == 400 and "missing a thought_signature" in error(unsigned)["message"]


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-gemini", fakes, data(),
                             routes=(RouteSpec("/gemini/", policy="gemini"), RouteSpec("/only-gemini/", policy="only-gemini"),
                                     RouteSpec("/")))


@pytest.mark.envoy
@pytest.mark.parametrize("effort", ["minimal", "none"])
def test_envoy_a_lowest_effort_turn_is_answered_by_gemini_3_8_flash(stack, fresh_fakes, effort):
    r = httpx.post(stack.url + "/gemini/v1/chat/completions", content=orjson.dumps({**CHAT, "reasoning_effort": effort}),
                   timeout=30, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "gemini-1.5-pro"
    [call] = wait_requests(fresh_fakes, "google", 1)
    assert call.status == 200 and call.json["model"] == FLASH and call.json["reasoning_effort"] == "low"


@pytest.mark.envoy
def test_envoy_a_small_output_limit_is_answered_by_a_model_that_answers_within_it(stack, fresh_fakes):
    body = orjson.dumps({**CHAT, "max_tokens": 500})
    r = httpx.post(stack.url + "/gemini/v1/chat/completions", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] != "gemini-1.5-pro" and not fresh_fakes.requests("google")
    assert r.json()["choices"][0]["message"]["content"] and r.json()["choices"][0]["finish_reason"] == "stop"
    refused = httpx.post(stack.url + "/only-gemini/v1/chat/completions", content=body, timeout=30,
                         headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "need a limit of at least 4096" in refused.json()["error"]["message"]
    assert not fresh_fakes.requests("google")


@pytest.mark.envoy
def test_envoy_a_tool_loop_begun_elsewhere_is_answered_by_the_gemini_slot(stack, fresh_fakes):
    r = httpx.post(stack.url + "/gemini/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": conversation(), "tools": TOOLS}))
    assert r.status_code == 200, r.text
    [call] = wait_requests(fresh_fakes, "google", 1)
    assert call.status == 200 and call.json["model"] == FLASH
    first = call.json["messages"][1]["tool_calls"][0]
    assert first["extra_content"]["google"]["thought_signature"]
