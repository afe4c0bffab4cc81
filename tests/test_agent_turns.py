"""Agent clients (Claude Code, IDE assistants) send a long system prompt and tool definitions with every
call: the classifiers weigh the conversation, so those standing parts do not push every turn up a tier."""
from __future__ import annotations

import orjson
import pytest

from llm_router.config import load_config, parse_config
from llm_router.decision import Decision
from llm_router.request import parse_request
from llm_router.router import Router

# About 3,500 tokens of standing instructions and 14 tool schemas, the shape of a coding agent's calls.
SYSTEM = ("You are an interactive CLI tool that helps users with software engineering tasks. Use the tools "
          "available to you to assist the user: read files, run commands, fix bugs, refactor code, write tests. "
          "Follow the repository's conventions and keep answers concise. ") * 60
TOOLS = [{"name": f"tool_{i}", "description": "Runs a command in a persistent shell session with a timeout. " * 12,
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                           "required": ["command"]}} for i in range(14)]
OPENAI_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                  "parameters": t["input_schema"]}} for t in TOOLS]


def messages_body(text: str, *, agent: bool, history: list[dict] | None = None) -> bytes:
    body: dict = {"model": "claude-sonnet-4-5", "max_tokens": 4096,
                  "messages": [*(history or []), {"role": "user", "content": [{"type": "text", "text": text}]}]}
    if agent:
        body.update(system=[{"type": "text", "text": SYSTEM}], tools=TOOLS)
    return orjson.dumps(body)


def chat_body(text: str, *, agent: bool) -> bytes:
    msgs = [{"role": "developer", "content": SYSTEM}] if agent else []
    body: dict = {"model": "auto", "messages": [*msgs, {"role": "user", "content": text}]}
    if agent:
        body["tools"] = OPENAI_TOOLS
    return orjson.dumps(body)


def responses_body(text: str, *, agent: bool) -> bytes:
    body: dict = {"model": "auto", "input": text}
    if agent:
        body.update(instructions=SYSTEM, tools=OPENAI_TOOLS)
    return orjson.dumps(body)


TURNS = ["run the tests", "what does this function return?", "rename the variable x to count in utils.py",
         "Design a lock-free concurrent hash map with resizing and prove its linearizability."]


@pytest.mark.parametrize("api,path,build", [("messages", "/v1/messages", messages_body),
                                            ("chat", "/v1/chat/completions", chat_body),
                                            ("responses", "/v1/responses", responses_body)])
def test_standing_parts_are_counted_in_the_input_but_not_in_the_conversation(api, path, build):
    plain = parse_request(build("run the tests", agent=False), api)
    agent = parse_request(build("run the tests", agent=True), api)
    assert agent.input_tokens > plain.input_tokens + 3000  # priced and checked against the context window in full
    assert agent.standing_tokens >= agent.input_tokens - plain.input_tokens - 8
    assert abs(agent.conversation_tokens - plain.conversation_tokens) <= 8
    assert agent.context == "" and "software engineering" not in agent.prompt


@pytest.mark.parametrize("classifier", ["rules", "semantic", "hybrid"])
@pytest.mark.parametrize("api,path,build", [("messages", "/v1/messages", messages_body),
                                            ("chat", "/v1/chat/completions", chat_body),
                                            ("responses", "/v1/responses", responses_body)])
def test_a_turn_is_classified_the_same_with_or_without_a_coding_agents_system_prompt_and_tools(classifier, api, path, build):
    data = load_config(None).model_dump(mode="json")
    data["policies"]["default"]["classifier"] = classifier
    router = Router(parse_config(data))
    for text in TURNS:
        _, plain = router.route(build(text, agent=False), path=path)
        _, agent = router.route(build(text, agent=True), path=path)
        assert isinstance(plain, Decision) and isinstance(agent, Decision), (plain, agent)
        assert (agent.classification.tier, agent.classification.category) == \
            (plain.classification.tier, plain.classification.category), text
        assert abs(agent.classification.score - plain.classification.score) <= 0.01, text
        assert agent.input_tokens > plain.input_tokens + 3000  # the estimated cost still counts every token


def test_a_long_conversation_still_weighs_as_length():
    router = Router(load_config(None))
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"step {i}: here is the next part of the module " + "def f(x): return x * 2\n" * 30},
                    {"role": "assistant", "content": "Noted. " * 40}]
    _, short = router.route(messages_body("run the tests", agent=True), path="/v1/messages")
    _, long = router.route(messages_body("run the tests", agent=True, history=history), path="/v1/messages")
    assert isinstance(short, Decision) and isinstance(long, Decision)
    assert long.classification.score > short.classification.score + 0.05


# ---- agent loops: the model calls tools, the client sends their results back ----------------

INSTRUCTION = "Fix the failing test in parser.py"
FILE = "def parse(tokens):\n    stack = []\n    for t in tokens:\n        if t == '(':\n            stack.append(t)\n" * 40


