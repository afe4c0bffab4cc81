"""Property tests: random bodies never raise out of the core; errors always name something."""
from __future__ import annotations

import dataclasses
import functools
import re

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_router.catalog import BodyDialect
from llm_router.config import parse_config
from llm_router.decision import Decision, RouteError
from llm_router.router import Router

ROUTER = Router(parse_config({"seed": 3}))
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses"]

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=20)

roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "wizard", "", 3])
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "image", "input_audio", "video", "tool_result",
                                                       "tool_use", "thinking", 1]),
                               "text": json_values, "image_url": json_values}, optional={"content": json_values | st.text(max_size=40)})
contents = st.text(max_size=200) | st.lists(parts, max_size=3) | json_values
tool_calls = json_values | st.lists(st.fixed_dictionaries({"id": st.text(max_size=30) | json_values, "type": st.just("function"),
                                                          "function": json_values}, optional={"name": json_values}), max_size=3)
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": contents}, optional={
    "tool_calls": tool_calls, "tool_call_id": st.text(max_size=30) | json_values, "name": json_values,
    "reasoning_content": json_values, "refusal": json_values, "prefix": json_values}), max_size=4)
# OpenAI Responses input items: messages with content parts, and other item types.
response_parts = st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text", "input_image", "refusal", "video", 1]),
                                        "text": json_values})
items = st.lists(st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "item_reference", "new", 2]),
    "role": roles, "content": st.text(max_size=100) | st.lists(response_parts, max_size=3) | json_values, "output": json_values}),
    max_size=4)
bodies = st.fixed_dictionaries({}, optional={
    "model": st.text(max_size=20) | json_values, "messages": messages | json_values, "prompt": json_values | st.text(max_size=50),
    "stream": json_values, "stream_options": json_values, "tools": json_values, "functions": json_values,
    "response_format": json_values, "max_tokens": json_values, "max_completion_tokens": json_values, "system": json_values,
    "input": st.text(max_size=100) | items | json_values, "instructions": json_values, "text": json_values,
    "conversation": json_values, "previous_response_id": json_values, "max_output_tokens": json_values,
    "n": json_values | st.integers(-2, 300), "logprobs": json_values, "top_logprobs": json_values, "reasoning_effort": json_values,
    "reasoning": json_values, "temperature": json_values | st.floats(0, 2), "top_p": json_values | st.floats(0, 1),
    "include": json_values | st.lists(st.sampled_from(["reasoning.encrypted_content", "message.output_text.logprobs", 5]),
                                      max_size=3),
    "thinking": json_values | st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "adaptive", 3]),
                                                     "budget_tokens": json_values | st.integers(-5, 200_000)}),
    "top_k": json_values | st.integers(0, 100),
    "output_config": json_values | st.fixed_dictionaries({}, optional={"effort": st.sampled_from(["low", "max", None]),
                                                                       "format": json_values}),
    "tool_choice": json_values | st.sampled_from(["auto", "none", "required", {"type": "any"}, {"type": "auto"},
                                                  {"type": "tool", "name": "x"}, {"type": "function", "function": {"name": "x"}}]),
})


def check(result) -> None:
    req, outcome = result
    assert isinstance(outcome, (Decision, RouteError))
    if isinstance(outcome, RouteError):
        assert 400 <= outcome.status < 600 and outcome.message
        assert outcome.code != "router_error" and "could not be parsed" not in outcome.message  # no catch-all hit
        err = outcome.openai_body()["error"]
        assert err["message"] and err["type"]
    else:
        assert req is not None and outcome.model.id in ROUTER.catalog.models


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, path=st.sampled_from(PATHS))
def test_structured_random_bodies_never_raise(body, path):
    check(ROUTER.route(orjson.dumps(body), path=path))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), path=st.sampled_from(PATHS))
def test_random_bytes_never_raise(raw, path):
    check(ROUTER.route(raw, path=path))


