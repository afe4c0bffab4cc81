"""OpenAI's Responses API through the real Envoy: routed between OpenAI models, key injected, usage from JSON and events."""
from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from fixtures_envoy import config_data, restored, running_fakes, running_stack, wait_requests
from llm_router.gateways.envoy.bootstrap import RouteSpec
from llm_router.fakes import FakeProviders

pytestmark = pytest.mark.envoy

MINI = {"provider": "openai", "name": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6, "context_window": 128000,
        "tier": "LOW", "quality": 0.7, "capabilities": ["tools", "vision", "json", "streaming"]}
EASY = {"model": "auto", "input": "hi there, thanks!"}
HARD = {"model": "auto", "instructions": "Be rigorous.", "input": [{"role": "user", "content": [{"type": "input_text", "text":
        "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."}]}]}


def data() -> dict:
    base = config_data()
    sticky = {**base["policies"]["default"], "affinity": "conversation"}
    return {**base, "models": {"gpt-4o-mini": MINI}, "policies": {**base["policies"], "sticky": sticky}}


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    yield from running_fakes(data())


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-responses", fakes, data(),
                             routes=(RouteSpec("/sticky/", policy="sticky"), RouteSpec("/")))


@pytest.fixture
def fresh(fakes) -> Iterator[FakeProviders]:
    with restored(fakes):
        yield fakes


