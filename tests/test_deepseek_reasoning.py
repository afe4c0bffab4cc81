"""Conversations other models began, sent on to DeepSeek's thinking models: each assistant message's reasoning.

DeepSeek's thinking models want the `reasoning_content` of earlier assistant messages passed back, and answer
400 without it (deepseek-reasoner, for messages with tool calls: "Missing `reasoning_content` field in the
assistant message at message index 2. ..."; V4 models: "The `reasoning_content` in the thinking mode must be
passed back to the API."), to an empty string too, as agent projects report it. A routed conversation holds
assistant messages GPT-4o or Claude wrote, which have none. With `body: {reasoning_content: fill}` on such a
model, each of them gets a stand-in; the fake DeepSeek refuses what DeepSeek refuses. deepseek-reasoner also refuses
two user (or assistant) messages in a row; with `body: {successive_roles: merge}` they go as one. The thinking models
refuse a tool_choice that names one tool; with `body: {named_tool_choice: auto}` it goes as auto while they think.
"""
from __future__ import annotations

import httpx
import orjson
import pytest

from fixtures_envoy import fresh_fakes, wait_requests  # noqa: F401
from llm_router.config import load_config, parse_config
from llm_router.message_rules import (merged_successive, reasoned_assistant_messages, reasoning_stand_in, text_contents,
                                      unforced_tool_choice)
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from test_tool_ids import (DEEPSEEK_THINKING, TOOLS, check_output, conversation, fakes, pinned, refusal, routed, stack,  # noqa: F401
                           to_fake)

OWN = "The user wants both cities; I already have Paris."


