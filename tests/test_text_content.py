"""Content arrays and the developer role to DeepSeek's chat API.

OpenAI SDKs and agent frameworks send message content as arrays of parts; deepseek-chat answered 400
("Failed to deserialize the JSON body into the target type: messages[1]: invalid type: sequence,
expected a string"). Its dialect (`content: text`) has the router send text-only arrays as one
string, which every DeepSeek model takes. V4 takes arrays, and V4.1 Flash (deepseek-flash, the built-in slot's model)
reads images in them: arrays with images go as sent, and the slot serves vision requests. The fake refuses arrays for
the older names and reads them for the V4 family, as DeepSeek does.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import ConfigError, load_config, parse_config
from llm_router.message_rules import developer_as_system, text_contents
from llm_router.request import parse_request, render_body
from llm_router.router import Router

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def parts(*texts: str) -> list[dict]:
    return [{"type": "text", "text": t} for t in texts]


def sdk_body() -> dict:
    """What an agent framework sends: system and user content as arrays of text parts."""
    return {"model": "auto", "messages": [
        {"role": "system", "content": parts("You are a helpful assistant.", "Answer briefly.")},
        {"role": "user", "content": parts("hi there, thanks!")},
    ]}


def test_text_parts_become_one_string_and_anything_else_stays():
    sent = text_contents([
        {"role": "system", "content": parts("You are terse.", "Use metric units.")},
        {"role": "user", "content": [*parts("What is in this picture?"), IMAGE]},
        {"role": "assistant", "content": "A cat.", "tool_calls": None},
        {"role": "user", "content": []},
    ])
    assert sent[0] == {"role": "system", "content": "You are terse.\nUse metric units."}
    assert sent[1]["content"][1] == IMAGE  # an image stays a part: a model that sees images gets it as sent
    assert sent[2] == {"role": "assistant", "content": "A cat.", "tool_calls": None} and sent[3]["content"] == ""
    odd = [{"role": "user", "content": [{"type": "text", "text": 3}]}, {"role": "user", "content": [7]}, "x"]
    assert text_contents(odd) == odd and text_contents(None) is None


def test_only_deepseek_gets_strings():
    router = Router(load_config(None))
    req = parse_request(orjson.dumps(sdk_body()), "chat")
    to_deepseek = orjson.loads(render_body(req, "deepseek-flash", dialect=router.catalog.providers["deepseek"].body))
    assert [m["content"] for m in to_deepseek["messages"]] == ["You are a helpful assistant.\nAnswer briefly.", "hi there, thanks!"]
    for provider in ("openai", "google", "mistral", "together"):
        sent = orjson.loads(render_body(req, "m", dialect=router.catalog.providers[provider].body))
        assert sent["messages"] == sdk_body()["messages"], provider
    # Anthropic's format has arrays by design: DeepSeek's Messages endpoint gets them as sent
    messages = parse_request(orjson.dumps({"model": "auto", "max_tokens": 100, "messages": [
        {"role": "user", "content": parts("hello")}]}), "messages")
    sent = orjson.loads(render_body(messages, "deepseek-flash", dialect=router.catalog.providers["deepseek"].body))
    assert sent["messages"][0]["content"] == parts("hello")


def test_the_setting_is_checked():
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"deepseek": {"body": {"content": "strings"}}}})
    assert "content" in str(err.value)


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(config_data())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-text-content", fakes, config_data())


def test_the_deepseek_fake_refuses_content_arrays_to_deepseek_chat_and_reads_them_on_deepseek_flash(fakes):
    def post(body: dict, model: str) -> httpx.Response:
        return httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                          content=orjson.dumps({**body, "model": model, "thinking": {"type": "disabled"}}),
                          headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"})

    refused = post(sdk_body(), "deepseek-chat")
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith("Failed to deserialize the JSON body into the target type: messages[0]: invalid type: "
                              "sequence, expected a string at line 1 column ")
    assert post(sdk_body(), "deepseek-flash").status_code == 200
    assert post({"messages": text_contents(sdk_body()["messages"])}, "deepseek-flash").status_code == 200
    picture = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, IMAGE]}]}
    assert post(picture, "deepseek-flash").status_code == 200


def answered_by_deepseek(stack, fakes, body: dict) -> list[dict]:
    """The messages DeepSeek's fake got for a body sent through real Envoy (and answered)."""
    r = httpx.post(stack.url + "/v1/chat/completions", content=orjson.dumps(body), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fakes, "deepseek", 1)
    assert sent.status == 200
    return sent.json["messages"]


@pytest.mark.envoy
def test_envoy_an_sdk_body_with_content_arrays_is_answered_by_deepseek(stack, fresh_fakes):
    sent = answered_by_deepseek(stack, fresh_fakes, sdk_body())
    assert [m["content"] for m in sent] == ["You are a helpful assistant.\nAnswer briefly.", "hi there, thanks!"]


@pytest.mark.envoy
def test_envoy_a_question_about_a_picture_is_answered_by_deepseek_with_the_picture(stack, fresh_fakes):
    # the 'cheap' policy (DeepSeek only): before V4.1 Flash no model of it could read the picture (400 no_capable_model)
    body = {"model": "auto-cheap", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what colour is this?"}, IMAGE]}]}
    [sent] = answered_by_deepseek(stack, fresh_fakes, body)
    assert sent["content"] == body["messages"][0]["content"]  # an array with an image goes as sent


def codex_body() -> dict:
    """What a client written for OpenAI's newer models sends: its instructions in the developer role."""
    return {"model": "auto", "messages": [{"role": "developer", "content": "Answer in one line."},
                                          {"role": "user", "content": "thanks, that helped!"}]}


def test_deepseek_gets_the_developer_role_as_system_and_openai_as_sent():
    assert developer_as_system(codex_body()["messages"])[0] == {"role": "system", "content": "Answer in one line."}
    assert developer_as_system("x") == "x"
    router = Router(load_config(None))
    req = parse_request(orjson.dumps(codex_body()), "chat")
    to_deepseek = orjson.loads(render_body(req, "deepseek-flash", dialect=router.catalog.providers["deepseek"].body))
    assert [m["role"] for m in to_deepseek["messages"]] == ["system", "user"]
    to_openai = orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.models["gpt-4o"].body))
    assert to_openai["messages"] == codex_body()["messages"]


def test_the_deepseek_fake_refuses_the_developer_role_as_deepseek_does(fakes):
    r = httpx.post(fakes.url("deepseek") + "/v1/chat/completions", content=orjson.dumps({**codex_body(), "model": "deepseek-flash", "thinking": {"type": "disabled"}}),
                   headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        "Failed to deserialize the JSON body into the target type: messages[0].role: unknown variant `developer`, expected "
        "one of `system`, `user`, `assistant`, `tool`")


@pytest.mark.envoy
def test_envoy_a_codex_style_body_is_answered_by_deepseek(stack, fresh_fakes):
    assert [m["role"] for m in answered_by_deepseek(stack, fresh_fakes, codex_body())] == ["system", "user"]
