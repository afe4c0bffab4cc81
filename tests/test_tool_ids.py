"""Tool loops across routed models: a conversation whose tool calls one provider made can go on at another.

Mistral answers 400 ("Tool call id was call_... but must be a-z, A-Z, 0-9, with a length of 9.") to the
ids OpenAI, DeepSeek or Gemini make; its fake does the same. Its dialect (`tool_call_ids: alnum9`) has
the router rewrite them, consistently in the assistant's calls and in the tool results.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import ConfigError, load_config, parse_config
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.message_rules import (BRIDGE, UNSIGNED_TOOL_CALL, alnum9, block_ids_as, bridged_tool_results, max40,
                                      signed_tool_calls, tool_ids_as, without_empty_tool_calls, word_id)
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from llm_router.runtime import Exchange, Runtime

ID = re.compile(r"[A-Za-z0-9]{9}")


def conversation(first: str = "call_Xq3bL9sVn2KpA7", second: str = "toolu_01A09q90qw90lq917835") -> list[dict]:
    """A chat tool loop with two calls made by other providers (OpenAI-style and Anthropic-style ids)."""
    return [
        {"role": "user", "content": "What is the weather in Paris and in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": first, "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": second, "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": first, "content": "18 C, sunny"},
        {"role": "tool", "tool_call_id": second, "content": "4 C, rain"},
    ]


TOOLS = [{"type": "function", "function": {"name": "weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def routed(stack, fakes, route: str, model: str, provider: str, messages: list[dict]) -> list[dict]:
    """The messages a chat with TOOLS reached `provider`'s fake with, sent through real Envoy on a route pinned to `model`
    (and answered there)."""
    r = httpx.post(stack.url + f"/{route}/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": messages, "tools": TOOLS}))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == model
    [sent] = wait_requests(fakes, provider, 1)
    assert sent.status == 200
    return sent.json["messages"]


def to_fake(fakes, provider: str, model: str, messages: list[dict]) -> httpx.Response:
    """A chat call with TOOLS straight to one provider's fake, with its key."""
    key = fakes.keys()[provider]
    auth = {"x-goog-api-key": key} if provider == "google" else {"authorization": f"Bearer {key}"}
    path = "/v1beta/openai/chat/completions" if provider == "google" else "/v1/chat/completions"
    return httpx.post(fakes.url(provider) + path, timeout=30, headers={**auth, "content-type": "application/json"},
                      content=orjson.dumps({"model": model, "messages": messages, "tools": TOOLS}))


def test_ids_become_nine_letters_or_digits_and_calls_still_pair_with_results():
    sent = tool_ids_as(conversation(), alnum9)
    calls = [c["id"] for c in sent[1]["tool_calls"]]
    assert all(ID.fullmatch(i) for i in calls) and len(set(calls)) == 2
    assert [m["tool_call_id"] for m in sent[2:]] == calls
    assert tool_ids_as(conversation(), alnum9) == sent  # the same ids map alike on every turn
    assert alnum9("aB3xK9mP2") == "aB3xK9mP2"  # already Mistral's form: kept
    assert alnum9("call_1") != alnum9("call_2")
    # the rest of each message is untouched; odd shapes pass as they came
    assert sent[1]["tool_calls"][0]["function"] == conversation()[1]["tool_calls"][0]["function"]
    odd = [{"role": "assistant", "tool_calls": [7, {"id": 5}]}, {"role": "tool", "tool_call_id": None}, "x"]
    assert tool_ids_as(odd, alnum9) == odd and tool_ids_as("not a list", alnum9) == "not a list"


