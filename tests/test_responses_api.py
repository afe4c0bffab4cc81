"""OpenAI's Responses API (POST /v1/responses): parsing, routing, usage, affinity and answers."""
from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from llm_router.accounting import SSEUsage, usage_from_json
from llm_router.affinity import conversation_key
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.fakes import Behaviour, FakeProviders
from llm_router.orchestrate.scorers import read_answer
from llm_router.request import RequestError, api_for_path, parse_request
from llm_router.router import Router, build_catalog
from llm_router.runtime import Exchange, Runtime
from llm_router.secrets.env import EnvStore

LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
MINI = {"provider": "openai", "name": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6, "context_window": 128000,
        "tier": "LOW", "quality": 0.7, "capabilities": ["tools", "vision", "json", "streaming"]}
HARD = "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."
EASY = "thanks! that is all"


def config(**policy):
    return parse_config({"models": {"gpt-4o-mini": MINI},
                         "policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, **policy}}})


def body(inp, **extra) -> bytes:
    return orjson.dumps({"model": "auto", "input": inp, **extra})


# ---- parsing ---------------------------------------------------------------------------------

def test_the_path_of_creating_a_response_is_routed_and_reading_one_is_not():
    assert api_for_path("/v1/responses") == "responses" and api_for_path("/openai/v1/responses/?x=1") == "responses"
    for path in ("/v1/responses/resp_123", "/v1/responses/resp_123/cancel", "/v1/responses/resp_1/input_items",
                 "/v1/responses/input_tokens"):
        assert api_for_path(path) is None, path


def test_text_input_and_items_give_prompt_context_turns_and_needs():
    r = parse_request(body("What is 2+2?"), "responses")
    assert (r.api, r.prompt, r.context, r.turns, r.stream) == ("responses", "What is 2+2?", "", 1, False)
    assert r.input_tokens > 0 and not r.needs.tools and not r.needs.json
    items = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "Describe this picture."},
                                     {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Un chat.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{\"q\": \"cat breeds\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Maine Coon, Siamese"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "item_reference", "id": "msg_0"},
        {"type": "some_future_item", "data": {"x": 1}},  # new provider item types pass
        {"role": "user", "content": "Which breed is it?"},
    ]
    r = parse_request(body(items, instructions="Be brief.", tools=[{"type": "web_search"}, {"type": "function", "name": "lookup",
                           "parameters": {"type": "object"}}], text={"format": {"type": "json_schema", "name": "x", "schema": {}}},
                           stream=True, max_output_tokens=300), "responses")
    assert r.prompt == "Which breed is it?" and r.turns == 2
    assert "Un chat." in r.context and "Maine Coon" in r.context
    assert r.needs.vision and r.needs.tools and r.needs.json and r.needs.streaming and r.needs.hosted_tools
    assert r.stream and r.max_output_tokens == 300 and r.include_usage is True
    assert r.input_tokens > 800  # the image is budgeted
    templated = parse_request(orjson.dumps({"model": "auto", "prompt": {"id": "pmpt_1", "variables": {"city": "Oslo"}}}), "responses")
    assert templated.prompt == "" and templated.input_tokens >= 0


@pytest.mark.parametrize("data, field", [
    ({"model": "auto"}, "input"),
    ({"input": 7}, "input"),
    ({"input": [7]}, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": 3}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, "input[0].content[0].text"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
    ({"input": "x", "instructions": 5}, "instructions"),
    ({"input": "x", "tools": {}}, "tools"),
    ({"input": "x", "tools": [{"name": "f"}]}, "tools[0]"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "text": "json"}, "text"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "previous_response_id": 12}, "previous_response_id"),
    ({"input": "x", "conversation": 12}, "conversation"),
])
def test_malformed_bodies_name_the_field(data, field):
    with pytest.raises(RequestError) as err:
        parse_request(orjson.dumps(data), "responses")
    assert err.value.field == field and err.value.status == 400
    assert field.split(".")[0].split("[")[0] in err.value.message


