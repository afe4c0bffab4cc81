"""The built-in GPT-4o slot calls gpt-4o until OpenAI shuts it down (2027-01-14), then GPT-6.1 Sol, with the rules its 400s ask for.

OpenAI names gpt-6-luna, its cheapest GPT-6, the replacement; the slot is the ladder's top (CRITICAL), so it moves to
GPT-6.1 Sol ($2/$10, cache reads $0.10, writes $2.50, twice the input prices and 1.5x the output price above 272K input
tokens). Sol reasons before it answers, within max_completion_tokens; like OpenAI's other reasoning models it answers 400 to
max_tokens, to a temperature other than 1 and to the other sampling fields, and it takes no reasoning effort none or
minimal. A running process takes the change at midnight UTC of that day.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import orjson
import pytest
import yaml

from fixtures_envoy import fresh_fakes, restored, running_fakes, running_stack, slot_policies, wait_requests  # noqa: F401
from llm_router.config import load_config, parse_config
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from test_tool_ids import check_output

SOL = "gpt-6.1-sol"
SHUTDOWN = datetime(2027, 1, 14, tzinfo=timezone.utc)
BEFORE = datetime(2027, 1, 13, 23, 59, 59, tzinfo=timezone.utc)
QUESTION = "Prove that the square root of two is irrational, then say where the proof needs the fundamental theorem."
CHAT = {"model": "auto", "messages": [{"role": "user", "content": QUESTION}]}


def data() -> dict:
    return slot_policies("gpt-4o", "critical", "only-gpt")


def router_at(when: datetime) -> Router:
    return Router(parse_config(data()).as_of(when))


def sent(body: dict, when: datetime = SHUTDOWN, api: str = "chat") -> dict:
    """The body the built-in GPT-4o slot is sent for a client's body at `when`."""
    router = router_at(when)
    model = router.catalog.models["gpt-4o"]
    req = parse_request(orjson.dumps(body), api)
    return orjson.loads(render_body(req, model.name, dialect=router.catalog.dialect_of(model), model_id=model.id))


def test_the_slot_calls_gpt_4o_until_the_shutdown_day_then_gpt_6_1_sol():
    cfg = parse_config(None)
    before, after = cfg.as_of(BEFORE).models["gpt-4o"], cfg.as_of(SHUTDOWN).models["gpt-4o"]
    assert (before.name, before.input_price, before.output_price, before.context_window) == ("gpt-4o", 5.0, 15.0, 128000)
    assert "logprobs" in before.capabilities and before.long_context_prices is None and before.min_output_tokens is None
    assert (after.name, after.input_price, after.output_price, after.cached_input_price, after.cache_write_price) == (
        SOL, 2.0, 10.0, 0.10, 2.50)
    assert (after.context_window, after.max_output_tokens, after.min_output_tokens) == (1050000, 128000, 4096)
    assert "logprobs" not in after.capabilities and "multiple_choices" not in after.capabilities
    assert after.tier == before.tier == "CRITICAL"
    assert cfg.models["gpt-4o"].next_change(datetime(2026, 12, 1, tzinfo=timezone.utc)) == SHUTDOWN
    assert cfg.models["gpt-4o"].next_change(SHUTDOWN) is None
    assert cfg.as_of(SHUTDOWN).as_of(BEFORE).models["gpt-4o"].name == "gpt-4o"  # any moment, either way