def mixed() -> list[dict]:
    """A chat GPT-4o answered first (no reasoning), then a DeepSeek thinking model (its reasoning kept by the client)."""
    return [
        {"role": "user", "content": "Is it warmer in Paris than in Oslo today?"},
        {"role": "assistant", "content": "Let me check both.", "tool_calls": [
            {"id": "call_Xq3bL9sVn2KpA7", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_Xq3bL9sVn2KpA7", "content": "18 C, sunny"},
        {"role": "assistant", "content": None, "reasoning_content": OWN, "tool_calls": [
            {"id": "call_00_9nLfpIQ6VO1J", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_00_9nLfpIQ6VO1J", "content": "4 C, rain"},
        {"role": "assistant", "content": "Yes: 18 C in Paris against 4 C in Oslo."},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_assistant_messages_without_reasoning_get_a_stand_in_naming_the_message_and_its_calls():
    sent = reasoned_assistant_messages(mixed())
    assert sent[1]["reasoning_content"] == ("(The reasoning of message 1 is not available: another model wrote it, or it was not "
                                            "kept; it called weather (call_Xq3bL9sVn2KpA7).)")
    assert sent[3]["reasoning_content"] == OWN  # its own reasoning, as it came
    assert sent[5]["reasoning_content"] == reasoning_stand_in(5, mixed()[5]) and "called" not in sent[5]["reasoning_content"]
    assert [{k: v for k, v in m.items() if k != "reasoning_content"} for m in sent] == \
        [{k: v for k, v in m.items() if k != "reasoning_content"} for m in mixed()]  # nothing else changes
    assert reasoned_assistant_messages(mixed()) == sent  # the same stand-ins every turn: the prompt cache still matches
    empty = mixed()
    empty[3]["reasoning_content"] = ""  # refused like a missing one
    assert reasoned_assistant_messages(empty)[3]["reasoning_content"] == reasoning_stand_in(3, empty[3])
    two = conversation()[1]  # two calls, both named
    assert "weather (call_Xq3bL9sVn2KpA7), weather (toolu_01A09q90qw90lq917835)" in reasoning_stand_in(1, two)


def test_a_prefill_and_odd_shapes_are_left_as_they_came():
    prefill = [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Autumn"}]
    assert reasoned_assistant_messages(prefill) is prefill  # the last assistant message continues: no reasoning put in its mouth
    done = reasoned_assistant_messages(mixed())
    assert reasoned_assistant_messages(done) is done  # nothing left to fill: the same list
    odd = ["x", {"role": "assistant", "content": "a", "reasoning_content": "r"}, 7, {"role": "user"}]
    assert reasoned_assistant_messages(odd) is odd and reasoned_assistant_messages("x") == "x"


def test_only_models_with_the_setting_get_stand_ins_and_not_with_thinking_off():
    router = Router(parse_config(pinned()))
    models = router.catalog.models

    def to(model: str, **extra) -> list[dict]:
        req = parse_request(orjson.dumps({"model": "auto", "messages": mixed(), "tools": TOOLS, **extra}), "chat")
        return orjson.loads(render_body(req, models[model].name, dialect=router.catalog.dialect_of(models[model])))["messages"]

    assert to("deepseek-reasoner") == reasoned_assistant_messages(mixed())
    assert to("deepseek-v4-pro") == reasoned_assistant_messages(mixed())
    assert to("deepseek-v2") == mixed()  # the built-in DeepSeek V2 does not think: as sent
    assert to("gpt-4o") == mixed()
    assert to("deepseek-v4-pro", thinking={"type": "disabled"}) == mixed()  # V4 with thinking turned off wants none


def test_check_names_the_setting_and_refuses_a_wrong_one(tmp_path, capsys):
    assert ("body over deepseek's: assistant messages without reasoning_content get the reasoning their answer held "
            "(per process; state: {backend: redis} shares it), else a stand-in") in check_output(tmp_path, pinned(), capsys)
    assert "(shared by every process through Redis), else a stand-in" in check_output(
        tmp_path, {**pinned(), "state": {"backend": "redis", "url": "redis://127.0.0.1:6379/0"}}, capsys)
    assert "reasoning_content" in refusal({"models": {"r1": {**DEEPSEEK_THINKING, "body": {"reasoning_content": "always"}}}})
    built_in = load_config(None).models["deepseek-v2"]  # DeepSeek's current model, which thinks unless told not to
    assert built_in.name == "deepseek-flash" and built_in.body is not None
    assert (built_in.body.reasoning_content, built_in.body.named_tool_choice) == ("fill", "auto")
    assert built_in.body.defaults == {**{api: {"thinking": {"type": "disabled"}} for api in ("chat", "messages")},
                                      "responses": {"reasoning": {"effort": "none"}}}
    bare = pinned()
    bare["models"]["deepseek-v4-pro"] = {k: v for k, v in bare["models"]["deepseek-v4-pro"].items() if k != "body"}
    notes = [line for line in check_output(tmp_path, bare, capsys).splitlines() if "named like a DeepSeek thinking model" in line
             and "reasoning_content" in line]
    assert len(notes) == 1 and notes[0].strip().endswith("add body: {reasoning_content: fill}")  # only the model without it


def test_the_deepseek_fake_refuses_assistant_messages_without_reasoning_as_deepseek_does(fakes):
    refused = to_fake(fakes, "deepseek", "deepseek-reasoner", mixed())
    assert refused.status_code == 400 and refused.json() == {"error": {
        "message": "Missing `reasoning_content` field in the assistant message at message index 1. For more information, "
                   "please refer to https://api-docs.deepseek.com/guides/thinking_mode#tool-calls",
        "type": "invalid_request_error", "param": None, "code": "invalid_request_error"}}
    plain = [m for m in mixed() if m["role"] in ("user",)][:1] + [{"role": "assistant", "content": "Checking."},
                                                                  {"role": "user", "content": "Go on."}]
    assert to_fake(fakes, "deepseek", "deepseek-reasoner", plain).status_code == 200  # no tool calls: reasoner takes it
    v4 = to_fake(fakes, "deepseek", "deepseek-v4-pro", plain)  # V4 wants it on every assistant message
    assert v4.status_code == 400 and v4.json()["error"]["message"] == \
        "The `reasoning_content` in the thinking mode must be passed back to the API."
    empty = mixed()
    empty[1]["reasoning_content"] = ""
    assert to_fake(fakes, "deepseek", "deepseek-reasoner", empty).status_code == 400
    for model in ("deepseek-reasoner", "deepseek-v4-pro"):
        ok = to_fake(fakes, "deepseek", model, reasoned_assistant_messages(mixed()))
        assert ok.status_code == 200, ok.text
        assert ok.json()["choices"][0]["message"]["reasoning_content"]  # a thinking model says what it thought
    retired = to_fake(fakes, "deepseek", "deepseek-chat", mixed())  # the name DeepSeek retired on 2026-07-24
    assert retired.status_code == 400 and retired.json()["error"]["message"] == "Model Not Exist"


@pytest.mark.envoy
def test_envoy_a_tool_loop_begun_elsewhere_is_answered_by_deepseek_reasoner(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "reasoner", "deepseek-reasoner", "deepseek", mixed())
    assert sent == reasoned_assistant_messages(mixed())


@pytest.mark.envoy
def test_envoy_a_streamed_v4_answer_carries_its_reasoning_to_the_client(stack, fresh_fakes):
    body = {"model": "auto", "messages": mixed(), "tools": TOOLS, "stream": True}
    with httpx.stream("POST", stack.url + "/v4/v1/chat/completions", timeout=30, content=orjson.dumps(body),
                      headers={"content-type": "application/json"}) as r:
        assert r.status_code == 200 and r.headers["x-llm-router-model"] == "deepseek-v4-pro"
        chunks = [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas)  # thinking first, as DeepSeek streams it
    assert "".join(d.get("content") or "" for d in deltas)
    assert any(c.get("usage") for c in chunks)  # usage asked for by the router, as on every stream
    [call] = wait_requests(fresh_fakes, "deepseek", 1)
    assert call.status == 200 and call.json["messages"] == reasoned_assistant_messages(mixed())


# ---- the reasoning answers held, given back where a client left it out ------------------------------------------------

def test_the_memory_keeps_reasoning_by_answer_and_stays_within_its_bound():
    from llm_router.reasoning_memory import MAX_CHARS, ReasoningMemory

    memory = ReasoningMemory(max_total=100)
    memory.remember("a", "x" * 40)
    memory.remember("b", "y" * 40)
    assert memory.recall("a") == "x" * 40  # used: now the most recent
    memory.remember("c", "z" * 40)  # over 100 characters: the least recently used (b) goes
    assert memory.recall("b") is None and memory.recall("a") and memory.recall("c") and memory.total == 80
    memory.remember("a", "w")  # replaced, not added
    assert memory.total == 41 and len(memory) == 2
    big = ReasoningMemory()
    big.remember("long", "r" * (MAX_CHARS + 10))
    assert len(big.recall("long") or "") == MAX_CHARS


def test_answers_are_known_by_their_first_tool_call_or_their_text():
    from llm_router.message_rules import answer_key, message_key, text_digest

    call = mixed()[3]
    assert message_key(call) == "call:call_00_9nLfpIQ6VO1J" == answer_key("call_00_9nLfpIQ6VO1J", None)
    text = mixed()[5]
    assert message_key(text) == "text:" + text_digest(text["content"]) and len(text_digest("x")) == 24
    assert message_key({"role": "assistant", "content": None}) is None and answer_key("", None) is None
    kept = {message_key(mixed()[1]): "Paris first, then Oslo."}
    sent = reasoned_assistant_messages(mixed(), kept.get)
    assert sent[1]["reasoning_content"] == "Paris first, then Oslo."  # what the answer held
    assert sent[3]["reasoning_content"] == OWN and sent[5]["reasoning_content"] == reasoning_stand_in(5, mixed()[5])


def test_reasoning_is_read_from_json_answers_and_from_streams_split_anywhere():
    from llm_router.accounting import SSEUsage, usage_from_json
    from llm_router.message_rules import message_key

    answer = {"id": "c1", "object": "chat.completion", "model": "deepseek-v4-pro", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Yes: 18 C in Paris.", "reasoning_content": "Compare 18 and 4."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9}}
    usage = usage_from_json(orjson.dumps(answer))
    assert usage is not None and usage.reasoning == (message_key(answer["choices"][0]["message"]), "Compare 18 and 4.")
    plain = {**answer, "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes."}}]}
    assert usage_from_json(orjson.dumps(plain)).reasoning is None

    def chunk(delta: dict, **extra) -> bytes:
        return b"data: " + orjson.dumps({"id": "c2", "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": delta, "finish_reason": None}] if delta else [], **extra}) + b"\n\n"

    call = {"index": 0, "id": "call_00_9nLfpIQ6VO1J", "type": "function", "function": {"name": "weather", "arguments": ""}}
    stream = b"".join([chunk({"role": "assistant", "content": ""}), chunk({"content": None, "reasoning_content": "Need "}),
                       chunk({"content": None, "reasoning_content": "Oslo."}), chunk({"content": "Checking."}),
                       chunk({"tool_calls": [call]}), chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                       chunk({}, usage={"prompt_tokens": 40, "completion_tokens": 12}), b"data: [DONE]\n\n"])
    for size in (1, 7, 64, len(stream)):
        sse = SSEUsage()
        for i in range(0, len(stream), size):
            sse.feed(stream[i:i + size])
        sse.finish()
        assert sse.usage is not None and sse.usage.reasoning == ("call:call_00_9nLfpIQ6VO1J", "Need Oslo."), size
    texts = b"".join([chunk({"content": None, "reasoning_content": "Think."}), chunk({"content": "Yes: 18 C "}),
                      chunk({"content": "in Paris."}), chunk({}, usage={"prompt_tokens": 1, "completion_tokens": 2})])
    sse = SSEUsage()
    sse.feed(texts)
    sse.finish()
    assert sse.usage.reasoning == (message_key(answer["choices"][0]["message"]), "Think.")  # the text, streamed in pieces


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_deepseek_gets_back_the_reasoning_its_answer_held(stack, fresh_fakes, stream):
    first = [{"role": "user", "content": f"Is it warmer in Paris than in Oslo? (stream {stream})"}]
    r = httpx.post(stack.url + "/v4/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": first, "stream": stream}))
    assert r.status_code == 200, r.text
    if stream:
        deltas = [orjson.loads(line[6:])["choices"] for line in r.text.splitlines() if line.startswith("data: {")]
        pieces = [c[0]["delta"] for c in deltas if c]
        text = "".join(d.get("content") or "" for d in pieces)
        thought = "".join(d.get("reasoning_content") or "" for d in pieces)
    else:
        text, thought = r.json()["choices"][0]["message"]["content"], r.json()["choices"][0]["message"]["reasoning_content"]
    assert thought
    stack.observer.attempts_for(r.headers["x-llm-router-request-id"], 1)  # the answer was observed
    # a plain OpenAI client keeps the text and drops reasoning_content; the router gives it back
    later = [*first, {"role": "assistant", "content": text}, {"role": "user", "content": "And tomorrow?"}]
    r = httpx.post(stack.url + "/v4/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": later}))
    assert r.status_code == 200, r.text
    sent = wait_requests(fresh_fakes, "deepseek", 2)[-1]
    assert sent.json["messages"][1]["reasoning_content"] == thought


