"""The built-in Claude slot calls Claude Sonnet 4.6, with the rules its 400s ask for.

Anthropic retired Claude 3.5 Sonnet on 2025-10-22; Sonnet 4.6 is served at the seed's prices. It answers 400 to what
clients written for other models send it: while it thinks, a temperature other than 1 ("`temperature` may only be set to 1
when thinking is enabled."), a top_k ("`top_k` must be unset when thinking is enabled."), a top_p below 0.95, and a
tool_choice that forces a tool ("Thinking may not be enabled when tool_choice forces tool use."); and at any time a
conversation that ends with an assistant message ("This model does not support assistant message prefill. The
conversation must end with a user message."). The Anthropic fake refuses each as Anthropic does.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import LADDER, config_data, fresh_fakes, post_api, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import parse_config
from llm_router.decision import Decision
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.message_rules import unforced_tool_choice
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from test_tool_ids import check_output, refusal

SONNET = "claude-sonnet-4-6"
QUESTION = "Explain the trade-offs between optimistic and pessimistic locking in a booking system."
TOOLS = [{"name": "lookup", "description": "Look a booking up", "input_schema": {"type": "object", "properties": {}}}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
THINKING = {"type": "enabled", "budget_tokens": 2048}
# What an agent framework sends with thinking on: its usual sampling and a forced tool.
MESSAGES = {"model": "auto", "max_tokens": 4096, "thinking": THINKING, "temperature": 0.2, "top_k": 40, "top_p": 0.9,
            "tools": TOOLS, "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [{"role": "user", "content": QUESTION}]}
CHAT = {"model": "auto", "max_tokens": 4096, "thinking": THINKING, "temperature": 0.2, "top_p": 0.5, "tools": CHAT_TOOLS,
        "tool_choice": "required", "messages": [{"role": "user", "content": QUESTION}]}
PREFILL_CHAT = {"model": "auto", "messages": [{"role": "user", "content": QUESTION},
                                              {"role": "assistant", "content": "The short answer:"}]}
PREFILL_MESSAGES = {"model": "auto", "max_tokens": 512, "messages": PREFILL_CHAT["messages"]}


CLAUDE_RULES = {"top_p_with_temperature": "drop", "thinks": "when_enabled", "sampling_while_thinking": "fit",
                "forced_tool_choice": "auto"}
# Claude Opus 4.7 takes thinking only as {type: adaptive}, Haiku 4.5 only as {type: enabled} (with a budget).
OPUS_47 = {"provider": "anthropic", "name": "claude-opus-4-7", "input_price": 5.0, "output_price": 25.0, "context_window": 200000,
           "max_output_tokens": 128000, "capabilities": ["tools", "vision", "code", "streaming"], "tier": "CRITICAL",
           "quality": 0.97, "prefill": False, "body": {**CLAUDE_RULES, "thinking_type": "adaptive"}}
HAIKU_45 = {"provider": "anthropic", "name": "claude-haiku-4-5", "input_price": 1.0, "output_price": 5.0, "context_window": 200000,
            "max_output_tokens": 64000, "capabilities": ["tools", "vision", "code", "streaming"], "tier": "LOW", "quality": 0.85,
            "body": {**CLAUDE_RULES, "thinking_type": "enabled"}}


def data() -> dict:
    cfg = config_data()
    cfg["models"] = {"claude-opus-4.7": OPUS_47, "claude-haiku-4.5": HAIKU_45}
    for name in ("opus", "haiku"):
        model = f"claude-{name}-4.7" if name == "opus" else "claude-haiku-4.5"
        cfg["policies"][name] = {"classifier": "rules", "strategy": "ladder", "explain": True,
                                 "constraints": {"models": [model]}, "ladder": {t: model for t in LADDER}}
    cfg["policies"]["sonnet"] = {"classifier": "rules", "strategy": "ladder", "explain": True,
                                 "constraints": {"models": ["claude-3.5-sonnet"]},
                                 "ladder": {t: "claude-3.5-sonnet" for t in LADDER}}
    cfg["policies"]["high"] = {"classifier": "rules", "strategy": "ladder", "explain": True, "fallbacks": 3,
                               "ladder": {t: "claude-3.5-sonnet" for t in LADDER}}
    return cfg


def sent(body: dict, api: str, model_id: str = "claude-3.5-sonnet") -> dict:
    """The body a catalog model (the built-in Claude slot unless named) is sent for a client's body."""
    router = Router(parse_config(data()))
    model = router.catalog.models[model_id]
    assert model_id != "claude-3.5-sonnet" or model.name == SONNET
    req = parse_request(orjson.dumps(body), api)
    return orjson.loads(render_body(req, model.name, dialect=router.catalog.dialect_of(model), model_id=model.id))


