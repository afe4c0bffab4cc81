"""Conversations other providers began, sent on to Mistral: message fields it does not take, and a prefill.

Mistral answers 422 ("Extra inputs are not permitted", loc body.messages.1.assistant.reasoning_content) to
any message field it does not know: clients send back what DeepSeek's answers held (`reasoning_content`)
and what OpenAI's SDKs serialise (`refusal`, `annotations`), and OpenAI takes a user's `name`. It answers
400 ("Expected last role User or Tool (or Assistant with prefix True) ...") to a last assistant message, a
prefill OpenAI and Anthropic take. Its dialect keeps each message's own fields and marks a prefill as
Mistral's `prefix`; its fake refuses both as Mistral does.
"""
from __future__ import annotations

import httpx
import orjson
import pytest

from fixtures_envoy import fresh_fakes  # noqa: F401
from llm_router.config import ConfigError, load_config, parse_config
from llm_router.message_rules import kept_fields, prefixed_last_assistant
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from test_tool_ids import TOOLS, fakes, routed, stack, to_fake  # noqa: F401  (the same fakes and Envoy routes, started for this module)


def echoed() -> list[dict]:
    """A chat a client kept as the answers came: DeepSeek's reasoning, OpenAI SDK fields, a user's name."""
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "name": "maria", "content": "What is 17 * 23?", "tool_calls": None},
        {"role": "assistant", "content": "391", "reasoning_content": "17 * 23 = 340 + 51 = 391", "refusal": None,
         "annotations": []},
        {"role": "user", "content": "Check it with the calculator."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "aB3xK9mP2", "type": "function", "name": "calc", "function": {"name": "calc", "arguments": '{"x": "17*23"}'}}]},
        {"role": "tool", "tool_call_id": "aB3xK9mP2", "name": "calc", "content": "391"},
    ]


MISTRAL_FIELDS = {"system": frozenset({"role", "content"}), "user": frozenset({"role", "content"}),
                  "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
                  "tool": frozenset({"role", "content", "tool_call_id", "name"}),
                  "tool_call": frozenset({"id", "type", "function", "index"})}


def test_each_message_keeps_the_fields_its_role_takes():
    sent = kept_fields(echoed(), MISTRAL_FIELDS)
    assert sent[1] == {"role": "user", "content": "What is 17 * 23?"}
    assert sent[2] == {"role": "assistant", "content": "391"}
    assert sent[4]["tool_calls"] == [{"id": "aB3xK9mP2", "type": "function", "function": {"name": "calc", "arguments": '{"x": "17*23"}'}}]
    assert sent[5] == echoed()[5] and sent[0] == echoed()[0]  # a tool result's name is Mistral's too
    # a role the rules do not name, and anything that is not a message, pass as they came
    odd = [{"role": "developer", "content": "x", "name": "n"}, {"role": 7, "x": 1}, "x", {"role": "assistant", "tool_calls": [5]}]
    assert kept_fields(odd, MISTRAL_FIELDS) == odd and kept_fields("x", MISTRAL_FIELDS) == "x"
    assert kept_fields(echoed(), {}) == echoed()


def test_a_last_assistant_message_becomes_a_prefix_and_nothing_else_does():
    prefill = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "The colour is"}]
    assert prefixed_last_assistant(prefill)[-1] == {"role": "assistant", "content": "The colour is", "prefix": True}
    assert prefill[-1] == {"role": "assistant", "content": "The colour is"}  # the client's body is not changed in place
    for unchanged in ([{"role": "user", "content": "hi"}], echoed(), echoed()[:5], [], "x", [7]):
        assert prefixed_last_assistant(unchanged) == unchanged  # a user or tool last, or an assistant's open tool calls


def test_only_mistral_gets_them():
    router = Router(load_config(None))
    body = {"model": "auto", "messages": [*echoed(), {"role": "assistant", "content": "So the answer is"}], "tools": TOOLS}
    req = parse_request(orjson.dumps(body), "chat")
    to_mistral = orjson.loads(render_body(req, "mistral-large-latest", dialect=router.catalog.providers["mistral"].body))
    assert [sorted(m) for m in to_mistral["messages"]] == [
        ["content", "role"], ["content", "role"], ["content", "role"], ["content", "role"], ["content", "role", "tool_calls"],
        ["content", "name", "role", "tool_call_id"], ["content", "prefix", "role"]]
    assert to_mistral["messages"][-1]["prefix"] is True
    for provider in ("openai", "google", "together", "anthropic"):
        sent = orjson.loads(render_body(req, "m", dialect=router.catalog.providers[provider].body))
        assert sent["messages"] == body["messages"], provider


def test_the_settings_are_checked():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mistral": {"body": {"message_fields": {"user": ["name"]}}}}})
    assert "message_fields.user must keep ['content']" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mistral": {"body": {"message_fields": {"robot": ["content"]}}}}})
    assert "message_fields.robot" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"mistral": {"body": {"message_fields": {"tool_call": ["id", "function"]}}}}})
    assert "message_fields.tool_call must keep ['type']" in str(err.value)


def mistral(fakes, messages: list[dict]) -> httpx.Response:
    return to_fake(fakes, "mistral", "mistral-large-latest", messages)


def test_the_mistral_fake_refuses_fields_it_does_not_take_as_mistral_does(fakes):
    refused = mistral(fakes, echoed())
    assert refused.status_code == 422
    detail = refused.json()["message"]["detail"]
    assert [d["loc"] for d in detail] == [
        ["body", "messages", 1, "user", "name"], ["body", "messages", 1, "user", "tool_calls"],
        ["body", "messages", 2, "assistant", "reasoning_content"], ["body", "messages", 2, "assistant", "refusal"],
        ["body", "messages", 2, "assistant", "annotations"], ["body", "messages", 4, "assistant", "tool_calls", 0, "name"]]
    assert {d["msg"] for d in detail} == {"Extra inputs are not permitted"}
    developer = mistral(fakes, [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert developer.status_code == 422 and developer.json()["message"]["detail"][0]["type"] == "union_tag_invalid"
    assert mistral(fakes, kept_fields(echoed(), MISTRAL_FIELDS)).status_code == 200


def test_the_mistral_fake_refuses_a_last_assistant_message_unless_it_is_a_prefix(fakes):
    prefill = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "The colour is"}]
    refused = mistral(fakes, prefill)
    assert refused.status_code == 400 and refused.json() == {
        "object": "error", "message": "Expected last role User or Tool (or Assistant with prefix True) for serving but got "
        "assistant", "type": "invalid_request_error", "param": None, "code": None}
    assert mistral(fakes, prefixed_last_assistant(prefill)).status_code == 200


@pytest.mark.envoy
def test_envoy_a_conversation_kept_from_other_providers_is_answered_by_mistral(stack, fresh_fakes):
    messages = [{"role": "developer", "content": "Answer in one line."}, *echoed()[1:],
                {"role": "assistant", "content": "The product is"}]
    got = routed(stack, fresh_fakes, "mistral", "mistral-large", "mistral", messages)
    assert [m["role"] for m in got] == ["system", "user", "assistant", "user", "assistant", "tool", "assistant"]
    assert "reasoning_content" not in got[2] and "name" not in got[1] and got[-1]["prefix"] is True