def test_only_mistral_gets_rewritten_ids(monkeypatch):
    cfg = load_config(None)
    router = Router(cfg)
    req = parse_request(orjson.dumps({"model": "auto", "messages": conversation(), "tools": TOOLS}), "chat")
    to_mistral = orjson.loads(render_body(req, "mistral-large-latest", dialect=router.catalog.providers["mistral"].body))
    assert all(ID.fullmatch(c["id"]) for c in to_mistral["messages"][1]["tool_calls"])
    for provider in ("openai", "google", "deepseek", "together"):  # (OpenAI: these ids are short enough)
        sent = orjson.loads(render_body(req, "m", dialect=router.catalog.providers[provider].body))
        assert sent["messages"] == conversation(), provider
    # through the runtime, in a policy that only has Mistral: the planned call carries the rewritten ids
    for name in ("OPENAI", "ANTHROPIC", "GEMINI", "TOGETHER", "MISTRAL", "DEEPSEEK"):
        monkeypatch.setenv(f"{name}_API_KEY", f"test-{name.lower()}")
    call = Runtime(parse_config(pinned()), telemetry=False).decide(
        orjson.dumps({"model": "auto", "messages": conversation(), "tools": TOOLS}), path="/v1/chat/completions",
        ex=Exchange("t", "r", 0.0), route_conf='{"policy": "mistral"}')
    assert call.model.id == "mistral-large" and orjson.loads(call.body)["messages"] == to_mistral["messages"]


def test_the_setting_is_checked():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mistral": {"body": {"tool_call_ids": "short"}}}})
    assert "tool_call_ids" in str(err.value)


# ---- the fakes, and through the real Envoy ------------------------------------------------------

GEMINI_3 = {"provider": "google", "name": "gemini-3.1-pro-preview", "input_price": 2.0, "output_price": 12.0,
            "context_window": 1048576, "capabilities": ["tools", "vision", "json", "code", "streaming"], "tier": "HIGH",
            "quality": 0.95, "body": {"tool_call_signatures": "fill"}}
# DeepSeek's thinking models (tests/test_deepseek_reasoning.py): each assistant message must carry its reasoning_content
DEEPSEEK_THINKING = {"provider": "deepseek", "input_price": 0.28, "output_price": 0.42, "context_window": 131072,
                     "capabilities": ["tools", "json", "code", "streaming"], "tier": "HIGH", "quality": 0.9,
                     "body": {"reasoning_content": "fill", "named_tool_choice": "auto"}}
POLICIES = ("mistral", "openai", "claude", "gemini", "reasoner", "v4")


def pinned() -> dict:
    """The test config plus Gemini 3 and two DeepSeek thinking models, and a policy per model under test that sends
    everything to it."""
    data = config_data()
    reasoner = {**DEEPSEEK_THINKING, "name": "deepseek-reasoner", "body": {**DEEPSEEK_THINKING["body"], "successive_roles": "merge"}}
    data["models"] = {"gemini-3": GEMINI_3, "deepseek-reasoner": reasoner,
                      "deepseek-v4-pro": {**DEEPSEEK_THINKING, "name": "deepseek-v4-pro"}}
    for name, model in (("mistral", "mistral-large"), ("openai", "gpt-4o"), ("claude", "claude-3.5-sonnet"), ("gemini", "gemini-3"),
                        ("reasoner", "deepseek-reasoner"), ("v4", "deepseek-v4-pro")):
        data["policies"][name] = {"classifier": "rules", "strategy": "ladder", "explain": True, "constraints": {"models": [model]},
                                  "ladder": {t: model for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}}
    return data


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(pinned())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-tool-ids", fakes, pinned(),
                             routes=(*(RouteSpec(f"/{p}/", policy=p) for p in POLICIES),
                                     RouteSpec("/")))


def test_the_mistral_fake_refuses_other_providers_ids_as_mistral_does(fakes):
    def post(messages: list[dict]) -> httpx.Response:
        return to_fake(fakes, "mistral", "mistral-large-latest", messages)

    refused = post(conversation())
    assert refused.status_code == 400 and refused.json() == {
        "object": "error", "message": "Tool call id was call_Xq3bL9sVn2KpA7 but must be a-z, A-Z, 0-9, with a length of 9.",
        "type": "invalid_function_call", "param": None, "code": "3280"}
    assert post(conversation("aB3xK9mP2", "Zz9Yy8Xx7")).status_code == 200


@pytest.mark.envoy
def test_envoy_a_tool_loop_begun_elsewhere_is_answered_by_mistral(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "mistral", "mistral-large", "mistral", conversation())
    calls = [c["id"] for c in sent[1]["tool_calls"]]
    assert all(ID.fullmatch(i) for i in calls)
    assert [m["tool_call_id"] for m in sent[2:]] == calls


