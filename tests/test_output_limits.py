"""Output limits: a request asking for more output tokens than a model may write does not go to it.

Providers answer 400 when max_tokens exceeds the model's output limit (GPT-4o 16,384, Llama 3.3 on Together 8,192, ...);
the fakes do the same, from the catalog's `max_output_tokens`. These tests give the DeepSeek slot the limits deepseek-chat
had (8,192 written in 32,768 of context): a cheap model that writes less than agent clients ask for.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import default_data, parse_config
from llm_router.decision import Decision, RouteError
from llm_router.fakes import FakeProviders
from llm_router.router import Router

GREETING = [{"role": "user", "content": "hi there, thanks!"}]


def limited() -> dict:
    """The built-in catalog with the DeepSeek slot writing 8,192 tokens a call in 32,768 of context."""
    slot = default_data()["models"]["deepseek-v2"]
    return {"models": {"deepseek-v2": {**slot, "max_output_tokens": 8192, "context_window": 32768}}}


def chat(**extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": GREETING, **extra})


def test_a_long_answer_skips_models_that_cannot_write_it():
    router = Router(parse_config(limited()))
    _, short = router.route(chat(max_tokens=4000))
    assert isinstance(short, Decision) and short.model.id == "deepseek-v2"
    for field in ("max_tokens", "max_completion_tokens"):
        _, long = router.route(chat(**{field: 12000}))
        assert isinstance(long, Decision), long
        chain = (long.model, *long.fallbacks)
        assert all(m.max_output is None or m.max_output >= 12000 for m in chain), [m.id for m in chain]
        assert "deepseek-v2" not in [m.id for m in chain]


def test_nothing_can_write_it_the_refusal_names_the_limit():
    cfg = parse_config({**limited(), "policies": {"default": {
        "ladder": {t: "deepseek-v2" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
        "constraints": {"models": ["deepseek-v2", "gpt-4o"]}}}})
    _, refused = Router(cfg).route(chat(max_tokens=20000))
    assert isinstance(refused, RouteError) and refused.status == 400
    assert refused.message == ("request asks for up to 20000 output tokens (max_tokens); no model in policy 'default' "
                               "can write that many in one call (at most 16384)")
    # Anthropic's Messages API: Claude (Sonnet 4.6, 64,000 a call) and DeepSeek (8,192) serve it here.
    _, messages = Router(parse_config(limited())).route(
        orjson.dumps({"model": "auto", "max_tokens": 70000, "messages": GREETING}), path="/v1/messages")
    assert isinstance(messages, RouteError) and "at most 64000" in messages.message
    _, claude = Router(parse_config(limited())).route(
        orjson.dumps({"model": "auto", "max_tokens": 9000, "messages": GREETING}), path="/v1/messages")
    assert isinstance(claude, Decision) and claude.model.id == "claude-3.5-sonnet" and not claude.fallbacks


def clamping() -> dict:
    """The default policy with output_limit: clamp (what an agent client such as Claude Code needs)."""
    data = parse_config(limited()).model_dump(mode="json")
    data["policies"]["default"]["output_limit"] = "clamp"
    return data


def test_clamp_keeps_models_that_write_less_and_sends_them_their_own_limit(monkeypatch):
    """Claude Code asks for max_tokens 32000 on every turn: under clamp the turn is routed, and the model is
    sent what it can write instead of a limit it would refuse."""
    from llm_router.runtime import Exchange, Refusal, Runtime

    for name in ("OPENAI", "ANTHROPIC", "GEMINI", "TOGETHER", "MISTRAL", "DEEPSEEK"):
        monkeypatch.setenv(f"{name}_API_KEY", f"test-{name.lower()}")

    messages = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "messages": GREETING})
    _, kept = Router(parse_config(limited())).route(messages, path="/v1/messages")
    assert isinstance(kept, Decision) and kept.model.id == "claude-3.5-sonnet"  # refuse, the default: the one that writes it
    _, long = Router(parse_config(limited())).route(chat(max_tokens=32000))
    assert isinstance(long, Decision) and long.model.id == "mistral-large"  # the one chat model without a set limit
    rt = Runtime(parse_config(clamping()), telemetry=False)
    for field, sent_as in (("max_tokens", "max_tokens"), ("max_completion_tokens", "max_tokens")):  # DeepSeek's name
        call = rt.decide(chat(**{field: 32000}), path="/v1/chat/completions", ex=Exchange("c", "r", 0.0))
        assert not isinstance(call, Refusal), call
        assert call.model.id == "deepseek-v2" and orjson.loads(call.body)[sent_as] == 8192
        assert field == sent_as or field not in orjson.loads(call.body)
    _, d = Router(parse_config(clamping())).route(chat(max_tokens=32000))
    assert isinstance(d, Decision) and d.selection.endswith("output limit 32000 lowered to 8192, what deepseek-v2 writes in one call")
    call = rt.decide(messages, path="/v1/messages", ex=Exchange("m", "r", 0.0))
    assert (call.model.id, call.path, orjson.loads(call.body)["max_tokens"]) == ("deepseek-v2", "/anthropic/v1/messages", 8192)
    under = rt.decide(chat(max_tokens=2000), path="/v1/chat/completions", ex=Exchange("u", "r", 0.0))
    assert orjson.loads(under.body)["max_tokens"] == 2000  # within the limit: untouched
    _, plain = Router(parse_config(clamping())).route(chat(max_tokens=2000))
    assert "lowered" not in plain.selection


def test_clamp_still_needs_the_input_and_the_clamped_answer_to_fit_the_context():
    data = clamping()
    data["policies"]["default"]["constraints"] = {"models": ["deepseek-v2"]}
    router = Router(parse_config(data))
    long_prompt = [{"role": "user", "content": "word " * 30000}]  # ~30,000 tokens: + 8,192 out > DeepSeek's 32,768
    _, refused = router.route(orjson.dumps({"model": "auto", "max_tokens": 32000, "messages": long_prompt}))
    assert isinstance(refused, RouteError) and "tokens of context" in refused.message
    _, fits = router.route(orjson.dumps({"model": "auto", "max_tokens": 32000, "messages": [{"role": "user", "content": "word " * 20000}]}))
    assert isinstance(fits, Decision) and fits.model.id == "deepseek-v2"


def test_an_unset_limit_is_bounded_by_the_context_window_only():
    cfg = parse_config({"models": {"open": {"provider": "together", "name": "open-model", "input_price": 0.1, "output_price": 0.1,
                                            "context_window": 200000, "tier": "LOW"}},
                        "policies": {"default": {"ladder": {t: "open" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                                 "constraints": {"models": ["open"]}}}})
    _, d = Router(cfg).route(chat(max_tokens=100000))
    assert isinstance(d, Decision) and d.model.id == "open"


# ---- the fakes, and through the real Envoy ------------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes(limited())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-limits", fakes, {**config_data(), **limited()})


def test_the_fakes_refuse_more_than_the_model_writes(fakes):
    r = httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                   content=orjson.dumps({"model": "deepseek-flash", "thinking": {"type": "disabled"}, "messages": GREETING, "max_tokens": 9000}),
                   headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "at most 8192 completion tokens" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def clamp_stack(fakes, tmp_path_factory):
    data = {**config_data(), **limited()}
    data["policies"]["default"]["output_limit"] = "clamp"
    yield from running_stack(tmp_path_factory, "envoy-clamp", fakes, data)


@pytest.mark.envoy
def test_envoy_under_clamp_an_agent_turn_reaches_a_model_that_writes_less(clamp_stack, fresh_fakes):
    """A Claude Code-style turn (max_tokens 32000, Anthropic format) is answered by DeepSeek's fake, which refuses
    anything above 8192 as the provider does: the router sent it 8192."""
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "messages": GREETING})
    r = httpx.post(clamp_stack.url + "/v1/messages", content=body, timeout=30,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2" and r.json()["type"] == "message"
    [sent] = wait_requests(fresh_fakes, "deepseek", 1)
    assert sent.path == "/anthropic/v1/messages" and sent.json["max_tokens"] == 8192 and sent.status == 200


@pytest.mark.envoy
def test_envoy_sends_a_long_answer_to_a_model_that_can_write_it(stack, fresh_fakes):
    short = httpx.post(stack.url + "/v1/chat/completions", content=chat(max_completion_tokens=4000), timeout=30,
                       headers={"content-type": "application/json"})
    assert short.status_code == 200 and short.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fresh_fakes, "deepseek", 1)
    assert sent.json["max_tokens"] == 4000  # DeepSeek's name for the limit
    long = httpx.post(stack.url + "/v1/chat/completions", content=chat(max_completion_tokens=12000), timeout=30,
                      headers={"content-type": "application/json"})
    assert long.status_code == 200, long.text
    model = stack.cfg.models[long.headers["x-llm-router-model"]]
    assert model.max_output_tokens is None or model.max_output_tokens >= 12000
    [answered] = wait_requests(fresh_fakes, model.provider, 1)
    assert answered.status == 200 and len(fresh_fakes.requests("deepseek")) == 1


def test_clamp_keeps_an_extended_thinking_budget_below_the_lowered_limit(monkeypatch):
    """Anthropic needs 1024 <= thinking.budget_tokens < max_tokens: a clamped limit scales the client's budget by the same
    ratio and keeps it below the new limit; where no budget of 1024 fits, the field is left out."""
    from llm_router.request import fitted_thinking, parse_request, render_body
    from llm_router.runtime import Exchange, Runtime

    for name in ("OPENAI", "ANTHROPIC", "GEMINI", "TOGETHER", "MISTRAL", "DEEPSEEK"):
        monkeypatch.setenv(f"{name}_API_KEY", f"test-{name.lower()}")
    thinking = {"type": "enabled", "budget_tokens": 24000}
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "thinking": thinking, "messages": GREETING})
    rt = Runtime(parse_config(clamping()), telemetry=False)
    call = rt.decide(body, path="/v1/messages", ex=Exchange("t", "r", 0.0))
    sent = orjson.loads(call.body)
    assert sent["max_tokens"] == 8192 and sent["thinking"] == {"type": "enabled", "budget_tokens": 6144}  # 24000 * 8192 / 32000
    _, d = Router(parse_config(clamping())).route(body, path="/v1/messages")
    assert d.selection.endswith("thinking budget 24000 lowered to 6144")
    # the client's ratio would leave the budget at the limit itself: it stays one below
    assert fitted_thinking({"type": "enabled", "budget_tokens": 31999}, 32000, 8192) == {"type": "enabled", "budget_tokens": 8191}
    assert fitted_thinking({"type": "enabled", "budget_tokens": 2000}, 32000, 8192) == {"type": "enabled", "budget_tokens": 2000}
    assert fitted_thinking({"type": "enabled", "budget_tokens": 1500}, 4000, 1024) is None  # no room for 1024 of thinking
    req = parse_request(orjson.dumps({"model": "m", "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 1500},
                                      "messages": GREETING}), "messages")
    assert "thinking" not in orjson.loads(render_body(req, "m", max_output=1024))
    untouched = parse_request(orjson.dumps({"model": "m", "max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 4000},
                                            "messages": GREETING}), "messages")
    assert orjson.loads(render_body(untouched, "m", max_output=8192))["thinking"]["budget_tokens"] == 4000  # within: as sent


def test_the_anthropic_fakes_refuse_a_thinking_budget_not_below_max_tokens(fakes):
    """DeepSeek's Anthropic endpoint here; Anthropic's own fake in tests/test_thinking.py (with a Claude model that thinks)."""
    r = httpx.post(fakes.url("deepseek") + "/anthropic/v1/messages", timeout=30, content=orjson.dumps({
        "model": "deepseek-flash", "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 4000},
        "messages": GREETING}), headers={"authorization": f"Bearer {fakes.keys()['deepseek']}",
                                         "content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert "budget_tokens" in r.json()["error"]["message"]


@pytest.mark.envoy
def test_envoy_under_clamp_a_thinking_turn_is_answered_with_a_budget_that_fits(clamp_stack, fresh_fakes):
    """An agent turn with extended thinking (budget 31999 of max_tokens 32000): the clamped call keeps the budget below 8192,
    so the fake, which refuses a budget at or above max_tokens as Anthropic does, answers it."""
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": 31999},
                         "messages": GREETING})
    r = httpx.post(clamp_stack.url + "/v1/messages", content=body, timeout=30,
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    provider = clamp_stack.cfg.models[r.headers["x-llm-router-model"]].provider
    [sent] = wait_requests(fresh_fakes, provider, 1)
    assert sent.json["max_tokens"] == 8192 and sent.json["thinking"] == {"type": "enabled", "budget_tokens": 8191}
    assert sent.status == 200


def test_the_built_in_deepseek_writes_what_an_agent_client_asks():
    """deepseek-flash writes up to 384K tokens a call: Claude Code's 32,000 fits, so its easy turns cost DeepSeek's price."""
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32000, "messages": GREETING})
    _, d = Router(parse_config(None)).route(body, path="/v1/messages")
    assert isinstance(d, Decision) and d.model.id == "deepseek-v2" and "lowered" not in d.selection
