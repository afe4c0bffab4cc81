"""Token estimates of long texts are kept: an application's system prompt and tools are estimated once."""
from __future__ import annotations

import orjson

import llm_router.request as request_module
from llm_router.commands.demo import agent_kit
from llm_router.request import KEEP_ESTIMATE_CHARS, KEEP_ESTIMATES, _estimate, estimate_tokens, parse_request


def test_a_kept_estimate_equals_a_fresh_one_and_short_texts_are_not_kept(monkeypatch):
    monkeypatch.setattr(request_module, "_KEPT_ESTIMATES", {})
    system = agent_kit()["system"]
    tools = orjson.dumps(agent_kit()["tools"]).decode()
    for text in (system, tools, system):
        assert estimate_tokens(text) == _estimate(text)
    assert set(request_module._KEPT_ESTIMATES) == {system, tools}
    estimate_tokens("a short prompt " * 10)
    estimate_tokens("x" * (KEEP_ESTIMATE_CHARS[1] + 1))  # a pasted document: estimated, never kept
    assert len(request_module._KEPT_ESTIMATES) == 2


def test_an_agents_standing_tokens_are_the_same_whether_kept_or_not(monkeypatch):
    kit = agent_kit()
    body = orjson.dumps({"model": "auto", "max_tokens": 512, "system": kit["system"], "tools": kit["tools"],
                         "messages": [{"role": "user", "content": "run the tests"}]})
    monkeypatch.setattr(request_module, "_KEPT_ESTIMATES", {})
    first = parse_request(body, "messages")
    second = parse_request(body, "messages")  # from the kept estimates
    assert request_module._KEPT_ESTIMATES
    assert (first.input_tokens, first.standing_tokens) == (second.input_tokens, second.standing_tokens)
    assert first.standing_tokens > 2000


def test_kept_estimates_are_bounded(monkeypatch):
    monkeypatch.setattr(request_module, "_KEPT_ESTIMATES", {})
    for i in range(KEEP_ESTIMATES * 2 + 5):
        estimate_tokens(f"{i} " + "y" * KEEP_ESTIMATE_CHARS[0])
        assert len(request_module._KEPT_ESTIMATES) <= KEEP_ESTIMATES