# ---- deepseek-reasoner: user and assistant messages interleave ------------------------------------------------------------

def successive() -> list[dict]:
    """A conversation as clients written for other models send it: a context message and a question in a row, and two
    assistant messages in a row (an interrupted answer kept, then the full one)."""
    return [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Context: the weather service returns Celsius."},
            {"role": "user", "content": [{"type": "text", "text": "Is it warmer in Paris than in Oslo?"}]},
            {"role": "assistant", "content": "Let me"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_m1", "type": "function", "function": {
                "name": "weather", "arguments": '{"city": "Paris"}'}}], "reasoning_content": "Need both cities."},
            {"role": "tool", "tool_call_id": "call_m1", "content": "18 C"},
            {"role": "user", "content": "Go on."}]


def test_successive_user_and_assistant_messages_go_as_one():
    merged = merged_successive(successive())
    assert [m["role"] for m in merged] == ["system", "user", "assistant", "tool", "user"]
    assert merged[1]["content"] == [{"type": "text", "text": "Context: the weather service returns Celsius."},
                                    {"type": "text", "text": "Is it warmer in Paris than in Oslo?"}]  # a string and parts
    assert merged[2] == {"role": "assistant", "content": "Let me", "tool_calls": successive()[4]["tool_calls"],
                         "reasoning_content": "Need both cities."}  # the calls and the reasoning kept, so results still pair
    texts = [{"role": "user", "content": "a"}, {"role": "user", "content": ""}, {"role": "user", "content": "b"},
             {"role": "assistant", "content": "x", "reasoning_content": "r1"},
             {"role": "assistant", "content": "y", "reasoning_content": "r2"}]
    assert merged_successive(texts) == [{"role": "user", "content": "a\n\nb"},
                                        {"role": "assistant", "content": "x\n\ny", "reasoning_content": "r1\n\nr2"}]
    interleaved = [{"role": "system", "content": "s"}, {"role": "system", "content": "t"}, {"role": "user", "content": "u"},
                   {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]
    assert merged_successive(interleaved) is interleaved  # system and tool messages are not merged: nothing to do
    assert merged_successive("x") == "x" and merged_successive([]) == []
    assert successive() == successive() and merged_successive(successive()) != successive()  # the input is not changed


def test_only_deepseek_reasoner_gets_them_merged():
    router = Router(parse_config(pinned()))
    models = router.catalog.models

    def to(model: str) -> list[dict]:
        req = parse_request(orjson.dumps({"model": "auto", "messages": successive(), "tools": TOOLS}), "chat")
        return orjson.loads(render_body(req, models[model].name, dialect=router.catalog.dialect_of(models[model])))["messages"]

    sent = to("deepseek-reasoner")
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[1]["content"] == "Context: the weather service returns Celsius.\nIs it warmer in Paris than in Oslo?"  # one string
    assert sent[2]["reasoning_content"] == "Need both cities."  # the merged message's own reasoning, not a stand-in
    assert [m["role"] for m in to("deepseek-v4-pro")] == [m["role"] for m in successive()]
    assert to("gpt-4o") == successive()


def test_the_deepseek_fake_refuses_successive_roles_for_the_reasoner_and_check_names_the_setting(fakes, tmp_path, capsys):
    as_text = text_contents(successive())  # DeepSeek takes no arrays of text parts (its own rule, applied first)
    refused = to_fake(fakes, "deepseek", "deepseek-reasoner", reasoned_assistant_messages(as_text))
    assert refused.status_code == 400 and refused.json()["error"] == {
        "message": "deepseek-reasoner does not support successive user or assistant messages (messages[1] and messages[2] in "
                   "your input). You should interleave the user/assistant messages in the message sequence.",
        "type": "invalid_request_error", "param": None, "code": "invalid_request_error"}
    assert to_fake(fakes, "deepseek", "deepseek-reasoner", reasoned_assistant_messages(merged_successive(as_text))
                   ).status_code == 200
    assert to_fake(fakes, "deepseek", "deepseek-v4-pro", reasoned_assistant_messages(as_text)).status_code == 200
    assert "successive user (or assistant) messages sent as one" in check_output(tmp_path, pinned(), capsys)
    bare = pinned()
    bare["models"]["deepseek-reasoner"]["body"] = {"reasoning_content": "fill"}
    notes = [line for line in check_output(tmp_path, bare, capsys).splitlines() if "named like deepseek-reasoner" in line]
    assert len(notes) == 1 and notes[0].strip().endswith("add body: {successive_roles: merge}")
    assert "successive_roles" in refusal({"models": {"r1": {**DEEPSEEK_THINKING, "body": {"successive_roles": "join"}}}})


@pytest.mark.envoy
def test_envoy_a_conversation_with_successive_roles_is_answered_by_deepseek_reasoner(stack, fresh_fakes):
    sent = routed(stack, fresh_fakes, "reasoner", "deepseek-reasoner", "deepseek", successive())
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "user"]
    assert sent[1]["content"] == "Context: the weather service returns Celsius.\nIs it warmer in Paris than in Oslo?"
    assert sent[2]["tool_calls"][0]["id"] == "call_m1" and sent[3]["tool_call_id"] == "call_m1"


