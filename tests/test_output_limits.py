"""Output limits: a request asking for more output tokens than a model may write does not go to it.

Providers answer 400 when max_tokens exceeds the model's output limit (DeepSeek 8,192, GPT-4o
16,384, ...); the fakes do the same, from the catalog's `max_output_tokens`.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import load_config, parse_config
from llm_router.decision import Decision, RouteError
from llm_router.fakes import FakeProviders
from llm_router.router import Router

GREETING = [{"role": "user", "content": "hi there, thanks!"}]


def chat(**extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": GREETING, **extra})


def test_a_long_answer_skips_models_that_cannot_write_it():
    router = Router(load_config(None))
    _, short = router.route(chat(max_tokens=4000))
    assert isinstance(short, Decision) and short.model.id == "deepseek-v2"
    for field in ("max_tokens", "max_completion_tokens"):
        _, long = router.route(chat(**{field: 12000}))
        assert isinstance(long, Decision), long
        chain = (long.model, *long.fallbacks)
        assert all(m.max_output is None or m.max_output >= 12000 for m in chain), [m.id for m in chain]
        assert "deepseek-v2" not in [m.id for m in chain]


def test_nothing_can_write_it_the_refusal_names_the_limit():
    cfg = parse_config({"policies": {"default": {"ladder": {t: "deepseek-v2" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")},
                                                 "constraints": {"models": ["deepseek-v2", "gpt-4o"]}}}})
    _, refused = Router(cfg).route(chat(max_tokens=20000))
    assert isinstance(refused, RouteError) and refused.status == 400
    assert refused.message == ("request asks for up to 20000 output tokens (max_tokens); no model in policy 'default' "
                               "can write that many in one call (at most 16384)")
    # Anthropic's Messages API: only Claude serves it here, and it writes at most 8,192 tokens a call.
    _, messages = Router(load_config(None)).route(
        orjson.dumps({"model": "auto", "max_tokens": 9000, "messages": GREETING}), path="/v1/messages")
    assert isinstance(messages, RouteError) and "at most 8192" in messages.message


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
    yield from running_fakes({})


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-limits", fakes, config_data())


def test_the_fakes_refuse_more_than_the_model_writes(fakes):
    r = httpx.post(fakes.url("deepseek") + "/v1/chat/completions", timeout=30,
                   content=orjson.dumps({"model": "deepseek-chat", "messages": GREETING, "max_tokens": 9000}),
                   headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "at most 8192 completion tokens" in r.json()["error"]["message"]


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
