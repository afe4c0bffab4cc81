"""The built-in slots call models their providers serve today: the fakes refuse the retired names as the providers do,
and `llm-router check` warns of them.

Together serves Llama 3 70B only on dedicated endpoints now (400 model_not_available, "Unable to access non-serverless model
meta-llama/Llama-3-70b-chat-hf. ..."): the llama-3-70b slot calls Llama 3.3 70B Turbo.
"""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, fresh_fakes, running_fakes, running_stack, wait_requests  # noqa: F401
from llm_router.config import default_data, parse_config
from test_tool_ids import check_output

OLD_LLAMA = "meta-llama/Llama-3-70b-chat-hf"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QUESTION = "Write a SQL query that lists each customer's three most recent orders."


@pytest.fixture(scope="module")
def fakes() -> Iterator:
    yield from running_fakes(config_data())


def _together(fakes, model: str) -> httpx.Response:
    return httpx.post(fakes.url("together") + "/v1/chat/completions", timeout=30,
                      content=orjson.dumps({"model": model, "messages": [{"role": "user", "content": QUESTION}]}),
                      headers={"authorization": f"Bearer {fakes.keys()['together']}", "content-type": "application/json"})


def test_the_together_fake_serves_llama_3_3_and_refuses_the_dedicated_only_name(fakes):
    old = _together(fakes, OLD_LLAMA)
    assert old.status_code == 400 and old.json()["error"] == {
        "message": f"Unable to access non-serverless model {OLD_LLAMA}. Please visit https://api.together.ai/models/{OLD_LLAMA} "
                   "to create and start a new dedicated endpoint for the model.",
        "type": "invalid_request_error", "param": None, "code": "model_not_available"}
    assert _together(fakes, LLAMA).status_code == 200


def test_the_slot_calls_llama_3_3_with_its_limits_and_check_warns_of_the_old_name(tmp_path, capsys):
    slot = parse_config(None).models["llama-3-70b"]
    assert (slot.name, slot.context_window, slot.max_output_tokens) == (LLAMA, 131072, 8192)
    assert {"tools", "json", "completions"} <= set(slot.capabilities)
    old = {"models": {"llama-3-70b": {**default_data()["models"]["llama-3-70b"], "name": OLD_LLAMA}}}
    warned = [line for line in check_output(tmp_path, old, capsys).splitlines() if f"warning: calls {OLD_LLAMA}" in line]
    assert len(warned) == 1 and "Together serves it only on dedicated endpoints now (400 model_not_available" in warned[0]


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-slots", fakes, config_data())


@pytest.mark.envoy
def test_envoy_a_medium_turn_with_tools_is_answered_by_llama_3_3(stack, fresh_fakes):
    tools = [{"type": "function", "function": {"name": "run_sql", "parameters": {"type": "object", "properties": {}}}}]
    r = httpx.post(stack.url + "/v1/chat/completions", timeout=30, headers={"content-type": "application/json"},
                   content=orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": QUESTION}], "tools": tools}))
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "llama-3-70b"  # Llama 3 was not offered tool requests; 3.3 calls tools
    [sent] = wait_requests(fresh_fakes, "together", 1)
    assert sent.status == 200 and sent.json["model"] == LLAMA and sent.json["tools"] == tools