def loop_messages(*, own_text: str | None = None) -> bytes:
    result: list[dict] = [{"type": "tool_result", "tool_use_id": "t1", "content": FILE}]
    if own_text:
        result.append({"type": "text", "text": own_text})
    return orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": SYSTEM, "tools": TOOLS, "messages": [
        {"role": "user", "content": INSTRUCTION},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "tool_0", "input": {"command": "cat parser.py"}}]},
        {"role": "user", "content": result}]})


def loop_chat() -> bytes:
    return orjson.dumps({"model": "auto", "tools": OPENAI_TOOLS, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": INSTRUCTION},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t1", "type": "function", "function": {
            "name": "tool_0", "arguments": '{"command": "cat parser.py"}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": FILE}]})


def loop_responses() -> bytes:
    return orjson.dumps({"model": "auto", "instructions": SYSTEM, "tools": OPENAI_TOOLS, "input": [
        {"role": "user", "content": INSTRUCTION},
        {"type": "function_call", "call_id": "t1", "name": "tool_0", "arguments": '{"command": "cat parser.py"}'},
        {"type": "function_call_output", "call_id": "t1", "output": FILE}]})


def test_a_tool_result_turn_is_classified_by_the_instruction_in_every_format():
    """Anthropic carries tool results in a user message, OpenAI in tool messages or items: all three read the instruction."""
    requests = {"messages": parse_request(loop_messages(), "messages"), "chat": parse_request(loop_chat(), "chat"),
                "responses": parse_request(loop_responses(), "responses")}
    for api, req in requests.items():
        assert req.prompt == INSTRUCTION and req.turns == 1, api
        assert "stack.append" not in req.context  # results come after the instruction: not its context
        assert req.conversation_tokens > 500  # but the loop's growing length still counts
    router = Router(load_config(None))
    got = {}
    for api, path, body in (("messages", "/v1/messages", loop_messages()), ("chat", "/v1/chat/completions", loop_chat()),
                            ("responses", "/v1/responses", loop_responses())):
        _, d = router.route(body, path=path)
        assert isinstance(d, Decision), d
        got[api] = (d.classification.tier, d.classification.category)
    assert got["messages"] == got["chat"] == got["responses"], got


def test_text_sent_beside_tool_results_is_the_users_turn():
    req = parse_request(loop_messages(own_text="also add a test for nested parentheses"), "messages")
    assert req.prompt == "also add a test for nested parentheses" and req.turns == 2
    assert "stack.append" in req.context  # the results it answers come before it (the window is bounded)


def test_an_agent_loops_later_calls_continue_the_conversation():
    """Affinity keeps a conversation on its model from the second call on; an agent loop's second call has no second
    user turn, only the model's tool call and its result."""
    from llm_router.affinity import conversation_key

    first = {"messages": orjson.dumps({"model": "m", "max_tokens": 10, "system": SYSTEM, "messages": [{"role": "user", "content": INSTRUCTION}]}),
             "chat": orjson.dumps({"model": "auto", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": INSTRUCTION}]}),
             "responses": orjson.dumps({"model": "auto", "instructions": SYSTEM, "input": [{"role": "user", "content": INSTRUCTION}]})}
    later = {"messages": loop_messages(), "chat": loop_chat(), "responses": loop_responses()}
    for api in first:
        key0, continues0 = conversation_key(parse_request(first[api], api))
        key1, continues1 = conversation_key(parse_request(later[api], api))
        assert key0 == key1 and not continues0 and continues1, api


def test_the_demo_coding_agent_calls_parse_as_agent_turns_and_cheap_ones_go_cheap():
    """The demo's coding-agent calls: every one parses with its instruction as the prompt and the agent's system prompt and
    tools as standing tokens; repository chores go to the cheapest model, and the hard tasks to HIGH-tier models."""
    from llm_router.commands.demo import load_workload, request_for
    from llm_router.request import api_for_path

    router = Router(load_config(None))
    items = [it for it in load_workload(None) if it.get("agent")]
    assert len(items) >= 20 and {it["api"] for it in items} == {"chat", "messages"}
    assert sum(1 for it in items if it.get("tool_call")) >= 10  # later calls of a loop, carrying a tool's result
    cheap = 0
    for it in items:
        path, body = request_for(it)
        req = parse_request(body, api_for_path(path))
        assert req.prompt == it["prompt"] and req.standing_tokens > 2000, it["id"]
        _, d = router.route(body, path=path)
        assert isinstance(d, Decision), (it["id"], d)
        cheap += d.model.id == "deepseek-v2"
        if it["tier_hint"] in ("HIGH", "CRITICAL"):
            assert d.classification.tier.name in ("HIGH", "CRITICAL"), (it["id"], d.reason)
    assert cheap >= len(items) // 4
