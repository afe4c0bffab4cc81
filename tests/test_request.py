"""Request parsing: every API shape, the extracted fields, and errors that name the field."""
from __future__ import annotations

import orjson
import pytest

from llm_router.request import (
    CONTEXT_CHARS, PROMPT_HEAD_CHARS, PROMPT_TAIL_CHARS, RequestError, api_for_path, estimate_tokens,
    parse_request, render_body,
)


def chat(**kw) -> bytes:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    body.update(kw)
    return orjson.dumps(body)


# ---- OpenAI chat ------------------------------------------------------------------------

def test_chat_string_content():
    req = parse_request(chat(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]))
    assert req.api == "chat"
    assert req.prompt == "What is 2+2?"
    assert req.context == ""  # the system prompt is sent with every call: not context for the classifiers
    assert 0 < req.standing_tokens < req.input_tokens and req.conversation_tokens == req.input_tokens - req.standing_tokens
    assert req.model == "auto"
    assert req.input_tokens > 0
    assert not req.stream and not any((req.needs.tools, req.needs.vision, req.needs.json))


def test_stop_sequences_are_a_need_when_some_are_set():
    for stop in ("END", ["\nUser:"]):
        assert parse_request(chat(stop=stop)).needs.stop
        assert parse_request(orjson.dumps({"model": "m", "prompt": "Once", "stop": stop}), "completions").needs.stop
    for empty in (None, [], ""):
        assert not parse_request(chat(stop=empty)).needs.stop
    assert not parse_request(chat()).needs.stop
    messages = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["END"]}
    assert not parse_request(orjson.dumps(messages), "messages").needs.stop  # Claude and DeepSeek take them


def test_chat_content_parts_text_and_image():
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "Describe this picture"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
    ]}]
    req = parse_request(chat(messages=msgs))
    assert req.prompt == "Describe this picture"
    assert req.needs.vision
    assert req.input_tokens >= 800  # the image counts


def test_chat_last_user_turn_is_the_prompt_and_turns_counted():
    msgs = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "tool output", "tool_call_id": "1"},
    ]
    req = parse_request(chat(messages=msgs))
    assert req.prompt == "second question"
    assert req.turns == 2
    assert "first answer" in req.context


def test_chat_tools_functions_json_mode_stream_options_max_tokens():
    req = parse_request(chat(tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
                             response_format={"type": "json_object"}, stream=True,
                             stream_options={"include_usage": False}, max_completion_tokens=64, max_tokens=999))
    assert req.needs.tools and req.needs.json and req.needs.streaming and req.stream
    assert req.include_usage is False
    assert req.max_output_tokens == 64  # max_completion_tokens wins over the legacy field
    legacy = parse_request(chat(functions=[{"name": "f", "parameters": {}}], max_tokens=10))
    assert legacy.needs.tools and legacy.max_output_tokens == 10


def test_chat_json_schema_and_text_format():
    assert parse_request(chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})).needs.json
    assert not parse_request(chat(response_format={"type": "text"})).needs.json


def test_long_prompt_is_bounded_head_and_tail():
    text = "Alpha beta. " * 500 + "MIDDLE" + " zeta omega" * 500
    req = parse_request(chat(messages=[{"role": "user", "content": text}]))
    assert len(req.prompt) == PROMPT_HEAD_CHARS + PROMPT_TAIL_CHARS + 1
    assert req.prompt.startswith("Alpha") and req.prompt.endswith("omega") and "MIDDLE" not in req.prompt
    assert req.input_tokens > 1000  # the estimate covers the whole text, not the window


def test_context_window_is_bounded():
    msgs = [{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "y" * 3000}, {"role": "user", "content": "q"}]
    req = parse_request(chat(messages=msgs))
    assert len(req.context) <= CONTEXT_CHARS + 2


def test_long_context_need():
    req = parse_request(chat(messages=[{"role": "user", "content": "word " * 60_000}]))
    assert req.needs.long_context


# ---- OpenAI completions and Anthropic messages -------------------------------------------

def test_completions_prompt_forms():
    assert parse_request(orjson.dumps({"model": "m", "prompt": "Once upon"}), "completions").prompt == "Once upon"
    many = parse_request(orjson.dumps({"prompt": ["a b", "c d e"], "max_tokens": 5, "stream": True}), "completions")
    assert many.prompt == "c d e" and many.max_output_tokens == 5 and many.stream
    ids = parse_request(orjson.dumps({"prompt": [1, 2, 3, 4]}), "completions")
    assert ids.input_tokens == 4


def test_anthropic_messages_system_and_blocks():
    body = {"model": "claude-3-5-sonnet-20240620", "max_tokens": 256, "system": [{"type": "text", "text": "You are terse."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise this"},
                                                       {"type": "image", "source": {"type": "base64", "data": "..."}}]}],
            "tools": [{"name": "t", "input_schema": {}}], "stream": True}
    req = parse_request(orjson.dumps(body), "messages")
    assert req.api == "messages" and req.prompt == "Summarise this"
    assert req.context == ""
    # The system prompt and the tool definitions are the application's standing part of every call.
    assert req.standing_tokens == estimate_tokens("You are terse.") + estimate_tokens(orjson.dumps(body["tools"]).decode())
    assert req.conversation_tokens == req.input_tokens - req.standing_tokens > 0
    assert req.needs.vision and req.needs.tools and req.stream and req.max_output_tokens == 256