# ---- routing ---------------------------------------------------------------------------------

def test_only_models_whose_provider_serves_the_api_are_candidates():
    r = Router(config())
    _, easy = r.route(body(EASY), path="/v1/responses")
    assert easy.model.id == "gpt-4o-mini"  # deepseek-v2 (the LOW rung) has no Responses API
    assert "deepseek-v2 unavailable" in easy.selection
    _, hard = r.route(body(HARD), path="/v1/responses")
    assert hard.model.id == "gpt-4o"
    assert {m.id for m in easy.chain} <= {"gpt-4o-mini", "gpt-4o"}
    none = Router(parse_config({"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER,
                                                         "constraints": {"providers": ["anthropic"]}}}}))
    _, refused = none.route(body(EASY), path="/v1/responses")
    assert refused.status == 400 and refused.code == "no_capable_model" and "responses API" in refused.message


def test_a_stateless_responses_request_may_go_to_deepseek_and_a_stateful_one_may_not():
    """DeepSeek's Responses API stores nothing: only store: false without previous_response_id, conversation or background
    goes to it (what Codex sends: the whole conversation every call)."""
    r = Router(config())
    _, easy = r.route(body(EASY, store=False), path="/v1/responses")
    assert easy.model.id == "deepseek-v2"
    for stateful in ({}, {"store": True}, {"store": False, "previous_response_id": "resp_1"},
                     {"store": False, "conversation": "conv_1"}, {"store": False, "background": True}):
        _, d = r.route(body(EASY, **stateful), path="/v1/responses")
        assert d.model.id == "gpt-4o-mini" and "deepseek-v2" not in [m.id for m in d.fallbacks], stateful
    only = Router(parse_config({"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER,
                                                         "constraints": {"providers": ["deepseek", "anthropic"]}}}}))
    _, refused = only.route(body(EASY), path="/v1/responses")
    assert refused.status == 400 and refused.code == "no_capable_model"
    assert "keeps Responses state" in refused.message and "send store: false" in refused.message
    _, served = only.route(body(HARD, store=False), path="/v1/responses")
    assert served.model.id == "deepseek-v2"


def test_the_upstream_call_keeps_the_body_and_sets_model_path_and_key(monkeypatch):
    cfg = config()
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore({"OPENAI_API_KEY": "sk-test-openai",
                 "DEEPSEEK_API_KEY": "d", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g", "TOGETHER_API_KEY": "t",
                 "MISTRAL_API_KEY": "m"})]), telemetry=False)
    sent = body(EASY, stream=True, store=True, instructions="terse")
    call = rt.decide(sent, path="/v1/responses", ex=Exchange("1", "r", 0.0))
    assert call.path == "/v1/responses" and call.provider.name == "openai"
    out = orjson.loads(call.body)
    assert out == {**orjson.loads(sent), "model": "gpt-4o-mini"}  # no stream_options added: usage always comes
    assert ("authorization", "Bearer sk-test-openai") in call.set_headers
    stateless = body(EASY, stream=True, store=False, instructions="terse")
    call = rt.decide(stateless, path="/v1/responses", ex=Exchange("2", "r", 0.0))
    assert call.path == "/responses" and call.provider.name == "deepseek"
    # without a reasoning effort it goes without thinking, as the slot's chat and Messages calls do
    assert orjson.loads(call.body) == {**orjson.loads(stateless), "model": "deepseek-flash", "reasoning": {"effort": "none"}}
    asked = body(EASY, store=False, reasoning={"effort": "medium", "summary": "auto"})
    call = rt.decide(asked, path="/v1/responses", ex=Exchange("3", "r", 0.0))
    assert call.provider.name == "deepseek" and orjson.loads(call.body)["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert ("authorization", "Bearer d") in call.set_headers


# ---- usage -----------------------------------------------------------------------------------

def test_usage_from_a_response_object_and_its_stream_counts_cached_tokens_once():
    usage = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024}, "output_tokens": 80,
             "output_tokens_details": {"reasoning_tokens": 32}, "total_tokens": 1280}
    u = usage_from_json(orjson.dumps({"id": "resp_1", "object": "response", "status": "completed", "usage": usage}))
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens) == (1200, 80, 1024, 0)
    sse = SSEUsage()
    events = [("response.created", {"response": {"id": "resp_1", "object": "response", "status": "in_progress", "usage": None}}),
              ("response.output_text.delta", {"delta": "Hel"}), ("response.output_text.delta", {"delta": "lo"}),
              ("response.completed", {"response": {"id": "resp_1", "object": "response", "status": "completed", "usage": usage}})]
    stream = b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps({"type": n, **e}) + b"\n\n" for n, e in events)
    for i in range(0, len(stream), 7):  # split anywhere
        sse.feed(stream[i:i + 7])
    sse.finish()
    assert sse.done and sse.usage == u and u.response_id == "resp_1"