DEEPSEEK_IDS = ("call_0_112b017f-5e87-4f73-968f-bcfca48a830d", "call_1_448e4341-ff36-481a-b1a7-cce7e834c0c1")  # 43 each


def test_openai_gets_ids_of_at_most_40_characters():
    assert max40("call_abc") == "call_abc" and max40("x" * 40) == "x" * 40
    sent = tool_ids_as(conversation(*DEEPSEEK_IDS), max40)
    calls = [c["id"] for c in sent[1]["tool_calls"]]
    assert all(len(i) <= 40 and i.startswith("call_") for i in calls) and len(set(calls)) == 2
    assert [m["tool_call_id"] for m in sent[2:]] == calls
    router = Router(load_config(None))
    req = parse_request(orjson.dumps({"model": "auto", "messages": conversation(*DEEPSEEK_IDS), "tools": TOOLS}), "chat")
    to_openai = orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.models["gpt-4o"].body))
    assert to_openai["messages"] == sent
    to_deepseek = orjson.loads(render_body(req, "deepseek-flash", dialect=router.catalog.providers["deepseek"].body))
    assert to_deepseek["messages"] == conversation(*DEEPSEEK_IDS)  # its own ids: as they came


def test_the_openai_fake_refuses_ids_over_40_characters_as_openai_does(fakes):
    r = to_fake(fakes, "openai", "gpt-4o", conversation(*DEEPSEEK_IDS))
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "Invalid 'messages[1].tool_calls[0].id': string too long. Expected a string with maximum length 40, but got a "
                   "string with length 43 instead.", "type": "invalid_request_error", "param": "messages[1].tool_calls[0].id",
        "code": "string_above_max_length"}


@pytest.mark.envoy
def test_envoy_a_tool_loop_begun_on_deepseek_is_answered_by_gpt_4o(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "openai", "gpt-4o", "openai", conversation(*DEEPSEEK_IDS))
    calls = [c["id"] for c in sent[1]["tool_calls"]]
    assert all(len(i) <= 40 for i in calls)
    assert [m["tool_call_id"] for m in sent[2:]] == calls


def answered_with_empty_calls() -> list[dict]:
    """A chat whose earlier answer came with `tool_calls: []` (vLLM-served models, OpenAI's parse helper), sent back."""
    return [{"role": "user", "content": "What is the capital of Norway?"},
            {"role": "assistant", "content": "Oslo.", "tool_calls": []},
            {"role": "user", "content": "And its population? Use the tool if you need it."}]


def test_openai_gets_no_empty_tool_call_arrays():
    assert without_empty_tool_calls(answered_with_empty_calls())[1] == {"role": "assistant", "content": "Oslo."}
    kept = [{"role": "assistant", "tool_calls": [{"id": "c"}]}, {"role": "assistant", "tool_calls": None}, "x", {"tool_calls": 3}]
    assert without_empty_tool_calls(kept) == kept and without_empty_tool_calls("x") == "x"
    router = Router(load_config(None))
    req = parse_request(orjson.dumps({"model": "auto", "messages": answered_with_empty_calls(), "tools": TOOLS}), "chat")
    to_openai = orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.models["gpt-4o"].body))
    assert "tool_calls" not in to_openai["messages"][1] and to_openai["messages"][0] == answered_with_empty_calls()[0]
    for provider in ("deepseek", "google", "together"):  # the others take it: sent as it came
        sent = orjson.loads(render_body(req, "m", dialect=router.catalog.providers[provider].body))
        assert sent["messages"] == answered_with_empty_calls(), provider


def test_the_openai_fake_refuses_an_empty_tool_call_array_as_openai_does(fakes):
    r = to_fake(fakes, "openai", "gpt-4o", answered_with_empty_calls())
    assert r.status_code == 400 and r.json()["error"] == {
        "message": "Invalid 'messages[1].tool_calls': empty array. Expected an array with minimum length 1, but got an empty "
                   "array instead.", "type": "invalid_request_error", "param": "messages[1].tool_calls", "code": "empty_array"}
    assert to_fake(fakes, "openai", "gpt-4o", without_empty_tool_calls(answered_with_empty_calls())).status_code == 200


