"""Temperature and top_p together, sent on to a Claude model that takes only one of them.

Claude Sonnet 4.5 and later answer 400 ("`temperature` and `top_p` cannot both be specified for this model. Please
use only one.") to the pair, which clients written for OpenAI's models send (and GPT models take), as users of many
projects report it. With `body: {top_p_with_temperature: drop}` on such a model, top_p is left out when temperature is
set; the Anthropic fake refuses the pair for models named like them.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import CLAUDE_3_5, config_data, fresh_fakes, post_api, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.request import parse_request, render_body
from llm_router.router import Router
from llm_router.config import parse_config
from test_tool_ids import check_output, refusal

SONNET_45 = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929", "input_price": 3.0, "output_price": 15.0,
             "context_window": 200000, "max_output_tokens": 64000, "capabilities": ["tools", "vision", "code", "streaming"],
             "tier": "HIGH", "quality": 0.96, "body": {"top_p_with_temperature": "drop"}}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}],
        "temperature": 0.7, "top_p": 1}
MESSAGES = {"model": "auto", "max_tokens": 512, "temperature": 0.7, "top_p": 0.95,
            "messages": [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]}


def data() -> dict:
    cfg = config_data()
    cfg["models"] = {"claude-sonnet-4.5": SONNET_45, "claude-3.5-sonnet": CLAUDE_3_5}
    cfg["policies"]["sonnet"] = {"classifier": "rules", "strategy": "ladder", "explain": True,
                                 "constraints": {"models": ["claude-sonnet-4.5"]},
                                 "ladder": {t: "claude-sonnet-4.5" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}}
    return cfg


def test_top_p_goes_only_where_temperature_is_set_too_and_only_for_such_models():
    router = Router(parse_config(data()))
    models = router.catalog.models

    def sent(body: dict, api: str, model: str) -> dict:
        req = parse_request(orjson.dumps(body), api)
        return orjson.loads(render_body(req, models[model].name, dialect=router.catalog.dialect_of(models[model])))

    for body, api in ((CHAT, "chat"), (MESSAGES, "messages")):
        out = sent(body, api, "claude-sonnet-4.5")
        assert "top_p" not in out and out["temperature"] == 0.7
        assert sent(body, api, "claude-3.5-sonnet")["top_p"] == body["top_p"]  # the older Claude takes both
        alone = {k: v for k, v in body.items() if k != "temperature"}
        assert sent(alone, api, "claude-sonnet-4.5")["top_p"] == body["top_p"]  # one of them: as sent
    assert sent({**CHAT, "temperature": None}, "chat", "claude-sonnet-4.5")["top_p"] == 1


def test_check_names_the_setting_notes_a_model_without_it_and_refuses_a_wrong_one(tmp_path, capsys):
    out = check_output(tmp_path, data(), capsys)
    assert "body over anthropic's: top_p left out when temperature is set" in out
    assert "note: named like a Claude model that answers 400 to temperature and top_p" not in out
    bare = data()
    bare["models"]["claude-sonnet-4.5"] = {k: v for k, v in SONNET_45.items() if k != "body"}
    assert "add body: {top_p_with_temperature: drop}" in check_output(tmp_path, bare, capsys)
    assert "top_p_with_temperature" in refusal({"models": {"s": {**SONNET_45, "body": {"top_p_with_temperature": "one"}}}})


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(data())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-sampling", fakes, data(), routes=(RouteSpec("/sonnet/", policy="sonnet"),
                                                                                       RouteSpec("/")))


def test_the_anthropic_fake_refuses_the_pair_as_anthropic_does(fakes):
    def post(body: dict, model: str) -> httpx.Response:
        return httpx.post(fakes.url("anthropic") + "/v1/messages", content=orjson.dumps({**body, "model": model}), timeout=30,
                          headers={"x-api-key": fakes.keys()["anthropic"], "anthropic-version": "2023-06-01"})

    refused = post(MESSAGES, "claude-sonnet-4-5-20250929")
    assert refused.status_code == 400 and refused.json()["error"] == {
        "type": "invalid_request_error",
        "message": "`temperature` and `top_p` cannot both be specified for this model. Please use only one."}
    assert post({k: v for k, v in MESSAGES.items() if k != "top_p"}, "claude-sonnet-4-5-20250929").status_code == 200
    assert post(MESSAGES, "claude-3-5-sonnet-20240620").status_code == 200


@pytest.mark.envoy
@pytest.mark.parametrize("api", ["chat", "messages"])
def test_envoy_an_openai_style_request_with_both_is_answered_by_claude_sonnet_4_5(stack, fresh_fakes, api):
    r = post_api(stack, "/sonnet/", api, CHAT, MESSAGES)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "claude-sonnet-4.5"
    [sent] = wait_requests(fresh_fakes, "anthropic", 1)
    assert sent.status == 200 and "top_p" not in sent.json and sent.json["temperature"] == 0.7
