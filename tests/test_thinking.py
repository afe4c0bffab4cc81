"""Extended thinking across routed models: a turn asking for it never gets a 400 because of where it went.

Anthropic answers 400 to `thinking` on a model that predates it ("'claude-3-5-sonnet-...' does not
support thinking.", what Claude Code hits on Claude 3.5 Sonnet), and to a thinking turn that
continues a tool call whose assistant message does not start with a thinking block (the case when
the tool call came from another, non-thinking model of the routed chain). The fakes refuse both as
Anthropic does; the router leaves thinking out of such calls and says so in the reason.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import CLAUDE_3_5, config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import load_config, parse_config
from llm_router.decision import Decision
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.message_rules import thinking_unfit, without_foreign_thinking
from llm_router.request import parse_request, render_body
from llm_router.router import Router

THINKING = {"type": "enabled", "budget_tokens": 4096}
SONNET_4 = {"provider": "anthropic", "name": "claude-sonnet-4-20250514", "input_price": 3.0, "output_price": 15.0,
            "context_window": 200000, "max_output_tokens": 64000, "capabilities": ["tools", "vision", "code", "streaming"],
            "tier": "HIGH", "quality": 0.95}
TOOL = [{"name": "run", "description": "Run a shell command.", "input_schema": {"type": "object", "properties": {
    "cmd": {"type": "string"}}, "required": ["cmd"]}}]
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


def turn(*, tool_loop: bool = False, thought: bool = False, past_thinking: bool = False, thinking=THINKING) -> dict:
    """A Claude Code-style Messages body; tool_loop: it answers a tool call (thought: that call began with thinking)."""
    messages: list[dict] = [{"role": "user", "content": "run the unit tests and tell me what fails"}]
    if past_thinking:
        messages += [{"role": "assistant", "content": [{"type": "thinking", "thinking": "Use pytest.", "signature": "c2ln"},
                                                       {"type": "text", "text": "I will run pytest."}]},
                     {"role": "user", "content": "go ahead"}]
    if tool_loop:
        call = [{"type": "tool_use", "id": "toolu_1", "name": "run", "input": {"cmd": "pytest -q"}}]
        if thought:
            call.insert(0, {"type": "thinking", "thinking": "Run the suite.", "signature": "c2ln"})
        messages += [{"role": "assistant", "content": call},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "2 failed"}]}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8192, "tools": TOOL, "messages": messages}
    if thinking is not None:
        body["thinking"] = thinking
    return body


OPUS_4 = {**SONNET_4, "name": "claude-opus-4-20250514", "input_price": 15.0, "output_price": 75.0, "max_output_tokens": 32000,
          "tier": "CRITICAL", "quality": 0.97}


def with_sonnet_4() -> dict:
    """The test config plus two Claude models that think, and routes pinned to the old and the new Claudes and to
    DeepSeek."""
    data = config_data()
    data["models"] = {"claude-sonnet-4": SONNET_4, "claude-opus-4": OPUS_4, "claude-3.5-sonnet": CLAUDE_3_5}
    for name, model in (("old", "claude-3.5-sonnet"), ("new", "claude-sonnet-4"), ("opus", "claude-opus-4"),
                        ("deepseek", "deepseek-v2")):
        data["policies"][name] = {"classifier": "rules", "strategy": "ladder", "explain": True,
                                  "ladder": {t: model for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                  "constraints": {"models": [model]}}
    return data


def decide(body: dict, policy: str, data: dict | None = None) -> tuple[Decision, dict]:
    router = Router(parse_config(data or with_sonnet_4()))
    request, d = router.route(orjson.dumps(body), path="/v1/messages", policy=router.policies[policy])
    assert isinstance(d, Decision), d
    model = d.model
    dialect = model.body if model.body is not None else router.catalog.providers[model.provider].body
    return d, orjson.loads(render_body(request, model.name, dialect=dialect, max_output=model.max_output))


def test_a_model_without_extended_thinking_gets_neither_the_field_nor_thinking_blocks():
    d, sent = decide(turn(past_thinking=True), "old")
    assert d.model.id == "claude-3.5-sonnet"
    assert "thinking" not in sent
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "I will run pytest."}]
    assert d.selection.endswith("; without extended thinking, which claude-3.5-sonnet does not take")
    # the same turn to a model that thinks: field and blocks as the client sent them, no note
    d, sent = decide(turn(past_thinking=True), "new")
    assert d.model.id == "claude-sonnet-4" and sent["thinking"] == THINKING
    assert sent["messages"][1]["content"][0]["type"] == "thinking" and "thinking" not in d.selection


def test_a_tool_loop_without_a_thinking_block_continues_without_thinking():
    d, sent = decide(turn(tool_loop=True), "new")
    assert "thinking" not in sent and sent["messages"] == turn(tool_loop=True)["messages"]
    assert d.selection.endswith("; without extended thinking: the tool call this turn answers was made without it")
    d, sent = decide(turn(tool_loop=True, thought=True), "new")
    assert sent["thinking"] == THINKING and "thinking" not in d.selection
    # a new user turn after a tool loop, and a turn with thinking disabled, are sent as they came
    assert not thinking_unfit(turn(past_thinking=True))
    d, sent = decide(turn(tool_loop=True, thinking={"type": "disabled"}), "new")
    assert sent["thinking"] == {"type": "disabled"} and "thinking" not in d.selection


def test_only_anthropic_bodies_and_only_the_models_that_refuse_are_changed():
    # DeepSeek's Anthropic endpoint takes thinking: the built-in catalog sends it on (budget within max_tokens)
    router = Router(load_config(None))
    request, d = router.route(orjson.dumps(turn()), path="/v1/messages")
    assert isinstance(d, Decision) and d.model.id == "deepseek-v2", d
    sent = orjson.loads(render_body(request, d.model.name, dialect=router.catalog.providers["deepseek"].body))
    assert sent["thinking"] == THINKING
    # a chat body is not Anthropic's: nothing is read or removed
    chat = parse_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "thinking": THINKING}), "chat")
    assert orjson.loads(render_body(chat, "m"))["thinking"] == THINKING


def history(*, earlier_thought: bool, thought: bool = True) -> dict:
    """A thinking turn answering a tool call, after an earlier tool call that a model (thinking or not) made."""
    body = turn(tool_loop=True, thought=thought)
    earlier = [{"type": "tool_use", "id": "toolu_0", "name": "run", "input": {"cmd": "ls"}}]
    if earlier_thought:
        earlier.insert(0, {"type": "thinking", "thinking": "Look first.", "signature": "c2ln"})
    body["messages"][1:1] = [{"role": "assistant", "content": earlier},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0", "content": "tests/"}]}]
    return body


def test_deepseek_gets_thinking_only_when_every_tool_call_carried_it():
    d, sent = decide(history(earlier_thought=False), "deepseek")
    # its V4 model thinks unless told not to, so "without thinking" is said outright
    assert d.model.id == "deepseek-v2" and sent["thinking"] == {"type": "disabled"}
    assert sent["messages"] == history(earlier_thought=False)["messages"]
    assert d.selection.endswith("; without extended thinking: an earlier tool call was made without it, which deepseek-v2 "
                                "does not take")
    d, sent = decide(history(earlier_thought=True), "deepseek")
    assert sent["thinking"] == THINKING and "thinking" not in d.selection
    # Anthropic wants it on the last call only: the same history goes to a Claude that thinks with thinking on
    d, sent = decide(history(earlier_thought=False), "new")
    assert sent["thinking"] == THINKING and "thinking" not in d.selection


def answered(by: str, signature: str) -> dict:
    """A thinking turn after an answer that thought (its block signed `signature`), continuing the conversation."""
    body = turn()
    body["messages"] += [{"role": "assistant", "content": [{"type": "thinking", "thinking": "Use pytest.", "signature": signature},
                                                           {"type": "text", "text": f"{by} says: run pytest."}]},
                         {"role": "user", "content": "go ahead and fix what fails"}]
    return body


def test_thinking_blocks_another_model_made_are_left_out():
    router = Router(parse_config(with_sonnet_4()))
    router.remember_thinking(("c2lnLXNvbm5ldA==",), "claude-sonnet-4")
    body = answered("sonnet", "c2lnLXNvbm5ldA==")
    request, d = router.route(orjson.dumps(body), path="/v1/messages", policy=router.policies["opus"])
    assert isinstance(d, Decision) and d.model.id == "claude-opus-4"
    sent = orjson.loads(render_body(request, d.model.name, dialect=router.catalog.dialect_of(d.model), model_id=d.model.id,
                                    thinking_origin=router.thinking_origin))
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "sonnet says: run pytest."}]
    assert sent["thinking"] == THINKING and d.selection.endswith("; without the thinking blocks of other models")
    # back to the model that made the block, and a block nobody here saw made: kept as sent
    for policy, made in (("new", "c2lnLXNvbm5ldA=="), ("opus", "dW5rbm93bg==")):
        request, d = router.route(orjson.dumps(answered("x", made)), path="/v1/messages", policy=router.policies[policy])
        sent = orjson.loads(render_body(request, d.model.name, dialect=router.catalog.dialect_of(d.model), model_id=d.model.id,
                                        thinking_origin=router.thinking_origin))
        assert sent["messages"] == answered("x", made)["messages"] and "other models" not in d.selection
    # a foreign block opening the tool loop this turn answers: the block goes, and so does thinking (Anthropic's rule)
    loop = turn(tool_loop=True, thought=True)
    loop["messages"][1]["content"][0]["signature"] = "c2lnLXNvbm5ldA=="
    request, d = router.route(orjson.dumps(loop), path="/v1/messages", policy=router.policies["opus"])
    sent = orjson.loads(render_body(request, d.model.name, dialect=router.catalog.dialect_of(d.model), model_id=d.model.id,
                                    thinking_origin=router.thinking_origin))
    assert "thinking" not in sent and [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert d.selection.endswith("; without the thinking blocks of other models; without extended thinking: the tool call "
                                "this turn answers was made without it")


def test_foreign_blocks_are_found_by_signature_or_redacted_data_and_odd_shapes_pass():
    origin = {"A": "model-a", "R": "model-a"}.get
    messages = [{"role": "user", "content": [{"type": "thinking", "signature": "A"}]},  # not an answer: untouched
                {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "R"}, {"type": "text", "text": "t"}]},
                {"role": "assistant", "content": [{"type": "thinking", "signature": "A"}]},  # all it holds: kept
                {"role": "assistant", "content": "plain"}, "x", {"role": "assistant", "content": [7, {"type": "thinking"}]}]
    out = without_foreign_thinking(messages, "model-b", origin)
    assert out[1]["content"] == [{"type": "text", "text": "t"}] and out[0] == messages[0] and out[2:] == messages[2:]
    assert without_foreign_thinking(messages, "model-a", origin) is messages  # its own blocks: the same list back
    assert without_foreign_thinking("x", "m", origin) == "x"


def test_a_thinking_block_alone_is_kept_rather_than_leaving_an_empty_message():
    body = turn()
    body["messages"] += [{"role": "assistant", "content": [{"type": "redacted_thinking", "data": "eA=="}]},
                         {"role": "user", "content": "and?"}]
    _, sent = decide(body, "old")
    assert sent["messages"][1]["content"] == [{"type": "redacted_thinking", "data": "eA=="}] and "thinking" not in sent


# ---- the fakes, and through the real Envoy ------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(with_sonnet_4())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-thinking", fakes, with_sonnet_4(),
                             routes=(*(RouteSpec(f"/{p}/", policy=p) for p in ("old", "new", "opus", "deepseek")), RouteSpec("/")))


def anthropic(fakes, body: dict) -> httpx.Response:
    return httpx.post(fakes.url("anthropic") + "/v1/messages", content=orjson.dumps(body), timeout=30,
                      headers={**HEADERS, "x-api-key": fakes.keys()["anthropic"]})


def test_the_anthropic_fake_refuses_thinking_as_anthropic_does(fakes):
    old = anthropic(fakes, {**turn(), "model": "claude-3-5-sonnet-20240620"})
    assert old.status_code == 400 and old.json()["error"] == {
        "type": "invalid_request_error", "message": "'claude-3-5-sonnet-20240620' does not support thinking."}
    loop = anthropic(fakes, {**turn(tool_loop=True), "model": "claude-sonnet-4-20250514"})
    assert loop.status_code == 400 and "must start with a thinking block" in loop.json()["error"]["message"]
    for ok in (turn(tool_loop=True, thought=True), turn(tool_loop=True, thinking=None), turn(past_thinking=True)):
        r = anthropic(fakes, {**ok, "model": "claude-sonnet-4-20250514"})
        assert r.status_code == 200, r.text
    r = anthropic(fakes, {**turn(thinking=None), "model": "claude-3-5-sonnet-20240620"})
    assert r.status_code == 200, r.text
    budget = anthropic(fakes, {**turn(thinking={"type": "enabled", "budget_tokens": 8192}), "model": "claude-sonnet-4-20250514"})
    assert budget.status_code == 400 and "budget_tokens" in budget.json()["error"]["message"]


@pytest.mark.envoy
def test_envoy_a_claude_code_thinking_turn_is_answered_by_the_old_and_the_new_claude(stack, fresh_fakes):
    cases = (("/old/", turn(), "claude-3.5-sonnet", False),
             ("/old/", turn(tool_loop=True, thought=True), "claude-3.5-sonnet", False),
             ("/new/", turn(tool_loop=True), "claude-sonnet-4", False),
             ("/new/", turn(tool_loop=True, thought=True), "claude-sonnet-4", True))
    for n, (prefix, body, model, keeps) in enumerate(cases, 1):
        r = httpx.post(stack.url + prefix + "v1/messages", content=orjson.dumps(body), headers=HEADERS, timeout=30)
        assert r.status_code == 200, (prefix, r.text)
        assert r.headers["x-llm-router-model"] == model and r.json()["type"] == "message"
        assert ("without extended thinking" in r.headers["x-llm-router-reason"]) is not keeps, r.headers["x-llm-router-reason"]
        sent = wait_requests(fresh_fakes, "anthropic", n)[-1]
        assert sent.status == 200 and ("thinking" in sent.json) is keeps


def test_the_deepseek_fake_refuses_a_thinking_turn_after_a_tool_call_without_thinking(fakes):
    def post(body: dict) -> httpx.Response:
        return httpx.post(fakes.url("deepseek") + "/anthropic/v1/messages", content=orjson.dumps({**body, "model": "deepseek-flash"}),
                          headers={**HEADERS, "authorization": f"Bearer {fakes.keys()['deepseek']}"}, timeout=30)

    refused = post(history(earlier_thought=False))
    assert refused.status_code == 400 and refused.json()["error"] == {
        "type": "invalid_request_error", "message": "The `content[].thinking` in the thinking mode must be passed back to the API."}
    # V4 thinks unless told not to (as agent projects report): a body without `thinking` is refused the same way
    unsaid = post({k: v for k, v in history(earlier_thought=False).items() if k != "thinking"})
    assert unsaid.status_code == 400 and "must be passed back" in unsaid.json()["error"]["message"]
    for ok in (history(earlier_thought=True), {**history(earlier_thought=False), "thinking": {"type": "disabled"}}):
        assert post(ok).status_code == 200


@pytest.mark.envoy
def test_envoy_a_thinking_turn_after_an_unthought_tool_call_is_answered_by_deepseek(stack, fresh_fakes):
    for n, (earlier, keeps) in enumerate(((False, False), (True, True)), 1):
        r = httpx.post(stack.url + "/deepseek/v1/messages", content=orjson.dumps(history(earlier_thought=earlier)),
                       headers=HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-router-model"] == "deepseek-v2" and r.json()["type"] == "message"
        assert ("without extended thinking" in r.headers["x-llm-router-reason"]) is not keeps
        sent = wait_requests(fresh_fakes, "deepseek", n)[-1]
        assert sent.status == 200 and (sent.json["thinking"] == THINKING if keeps else sent.json["thinking"] == {"type": "disabled"})
    # a client that sends no `thinking` (DeepSeek's V4 would think, and refuse this history): said off outright
    unsaid = {k: v for k, v in history(earlier_thought=False).items() if k != "thinking"}
    r = httpx.post(stack.url + "/deepseek/v1/messages", content=orjson.dumps(unsaid), headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    sent = wait_requests(fresh_fakes, "deepseek", 3)[-1]
    assert sent.status == 200 and sent.json["thinking"] == {"type": "disabled"}


def test_the_anthropic_fake_signs_thinking_for_its_model_and_refuses_another_models(fakes):
    first = anthropic(fakes, {**turn(), "model": "claude-sonnet-4-20250514"})
    assert first.status_code == 200, first.text
    thought, text = first.json()["content"]
    assert thought["type"] == "thinking" and thought["signature"] and text["type"] == "text"
    later = answered("sonnet", thought["signature"])
    assert anthropic(fakes, {**later, "model": "claude-sonnet-4-20250514"}).status_code == 200
    refused = anthropic(fakes, {**later, "model": "claude-opus-4-20250514"})
    assert refused.status_code == 400 and refused.json()["error"] == {
        "type": "invalid_request_error", "message": "messages.1.content.0: Invalid `signature` in `thinking` block"}


@pytest.mark.envoy
@pytest.mark.parametrize("stream", [False, True])
def test_envoy_a_conversation_moved_to_another_thinking_model_goes_on(stack, fresh_fakes, stream):
    first = httpx.post(stack.url + "/new/v1/messages", content=orjson.dumps({**turn(), "stream": stream}), headers=HEADERS,
                       timeout=30)
    assert first.status_code == 200, first.text
    if stream:
        deltas = [orjson.loads(line[5:]) for line in first.text.splitlines() if line.startswith("data:")]
        signature = next(e["delta"]["signature"] for e in deltas if e.get("delta", {}).get("type") == "signature_delta")
    else:
        signature = first.json()["content"][0]["signature"]
    wait_requests(fresh_fakes, "anthropic", 1)
    # the router learned that claude-sonnet-4 made it: the next turn, routed to Opus, goes without it and is answered
    r = httpx.post(stack.url + "/opus/v1/messages", content=orjson.dumps({**answered("sonnet", signature), "stream": stream}),
                   headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-opus-4"
    assert "without the thinking blocks of other models" in r.headers["x-llm-router-reason"]
    sent = wait_requests(fresh_fakes, "anthropic", 2)[-1]
    assert sent.status == 200 and sent.json["messages"][1]["content"] == [{"type": "text", "text": "sonnet says: run pytest."}]
    # and back on the model that made it, the block goes as it came
    r = httpx.post(stack.url + "/new/v1/messages", content=orjson.dumps(answered("sonnet", signature)), headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    assert wait_requests(fresh_fakes, "anthropic", 3)[-1].json["messages"][1]["content"][0]["signature"] == signature


# ---- unsigned thinking blocks (DeepSeek's Anthropic endpoint signs nothing) ------------------------------------------

def deepseek_loop() -> dict:
    """A tool loop DeepSeek's Anthropic endpoint began: its thinking block carries no signature."""
    body = turn(tool_loop=True, thought=True)
    del body["messages"][1]["content"][0]["signature"]
    return body