def test_a_dumped_config_holds_the_schedule_as_written(tmp_path):
    later = parse_config(None).as_of(SHUTDOWN)
    path = tmp_path / "dumped.yaml"
    path.write_text(yaml.safe_dump(later.model_dump(mode="json", exclude_none=True)))
    dumped = yaml.safe_load(path.read_text())["models"]["gpt-4o"]
    assert dumped["name"] == "gpt-4o" and dumped["input_price"] == 5.0 and "reasoning_effort" in dumped["body"]["drop"]
    again = load_config(str(path))
    assert again.as_of(BEFORE).models["gpt-4o"].name == "gpt-4o"
    assert again.as_of(SHUTDOWN).models["gpt-4o"] == later.models["gpt-4o"]
    plain = parse_config(later.model_dump())  # every field dumped, null or not: each change still holds only what it sets
    assert plain.as_of(SHUTDOWN).models["gpt-4o"] == later.models["gpt-4o"]
    assert plain.as_of(BEFORE).models["gpt-4o"] == parse_config(None).as_of(BEFORE).models["gpt-4o"]


def test_the_successor_is_sent_what_it_takes():
    body = {**CHAT, "max_tokens": 8000, "temperature": 0.3, "top_p": 0.9, "presence_penalty": 0.2, "frequency_penalty": 0.1,
            "logit_bias": {"50256": -100}, "reasoning_effort": "none", "verbosity": "low"}
    out = sent(body)
    assert out["model"] == SOL and out["max_completion_tokens"] == 8000 and out["reasoning_effort"] == "low"
    for field in ("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty", "logit_bias"):
        assert field not in out, field
    assert out["verbosity"] == "low"  # a GPT-5-and-later field: kept for it
    assert sent({**CHAT, "reasoning_effort": "minimal"})["reasoning_effort"] == "low"
    assert sent({**CHAT, "reasoning_effort": "xhigh"})["reasoning_effort"] == "xhigh"
    responses = sent({"model": "auto", "input": QUESTION, "reasoning": {"effort": "none"}, "temperature": 0.5}, api="responses")
    assert responses["reasoning"] == {"effort": "low"} and "temperature" not in responses
    old = sent(body, BEFORE)  # gpt-4o takes no reasoning fields, and its sampling as sent
    assert old["model"] == "gpt-4o" and old["max_tokens"] == 8000 and old["temperature"] == 0.3
    assert "reasoning_effort" not in old and "verbosity" not in old


def test_after_the_change_requests_it_cannot_serve_go_to_other_models():
    router = router_at(SHUTDOWN)
    critical = router.policies["critical"]
    _, d = router.route(orjson.dumps({**CHAT, "max_tokens": 8000}), policy=critical)
    assert d.model.id == "gpt-4o" and d.model.name == SOL
    for extra in ({"max_tokens": 500}, {"logprobs": True}, {"n": 2}):
        _, d = router.route(orjson.dumps({**CHAT, **extra}), policy=critical)
        assert d.model.id != "gpt-4o" and "gpt-4o" not in [m.id for m in d.fallbacks], extra
    _, refused = router.route(orjson.dumps({**CHAT, "max_tokens": 500}), policy=router.policies["only-gpt"])
    assert refused.status == 400 and "need a limit of at least 4096" in refused.message
    before = router_at(BEFORE)
    for extra in ({"max_tokens": 500}, {"logprobs": True}, {"n": 2}):  # gpt-4o served them
        _, d = before.route(orjson.dumps({**CHAT, **extra}), policy=before.policies["critical"])
        assert d.model.id == "gpt-4o" and d.model.name == "gpt-4o", extra


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def test_after_the_change_chat_requests_with_function_tools_go_to_other_models():
    router = router_at(SHUTDOWN)
    critical = router.policies["critical"]
    for extra in ({"tools": TOOLS}, {"functions": [TOOLS[0]["function"]]}):
        _, d = router.route(orjson.dumps({**CHAT, **extra}), policy=critical)
        assert d.model.id != "gpt-4o" and "gpt-4o" not in [m.id for m in d.fallbacks], extra
    _, d = router.route(orjson.dumps({"model": "auto", "input": QUESTION, "tools": RESPONSES_TOOLS}), path="/v1/responses",
                        policy=critical)
    assert d.model.id == "gpt-4o" and d.model.name == SOL  # it takes them on the Responses API
    _, d = router.route(orjson.dumps(CHAT), policy=critical)
    assert d.model.id == "gpt-4o"  # chat without tools still goes there
    _, refused = router.route(orjson.dumps({**CHAT, "tools": TOOLS}), policy=router.policies["only-gpt"])
    assert refused.status == 400 and "takes function tools on the chat completions API" in refused.message
    assert "/v1/responses" in refused.message
    before = router_at(BEFORE)
    _, d = before.route(orjson.dumps({**CHAT, "tools": TOOLS}), policy=before.policies["critical"])
    assert d.model.id == "gpt-4o" and d.model.name == "gpt-4o"  # gpt-4o took them