@settings(max_examples=200, deadline=None)
@given(value=json_values, path=st.sampled_from(PATHS))
def test_any_json_value_never_raises(value, path):
    check(ROUTER.route(orjson.dumps(value), path=path))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=3000))
def test_any_prompt_routes(text):
    req, d = ROUTER.route(orjson.dumps({"messages": [{"role": "user", "content": text}]}))
    assert isinstance(d, Decision)
    assert 0.0 <= d.classification.score <= 1.0 and 0.0 <= d.classification.confidence <= 1.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, api=st.sampled_from(["chat", "completions", "messages", "responses"]))
def test_parser_raises_only_request_errors(body, api):
    """The router's catch-all must never be needed: the parser itself fails only with RequestError."""
    from llm_router.request import RequestError, parse_request

    try:
        parse_request(orjson.dumps(body), api)
    except RequestError as exc:
        assert exc.field and exc.message


feedback_items = st.fixed_dictionaries({}, optional={"request_id": st.text(max_size=140) | json_values,
                                                     "score": json_values, "good": json_values})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(feedback_items, st.lists(feedback_items, max_size=5), json_values))
def test_feedback_bodies_are_taken_or_refused_by_name(data):
    """POST /v1/feedback: any JSON is either valid lines in 0..1 or a 4xx that names the field."""
    from llm_router.feedback import FeedbackError, parse

    try:
        lines = parse(orjson.dumps(data))
    except FeedbackError as exc:
        assert exc.status in (400, 413) and exc.message
        assert orjson.loads(exc.body())["error"]["message"] == exc.message
        return
    assert lines and all(0.0 <= x["score"] <= 1.0 and isinstance(x["request_id"], str) for x in lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, api=st.sampled_from(["chat", "completions", "messages", "responses"]))
def test_conversation_keys_of_any_parsed_body_are_stable_ints(body, api):
    from llm_router.affinity import conversation_key
    from llm_router.request import RequestError, parse_request

    try:
        req = parse_request(orjson.dumps(body), api)
    except RequestError:
        return
    found = conversation_key(req, "policy:p")
    assert found is None or (isinstance(found[0], int) and -(2**63) <= found[0] < 2**63 and found == conversation_key(req, "policy:p"))


@settings(max_examples=300, deadline=None)
@given(tail=st.text(max_size=300), prefix=st.sampled_from(["/v1/responses/", "/openai/v1/responses/", "/v1/", ""]))
def test_any_path_is_a_stored_response_call_an_error_or_not_one(tail, prefix):
    from llm_router.stored import StoredPath, stored_path

    found = stored_path(prefix + tail)
    assert found is None or isinstance(found, StoredPath) or (isinstance(found, RouteError) and found.status == 400)
    if isinstance(found, StoredPath):
        assert "/" not in found.response_id and found.rest.startswith(found.response_id)


@settings(max_examples=300, deadline=None)
@given(tail=st.text(max_size=120) | st.sampled_from(["files", "batches/b_1/cancel", "files/f-1/content", "embeddings", "audio/speech"]),
       prefix=st.sampled_from(["/v1/", "/team/v1/", "/v1/messages/", "/", ""]), query=st.sampled_from(["", "?a=1"]))
def test_any_path_is_one_forwardable_api_or_none(tail, prefix, query):
    from llm_router.forward import forward_path

    path = prefix + tail + query
    found = forward_path(path)
    if found is not None:
        bare = path.partition("?")[0]
        assert bare.rstrip("/").endswith(found.tail) and found.tail.startswith("/" + found.api.split("/")[0])
        assert found.query == path.partition("?")[2] and not bare[: len(bare.rstrip("/")) - len(found.tail)].endswith("/messages")


