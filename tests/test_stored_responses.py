"""Calls on stored Responses (retrieve, delete, cancel, input items) go to the provider that holds them, with its key."""
from __future__ import annotations

import orjson
import pytest

from llm_router.accounting import Usage
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.decision import RouteError
from prometheus_client.parser import text_string_to_metric_families

from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.secrets.env import EnvStore
from llm_router.stored import StoredPath, stored_path

KEYS = {"OPENAI_API_KEY": "sk-test-openai", "DEEPSEEK_API_KEY": "d", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "sk-test-together", "MISTRAL_API_KEY": "m"}
LADDER = {"LOW": "llama-3-70b", "MEDIUM": "llama-3-70b", "HIGH": "gpt-4o", "CRITICAL": "gpt-4o"}
# Together's OpenAI-compatible API serving Responses too: two providers that may hold a response.
TOGETHER = {"base_url": "https://api.together.xyz", "auth": "bearer", "credentials": ["env://TOGETHER_API_KEY"],
            "paths": {"chat": "/v1/chat/completions", "responses": "/openai/v1/responses"}}


def runtime(two_providers: bool = True, **policy) -> Runtime:
    data: dict = {"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, **policy},
                               "openai-only": {"classifier": "rules", "strategy": "ladder", "ladder": {t: "gpt-4o" for t in LADDER},
                                               "constraints": {"providers": ["openai"]}}}}
    if two_providers:
        data["providers"] = {"together": TOGETHER}
    cfg = parse_config(data)
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]))


def answered(rt: Runtime, text: str, response_id: str, **extra) -> Exchange:
    """A Responses request routed and answered with `response_id`."""
    ex = Exchange(rt.new_request_id(), "r", 0.0)
    call = rt.decide(orjson.dumps({"model": "auto", "input": text, **extra}), path="/v1/responses", ex=ex)
    assert not isinstance(call, Refusal), call
    rt.on_response(ex, 200, Usage(10, 5, response_id=response_id), 0.1)
    return ex


def counts(rt: Runtime) -> dict[tuple[str, str], float]:
    """llm_router_stored_responses_total by (provider, found), read from the real exposition text."""
    out = {}
    for family in text_string_to_metric_families(rt.metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "llm_router_stored_responses_total" and sample.value:
                out[(sample.labels["provider"], sample.labels["found"])] = sample.value
    return out


def stored(rt: Runtime, path: str, route_conf=None):
    return rt.stored_response(path, ex=Exchange(rt.new_request_id(), "r", 0.0), route_conf=route_conf)


def test_paths_under_a_responses_endpoint_are_recognised_and_bad_ids_named():
    assert stored_path("/v1/responses/resp_1") == StoredPath("resp_1", "resp_1", "")
    assert stored_path("/openai/v1/responses/resp_1/input_items?limit=2&order=asc") == \
        StoredPath("resp_1", "resp_1/input_items", "?limit=2&order=asc")
    assert stored_path("/v1/responses/resp_1/cancel/") == StoredPath("resp_1", "resp_1/cancel", "")
    for other in ("/v1/responses", "/v1/responses/", "/v1/responses?x=1", "/v1/chat/completions", "/v1/models",
                  "/v1/responsesx/resp_1", "/v1/responses/resp_1/other", "/v1/responses/resp_1/cancel/more"):
        assert stored_path(other) is None, other
    for bad in ("/v1/responses/resp%2F1", "/v1/responses/" + "r" * 201, "/v1/responses/re.sp"):
        err = stored_path(bad)
        assert isinstance(err, RouteError) and err.status == 400 and err.field == "path" and "response id" in err.message


def test_a_remembered_response_goes_back_to_its_provider_with_that_key_and_path():
    rt = runtime()
    easy = answered(rt, "thanks, that is all", "resp_cheap")
    hard = answered(rt, "Prove rigorously that the halting problem is undecidable, step by step.", "resp_strong")
    assert (easy.call.model.id, hard.call.model.id) == ("llama-3-70b", "gpt-4o")
    call = stored(rt, "/v1/responses/resp_cheap/input_items?limit=5")
    assert (call.provider.name, call.path, call.body) == ("together", "/openai/v1/responses/resp_cheap/input_items?limit=5", b"")
    assert ("authorization", "Bearer sk-test-together") in call.set_headers
    assert (rt.route_header, call.model.upstream) in call.set_headers
    assert "x-api-key" in call.remove_headers and "authorization" not in call.remove_headers  # the client's are dropped
    call = stored(rt, "/v1/responses/resp_strong")
    assert (call.provider.name, call.path) == ("openai", "/v1/responses/resp_strong")
    assert ("authorization", "Bearer sk-test-openai") in call.set_headers
    assert counts(rt) == {("together", "remembered"): 1, ("openai", "remembered"): 1}


def test_an_unknown_id_goes_to_the_only_provider_serving_responses_else_a_404_names_them():
    rt = runtime()
    refused = stored(rt, "/v1/responses/resp_never_seen")
    assert isinstance(refused, Refusal) and refused.status == 404
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "response_not_found" and "resp_never_seen" in error["message"]
    assert "openai" in error["message"] and "together" in error["message"]
    only = stored(rt, "/v1/responses/resp_never_seen/cancel", route_conf=orjson.dumps({"policy": "openai-only"}))
    assert not isinstance(only, Refusal) and (only.provider.name, only.path) == ("openai", "/v1/responses/resp_never_seen/cancel")
    defaults = runtime(two_providers=False)  # the built-in catalog: only OpenAI keeps Responses answers (DeepSeek stores none)
    call = stored(defaults, "/v1/responses/input_tokens")
    assert (call.provider.name, call.path) == ("openai", "/v1/responses/input_tokens")
    assert counts(rt) == {("", "refused"): 1, ("openai", "only_provider"): 1}


def test_unstored_failed_and_other_paths_are_not_remembered_or_handled():
    rt = runtime()
    answered(rt, "thanks, that is all", "resp_unstored", store=False)
    assert isinstance(stored(rt, "/v1/responses/resp_unstored"), Refusal)
    ex = Exchange(rt.new_request_id(), "r", 0.0)
    rt.decide(orjson.dumps({"model": "auto", "input": "thanks"}), path="/v1/responses", ex=ex)
    rt.on_response(ex, 500, Usage(1, 0, response_id="resp_failed"), 0.1)
    assert isinstance(stored(rt, "/v1/responses/resp_failed"), Refusal)
    assert stored(rt, "/v1/chat/completions") is None and stored(rt, "/v1/responses") is None
    bad = stored(rt, "/v1/responses/a%20b")
    assert isinstance(bad, Refusal) and bad.status == 400 and b"'path'" not in bad.body and b"response id" in bad.body


@pytest.mark.parametrize("conf", [b"{not json", orjson.dumps({"policy": "missing"})])
def test_a_broken_route_conf_is_refused_with_its_problem(conf):
    refused = stored(runtime(), "/v1/responses/resp_1", route_conf=conf)
    assert isinstance(refused, Refusal) and refused.status >= 400 and orjson.loads(refused.body)["error"]["message"]


def test_a_holder_learned_from_another_process_is_used():
    one, two = runtime(), runtime()
    answered(one, "thanks, that is all", "resp_shared")
    # What AffinitySync carries between processes through Redis (tests/test_affinity_sync.py runs it for real).
    two.router.affinity.learn(*next(iter(one.router.affinity._models.items())))
    call = stored(two, "/v1/responses/resp_shared")
    assert call.provider.name == "together"