# ---- DeepSeek thinking models: a tool_choice naming one tool ---------------------------------------------------------------

NAMED = {"type": "function", "function": {"name": "weather"}}


def test_a_named_tool_choice_becomes_auto_in_each_api_form():
    assert unforced_tool_choice(NAMED) == "auto"
    assert unforced_tool_choice({"name": "weather"}) == "auto"  # a legacy function_call
    assert unforced_tool_choice({"type": "tool", "name": "web_search", "disable_parallel_tool_use": True}) == {
        "disable_parallel_tool_use": True, "type": "auto"}  # Anthropic's form, its other setting kept
    for kept in ("auto", "required", "none", {"type": "any"}, {"type": "auto"}, {"type": "none"}, None, 7):
        assert unforced_tool_choice(kept) == kept


def test_only_deepseek_thinking_models_get_it_unforced_and_not_with_thinking_off():
    router = Router(parse_config(pinned()))
    models = router.catalog.models

    def to(model: str, api: str = "chat", **extra) -> dict:
        if api == "chat":
            body = {"model": "auto", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS,
                    "tool_choice": NAMED, **extra}
        else:
            body = {"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": "Search the news."}],
                    "tools": [{"name": "web_search", "input_schema": {"type": "object"}}],
                    "tool_choice": {"type": "tool", "name": "web_search"}, **extra}
        req = parse_request(orjson.dumps(body), api)
        return orjson.loads(render_body(req, models[model].name, dialect=router.catalog.dialect_of(models[model])))

    assert to("deepseek-v4-pro")["tool_choice"] == "auto" and to("deepseek-reasoner")["tool_choice"] == "auto"
    assert to("deepseek-v4-pro", "messages")["tool_choice"] == {"type": "auto"}
    assert to("deepseek-v4-pro", thinking={"type": "disabled"})["tool_choice"] == NAMED  # V4 without thinking takes it
    assert to("deepseek-v4-pro", tool_choice="required")["tool_choice"] == "required"
    legacy = to("deepseek-v4-pro", tool_choice=None, function_call={"name": "weather"},
                functions=[TOOLS[0]["function"]])
    assert legacy["function_call"] == "auto"
    assert to("deepseek-v2")["tool_choice"] == NAMED and to("gpt-4o")["tool_choice"] == NAMED