@functools.lru_cache(maxsize=1)
def counting_runtime():
    """A Runtime with every provider's key (a token count goes to Anthropic)."""
    from llm_router.credentials import Credentials
    from llm_router.router import build_catalog
    from llm_router.runtime import Runtime
    from llm_router.secrets.env import EnvStore

    cfg = parse_config({})
    keys = {k: "k" for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY",
                             "MISTRAL_API_KEY", "DEEPSEEK_API_KEY")}
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)]), telemetry=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(bodies.map(orjson.dumps), st.binary(max_size=200)))
def test_any_token_count_body_is_forwarded_or_refused_never_raised(body):
    from llm_router.runtime import Exchange, Refusal

    out = counting_runtime().decide(body, path="/v1/messages/count_tokens", ex=Exchange("p", "r", 0.0))
    if isinstance(out, Refusal):
        assert out.status == 400 and orjson.loads(out.body)["error"]["message"]
    else:
        assert out.provider.name == "anthropic" and out.path == "/v1/messages/count_tokens" and orjson.loads(out.body)["messages"]


# Anthropic turns of an agent loop: text, thinking, tool calls and results in random order and roles.
blocks = st.fixed_dictionaries({"type": st.sampled_from(["text", "thinking", "redacted_thinking", "tool_use", "tool_result", 7])},
                               optional={"text": st.text(max_size=20), "thinking": st.text(max_size=20), "id": st.text(max_size=4),
                                         "tool_use_id": st.text(max_size=4), "content": st.text(max_size=20)})
tool_loop = st.tuples(st.lists(blocks, min_size=1, max_size=3), st.booleans()).map(lambda t: [
    {"role": "assistant", "content": t[0]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}, *([{"type": "text", "text": "and"}] if t[1] else [])]}])
anthropic_turns = st.fixed_dictionaries({
    "model": st.just("auto"), "max_tokens": st.integers(1, 64000),
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                                "content": st.text(min_size=1, max_size=30) | st.lists(blocks, max_size=3)}),
                         min_size=1, max_size=4),
    "loop": st.none() | tool_loop,
}, optional={"thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "adaptive"])},
                                               optional={"budget_tokens": st.integers(0, 64000)}) | json_values})


# Every body rule set in the catalog: each provider's, and each model's (its provider's with its own over them); and the
# model rules of user catalogs (a Gemini 3, a DeepSeek thinking model) over their providers'.
DIALECTS = sorted([(f"provider {n}", p.body) for n, p in ROUTER.catalog.providers.items()]
                  + [(f"model {n}", m.body) for n, m in ROUTER.catalog.models.items()]
                  + [("model gemini-3", dataclasses.replace(ROUTER.catalog.providers["google"].body or BodyDialect(),
                                                            fill_tool_signatures=True)),
                     ("model deepseek-reasoner", dataclasses.replace(ROUTER.catalog.providers["deepseek"].body or BodyDialect(),
                                                                     fill_reasoning=True, merge_successive=True,
                                                                     unforced_tools=True)),
                     ("model claude-sonnet-4.5", dataclasses.replace(ROUTER.catalog.providers["anthropic"].body or BodyDialect(),
                                                                     one_sampler=True)),
                     *((f"model {name}", dataclasses.replace(ROUTER.catalog.models["claude-3.5-sonnet"].body or BodyDialect(),
                                                            thinking_type=kind))
                       for name, kind in (("claude-opus-4.7", "adaptive"), ("claude-haiku-4.5", "enabled")))],
                 key=lambda x: x[0])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, api=st.sampled_from(["chat", "completions", "messages", "responses"]), owner=st.sampled_from(DIALECTS))