def test_while_it_thinks_sampling_goes_as_claude_takes_it_and_a_forced_tool_as_auto():
    out = sent(MESSAGES, "messages")
    assert "temperature" not in out and "top_k" not in out and "top_p" not in out
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True} and out["thinking"] == THINKING
    out = sent(CHAT, "chat")
    assert "temperature" not in out and "top_p" not in out and out["tool_choice"] == "auto"
    named = sent({**CHAT, "tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "chat")
    assert named["tool_choice"] == "auto"
    adaptive = sent({**MESSAGES, "thinking": {"type": "adaptive"}, "tool_choice": {"type": "tool", "name": "lookup"}}, "messages")
    assert adaptive["tool_choice"] == {"type": "auto"} and "temperature" not in adaptive
    # what Claude takes while thinking goes as sent: temperature 1, top_p from 0.95 (without temperature), auto or none
    kept = sent({**MESSAGES, "temperature": 1, "top_k": None, "top_p": None, "tool_choice": {"type": "auto"}}, "messages")
    assert kept["temperature"] == 1 and kept["tool_choice"] == {"type": "auto"}
    assert sent({**CHAT, "temperature": None, "top_p": 0.97}, "chat")["top_p"] == 0.97


def test_without_thinking_sampling_and_a_forced_tool_go_as_sent():
    for off in (None, {"type": "disabled"}):
        body = {**MESSAGES, "thinking": off} if off else {k: v for k, v in MESSAGES.items() if k != "thinking"}
        out = sent(body, "messages")
        assert out["temperature"] == 0.2 and out["top_k"] == 40 and out["tool_choice"]["type"] == "any"
        assert "top_p" not in out  # with temperature set: Sonnet 4.6 takes one of them, at any time
    out = sent({k: v for k, v in CHAT.items() if k != "thinking"}, "chat")
    assert out["temperature"] == 0.2 and out["tool_choice"] == "required"


def test_unforced_tool_choice_covers_every_forcing_form_only_when_asked():
    assert unforced_tool_choice("required", True) == "auto" and unforced_tool_choice("required") == "required"
    assert unforced_tool_choice({"type": "any"}, True) == {"type": "auto"} and unforced_tool_choice({"type": "any"}) == {"type": "any"}
    for kept in ("auto", "none", {"type": "auto"}, {"type": "none"}, None, 3):
        assert unforced_tool_choice(kept, True) == kept


def test_thinking_goes_in_the_one_form_a_model_takes():
    adaptive = {"type": "adaptive"}
    for api, body in (("messages", MESSAGES), ("chat", CHAT)):
        assert sent(body, api, "claude-opus-4.7")["thinking"] == adaptive  # the budget is left to the model
        assert sent({**body, "thinking": adaptive}, api, "claude-opus-4.7")["thinking"] == adaptive
        assert sent({**body, "thinking": adaptive}, api, "claude-haiku-4.5")["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert sent(body, api, "claude-haiku-4.5")["thinking"] == THINKING  # its own form: as sent
        assert sent(body, api)["thinking"] == THINKING and sent({**body, "thinking": adaptive}, api)["thinking"] == adaptive  # 4.6
        for off in ({"type": "disabled"}, "x"):
            assert sent({**body, "thinking": off}, api, "claude-haiku-4.5")["thinking"] == off
    # no budget of 1024 fits below a small output limit, nor without one: the turn goes without thinking
    small = sent({**MESSAGES, "thinking": adaptive, "max_tokens": 1024}, "messages", "claude-haiku-4.5")
    assert "thinking" not in small and small["temperature"] == 0.2  # and, not thinking, its sampling as sent
    unbounded = {k: v for k, v in CHAT.items() if k != "max_tokens"}
    assert "thinking" not in sent({**unbounded, "thinking": adaptive}, "chat", "claude-haiku-4.5")
    assert sent({**MESSAGES, "thinking": adaptive, "max_tokens": 1500}, "messages", "claude-haiku-4.5")["thinking"]["budget_tokens"] == 1024
    # a lowered output limit (output_limit: clamp) bounds the budget too
    router = Router(parse_config(data()))
    haiku = router.catalog.models["claude-haiku-4.5"]
    req = parse_request(orjson.dumps({**MESSAGES, "thinking": adaptive, "max_tokens": 100000}), "messages")
    out = orjson.loads(render_body(req, haiku.name, dialect=haiku.body, max_output=haiku.max_output))
    assert out["max_tokens"] == 64000 and out["thinking"] == {"type": "enabled", "budget_tokens": 32000}


def test_a_prefill_is_routed_to_a_model_that_takes_one():
    router = Router(parse_config(data()))
    for body, api in ((PREFILL_CHAT, "chat"), (PREFILL_MESSAGES, "messages")):
        req = parse_request(orjson.dumps(body), api)
        assert req.needs.prefill
        decision = router.decide(req, router.policies["high"])
        assert isinstance(decision, Decision), decision
        assert decision.model.id != "claude-3.5-sonnet"
        assert "claude-3.5-sonnet" not in [m.id for m in decision.fallbacks]
        only = router.decide(req, router.policies["sonnet"])
        assert not isinstance(only, Decision) and only.status == 400
        assert "no model in policy 'sonnet' supports a last assistant message (a prefill)" in only.message
    # a conversation ending with the user, or with an assistant's tool calls, is no prefill
    ask = parse_request(orjson.dumps({**PREFILL_CHAT, "messages": PREFILL_CHAT["messages"][:1]}), "chat")
    assert not ask.needs.prefill and router.decide(ask, router.policies["sonnet"]).model.id == "claude-3.5-sonnet"
    calls = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    looped = {**PREFILL_CHAT, "messages": [PREFILL_CHAT["messages"][0], {"role": "assistant", "content": None, "tool_calls": calls}]}
    assert not parse_request(orjson.dumps(looped), "chat").needs.prefill


def model_lines(out: str, model_id: str) -> str:
    """What `check` prints for one model: its line and the indented lines under it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {model_id} "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("   ")), len(lines))
    return "\n".join(lines[start:end])


def test_check_describes_the_rules_notes_a_claude_without_them_and_refuses_wrong_values(tmp_path, capsys):
    out = check_output(tmp_path, data(), capsys)
    assert "it thinks only when thinking is enabled or adaptive" in out
    assert "a tool_choice forcing a tool (named, required, any) sent as auto while it thinks" in out
    assert "prefill: false: requests that end with an assistant message go to other models" in out
    assert "note: named like a Claude" not in out
    assert "thinking {type: enabled} sent as {type: adaptive}" in out
    assert "thinking {type: adaptive} sent as {type: enabled} with half the output limit as budget" in out
    bare = data()
    bare["models"] = {mid: {k: v for k, v in m.items() if k not in ("body", "prefill")} for mid, m in bare["models"].items()}
    out = check_output(tmp_path, bare, capsys)
    opus, haiku = model_lines(out, "claude-opus-4.7"), model_lines(out, "claude-haiku-4.5")
    for fix in ("add body: {thinks: when_enabled}", "add body: {sampling_while_thinking: fit}",
                "add body: {forced_tool_choice: auto}", "add prefill: false", "add body: {thinking_type: adaptive}"):
        assert fix in opus
    assert "add body: {thinking_type: enabled}" in haiku and "prefill" not in haiku and "thinking_type: adaptive" not in haiku
    assert "forced_tool_choice" in refusal({"models": {"c": {**bare["models"]["claude-opus-4.7"], "body": {"forced_tool_choice": "any"}}}})
    assert "thinking_type" in refusal({"models": {"c": {**bare["models"]["claude-opus-4.7"], "body": {"thinking_type": "budget"}}}})
    assert "thinks" in refusal({"models": {"c": {**bare["models"]["claude-opus-4.7"], "body": {"thinks": "always"}}}})
    assert "prefill" in refusal({"models": {"c": {**bare["models"]["claude-opus-4.7"], "prefill": "sometimes"}}})


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(data())


def _anthropic(fakes, body: dict, api: str = "messages") -> httpx.Response:
    path = "/v1/messages" if api == "messages" else "/v1/chat/completions"
    return httpx.post(fakes.url("anthropic") + path, content=orjson.dumps({**body, "model": SONNET}), timeout=30,
                      headers={"x-api-key": fakes.keys()["anthropic"], "anthropic-version": "2023-06-01"})


def test_the_anthropic_fake_refuses_each_as_anthropic_does(fakes):
    docs = ("Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
            "#important-considerations-when-using-extended-thinking")
    one = {"temperature": None, "top_k": None, "top_p": None, "tool_choice": None}
    cases = [({**MESSAGES, **one, "temperature": 0.2}, f"`temperature` may only be set to 1 when thinking is enabled. {docs}"),
             ({**MESSAGES, **one, "top_k": 40}, f"`top_k` must be unset when thinking is enabled. {docs}"),
             ({**MESSAGES, **one, "top_p": 0.5}, "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. "
                                                 f"{docs}"),
             ({**MESSAGES, **one, "tool_choice": {"type": "any"}}, "Thinking may not be enabled when tool_choice forces tool use."),
             ({**MESSAGES, **one, "tool_choice": {"type": "tool", "name": "lookup"}},
              "Thinking may not be enabled when tool_choice forces tool use."),
             (PREFILL_MESSAGES, "This model does not support assistant message prefill. The conversation must end with a user message.")]
    for body, message in cases:
        r = _anthropic(fakes, {k: v for k, v in body.items() if v is not None})
        assert r.status_code == 400 and r.json()["error"] == {"type": "invalid_request_error", "message": message}, (body, r.text)
    r = _anthropic(fakes, {k: v for k, v in CHAT.items() if k not in ("temperature", "top_p")}, "chat")
    assert r.status_code == 400 and "forces tool use" in r.json()["error"]["message"]
    assert _anthropic(fakes, PREFILL_CHAT, "chat").status_code == 400
    enabled = httpx.post(fakes.url("anthropic") + "/v1/messages", content=orjson.dumps({
        "model": "claude-opus-4-7", "max_tokens": 4096, "thinking": THINKING, "messages": MESSAGES["messages"]}),
        headers={"x-api-key": fakes.keys()["anthropic"], "anthropic-version": "2023-06-01"}, timeout=30)
    assert enabled.status_code == 400 and enabled.json()["error"]["message"] == (
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and "output_config.effort" to '
        'control thinking behavior.')
    adaptive = httpx.post(fakes.url("anthropic") + "/v1/messages", content=orjson.dumps({
        "model": "claude-haiku-4-5", "max_tokens": 4096, "thinking": {"type": "adaptive"}, "messages": MESSAGES["messages"]}),
        headers={"x-api-key": fakes.keys()["anthropic"], "anthropic-version": "2023-06-01"}, timeout=30)
    assert adaptive.status_code == 400 and adaptive.json()["error"]["message"] == "adaptive thinking is not supported on this model"
    # the same without thinking is answered
    assert _anthropic(fakes, {k: v for k, v in MESSAGES.items() if k not in ("thinking", "top_p")}).status_code == 200


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-claude", fakes, data(),
                             routes=(*(RouteSpec(f"/{p}/", policy=p) for p in ("sonnet", "high", "opus", "haiku")), RouteSpec("/")))


@pytest.mark.envoy
@pytest.mark.parametrize("api", ["chat", "messages"])
def test_envoy_a_thinking_turn_with_sampling_and_a_forced_tool_is_answered_by_sonnet_4_6(stack, fresh_fakes, api):
    r = post_api(stack, "/sonnet/", api, CHAT, MESSAGES)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-3.5-sonnet"
    [call] = wait_requests(fresh_fakes, "anthropic", 1)
    assert call.status == 200 and call.json["model"] == SONNET and call.json["thinking"] == THINKING
    assert not {"temperature", "top_p", "top_k"} & set(call.json)
    assert call.json["tool_choice"] in ("auto", {"type": "auto", "disable_parallel_tool_use": True})


@pytest.mark.envoy
def test_envoy_each_form_of_thinking_is_answered_by_a_claude_that_takes_only_the_other(stack, fresh_fakes):
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    cases = (("opus", THINKING, "claude-opus-4.7", {"type": "adaptive"}),
             ("haiku", {"type": "adaptive"}, "claude-haiku-4.5", {"type": "enabled", "budget_tokens": 2048}))
    for n, (policy, thinking, model, expected) in enumerate(cases, 1):
        body = {"model": "auto", "max_tokens": 4096, "thinking": thinking, "messages": MESSAGES["messages"]}
        r = httpx.post(f"{stack.url}/{policy}/v1/messages", content=orjson.dumps(body), timeout=30, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-router-model"] == model
        call = wait_requests(fresh_fakes, "anthropic", n)[-1]
        assert call.status == 200 and call.json["thinking"] == expected


@pytest.mark.envoy
@pytest.mark.parametrize("api", ["chat", "messages"])
def test_envoy_a_prefill_is_answered_by_another_model_and_refused_clearly_where_none_takes_it(stack, fresh_fakes, api):
    path, body = ("v1/chat/completions", PREFILL_CHAT) if api == "chat" else ("v1/messages", PREFILL_MESSAGES)
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    r = httpx.post(f"{stack.url}/high/{path}", content=orjson.dumps(body), timeout=30, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] not in ("", "claude-3.5-sonnet", "claude-opus-4.7")  # Haiku 4.5 takes one
    assert all(call.json["model"] != SONNET for call in fresh_fakes.requests("anthropic"))
    refused = httpx.post(f"{stack.url}/sonnet/{path}", content=orjson.dumps(body), timeout=30, headers=headers)
    assert refused.status_code == 400 and "a last assistant message (a prefill)" in refused.text
    assert all(call.json["model"] != SONNET for call in fresh_fakes.requests("anthropic"))