def test_the_deepseek_fake_refuses_a_named_tool_while_thinking_and_check_names_the_setting(fakes, tmp_path, capsys):
    def post(model: str, **extra) -> httpx.Response:
        key = fakes.keys()["deepseek"]
        return httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
                          content=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Weather?"}],
                                               "tools": TOOLS, **extra}))

    refused = post("deepseek-v4-pro", tool_choice=NAMED)
    assert refused.status_code == 400 and refused.json()["error"] == {
        "message": "deepseek-reasoner does not support this tool_choice", "type": "invalid_request_error", "param": None,
        "code": "invalid_request_error"}
    assert post("deepseek-reasoner", tool_choice=NAMED).status_code == 400
    assert post("deepseek-v4-pro", tool_choice="auto").status_code == 200
    assert post("deepseek-v4-pro", tool_choice=NAMED, thinking={"type": "disabled"}).status_code == 200
    assert post("deepseek-flash", tool_choice=NAMED).status_code == 400  # DeepSeek's current model thinks unless told not to
    assert post("deepseek-flash", tool_choice=NAMED, thinking={"type": "disabled"}).status_code == 200
    assert "a tool_choice naming one tool sent as auto while it thinks" in check_output(tmp_path, pinned(), capsys)
    bare = pinned()
    bare["models"]["deepseek-reasoner"]["body"] = {"reasoning_content": "fill", "successive_roles": "merge"}
    notes = [line for line in check_output(tmp_path, bare, capsys).splitlines() if "note: " in line and "tool_choice" in line]
    assert len(notes) == 1 and notes[0].strip().endswith("add body: {named_tool_choice: auto}")
    assert "named_tool_choice" in refusal({"models": {"r1": {**DEEPSEEK_THINKING, "body": {"named_tool_choice": "none"}}}})
    assert "defaults: unknown API 'chats'" in refusal({"models": {"r1": {**DEEPSEEK_THINKING, "body": {"defaults": {"chats": {}}}}}})
    assert "defaults.chat: ['messages'] cannot have a default" in refusal(
        {"models": {"r1": {**DEEPSEEK_THINKING, "body": {"defaults": {"chat": {"messages": []}}}}}})