def test_unsigned_thinking_blocks_are_left_out_for_anthropic_and_kept_for_deepseek():
    messages = [{"role": "assistant", "content": [{"type": "thinking", "thinking": "a"}, {"type": "text", "text": "t"}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "b", "signature": ""}, {"type": "text", "text": "u"}]},
                {"role": "assistant", "content": [{"type": "redacted_thinking"}, {"type": "thinking", "thinking": "c", "signature": "c2ln"}]},
                {"role": "user", "content": [{"type": "thinking", "thinking": "d"}]}]
    out = without_foreign_thinking(messages, "m", None, unsigned=True)
    assert [[b["type"] for b in m["content"]] for m in out] == [["text"], ["text"], ["thinking"], ["thinking"]]
    assert out[2]["content"][0]["signature"] == "c2ln" and out[3] == messages[3]  # signed, and not an answer: kept
    assert without_foreign_thinking(messages, "m", None) is messages  # a provider that signs nothing: as they came
    # through the router: the tool loop's unsigned block goes for Claude, and thinking with it (Anthropic's rule)
    d, sent = decide(deepseek_loop(), "new")
    assert d.model.id == "claude-sonnet-4" and "thinking" not in sent
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert d.selection.endswith("; without the thinking blocks of other models; without extended thinking: the tool call "
                                "this turn answers was made without it")
    d, sent = decide(deepseek_loop(), "deepseek")  # DeepSeek takes its own blocks back
    assert sent["messages"] == deepseek_loop()["messages"] and sent["thinking"] == THINKING and "thinking" not in d.selection
    # an earlier answer's unsigned block: it goes, thinking stays on
    past = turn(past_thinking=True)
    del past["messages"][1]["content"][0]["signature"]
    d, sent = decide(past, "new")
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "I will run pytest."}] and sent["thinking"] == THINKING