def test_every_parsed_body_renders_for_every_provider_and_model_as_json_it_accepts(body, api, owner):
    from llm_router.message_rules import THINKING_BLOCKS, takes_field, thinking_unfit, wants_thinking
    from llm_router.request import RequestError, parse_request, render_body

    try:
        req = parse_request(orjson.dumps(body), api)
    except RequestError:
        return
    _, dialect = owner
    sent = orjson.loads(render_body(req, "m", dialect=dialect))
    assert sent["model"] == "m"
    if api == "messages" and wants_thinking(body):  # extended thinking: never where the provider would refuse it
        if not takes_field(dialect, "messages", "thinking"):
            for m in sent["messages"]:
                content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
                if isinstance(content, list) and not all(isinstance(b, dict) and b.get("type") in THINKING_BLOCKS for b in content):
                    assert not any(isinstance(b, dict) and b.get("type") in THINKING_BLOCKS for b in content)
        elif thinking_unfit(body) or (dialect is not None and dialect.thinking_every_tool_turn and unthought(body)):
            # left out, or said outright where the model thinks unless told not to (DeepSeek)
            assert sent.get("thinking") in (None, {"type": "disabled"})
            if dialect is not None and dialect.thinking_every_tool_turn and unthought(body):
                assert sent["thinking"] == {"type": "disabled"}
        else:
            assert sent["thinking"] == body["thinking"]
    # lowered to what a model writes (output_limit: clamp): every limit field and a thinking budget end below it
    for limit in (1000, 8192):
        clamped = orjson.loads(render_body(req, "m", max_output=limit))
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = clamped.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and (req.max_output_tokens or 0) > limit:
                assert value <= limit
        budget = (clamped.get("thinking") or {}).get("budget_tokens") if isinstance(clamped.get("thinking"), dict) else None
        if (req.max_output_tokens or 0) > limit and isinstance(budget, int) and not isinstance(budget, bool):
            assert budget < limit
    if dialect is not None and dialect.assistant_after_tool and api == "chat":  # Mistral: no user right after tool results
        roles = [m.get("role") if isinstance(m, dict) else None for m in sent["messages"]]
        assert ("tool", "user") not in set(zip(roles, roles[1:]))
    if dialect is not None and dialect.developer_as_system and api == "chat":  # DeepSeek: no developer role
        assert not any(isinstance(m, dict) and m.get("role") == "developer" for m in sent["messages"])
    if dialect is not None and dialect.text_content and api == "chat":  # DeepSeek: no arrays of text parts
        assert not any(isinstance(m, dict) and isinstance(m.get("content"), list) and m["content"] and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in m["content"])
            for m in sent["messages"])
    if dialect is not None and dialect.tool_call_ids == "max40" and api == "chat":  # OpenAI: at most 40 characters
        for m in sent["messages"]:
            if isinstance(m, dict):
                calls = m.get("tool_calls") if isinstance(m.get("tool_calls"), list) else []
                ids = [c.get("id") for c in calls if isinstance(c, dict)] + [m.get("tool_call_id")]
                assert all(len(i) <= 40 for i in ids if isinstance(i, str))
    if dialect is not None and dialect.tool_call_ids == "alnum9" and api == "chat":  # Mistral: 9 letters or digits
        for m in sent["messages"]:
            ids = [c.get("id") for c in m.get("tool_calls") or [] if isinstance(c, dict)] if isinstance(m, dict) and \
                isinstance(m.get("tool_calls"), list) else []
            ids += [m.get("tool_call_id")] if isinstance(m, dict) else []
            assert all(re.fullmatch(r"[A-Za-z0-9]{9}", i) for i in ids if isinstance(i, str))
    if dialect is not None and dialect.message_fields and api == "chat":  # Mistral: each message only its role's fields
        call_fields = dialect.message_fields.get("tool_call", frozenset())
        for m in sent["messages"]:
            kept = dialect.message_fields.get(m.get("role")) if isinstance(m, dict) and isinstance(m.get("role"), str) else None
            if kept is not None and m["role"] != "tool_call":
                assert set(m) <= kept
                calls = m.get("tool_calls")
                assert not isinstance(calls, list) or all(set(c) <= call_fields for c in calls if isinstance(c, dict))
    if api == "responses" and not takes_field(dialect, "responses", "reasoning") and isinstance(sent.get("input"), list):
        assert not any(isinstance(i, dict) and i.get("type") == "reasoning" for i in sent["input"])  # gpt-4o: no reasoning items
    if api == "responses" and not takes_field(dialect, "responses", "reasoning"):  # gpt-4o: no encrypted reasoning, no verbosity
        assert "reasoning.encrypted_content" not in (sent.get("include") if isinstance(sent.get("include"), list) else [])
        assert not (isinstance(sent.get("text"), dict) and "verbosity" in sent["text"])
    if dialect is not None and dialect.drop_empty_tool_calls and api == "chat":  # OpenAI: no empty tool_calls arrays
        assert not any(isinstance(m, dict) and m.get("tool_calls") == [] for m in sent["messages"])
    if dialect is not None and dialect.prefix_last_assistant and api == "chat" and sent["messages"]:  # Mistral: a prefill
        last = sent["messages"][-1]
        if isinstance(last, dict) and last.get("role") == "assistant" and not last.get("tool_calls"):
            assert last["prefix"] is True
    # The thinking switch as sent: the client's, or the model's default (the built-in DeepSeek: disabled); a DeepSeek V4
    # model thinks unless it says disabled, a Claude (thinks_when_enabled) only when it says enabled or adaptive
    kind = sent["thinking"].get("type") if isinstance(sent.get("thinking"), dict) else None
    thinks = kind in ("enabled", "adaptive") if dialect is not None and dialect.thinks_when_enabled else kind != "disabled"
    if dialect is not None and dialect.thinking_sampling and thinks:  # Claude while thinking: only its own sampling
        assert sent.get("temperature") in (None, 1) and "top_k" not in sent
        top_p = sent.get("top_p")
        assert top_p is None or (isinstance(top_p, (int, float)) and top_p >= 0.95)
    if dialect is not None and dialect.effortless_unthinking and kind == "disabled":  # DeepSeek: no effort with thinking off
        assert "reasoning_effort" not in sent
        assert not (isinstance(sent.get("output_config"), dict) and "effort" in sent["output_config"])
    if dialect is not None and dialect.thinking_type and api in ("chat", "messages") and kind in ("enabled", "adaptive"):
        assert kind == dialect.thinking_type  # Claude Opus 4.7 / Haiku 4.5: only the form it takes
    if dialect is not None and dialect.unforced_any_tool and api in ("chat", "messages") and thinks:  # Claude: nothing forced
        choice = sent.get("tool_choice")
        assert choice != "required" and not (isinstance(choice, dict) and choice.get("type") in ("any", "tool", "function"))
    if dialect is not None and dialect.fill_reasoning and api == "chat" and thinks:  # DeepSeek thinking models
        messages = sent["messages"]
        for i, m in enumerate(messages):
            if isinstance(m, dict) and m.get("role") == "assistant" and (i < len(messages) - 1 or m.get("tool_calls")):
                assert isinstance(m.get("reasoning_content"), str) and m["reasoning_content"]
    if dialect is not None and dialect.merge_successive and api == "chat":  # deepseek-reasoner: roles interleave
        roles = [m.get("role") if isinstance(m, dict) else None for m in sent["messages"]]
        assert not any(a == b and a in ("user", "assistant") for a, b in zip(roles, roles[1:]))
        assert len(sent["messages"]) <= len(body["messages"])
    if dialect is not None and dialect.unforced_tools and api in ("chat", "messages") and thinks:  # DeepSeek thinking
        choice, legacy = sent.get("tool_choice"), sent.get("function_call")
        assert not (isinstance(choice, dict) and choice.get("type") in ("function", "tool"))
        assert not (isinstance(legacy, dict) and "name" in legacy)
    if dialect is not None:  # a model's field defaults: set where the client sent none, unless a rule drops the field
        for name, value in dialect.defaults.get(api, {}).items():
            assert name in body or name not in sent or sent[name] == value
            assert name in body or name in sent or name in dialect.drop or (api in dialect.accept and name not in dialect.accept[api])
    if dialect is not None and dialect.one_sampler:  # Claude Sonnet 4.5: temperature or top_p, not both
        assert sent.get("temperature") is None or sent.get("top_p") is None
    if dialect is not None and dialect.fill_tool_signatures and api == "chat":  # Gemini 3: each message's first call signed
        for m in sent["messages"]:
            calls = m.get("tool_calls") if isinstance(m, dict) and m.get("role") == "assistant" else None
            if isinstance(calls, list) and calls and isinstance(calls[0], dict):
                assert calls[0]["extra_content"]["google"]["thought_signature"]
    if dialect is not None:
        assert not dialect.drop & set(sent)
        if owner[0].startswith("provider"):  # a model's renames may map a field back (its own over its provider's)
            assert not {old for old, _ in dialect.rename} & set(sent)
        if api in dialect.accept:
            assert set(sent) <= dialect.accept[api]