@pytest.mark.envoy
def test_envoy_a_forced_tool_call_is_answered_by_a_deepseek_thinking_model(stack, fresh_fakes):
    r = httpx.post(stack.url + "/v4/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Weather in Oslo?"}],
                                         "tools": TOOLS, "tool_choice": NAMED}))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v4-pro"
    [sent] = wait_requests(fresh_fakes, "deepseek", 1)
    assert sent.status == 200 and sent.json["tool_choice"] == "auto" and sent.json["tools"] == TOOLS


# ---- the built-in DeepSeek: deepseek-flash, thinking only when the client asks --------------------------------------------

CHAT_TURNS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
              {"role": "user", "content": "thanks, that is all"}]


def test_the_built_in_deepseek_goes_without_thinking_unless_the_client_asks(tmp_path, capsys):
    router = Router(load_config(None))
    model = router.catalog.models["deepseek-v2"]
    dialect = router.catalog.dialect_of(model)

    def to(api: str = "chat", **extra) -> dict:
        body = {"model": "auto", "messages": CHAT_TURNS, **extra}
        if api == "messages":
            body["max_tokens"] = 256
        return orjson.loads(render_body(parse_request(orjson.dumps(body), api), model.name, dialect=dialect))

    plain = to()
    assert plain["model"] == "deepseek-flash" and plain["thinking"] == {"type": "disabled"}
    assert "reasoning_content" not in plain["messages"][1]  # not thinking: nothing to pass back
    thinking = to(thinking={"type": "enabled"})  # the client's choice stands, with thinking mode's rules
    assert thinking["thinking"] == {"type": "enabled"} and thinking["messages"][1]["reasoning_content"]
    assert to("messages")["thinking"] == {"type": "disabled"}  # its Anthropic endpoint too
    assert to("messages", thinking={"type": "enabled", "budget_tokens": 1024})["thinking"]["type"] == "enabled"
    assert 'chat requests without thinking get {"thinking":{"type":"disabled"}}' in check_output(tmp_path, {}, capsys)