def test_after_the_change_requests_with_stop_sequences_go_to_other_models():
    router = router_at(SHUTDOWN)
    critical = router.policies["critical"]
    for stop in ("Observation:", ["\nUser:", "END"]):
        _, d = router.route(orjson.dumps({**CHAT, "stop": stop}), policy=critical)
        assert d.model.id != "gpt-4o" and "gpt-4o" not in [m.id for m in d.fallbacks], stop
    for empty in (None, [], ""):  # nothing to stop at: it goes there, and the field is left out
        _, d = router.route(orjson.dumps({**CHAT, "stop": empty}), policy=critical)
        assert d.model.id == "gpt-4o", empty
        assert "stop" not in sent({**CHAT, "stop": empty})
    _, refused = router.route(orjson.dumps({**CHAT, "stop": "END"}), policy=router.policies["only-gpt"])
    assert refused.status == 400 and "takes stop sequences ('stop')" in refused.message and "leave 'stop' out" in refused.message
    before = router_at(BEFORE)
    _, d = before.route(orjson.dumps({**CHAT, "stop": "END"}), policy=before.policies["critical"])
    assert d.model.id == "gpt-4o" and d.model.name == "gpt-4o"
    assert sent({**CHAT, "stop": "END"}, BEFORE)["stop"] == "END"  # gpt-4o takes them


@pytest.mark.parametrize("field", ["chat_tools", "stop_sequences"])
def test_a_change_may_not_unset_chat_tools_or_stop_sequences(field):
    bad = data()
    bad["models"] = {"gpt-4o": {**parse_config(None).models["gpt-4o"].model_dump(exclude_none=True),
                                "changes": {"2027-01-14": {field: None}}}}
    with pytest.raises(Exception, match=f"{field} may not be null"):
        parse_config(bad)


def test_a_call_above_272k_input_tokens_is_billed_at_the_long_context_prices():
    sol = router_at(SHUTDOWN).catalog.models["gpt-4o"]
    assert sol.cost(272_000, 1000) == pytest.approx((272_000 * 2.0 + 1000 * 10.0) / 1e6)
    assert sol.cost(272_001, 1000) == pytest.approx((272_001 * 4.0 + 1000 * 15.0) / 1e6)
    assert sol.cost(300_000, 1000, cached=200_000, written=50_000) == pytest.approx(
        (50_000 * 4.0 + 200_000 * 0.20 + 50_000 * 5.0 + 1000 * 15.0) / 1e6)
    assert router_at(BEFORE).catalog.models["gpt-4o"].cost(300_000, 1000) == pytest.approx((300_000 * 5.0 + 1000 * 15.0) / 1e6)


def test_check_shows_the_successor_instead_of_warning_of_the_shutdown(tmp_path, capsys):
    out = check_output(tmp_path, {}, capsys)
    assert "calls gpt-4o until 2027-01-14, then gpt-6.1-sol: OpenAI shuts it down on 2027-01-14" in out
    assert "from 2027-01-14: calls gpt-6.1-sol, input_price $2, output_price $10" in out
    assert "above 272000 input tokens x2 input, x1.5 output" in out
    assert not [line for line in out.splitlines() if "warning: calls gpt-4o" in line]
    from llm_router.config import default_data

    slot = {k: v for k, v in default_data()["models"]["gpt-4o"].items() if k != "changes"}
    assert "warning: calls gpt-4o: OpenAI shuts it down on 2027-01-14" in check_output(
        tmp_path, {"models": {"gpt-4o": slot}}, capsys)