def test_a_body_is_searched_for_thinking_blocks_only_when_it_may_hold_one():
    def flagged(body: dict) -> bool:
        return parse_request(orjson.dumps(body), "messages").thinking_blocks

    assert flagged(deepseek_loop()) and flagged(turn(tool_loop=True, thought=True))
    assert not flagged(turn(tool_loop=True)) and not flagged(turn(thinking=None))  # the thinking field alone is not a block


def test_the_anthropic_fake_refuses_unsigned_thinking_and_the_deepseek_fake_signs_nothing(fakes):
    missing = anthropic(fakes, {**deepseek_loop(), "model": "claude-sonnet-4-20250514"})
    assert missing.status_code == 400 and missing.json()["error"] == {
        "type": "invalid_request_error", "message": "messages.1.content.0.thinking.signature: Field required"}
    empty = deepseek_loop()
    empty["messages"][1]["content"][0]["signature"] = ""
    refused = anthropic(fakes, {**empty, "model": "claude-sonnet-4-20250514"})
    assert refused.json()["error"]["message"] == "messages.1.content.0: Invalid `signature` in `thinking` block"
    for stream in (False, True):
        r = httpx.post(fakes.url("deepseek") + "/anthropic/v1/messages", timeout=30,
                       content=orjson.dumps({**turn(), "model": "deepseek-flash", "stream": stream}),
                       headers={**HEADERS, "authorization": f"Bearer {fakes.keys()['deepseek']}"})
        assert r.status_code == 200, r.text
        if stream:
            events = [orjson.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
            assert {"type": "thinking", "thinking": ""} in [e.get("content_block") for e in events]
            assert not any(e.get("delta", {}).get("type") == "signature_delta" for e in events)
        else:
            assert r.json()["content"][0] == {"type": "thinking", "thinking": r.json()["content"][0]["thinking"]}


@pytest.mark.envoy
def test_envoy_a_conversation_deepseek_thought_in_goes_on_at_claude(stack, fresh_fakes):
    first = httpx.post(stack.url + "/deepseek/v1/messages", content=orjson.dumps(turn()), headers=HEADERS, timeout=30)
    assert first.status_code == 200, first.text
    thought, text = first.json()["content"]
    assert thought["type"] == "thinking" and "signature" not in thought
    later = turn()
    later["messages"] += [{"role": "assistant", "content": [thought, text]}, {"role": "user", "content": "now fix it"}]
    r = httpx.post(stack.url + "/new/v1/messages", content=orjson.dumps(later), headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-sonnet-4"
    assert "without the thinking blocks of other models" in r.headers["x-llm-router-reason"]
    sent = wait_requests(fresh_fakes, "anthropic", 1)[-1]
    assert sent.status == 200 and sent.json["messages"][1]["content"] == [text] and sent.json["thinking"] == THINKING


def test_check_names_the_setting(capsys):
    from llm_router.cli import main

    assert main(["check"]) == 0
    assert "anthropic body: tool call ids of letters, digits, _ and - only; thinking blocks without a signature left out; " \
           "blank text blocks left out" in capsys.readouterr().out


# ---- blank text blocks (Anthropic refuses them; answers, its own included, sometimes hold them) -----------------------

def blank_history() -> dict:
    """A tool loop whose answers held blank text: a whitespace-only block beside a tool call, an empty answer, an empty
    system block."""
    body = turn(tool_loop=True, thinking=None)
    body["system"] = [{"type": "text", "text": "You are a coding agent."}, {"type": "text", "text": ""}]
    body["messages"][1]["content"].insert(0, {"type": "text", "text": "\n\n"})
    body["messages"][1:1] = [{"role": "assistant", "content": [{"type": "text", "text": ""}]},
                             {"role": "user", "content": "go on"}]
    return body


def test_blank_text_blocks_and_blank_messages_are_left_out_for_anthropic():
    from llm_router.message_rules import without_blank_system, without_blank_text

    messages = blank_history()["messages"]
    out = without_blank_text(messages)
    assert [m["role"] for m in out] == ["user", "user", "assistant", "user"]  # the blank answer goes
    assert [b["type"] for b in out[2]["content"]] == ["tool_use"] and out[3] == messages[-1]
    assert without_blank_text(out) is out  # nothing left to do: the same list
    assert without_blank_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "},
                               {"role": "user", "content": "?"}]) == [{"role": "user", "content": "hi"}, {"role": "user", "content": "?"}]
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": ""}]}]
    assert without_blank_text(prefill)[-1] == {"role": "assistant", "content": []}  # a final assistant message may be empty
    last_user = [{"role": "user", "content": [{"type": "text", "text": " "}]}]
    assert without_blank_text(last_user) == last_user  # nothing else to send: as it came (the provider says why)
    assert without_blank_system([{"type": "text", "text": " "}]) is None and without_blank_system("s") == "s"
    d, sent = decide(blank_history(), "new")
    assert sent["messages"] == out and sent["system"] == [{"type": "text", "text": "You are a coding agent."}]
    d, sent = decide(blank_history(), "deepseek")  # other providers: as sent
    assert sent["messages"] == blank_history()["messages"] and sent["system"] == blank_history()["system"]