def test_the_deepseek_fake_serves_deepseek_flash_as_a_thinking_model(fakes):
    def post(**extra) -> httpx.Response:
        key = fakes.keys()["deepseek"]
        return httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
                          content=orjson.dumps({"model": "deepseek-flash", "messages": CHAT_TURNS, **extra}))

    refused = post()
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "The `reasoning_content` in the thinking mode must be passed back to the API."
    off = post(thinking={"type": "disabled"})
    assert off.status_code == 200 and "reasoning_content" not in off.json()["choices"][0]["message"]


@pytest.mark.envoy
def test_envoy_a_conversation_routed_to_the_built_in_deepseek_is_answered(stack, fresh_fakes):
    r = httpx.post(stack.url + "/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": CHAT_TURNS}))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fresh_fakes, "deepseek", 1)
    assert sent.status == 200 and sent.json["model"] == "deepseek-flash" and sent.json["thinking"] == {"type": "disabled"}
    assert "reasoning_content" not in r.json()["choices"][0]["message"]


def test_check_warns_of_models_their_provider_no_longer_serves(tmp_path, capsys):
    def warnings(data: dict) -> list[str]:
        return [line for line in check_output(tmp_path, data, capsys).splitlines() if "warning: calls" in line]

    # every slot calls a current model; the gpt-4o slot moves to a successor on the day OpenAI shuts gpt-4o down
    assert warnings({}) == []
    from llm_router.config import default_data

    def named(**names: str) -> dict:
        models = default_data()["models"]
        return {mid: {**{k: v for k, v in models[mid].items() if k != "changes"}, "name": name} for mid, name in names.items()}

    [upcoming] = warnings({"models": named(**{"gpt-4o": "gpt-4o"})})  # the slot without its successor
    assert "calls gpt-4o" in upcoming and "OpenAI shuts it down on 2027-01-14 (gpt-6-luna replaces it)" in upcoming

    assert warnings({"models": named(**{"gpt-4o": "gpt-5.6-sol", "gemini-1.5-pro": "gemini-3.7-flash"})}) == []
    [seed_gemini] = warnings({"models": named(**{"gpt-4o": "gpt-5.6-sol", "gemini-1.5-pro": "gemini-1.5-pro"})})
    assert "404 NOT_FOUND" in seed_gemini
    [soon] = warnings({"models": named(**{"gpt-4o": "gpt-5"})})
    assert "OpenAI shuts it down on 2026-12-11" in soon
    seed = {"models": named(**{"claude-3.5-sonnet": "claude-3-5-sonnet-20240620"})}
    assert "Anthropic retired it on 2025-10-22 (404 not_found_error)" in check_output(tmp_path, seed, capsys)
    later = {"models": named(**{"claude-3.5-sonnet": "claude-sonnet-4-20250514", "gpt-4o": "o3-mini"})}
    warned = [line for line in check_output(tmp_path, later, capsys).splitlines() if "warning: calls" in line]
    assert any("claude-sonnet-4-20250514" in w and "2026-06-15" in w for w in warned)
    assert any("o3-mini" in w and "OpenAI shut it down on 2026-10-23" in w for w in warned)
    old = {"models": named(**{"deepseek-v2": "deepseek-chat"})}
    assert "DeepSeek retired the name on 2026-07-24" in check_output(tmp_path, old, capsys)
    provider = default_data()["providers"]["deepseek"]  # another host may still serve the name
    elsewhere = {**old, "providers": {"deepseek": {**provider, "base_url": "https://deepseek.internal.example"}}}
    assert "DeepSeek retired" not in check_output(tmp_path, elsewhere, capsys)