def test_anthropic_tool_result_text_counts():
    body = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "1", "content": "42 degrees"}]}]}
    assert "42 degrees" in parse_request(orjson.dumps(body), "messages").prompt


# ---- errors name the field ----------------------------------------------------------------

@pytest.mark.parametrize("body, api, field, words", [
    (b"", "chat", "body", "empty"),
    (b"{not json", "chat", "body", "not valid JSON"),
    (b"[1,2]", "chat", "body", "JSON object, got array"),
    (b'{"messages": {}}', "chat", "messages", "array"),
    (b'{"messages": []}', "chat", "messages", "must not be empty"),
    (b'{"messages": [3]}', "chat", "messages[0]", "object, got number"),
    (b'{"messages": [{"content": "x"}]}', "chat", "messages[0].role", "string, got null"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', "chat", "messages[0].role", "unknown role"),
    (b'{"messages": [{"role": "user", "content": 5}]}', "chat", "messages[0].content", "got number"),
    (b'{"messages": [{"role": "user", "content": null}]}', "chat", "messages[0].content", "got null"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}', "chat", "messages[0].content[0].text", "string"),
    (b'{"messages": [{"role": "user", "content": [{"type": "video"}]}]}', "chat", "messages[0].content[0].type", "unsupported"),
    (b'{"messages": [{"role": "user", "content": "x"}], "model": 7}', "chat", "model", "string, got number"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "chat", "stream", "boolean"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "chat", "max_tokens", "positive integer"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": true}', "chat", "max_tokens", "positive integer"),
    (b'{"messages": [{"role": "assistant", "content": null, "tool_calls": 5}]}', "chat", "messages[0].tool_calls", "array, got number"),
    (b'{"messages": [{"role": "user", "content": "x"}], "tools": {}}', "chat", "tools", "array"),
    (b'{"messages": [{"role": "user", "content": "x"}], "tools": [1]}', "chat", "tools[0]", "object"),
    (b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}', "chat", "response_format.type", "json_object"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}}', "chat", "stream_options.include_usage", "boolean"),
    (b'{"prompt": 5}', "completions", "prompt", "string"),
    (b'{"prompt": []}', "completions", "prompt", "non-empty"),
    (b'{"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "messages", "model", "required"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}', "messages", "max_tokens", "required"),
    (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}', "messages", "messages[0].role", "'user' or 'assistant'"),
    (b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}', "messages", "messages[0].content[0].type", "unsupported"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": NaN}', "chat", "body", "not valid JSON"),
])
def test_errors_name_the_field(body, api, field, words):
    with pytest.raises(RequestError) as info:
        parse_request(body, api)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.status == 400


def test_tool_calls_null_is_a_message_without_calls():
    """SDKs write `tool_calls: null` on messages without calls; clients send such messages back."""
    req = parse_request(b'{"messages": [{"role": "user", "content": "hi", "tool_calls": null}, {"role": "assistant", '
                        b'"content": "Hello!", "tool_calls": null}, {"role": "user", "content": "thanks"}]}', "chat")
    assert req.prompt == "thanks" and not req.needs.tools


def test_unknown_api():
    with pytest.raises(RequestError) as info:
        parse_request(b"{}", "embeddings")
    assert info.value.status == 404


# ---- paths, rendering, estimates -------------------------------------------------------------

@pytest.mark.parametrize("path, api", [
    ("/v1/chat/completions", "chat"), ("/openai/v1/chat/completions?x=1", "chat"), ("/chat/completions/", "chat"),
    ("/v1/completions", "completions"), ("/v1/messages", "messages"), ("/v1/embeddings", None), ("/healthz", None),
])
def test_api_for_path(path, api):
    assert api_for_path(path) == api


def test_render_body_sets_model_and_usage_on_streams():
    req = parse_request(chat(stream=True, temperature=0.2))
    out = orjson.loads(render_body(req, "deepseek-flash"))
    assert out["model"] == "deepseek-flash" and out["temperature"] == 0.2
    assert out["stream_options"] == {"include_usage": True}
    # the client's explicit choice is kept
    req = parse_request(chat(stream=True, stream_options={"include_usage": False}))
    assert orjson.loads(render_body(req, "m"))["stream_options"] == {"include_usage": False}
    # non-streaming bodies are not given stream_options
    assert "stream_options" not in orjson.loads(render_body(parse_request(chat()), "m"))
    # the parsed body is not mutated
    assert req.body["model"] == "auto"


def test_estimate_tokens_orders_texts_and_handles_unicode():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hi") >= 1
    assert estimate_tokens("word " * 100) > estimate_tokens("word " * 10)
    assert estimate_tokens("日本語のテキスト" * 10) > 20
    assert estimate_tokens("\ud800 lone surrogate") > 0  # never raises