def test_check_at_a_moment_explains_the_config_as_in_effect_then(capsys):
    from llm_router.cli import main

    assert main(["check", "--at", "2027-01-14"]) == 0
    after = capsys.readouterr().out
    assert "as in effect at 2027-01-14 00:00 UTC (--at)" in after
    [line] = [line for line in after.splitlines() if line.startswith("  gpt-4o ")]
    assert "$2/$10 per 1M" in line and "ctx  1050000 out 128000" in line
    assert "calls gpt-6.1-sol" in after and "chat_tools: false: chat completions requests with function tools" in after
    assert "stop_sequences: false" in after and "warning: calls gpt-4o" not in after
    assert "$1.5/$7.5 per 1M" in after  # Gemini's price from 2027-01-01
    assert main(["check", "--at", "2027-01-13T23:59"]) == 0
    before = capsys.readouterr().out
    [line] = [line for line in before.splitlines() if line.startswith("  gpt-4o ")]
    assert "$5/$15 per 1M" in line and "stop_sequences: false:" not in before
    assert main(["check", "--at", "2027-01-14T03:00"]) == 0  # a Thursday, in DeepSeek's peak hours
    assert "(peak then: the prices above are peak prices)" in capsys.readouterr().out
    assert main(["check", "--at", "2027-01-01T03:00"]) == 0  # New Year's Day: off-peak
    assert "(off-peak then)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["check", "--at", "next week"])
    assert bad.value.code == 2
    assert "'next week' is neither a day (YYYY-MM-DD) nor a minute (YYYY-MM-DDTHH:MM), UTC" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(data())


def _openai(fakes, body: dict) -> httpx.Response:
    return httpx.post(fakes.url("openai") + "/v1/chat/completions", content=orjson.dumps(body), timeout=30,
                      headers={"authorization": f"Bearer {fakes.keys()['openai']}", "content-type": "application/json"})