def test_the_fake_answers_like_openai_in_json_and_in_its_event_stream():
    cfg = config()
    fakes = FakeProviders.from_config(cfg).start()
    try:
        fakes.providers["openai"].set_behaviour(Behaviour(chunks=4, cached_share=0.5))
        url, key = fakes.url("openai") + "/v1/responses", {"authorization": "Bearer " + fakes.keys()["openai"]}
        r = httpx.post(url, content=body("Say hello", model="gpt-4o-mini"), headers=key, timeout=30)
        obj = r.json()
        assert r.status_code == 200 and obj["object"] == "response" and obj["status"] == "completed"
        assert obj["output"][0]["content"][0]["type"] == "output_text"
        u = usage_from_json(r.content)
        assert u.input_tokens == obj["usage"]["input_tokens"] > 0 and u.cached_input_tokens == obj["usage"]["input_tokens_details"]["cached_tokens"]
        s = httpx.post(url, content=body("Say hello", model="gpt-4o-mini", stream=True), headers=key, timeout=30)
        names = [line[7:] for line in s.text.splitlines() if line.startswith("event: ")]
        assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
        assert names.count("response.output_text.delta") == 4 and "[DONE]" not in s.text
        sse = SSEUsage()
        sse.feed(s.content)
        sse.finish()
        assert sse.usage is not None and sse.usage.output_tokens > 0
        bad = httpx.post(url, content=body("x", model="gpt-4o-mini"), headers={"authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    finally:
        fakes.stop()


O3 = {"provider": "openai", "name": "o3-mini", "input_price": 1.1, "output_price": 4.4, "context_window": 200000,
      "tier": "CRITICAL", "quality": 0.96, "capabilities": ["tools", "json", "code", "streaming"],
      "body": {"rename": {"max_tokens": "max_completion_tokens"}}}
# What a reasoning model answered with, sent back by the client with the next turn.
REASONED = [{"role": "user", "content": HARD},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Suppose H decides halting."}]},
            {"role": "user", "content": "thanks, now say it in one line"}]


def test_a_model_that_does_not_reason_gets_no_reasoning_items():
    from llm_router.message_rules import without_reasoning_items
    from llm_router.request import render_body

    assert without_reasoning_items(REASONED) == [REASONED[0], *REASONED[2:]]
    assert without_reasoning_items("text") == "text" and without_reasoning_items([7, {"type": "x"}]) == [7, {"type": "x"}]
    router = Router(parse_config({"models": {"o3-mini": O3}}))
    req = parse_request(body(REASONED), "responses")
    models = router.catalog.models
    to_gpt_4o = orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.dialect_of(models["gpt-4o"])))
    assert to_gpt_4o["input"] == [REASONED[0], *REASONED[2:]]  # gpt-4o's body rules drop `reasoning`: it does not reason
    to_o3 = orjson.loads(render_body(req, "o3-mini", dialect=router.catalog.dialect_of(models["o3-mini"])))
    assert to_o3["input"] == REASONED