@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=30), suffix=st.sampled_from(["", "/count_tokens", "/resp_1/cancel"]),
       query=st.text(alphabet="ab=&?%", max_size=20))
def test_provider_paths_keep_one_query_and_the_model_in_one_segment(name, suffix, query):
    from urllib.parse import unquote

    from llm_router.catalog import provider_path

    path = provider_path("/openai/deployments/{model}/chat/completions?api-version=1", name, suffix=suffix, query=query)
    bare, _, q = path.partition("?")
    assert bare.count("/") == 5 + suffix.count("/") and unquote(bare.split("/")[3]) == name
    assert q.split("&")[0] == "api-version=1" and q.count("api-version=") == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=anthropic_turns, owner=st.sampled_from(DIALECTS))
@example(body={"model": "auto", "max_tokens": 1, "messages": [{"role": "user", "content": "0"}],  # found by a CI run
               "loop": [{"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "tool_use"}]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}],
               "thinking": {"type": "disabled", "budget_tokens": 0}},
         owner=("model deepseek-reasoner", dict(DIALECTS)["model deepseek-reasoner"]))
def test_a_thinking_turn_goes_out_only_as_the_provider_takes_it(body, owner):
    """Extended thinking is never sent where Anthropic would refuse it: to a model that does not think (nor its
    thinking blocks, unless a block is all an answer holds), or on a tool loop whose call did not start with thinking."""
    loop = body.pop("loop")
    if loop:
        body["messages"] += loop
    from llm_router.message_rules import (THINKING_BLOCKS, TOOL_ID_RULES, block_ids_as, block_signature, takes_field,
                                          thinking_unfit, wants_thinking, without_blank_text, without_foreign_thinking)
    from llm_router.request import RequestError, parse_request, render_body

    try:
        req = parse_request(orjson.dumps(body), "messages")
    except RequestError:
        return
    _, dialect = owner
    sent = orjson.loads(render_body(req, "m", dialect=dialect))
    # the messages as sent, but for the provider's tool call id rule (Anthropic's: letters, digits, _ and -)
    fix = TOOL_ID_RULES.get(dialect.tool_call_ids) if dialect is not None else None
    if fix is not None:
        body = {**body, "messages": block_ids_as(body["messages"], fix)}
        for m in sent["messages"] if dialect.tool_call_ids == "word" else []:
            for b in m["content"] if isinstance(m["content"], list) else []:
                key = {"tool_use": "id", "tool_result": "tool_use_id"}.get(b["type"])
                assert not (key and isinstance(b.get(key), str) and not re.fullmatch(r"[A-Za-z0-9_-]+", b[key]))
    if dialect is not None and dialect.signed_thinking_only:  # Anthropic: no thinking block without a signature
        for m in sent["messages"]:
            content = m["content"] if m["role"] == "assistant" and isinstance(m["content"], list) else []
            if not all(b["type"] in THINKING_BLOCKS for b in content):
                assert all(block_signature(b) for b in content if b["type"] in THINKING_BLOCKS)
        body = {**body, "messages": without_foreign_thinking(body["messages"], "m", None, unsigned=True)}
    expected = body["messages"]
    if dialect is not None and dialect.drop_blank_text:  # Anthropic: no blank text block, no blank message but the last
        for i, m in enumerate(sent["messages"]):
            content, last = m["content"], i == len(sent["messages"]) - 1
            blank = [b["type"] == "text" and isinstance(b.get("text"), str) and not b["text"].strip()
                     for b in (content if isinstance(content, list) else [])]
            assert not any(blank) or (last and m["role"] != "assistant" and all(blank))  # nothing to send instead: as it came
            assert last or not (isinstance(content, str) and not content.strip())
        expected = without_blank_text(expected)
    if not wants_thinking(body):
        assert sent["messages"] == expected
        if dialect is not None and dialect.thinking_every_tool_turn and unthought(body):
            # not left to a model that thinks unless told not to (a client's own disabled object goes as it sent it)
            assert isinstance(sent["thinking"], dict) and sent["thinking"].get("type") == "disabled"
            assert sent["thinking"] == (body["thinking"] if "thinking" in body else {"type": "disabled"})
        return
    if not takes_field(dialect, "messages", "thinking"):
        assert "thinking" not in sent
        for m in sent["messages"]:
            content = m["content"] if m["role"] == "assistant" else None
            if isinstance(content, list) and not all(b["type"] in THINKING_BLOCKS for b in content):
                assert not any(b["type"] in THINKING_BLOCKS for b in content)
    elif thinking_unfit(body) or (dialect is not None and dialect.thinking_every_tool_turn and unthought(body)):
        assert sent.get("thinking") in (None, {"type": "disabled"}) and sent["messages"] == expected
        if dialect is not None and dialect.thinking_every_tool_turn and unthought(body):
            assert sent["thinking"] == {"type": "disabled"}  # DeepSeek's V4 models think unless told not to
    else:
        assert sent["messages"] == expected
        from llm_router.request import thinking_as

        # the client's thinking, in the one form a model takes where it takes only one (Claude Opus 4.7, Haiku 4.5)
        kind = dialect.thinking_type if dialect is not None else ""
        fitted = thinking_as(body["thinking"], kind, body["max_tokens"]) if kind else body["thinking"]
        assert sent.get("thinking") == fitted


def unthought(body: dict) -> bool:
    """Some assistant message calls a tool without a thinking block (DeepSeek's Anthropic endpoint then refuses thinking)."""
    for m in body["messages"]:
        types = [b["type"] for b in m["content"] if isinstance(b, dict)] if m["role"] == "assistant" and isinstance(m["content"], list) else []
        if "tool_use" in types and not {"thinking", "redacted_thinking"} & set(types):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(st.fixed_dictionaries({"role": st.sampled_from(["assistant", "tool", "user"])}, optional={
    "tool_calls": st.lists(st.fixed_dictionaries({"id": st.text(max_size=60) | json_scalars, "type": st.just("function")}), max_size=3)
    | json_values, "tool_call_id": st.text(max_size=60) | json_scalars, "content": st.text(max_size=10)}), max_size=5))
def test_rewritten_tool_call_ids_fit_and_still_pair_up(msgs):
    """Every string id fits the provider's rule (Mistral: 9 letters or digits; OpenAI: 40 characters at most); equal ids
    stay equal and different ones different; nothing else changes."""
    from llm_router.message_rules import TOOL_ID_RULES, tool_ids_as

    def ids(messages):
        found = []
        for m in messages:
            calls = m.get("tool_calls")
            found += [c.get("id") for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
            found += [m["tool_call_id"]] if "tool_call_id" in m else []
        return found

    fits = {"alnum9": lambda i: re.fullmatch(r"[A-Za-z0-9]{9}", i), "max40": lambda i: len(i) <= 40,
            "word": lambda i: re.fullmatch(r"[A-Za-z0-9_-]+", i)}
    for rule, fix in TOOL_ID_RULES.items():
        out = tool_ids_as(msgs, fix)
        before, after = ids(msgs), ids(out)
        assert len(before) == len(after)
        for a, b in zip(before, after):
            assert b == a if not isinstance(a, str) else fits[rule](b)
        strings = [(a, b) for a, b in zip(before, after) if isinstance(a, str)]
        assert len({a for a, _ in strings}) == len({b for _, b in strings})
        strip = lambda ms: [{k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")} for m in ms]  # noqa: E731
        assert strip(out) == strip(msgs)