def test_the_openai_fake_refuses_as_openai_does_for_gpt_6_1_sol(fakes):
    def error(r: httpx.Response) -> dict:
        assert r.status_code == 400, r.text
        return r.json()["error"]

    assert error(_openai(fakes, {**CHAT, "model": SOL, "max_tokens": 8000}))["message"] == (
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.")
    assert error(_openai(fakes, {**CHAT, "model": SOL, "temperature": 0.3}))["message"] == (
        "Unsupported value: 'temperature' does not support 0.3 with this model. Only the default (1) value is supported.")
    assert error(_openai(fakes, {**CHAT, "model": SOL, "logprobs": True}))["param"] == "logprobs"
    none = error(_openai(fakes, {**CHAT, "model": SOL, "reasoning_effort": "none"}))
    assert none["param"] == "reasoning_effort" and none["message"].startswith(
        "Unsupported value: 'reasoning_effort' does not support 'none' with this model. Supported values are: 'low',")
    assert _openai(fakes, {**CHAT, "model": SOL, "reasoning_effort": "xhigh"}).status_code == 200
    cut = _openai(fakes, {**CHAT, "model": SOL, "max_completion_tokens": 300})  # its reasoning uses the limit up
    assert cut.status_code == 200 and cut.json()["choices"][0]["finish_reason"] == "length"
    assert cut.json()["choices"][0]["message"]["content"] == ""
    assert cut.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 300
    roomy = _openai(fakes, {**CHAT, "model": SOL, "max_completion_tokens": 8000}).json()
    assert roomy["choices"][0]["finish_reason"] == "stop" and roomy["choices"][0]["message"]["content"]
    assert 0 < roomy["usage"]["completion_tokens_details"]["reasoning_tokens"] < roomy["usage"]["completion_tokens"]
    assert error(_openai(fakes, {**CHAT, "model": "gpt-4o", "reasoning_effort": "low"}))["message"] == (
        "Unrecognized request argument supplied: reasoning_effort")  # gpt-4o does not reason
    for stop in ("END", None):  # also when sent empty, as clients report
        assert error(_openai(fakes, {**CHAT, "model": SOL, "stop": stop}))["message"] == (
            "Unsupported parameter: 'stop' is not supported with this model.")
    assert _openai(fakes, {**CHAT, "model": "gpt-4o", "stop": "END"}).status_code == 200
    tools = error(_openai(fakes, {**CHAT, "model": SOL, "tools": TOOLS}))  # at every effort: it has no none
    assert tools["param"] == "reasoning_effort" and tools["message"] == (
        "Function tools with reasoning_effort are not supported for gpt-6.1-sol in /v1/chat/completions. To use function "
        "tools, use /v1/responses or set reasoning_effort to 'none'.")
    with restored(fakes):
        fakes.set_behaviour("openai", models=None)  # any name, for GPT-5.x models outside the catalog
        assert error(_openai(fakes, {**CHAT, "model": "gpt-5.6-sol", "tools": TOOLS}))["param"] == "reasoning_effort"
        assert _openai(fakes, {**CHAT, "model": "gpt-5.6-sol", "tools": TOOLS, "reasoning_effort": "none"}).status_code == 200
        assert _openai(fakes, {**CHAT, "model": "gpt-5.2", "tools": TOOLS}).status_code == 200  # before GPT-5.4
    assert _openai(fakes, {**CHAT, "model": "gpt-4o", "tools": TOOLS}).status_code == 200
    responses = httpx.post(fakes.url("openai") + "/v1/responses", timeout=30, content=orjson.dumps(
        {"model": SOL, "input": QUESTION, "tools": RESPONSES_TOOLS}),
        headers={"authorization": f"Bearer {fakes.keys()['openai']}", "content-type": "application/json"})
    assert responses.status_code == 200, responses.text


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-successor", fakes, data(),
                             routes=(RouteSpec("/critical/", policy="critical"), RouteSpec("/")))


@pytest.fixture
def after_shutdown(stack):
    """The stack's processor as a running one is on 2027-01-14: the change taken; put back afterwards."""
    runtime = stack.processor.runtime
    assert "gpt-4o" in stack.processor.run(runtime.take_changes(SHUTDOWN))
    try:
        yield runtime
    finally:
        stack.processor.run(runtime.take_changes(BEFORE))


def _post(stack, body: dict, path: str = "/critical/v1/chat/completions") -> httpx.Response:
    return httpx.post(stack.url + path, content=orjson.dumps(body), timeout=30, headers={"content-type": "application/json"})