def test_the_openai_fake_refuses_reasoning_items_on_a_model_that_does_not_reason():
    fakes = FakeProviders.from_config(parse_config({"models": {"o3-mini": O3}})).start()
    try:
        url, key = fakes.url("openai") + "/v1/responses", {"authorization": "Bearer " + fakes.keys()["openai"]}
        r = httpx.post(url, content=body(REASONED, model="gpt-4o"), headers=key, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["message"] == (
            "Reasoning input items can only be provided to a reasoning or computer use model. Remove reasoning items from "
            "your input and try again.")
        assert httpx.post(url, content=body(REASONED, model="o3-mini"), headers=key, timeout=30).status_code == 200
    finally:
        fakes.stop()


CODEX_INCLUDE = ["reasoning.encrypted_content", "message.output_text.logprobs"]  # what agents written for o-series send


def test_a_model_that_does_not_reason_is_not_asked_for_encrypted_reasoning():
    from llm_router.message_rules import without_encrypted_reasoning
    from llm_router.request import render_body

    assert without_encrypted_reasoning(CODEX_INCLUDE) == ["message.output_text.logprobs"]
    assert without_encrypted_reasoning(["reasoning.encrypted_content"]) is None
    assert without_encrypted_reasoning(["file_search_call.results"]) == ["file_search_call.results"]
    assert without_encrypted_reasoning("x") == "x"
    router = Router(parse_config({"models": {"o3-mini": O3}}))
    models = router.catalog.models
    for include, expected in ((CODEX_INCLUDE, ["message.output_text.logprobs"]), (["reasoning.encrypted_content"], None)):
        req = parse_request(body(HARD, include=include, store=False), "responses")
        to_gpt_4o = orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.dialect_of(models["gpt-4o"])))
        assert to_gpt_4o.get("include") == expected and to_gpt_4o["store"] is False
        to_o3 = orjson.loads(render_body(req, "o3-mini", dialect=router.catalog.dialect_of(models["o3-mini"])))
        assert to_o3["include"] == include  # a reasoning model returns its reasoning encrypted: as asked