def post(stack, body, headers: dict | None = None, prefix: str = "") -> httpx.Response:
    return httpx.post(stack.url + prefix + "/v1/responses", content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", "authorization": "Bearer sk-client-own", **(headers or {})})


def test_easy_and_hard_requests_go_to_different_openai_models_with_the_key(stack, fresh):
    easy = post(stack, EASY)
    assert easy.status_code == 200, easy.text
    assert easy.headers["x-llm-router-model"] == "gpt-4o-mini" and easy.json()["object"] == "response"
    hard = post(stack, HARD)
    assert hard.status_code == 200 and hard.headers["x-llm-router-model"] == "gpt-4o"
    first, second = wait_requests(fresh, "openai", 2)
    assert (first.path, first.json["model"], second.json["model"]) == ("/v1/responses", "gpt-4o-mini", "gpt-4o")
    assert first.json["input"] == EASY["input"] and second.json["instructions"] == "Be rigorous."
    assert first.headers["authorization"] == "Bearer fake-openai-key"
    assert all(not fresh.requests(p) for p in fresh.providers if p != "openai")


def test_a_codex_style_request_asking_for_encrypted_reasoning_is_answered_by_gpt_4o(stack, fresh):
    include = ["reasoning.encrypted_content", "message.output_text.logprobs"]
    r = post(stack, {**HARD, "include": include, "store": False})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "gpt-4o"
    [sent] = wait_requests(fresh, "openai", 1)
    assert sent.status == 200 and sent.json["include"] == ["message.output_text.logprobs"]


def test_usage_from_the_json_response_reaches_accounting(stack, fresh):
    fresh.set_behaviour("openai", cached_share=0.5)
    r = post(stack, EASY)
    reported = r.json()["usage"]
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and reported["input_tokens_details"]["cached_tokens"] > 0
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (
        reported["input_tokens"], reported["output_tokens"], reported["input_tokens_details"]["cached_tokens"])


def test_the_event_stream_arrives_as_it_is_written_and_its_usage_is_read(stack, fresh):
    fresh.set_behaviour("openai", chunk_ms=150, chunks=4)
    arrivals: list[tuple[float, bytes]] = []
    t0 = time.perf_counter()
    with httpx.stream("POST", stack.url + "/v1/responses", content=orjson.dumps({**EASY, "stream": True}), timeout=30,
                      headers={"content-type": "application/json"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        rid = r.headers["x-llm-router-request-id"]
        for chunk in r.iter_raw():
            arrivals.append((time.perf_counter() - t0, chunk))
    text = b"".join(c for _, c in arrivals).decode()
    assert "event: response.completed" in text and "[DONE]" not in text
    first_delta = next(t for t, c in arrivals if b"response.output_text.delta" in c)
    assert arrivals[-1][0] - first_delta > 0.3  # spread over the pauses, not held back until the end
    sent = fresh.requests("openai")[-1].json
    assert "stream_options" not in sent  # the Responses API always reports usage: nothing added
    done = [line for line in text.splitlines() if line.startswith("data: ") and '"response.completed"' in line][-1]
    reported = orjson.loads(done[6:])["response"]["usage"]
    _, status, usage, _ = stack.observer.response_for(rid)
    assert (status, usage.input_tokens, usage.output_tokens) == (200, reported["input_tokens"], reported["output_tokens"])


def test_a_bad_body_is_a_400_naming_the_field(stack, fresh):
    bad = post(stack, {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["param"] == "input[0].content[0].type" and "input_txt" in err["message"]
    assert not fresh.requests()


def test_stored_responses_are_read_cancelled_and_deleted_with_the_providers_key(stack, fresh):
    created = post(stack, HARD)
    assert created.status_code == 200
    rid = created.json()["id"]
    # The client holds no provider key, and tries to pick the upstream itself: both are overwritten.
    client = {"authorization": "Bearer sk-client-own", "x-llm-router-upstream": "deepseek"}
    got = httpx.get(f"{stack.url}/v1/responses/{rid}", headers=client, timeout=30)
    assert got.status_code == 200 and got.json() == created.json()
    items = httpx.get(f"{stack.url}/v1/responses/{rid}/input_items?limit=5", headers=client, timeout=30)
    assert items.status_code == 200 and items.json()["data"][0]["content"][0]["text"] == HARD["input"][0]["content"][0]["text"]
    cancel = httpx.post(f"{stack.url}/v1/responses/{rid}/cancel", headers=client, timeout=30)
    assert cancel.status_code == 400 and "background" in cancel.json()["error"]["message"]  # the provider's own answer
    deleted = httpx.delete(f"{stack.url}/v1/responses/{rid}", headers=client, timeout=30)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    gone = httpx.get(f"{stack.url}/v1/responses/{rid}", headers=client, timeout=30)
    assert gone.status_code == 404 and rid in gone.json()["error"]["message"]
    calls = wait_requests(fresh, "openai", 6)[1:]
    assert [(c.method, c.path) for c in calls] == [
        ("GET", f"/v1/responses/{rid}"), ("GET", f"/v1/responses/{rid}/input_items?limit=5"),
        ("POST", f"/v1/responses/{rid}/cancel"), ("DELETE", f"/v1/responses/{rid}"), ("GET", f"/v1/responses/{rid}")]
    assert {c.headers["authorization"] for c in calls} == {"Bearer fake-openai-key"}
    assert all(not fresh.requests(p) for p in fresh.providers if p != "openai")
    bad = httpx.get(f"{stack.url}/v1/responses/not%20an%20id", headers=client, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "path" and "response id" in bad.json()["error"]["message"]
    assert len(fresh.requests("openai")) == 6  # refused by the router, never sent


def test_a_chain_of_previous_response_ids_stays_on_the_model_that_answered(stack, fresh):
    """The observer reads each answer's id (from the JSON, or from the event stream): the next turn names it."""
    first = post(stack, HARD, prefix="/sticky")
    assert first.headers["x-llm-router-model"] == "gpt-4o"
    stack.observer.response_for(first.headers["x-llm-router-request-id"])  # the answer has been observed
    second = post(stack, {**EASY, "previous_response_id": first.json()["id"], "stream": True}, prefix="/sticky")
    assert second.headers["x-llm-router-model"] == "gpt-4o", second.headers.get("x-llm-router-reason")
    assert "affinity" in second.headers["x-llm-router-reason"]
    stack.observer.response_for(second.headers["x-llm-router-request-id"])
    streamed_id = next(orjson.loads(line[6:])["response"]["id"] for line in second.text.splitlines()
                       if line.startswith("data: ") and '"response.completed"' in line)
    third = post(stack, {**EASY, "previous_response_id": streamed_id}, prefix="/sticky")
    assert third.headers["x-llm-router-model"] == "gpt-4o"
    fresh_start = post(stack, {**EASY, "previous_response_id": first.json()["id"]})  # the default policy keeps nothing
    assert fresh_start.headers["x-llm-router-model"] == "gpt-4o-mini"


def test_a_failed_answer_falls_back_to_the_next_responses_model(stack, fresh):
    fresh.set_behaviour("openai", fail_first=1, fail_status=503)
    r = post(stack, {**EASY, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["x-envoy-attempt-count"] == "2" and r.headers["x-llm-router-model"] == "gpt-4o"
    first, second = wait_requests(fresh, "openai", 2)
    assert (first.json["model"], first.status, second.json["model"], second.status) == ("gpt-4o-mini", 503, "gpt-4o", 200)
    assert second.path == "/v1/responses" and second.json["input"] == EASY["input"]
    assert "event: response.completed" in r.text
    rid = r.headers["x-llm-router-request-id"]
    attempts = stack.observer.attempts_for(rid, 2)
    assert [(a[0].call.model.id, a[1]) for a in attempts] == [("gpt-4o-mini", 503), ("gpt-4o", 200)]
    assert attempts[1][2] is not None and attempts[1][2].output_tokens > 0  # usage of the answering attempt


def test_a_conversation_a_reasoning_model_answered_goes_on_at_gpt_4o_without_its_reasoning(stack, fresh):
    reasoned = [{"role": "user", "content": "Prove rigorously that the halting problem is undecidable, step by step."},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Suppose H decides it."}]},
                {"role": "user", "content": "Now prove rigorously that Rice's theorem follows, step by step, in detail."}]
    r = post(stack, {"model": "auto", "input": reasoned})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "gpt-4o"
    [sent] = wait_requests(fresh, "openai", 1)
    assert sent.status == 200 and [i.get("type") for i in sent.json["input"]] == [None, "message", None]


# DeepSeek's Responses API (what Codex speaks to it) keeps no state: a Codex-style call (store: false, the whole
# conversation) may go to it; one that builds on a stored response may not.
CODEX = {"model": "auto", "store": False, "include": ["reasoning.encrypted_content"], "instructions": "You are a coding agent.",
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "thanks, that fixed it!"}]}]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_simple_codex_style_call_is_answered_by_deepseek_on_its_responses_path(stack, fresh, stream):
    r = post(stack, {**CODEX, "stream": stream})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "deepseek-v2"
    [sent] = wait_requests(fresh, "deepseek", 1)
    assert sent.status == 200 and sent.path == "/responses" and sent.json["model"] == "deepseek-flash"
    assert sent.json["store"] is False and sent.json["include"] == ["reasoning.encrypted_content"]
    assert sent.json["reasoning"] == {"effort": "none"}  # not asked: no thinking, as on the slot's other APIs
    assert sent.headers["authorization"] == "Bearer fake-deepseek-key" and not fresh.requests("openai")
    _, status, usage, _ = stack.observer.response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.input_tokens > 0 and usage.output_tokens > 0


def test_a_call_that_builds_on_a_stored_response_stays_with_a_provider_that_keeps_them(stack, fresh):
    first = post(stack, {**EASY, "store": True})
    assert first.status_code == 200 and first.headers["x-llm-router-model"] == "gpt-4o-mini"
    then = post(stack, {"model": "auto", "store": False, "previous_response_id": first.json()["id"], "input": "and again"})
    assert then.status_code == 200, then.text
    assert then.headers["x-llm-router-model"] == "gpt-4o-mini" and not fresh.requests("deepseek")
    read = httpx.get(stack.url + f"/v1/responses/{first.json()['id']}", timeout=30, headers={"authorization": "Bearer sk-x"})
    assert read.status_code == 200 and read.json()["id"] == first.json()["id"]


def test_the_deepseek_fake_keeps_no_responses(fakes):
    def call(body: dict) -> httpx.Response:
        return httpx.post(fakes.url("deepseek") + "/responses", content=orjson.dumps({"model": "deepseek-flash", **body}),
                          headers={"authorization": f"Bearer {fakes.keys()['deepseek']}", "content-type": "application/json"},
                          timeout=30)

    answered = call({"input": "hi"})
    assert answered.status_code == 200 and answered.json()["object"] == "response"
    for field, value in (("previous_response_id", answered.json()["id"]), ("conversation", "conv_1"), ("background", True)):
        refused = call({"input": "hi", field: value})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == field
    gone = httpx.get(fakes.url("deepseek") + f"/responses/{answered.json()['id']}", timeout=30,
                     headers={"authorization": f"Bearer {fakes.keys()['deepseek']}"})
    assert gone.status_code == 404