@pytest.mark.envoy
def test_envoy_before_the_day_the_slot_calls_gpt_4o(stack, fresh_fakes):
    stack.processor.run(stack.processor.runtime.take_changes(BEFORE))
    r = _post(stack, {**CHAT, "max_tokens": 500, "temperature": 0.3, "reasoning_effort": "low"})
    assert r.status_code == 200, r.text
    [call] = wait_requests(fresh_fakes, "openai", 1)
    assert call.status == 200 and call.json["model"] == "gpt-4o" and call.json["max_tokens"] == 500
    assert "reasoning_effort" not in call.json


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_from_the_day_the_slot_calls_gpt_6_1_sol_and_bills_its_cache_writes(stack, fresh_fakes, after_shutdown, stream):
    assert after_shutdown.catalog.models["gpt-4o"].name == SOL
    fresh_fakes.set_behaviour("openai", cached_share=0.5, cache_write_share=0.5)
    body = {**CHAT, "max_tokens": 8000, "temperature": 0.3, "top_p": 0.9, "reasoning_effort": "none", "stream": stream}
    r = _post(stack, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "gpt-4o"
    [call] = wait_requests(fresh_fakes, "openai", 1)
    assert call.status == 200 and call.json["model"] == SOL
    assert call.json["max_completion_tokens"] == 8000 and call.json["reasoning_effort"] == "low"
    assert not {"max_tokens", "temperature", "top_p"} & set(call.json)
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.cached_input_tokens > 0 and usage.cache_write_tokens > 0
    sol = after_shutdown.catalog.models["gpt-4o"]
    fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    assert usage.cost(sol) == pytest.approx((fresh * 2.0 + usage.cached_input_tokens * 0.10 + usage.cache_write_tokens * 2.50
                                             + usage.output_tokens * 10.0) / 1e6)


@pytest.mark.envoy
def test_envoy_from_the_day_a_small_output_limit_goes_to_a_model_that_answers_within_it(stack, fresh_fakes, after_shutdown):
    r = _post(stack, {**CHAT, "max_tokens": 500})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] != "gpt-4o" and not fresh_fakes.requests("openai")
    assert r.json()["choices"][0]["message"]["content"] and r.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.envoy
def test_envoy_from_the_day_chat_requests_with_tools_or_stop_go_to_a_model_that_takes_them(stack, fresh_fakes, after_shutdown):
    r = _post(stack, {**CHAT, "tools": TOOLS})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] != "gpt-4o" and not fresh_fakes.requests("openai")
    r = _post(stack, {**CHAT, "stop": ["Observation:"]})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] != "gpt-4o" and not fresh_fakes.requests("openai")
    r = _post(stack, {"model": "auto", "input": QUESTION, "tools": RESPONSES_TOOLS}, path="/critical/v1/responses")
    assert r.status_code == 200, r.text
    [call] = wait_requests(fresh_fakes, "openai", 1)
    assert call.status == 200 and call.json["model"] == SOL and call.json["tools"] == RESPONSES_TOOLS


def test_check_notes_an_openai_reasoning_model_without_the_rules_its_400s_ask_for(tmp_path, capsys):
    bare = {"provider": "openai", "name": "gpt-5.6-sol", "input_price": 4.0, "output_price": 20.0, "context_window": 1050000}
    out = check_output(tmp_path, {"models": {"sol": bare}}, capsys)
    assert "note: named like an OpenAI reasoning model (GPT-5 and later), which answers 400 to max_tokens" in out
    assert "add body: {rename: {max_tokens: max_completion_tokens}}" in out
    assert "add body: {drop: [temperature, top_p, presence_penalty, frequency_penalty, logit_bias]}" in out
    assert "note: named like an OpenAI GPT-5.4-or-later model, which answers 400 to function tools on the chat completions" in out
    assert "add chat_tools: false" in out
    assert "GPT-5.4-or-later" not in check_output(tmp_path, {"models": {"sol": {**bare, "chat_tools": False}}}, capsys)
    assert "GPT-5.4-or-later" not in check_output(tmp_path, {"models": {"old": {**bare, "name": "gpt-5.2"}}}, capsys)
    ruled = {**bare, "body": {"rename": {"max_tokens": "max_completion_tokens"}, "drop": ["temperature", "top_p"]}}
    assert "OpenAI reasoning model" not in check_output(tmp_path, {"models": {"sol": ruled}}, capsys)
    from llm_router.config import default_data

    openai = default_data()["providers"]["openai"]  # the provider's own rules count for each of its models
    provider = {**openai, "body": {**openai["body"], "rename": {"max_tokens": "max_completion_tokens"},
                                   "drop": ["temperature", "top_p"]}}
    assert "OpenAI reasoning model" not in check_output(tmp_path, {"providers": {"openai": provider},
                                                                   "models": {"sol": bare}}, capsys)
    assert "OpenAI reasoning model" not in check_output(tmp_path, {}, capsys)  # the defaults call gpt-4o until its day