def test_a_model_before_gpt_5_gets_no_verbosity():
    from llm_router.message_rules import without_verbosity
    from llm_router.request import render_body

    assert without_verbosity({"verbosity": "low", "format": {"type": "text"}}) == {"format": {"type": "text"}}
    assert without_verbosity({"verbosity": "low"}) is None and without_verbosity({"format": 1}) == {"format": 1}
    assert without_verbosity(7) == 7
    router = Router(parse_config({"models": {"o3-mini": O3}}))
    models = router.catalog.models
    req = parse_request(body(HARD, text={"verbosity": "low"}), "responses")
    assert "text" not in orjson.loads(render_body(req, "gpt-4o", dialect=router.catalog.dialect_of(models["gpt-4o"])))
    to_o3 = orjson.loads(render_body(req, "o3-mini", dialect=router.catalog.dialect_of(models["o3-mini"])))
    assert to_o3["text"] == {"verbosity": "low"}
    chat = parse_request(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": HARD}], "verbosity": "low"}), "chat")
    assert "verbosity" not in orjson.loads(render_body(chat, "gpt-4o", dialect=router.catalog.dialect_of(models["gpt-4o"])))


def test_the_openai_fake_refuses_encrypted_reasoning_on_a_model_that_does_not_reason():
    fakes = FakeProviders.from_config(parse_config({"models": {"o3-mini": O3}})).start()
    try:
        url, key = fakes.url("openai") + "/v1/responses", {"authorization": "Bearer " + fakes.keys()["openai"]}
        r = httpx.post(url, content=body(HARD, model="gpt-4o", include=CODEX_INCLUDE), headers=key, timeout=30)
        assert r.status_code == 400 and r.json()["error"] == {
            "message": "Encrypted content is not supported with this model.", "type": "invalid_request_error",
            "param": "include", "code": None}
        assert httpx.post(url, content=body(HARD, model="o3-mini", include=CODEX_INCLUDE), headers=key, timeout=30).status_code == 200
    finally:
        fakes.stop()


# ---- affinity and orchestration ---------------------------------------------------------------

def test_conversations_are_kept_by_conversation_id_prompt_cache_key_or_opening():
    r = Router(config(affinity="conversation"))
    _, first = r.route(body(HARD, conversation="conv_42"), path="/v1/responses")
    assert first.model.id == "gpt-4o"
    _, kept = r.route(body(EASY, conversation={"id": "conv_42"}), path="/v1/responses")
    assert (kept.model.id, kept.strategy) == ("gpt-4o", "affinity")
    _, other = r.route(body(EASY, conversation="conv_43"), path="/v1/responses")
    assert other.model.id == "gpt-4o-mini"
    r.route(body(HARD, prompt_cache_key="thread-9"), path="/v1/responses")
    assert r.route(body(EASY, prompt_cache_key="thread-9"), path="/v1/responses")[1].strategy == "affinity"
    r.route(body([{"role": "user", "content": HARD}], instructions="terse"), path="/v1/responses")
    follow = [{"role": "user", "content": HARD}, {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "..."}]}, {"role": "user", "content": EASY}]
    _, opened = r.route(body(follow, instructions="terse"), path="/v1/responses")
    assert (opened.model.id, opened.strategy) == ("gpt-4o", "affinity")
    chained = parse_request(body(EASY, previous_response_id="resp_1"), "responses")
    assert conversation_key(chained)[1] is True  # continues from a response: see the next test


def test_a_chain_of_previous_response_ids_stays_on_the_model_that_answered():
    from llm_router.accounting import Usage

    cfg = config(affinity="conversation")
    keys = {"OPENAI_API_KEY": "o", "DEEPSEEK_API_KEY": "d", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g",
            "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "m"}
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)]), telemetry=False)

    def turn(text: str, rid: str, previous: str | None = None, status: int = 200) -> Exchange:
        ex = Exchange(rid, "r", 0.0)
        extra = {"previous_response_id": previous} if previous else {}
        rt.decide(body(text, **extra), path="/v1/responses", ex=ex)
        rt.on_response(ex, status, Usage(10, 5, response_id=rid), 0.1)
        return ex

    assert turn(HARD, "resp_A").decision.model.id == "gpt-4o"
    second = turn(EASY, "resp_B", previous="resp_A")  # only the new turn is in the body
    assert (second.decision.model.id, second.decision.strategy) == ("gpt-4o", "affinity")
    third = turn("ok", "resp_C", previous="resp_B")
    assert (third.decision.model.id, third.decision.strategy) == ("gpt-4o", "affinity")
    assert turn(EASY, "resp_X", previous="resp_unknown").decision.model.id == "gpt-4o-mini"  # never seen here
    turn(HARD, "resp_F", status=500)  # a failed answer is not remembered
    assert turn(EASY, "resp_G", previous="resp_F").decision.model.id == "gpt-4o-mini"
    off = Runtime(config(), credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)]), telemetry=False)
    ex = Exchange("1", "r", 0.0)
    off.decide(body(HARD), path="/v1/responses", ex=ex)
    off.on_response(ex, 200, Usage(10, 5, response_id="resp_Z"), 0.1)
    assert len(off.router.affinity) == 1  # without affinity only where the response is stored (tests/test_stored_responses.py)