def test_the_anthropic_fake_refuses_blank_text_as_anthropic_does(fakes):
    def post(body: dict) -> str:
        r = anthropic(fakes, {**body, "model": "claude-sonnet-4-20250514"})
        return r.json()["error"]["message"] if r.status_code == 400 else str(r.status_code)

    body = blank_history()
    assert post(body) == "messages: text content blocks must be non-empty"
    body["system"] = body["system"][:1]
    body["messages"][1]["content"] = [{"type": "text", "text": " "}]
    assert post(body) == "messages: text content blocks must contain non-whitespace text"
    body["messages"][1]["content"] = " "
    assert post(body) == "messages.1: all messages must have non-empty content except for the optional final assistant message"
    body["messages"][1]["content"] = "Sure."
    body["messages"][3]["content"] = body["messages"][3]["content"][1:]
    assert post(body) == "200"


@pytest.mark.envoy
def test_envoy_a_loop_with_blank_answers_is_answered_by_claude(stack, fresh_fakes):
    r = httpx.post(stack.url + "/new/v1/messages", content=orjson.dumps(blank_history()), headers=HEADERS, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-sonnet-4"
    sent = wait_requests(fresh_fakes, "anthropic", 1)[-1]
    assert sent.status == 200 and len(sent.json["messages"]) == 4 and len(sent.json["system"]) == 1