@pytest.mark.envoy
def test_envoy_a_chat_answered_with_empty_tool_calls_is_answered_by_gpt_4o(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "openai", "gpt-4o", "openai", answered_with_empty_calls())
    assert sent[1] == {"role": "assistant", "content": "Oslo."}


def test_gemini_3_gets_a_stand_in_signature_on_the_first_tool_call_of_each_message():
    sent = signed_tool_calls(conversation())
    first, second = sent[1]["tool_calls"]
    assert first["extra_content"] == {"google": {"thought_signature": UNSIGNED_TOOL_CALL}} and "extra_content" not in second
    assert {k: v for k, v in first.items() if k != "extra_content"} == conversation()[1]["tool_calls"][0]
    own = conversation()
    own[1]["tool_calls"][0]["extra_content"] = {"google": {"thought_signature": "Q2lq"}, "other": 1}
    assert signed_tool_calls(own) == own  # Gemini's own signature: as it came
    odd = [{"role": "assistant", "tool_calls": []}, {"role": "assistant", "tool_calls": [5]}, {"role": "tool"}, "x"]
    assert signed_tool_calls(odd) == odd and signed_tool_calls("x") == "x"
    router = Router(parse_config(pinned()))
    req = parse_request(orjson.dumps({"model": "auto", "messages": conversation(), "tools": TOOLS}), "chat")
    models = router.catalog.models
    to_gemini_3 = orjson.loads(render_body(req, "gemini-3.1-pro-preview", dialect=router.catalog.dialect_of(models["gemini-3"])))
    assert to_gemini_3["messages"] == sent
    to_mistral = orjson.loads(render_body(req, "mistral-large-latest", dialect=router.catalog.dialect_of(models["mistral-large"])))
    assert not any("extra_content" in c for c in to_mistral["messages"][1]["tool_calls"])  # only Gemini 3 gets one


def check_output(tmp_path, data: dict, capsys) -> str:
    """What `llm-router check` prints for a config (written as JSON, which is YAML); it must find the config valid."""
    from llm_router.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode())  # YAML dates as keys: changes
    assert main(["check", str(path)]) == 0
    return capsys.readouterr().out


def refusal(data: dict) -> str:
    """The error a config is refused with."""
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def test_check_names_the_setting_and_refuses_a_wrong_one(tmp_path, capsys):
    assert "body over google's: unsigned tool calls get Gemini's stand-in thought signature" in check_output(
        tmp_path, pinned(), capsys)
    assert "tool_call_signatures" in refusal({"models": {"gemini-3": {**GEMINI_3, "body": {"tool_call_signatures": "always"}}}})


def test_the_gemini_fake_refuses_unsigned_tool_calls_on_gemini_3_as_gemini_does(fakes):
    refused = to_fake(fakes, "google", "gemini-3.1-pro-preview", conversation())
    assert refused.status_code == 400 and refused.json() == [{"error": {
        "code": 400, "message": "Function call is missing a thought_signature in functionCall parts. This is required for "
        "tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
        "function call `default_api:weather` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/"
        "thought-signatures for more details.", "status": "INVALID_ARGUMENT"}}]
    assert to_fake(fakes, "google", "gemini-3.1-pro-preview", signed_tool_calls(conversation())).status_code == 200


@pytest.mark.envoy
def test_envoy_a_tool_loop_begun_elsewhere_is_answered_by_gemini_3(stack, fresh_fakes):
    calls = routed(stack, fresh_fakes, "gemini", "gemini-3", "google", conversation())[1]["tool_calls"]
    assert calls[0]["extra_content"]["google"]["thought_signature"] == UNSIGNED_TOOL_CALL


def interrupted() -> list[dict]:
    """A tool loop the user interrupted: their next message follows the tool results at once."""
    return [*conversation("aB3xK9mP2", "Zz9Yy8Xx7"), {"role": "user", "content": "stop, only Paris matters"}]


def test_mistral_gets_an_assistant_message_between_tool_results_and_the_user():
    sent = bridged_tool_results(interrupted())
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "assistant", "user"] and sent[4] == BRIDGE
    assert bridged_tool_results(conversation()) == conversation()  # a loop the model answers next: as it came
    router = Router(load_config(None))
    req = parse_request(orjson.dumps({"model": "auto", "messages": interrupted(), "tools": TOOLS}), "chat")
    assert orjson.loads(render_body(req, "m", dialect=router.catalog.providers["mistral"].body))["messages"] == sent
    for provider in ("openai", "google", "deepseek"):  # they take that order
        assert orjson.loads(render_body(req, "m", dialect=router.catalog.providers[provider].body))["messages"] == interrupted()


