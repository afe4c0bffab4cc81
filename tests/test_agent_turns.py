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