# Claude Code 2.1.166 and later send their subagents' turns with thinking off and the session's reasoning effort;
# DeepSeek's Anthropic endpoint answers 400 ("thinking options type cannot be disabled when reasoning_effort is set").
SUBAGENT = {"model": "claude-sonnet-4-6", "max_tokens": 2048, "thinking": {"type": "disabled"},
            "output_config": {"effort": "max"}, "messages": [{"role": "user", "content": "list the files in src/"}]}


def test_the_built_in_deepseek_gets_no_reasoning_effort_with_thinking_off():
    router = Router(load_config(None))
    model = router.catalog.models["deepseek-v2"]

    def to(body: dict, api: str) -> dict:
        return orjson.loads(render_body(parse_request(orjson.dumps(body), api), model.name, dialect=router.catalog.dialect_of(model)))

    assert "output_config" not in to(SUBAGENT, "messages")
    kept = to({**SUBAGENT, "output_config": {"effort": "max", "format": {"type": "json_schema"}}}, "messages")
    assert kept["output_config"] == {"format": {"type": "json_schema"}} and kept["thinking"] == {"type": "disabled"}
    thinking = {**SUBAGENT, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert to(thinking, "messages")["output_config"] == {"effort": "max"}  # thinking: the effort stands
    assert "output_config" not in to({k: v for k, v in SUBAGENT.items() if k != "thinking"}, "messages")  # off by default
    chat = {"model": "auto", "messages": CHAT_TURNS, "reasoning_effort": "high"}
    plain = to(chat, "chat")  # the built-in slot's chat turns go without thinking: the effort goes with it
    assert plain["thinking"] == {"type": "disabled"} and "reasoning_effort" not in plain
    assert to({**chat, "thinking": {"type": "enabled"}}, "chat")["reasoning_effort"] == "high"
    # other providers keep it: Anthropic ignores the pair
    claude = router.catalog.models["claude-3.5-sonnet"]
    sent = orjson.loads(render_body(parse_request(orjson.dumps(SUBAGENT), "messages"), claude.name, dialect=claude.body))
    assert sent["output_config"] == {"effort": "max"}


def test_the_deepseek_fake_refuses_an_effort_with_thinking_off_on_both_apis(fakes):
    key = {"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json",
           "anthropic-version": "2023-06-01"}
    for path, body in (("/anthropic/v1/messages", {**SUBAGENT, "model": "deepseek-flash"}),
                       ("/v1/chat/completions", {"model": "deepseek-flash", "messages": CHAT_TURNS, "thinking": {"type": "disabled"},
                                                 "reasoning_effort": "high"})):
        refused = httpx.post(fakes.url("deepseek") + path, content=orjson.dumps(body), headers=key, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"] == {
            "message": "thinking options type cannot be disabled when reasoning_effort is set", "type": "invalid_request_error",
            "param": None, "code": "invalid_request_error"}
        alone = {k: v for k, v in body.items() if k not in ("output_config", "reasoning_effort")}
        assert httpx.post(fakes.url("deepseek") + path, content=orjson.dumps(alone), headers=key, timeout=30).status_code == 200


@pytest.mark.envoy
def test_envoy_a_claude_code_subagent_turn_is_answered_by_deepseek(stack, fresh_fakes):
    r = httpx.post(stack.url + "/v1/messages", content=orjson.dumps({**SUBAGENT, "model": "auto"}), timeout=30,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fresh_fakes, "deepseek", 1)
    assert sent.status == 200 and sent.path == "/anthropic/v1/messages" and "output_config" not in sent.json
    assert sent.json["thinking"] == {"type": "disabled"}