def test_cascade_and_hedge_read_the_answer_of_a_response_object():
    done = {"object": "response", "status": "completed", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "B"}, {"type": "output_text", "text": "."}]}]}
    a = read_answer("responses", orjson.dumps(done))
    assert (a.text, a.finish_reason, a.refusal) == ("B.", "stop", None)
    cut = {**done, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert read_answer("responses", cut).finish_reason == "length"
    refused = {"object": "response", "status": "completed", "output": [{"type": "message", "content": [
        {"type": "refusal", "refusal": "I can't help with that."}]}]}
    assert read_answer("responses", refused).refusal == "I can't help with that."
    call = {"object": "response", "status": "completed", "output": [{"type": "function_call", "name": "f", "arguments": "{}"}]}
    assert '"name":"f"' in read_answer("responses", call).text
    assert read_answer("responses", {"object": "response"}) is None


def test_a_cascade_over_openai_models_answers_a_responses_request(fakes, on_fakes):
    from llm_router.orchestrate import orchestrate, wants_orchestration

    base = on_fakes()
    data = base.model_dump()
    cfg = parse_config({"providers": {n: p for n, p in data["providers"].items()}, "models": {"gpt-4o-mini": MINI},
                        "policies": {"default": {"strategy": "cascade", "params": {"scorer": "verify", "floor": 0.5,
                                                                                   "chain": ["gpt-4o-mini", "gpt-4o"]}}}})
    fakes.providers["openai"].set_behaviour(Behaviour(models=None, default_quality=1.0))
    rt = Runtime(cfg)

    async def run():
        ex = Exchange("c1", "r", 0.0)
        rt.decide(body("What is the capital of Norway?"), path="/v1/responses", ex=ex)
        assert wants_orchestration(ex)
        try:
            return ex, await orchestrate(rt, ex, ex.request, ex.decision)
        finally:
            await rt.stop()

    ex, reply = asyncio.run(run())
    assert reply.status == 200, reply.body
    answer = orjson.loads(reply.body)
    assert answer["object"] == "response" and answer["model"] == "gpt-4o-mini"
    [sent] = [r for r in fakes.requests("openai")]
    assert sent.path == "/v1/responses" and sent.json["model"] == "gpt-4o-mini"


def test_check_shows_which_models_serve_each_api(tmp_path, capsys):
    import yaml

    from llm_router.cli import main

    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "responses: 2 models (deepseek-v2 only for store: false without previous_response_id or conversation" in out
    assert "chat: 6 models" in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"models": {"gpt-4o-mini": MINI}, "policies": {"eu": {
        "classifier": "rules", "strategy": "cost_weighted", "constraints": {"providers": ["mistral", "anthropic"]}}}}))
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "responses: 3 models (deepseek-v2 only for store: false" in out  # the default policy, with gpt-4o-mini added
    assert "responses: none (refused with 400)" in out and "messages: only claude-3.5-sonnet" in out  # policy eu
    # gpt-4o-mini lacks GPT-4o's rules for what reasoning models' clients send: noted, and only it
    notes = [line for line in out.splitlines() if "named like an OpenAI model that does not reason" in line]
    assert len(notes) == 1 and notes[0].strip().endswith("add body: {drop: [reasoning_effort, reasoning, verbosity]}")


def test_hosted_tools_need_a_model_whose_provider_runs_them():
    router = Router(config())
    functions = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    _, own = router.route(body(EASY, tools=functions), path="/v1/responses")
    assert own.model.id == "gpt-4o-mini"  # the client runs its functions: any model with tools
    for hosted in ({"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "mcp", "server_label": "x"}):
        req, d = router.route(body(EASY, tools=[*functions, hosted]), path="/v1/responses")
        assert req.needs.hosted_tools and d.model.id == "gpt-4o", hosted  # gpt-4o-mini is not declared with hosted_tools here
    bare = Router(parse_config({"models": {"gpt-4o": {**MINI, "name": "gpt-4o"}, "gpt-4o-mini": MINI},
                                "policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER}}}))
    _, none = bare.route(body(EASY, tools=[{"type": "web_search"}]), path="/v1/responses")
    assert none.status == 400 and "hosted_tools" in none.message