def test_the_mistral_fake_refuses_a_user_right_after_tool_results(fakes):
    r = to_fake(fakes, "mistral", "mistral-large-latest", interrupted())
    assert r.status_code == 400 and r.json() == {"object": "error", "message": "Unexpected role 'user' after role 'tool'",
                                                 "type": "invalid_request_message_order", "param": None, "code": "3230"}


@pytest.mark.envoy
def test_envoy_an_interrupted_tool_loop_is_answered_by_mistral(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "mistral", "mistral-large", "mistral", interrupted())
    assert [m["role"] for m in sent][-2:] == ["assistant", "user"]


KIMI_ID = "functions.Bash:0"  # the shape some OpenAI-compatible providers give their tool call ids


def anthropic_loop(tool_id: str = KIMI_ID) -> list[dict]:
    """An Anthropic-format tool loop whose call another provider made."""
    return [{"role": "user", "content": "list the files"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "run", "input": {"cmd": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "a.py b.py"}]}]


def test_anthropic_gets_ids_of_letters_digits_underscore_and_dash():
    assert word_id("toolu_01A09q90qw90lq917835") == "toolu_01A09q90qw90lq917835" and word_id("call_0_1-2") == "call_0_1-2"
    fixed = word_id(KIMI_ID)
    assert fixed.startswith("toolu_") and len(fixed) == 30 and fixed == word_id(KIMI_ID) != word_id("functions.Bash:1")
    sent = block_ids_as(anthropic_loop(), word_id)
    assert sent[1]["content"][0]["id"] == sent[2]["content"][0]["tool_use_id"] == fixed
    assert sent[0] == anthropic_loop()[0] and block_ids_as("x", word_id) == "x"
    router = Router(load_config(None))
    req = parse_request(orjson.dumps({"model": "auto", "max_tokens": 512, "messages": anthropic_loop(),
                                      "tools": [{"name": "run", "input_schema": {"type": "object"}}]}), "messages")
    to_claude = orjson.loads(render_body(req, "claude-3-5-sonnet-20240620", dialect=router.catalog.models["claude-3.5-sonnet"].body))
    assert to_claude["messages"] == sent
    to_deepseek = orjson.loads(render_body(req, "deepseek-flash", dialect=router.catalog.providers["deepseek"].body))
    assert to_deepseek["messages"] == anthropic_loop()
    chat = parse_request(orjson.dumps({"model": "auto", "messages": conversation(KIMI_ID, "call_2"), "tools": TOOLS}), "chat")
    sent_chat = orjson.loads(render_body(chat, "m", dialect=router.catalog.providers["anthropic"].body))["messages"]
    assert sent_chat[1]["tool_calls"][0]["id"] == sent_chat[2]["tool_call_id"] == fixed
    assert sent_chat[1]["tool_calls"][1]["id"] == "call_2"


def test_the_anthropic_fake_refuses_such_ids_as_anthropic_does(fakes):
    r = httpx.post(fakes.url("anthropic") + "/v1/messages", timeout=30, content=orjson.dumps({
        "model": "claude-3-5-sonnet-20240620", "max_tokens": 512, "messages": anthropic_loop()}),
        headers={"x-api-key": fakes.keys()["anthropic"], "content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"}


@pytest.mark.envoy
def test_envoy_an_anthropic_loop_begun_elsewhere_is_answered_by_claude(stack, fresh_fakes):
    r = httpx.post(stack.url + "/claude/v1/messages", timeout=30,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
                   content=orjson.dumps({"model": "auto", "max_tokens": 512, "messages": anthropic_loop(),
                                         "tools": [{"name": "run", "input_schema": {"type": "object"}}]}))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-3.5-sonnet"
    [sent] = wait_requests(fresh_fakes, "anthropic", 1)
    assert sent.status == 200 and sent.json["messages"][1]["content"][0]["id"] == word_id(KIMI_ID)
