"""`GET /v1/models` answered by the router: `auto` and the models the route's policy may choose."""
from __future__ import annotations

import orjson
import pytest

from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.models_endpoint import models_path
from llm_router.router import build_catalog
from llm_router.edge_sections import edge_section_problems
from llm_router.runtime import Exchange, Runtime
from llm_router.secrets.env import EnvStore

KEYS = {"OPENAI_API_KEY": "o", "DEEPSEEK_API_KEY": "d", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "m"}
LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}


def runtime(**server) -> Runtime:
    cfg = parse_config({"server": server, "policies": {
        "default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER},
        "eu": {"classifier": "rules", "strategy": "ladder", "ladder": {t: "mistral-large" for t in LADDER},
               "constraints": {"providers": ["mistral", "deepseek"]}}}})
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]), telemetry=False)


def reply(rt: Runtime, path: str, method: str = "GET", route_conf=None, anthropic: bool = False):
    return rt.models_reply(method, path, ex=Exchange("rid-1", "r", 0.0), route_conf=route_conf, anthropic=anthropic)


def test_models_paths():
    assert [models_path(p) for p in ("/v1/models", "/v1/models/", "/openai/v1/models?limit=3")] == ["", "", ""]
    assert models_path("/v1/models/gpt-4o") == "gpt-4o" and models_path("/v1/models/ft:gpt-4o:org::x1") == "ft:gpt-4o:org::x1"
    assert models_path("/v1/chat/completions") is None and models_path("/v1/responses/resp_1") is None


def test_the_list_is_auto_then_the_policys_models_cheapest_first():
    rt = runtime()
    r = reply(rt, "/v1/models")
    assert r.status == 200 and ("content-type", "application/json") in r.headers
    assert ("x-llm-router-request-id", "rid-1") in r.headers
    body = orjson.loads(r.body)
    ids = [m["id"] for m in body["data"]]
    assert body["object"] == "list" and ids[0] == "auto" and set(ids[1:]) == set(rt.catalog.models)
    assert ids[1:] == [m.id for m in rt.router.default.models]
    gpt = next(m for m in body["data"] if m["id"] == "gpt-4o")
    assert gpt == {"id": "gpt-4o", "object": "model", "created": gpt["created"], "owned_by": "openai"}
    eu = orjson.loads(reply(rt, "/v1/models", route_conf=orjson.dumps({"policy": "eu"})).body)
    assert [m["id"] for m in eu["data"]] == ["auto", "deepseek-v2", "mistral-large"]


def test_one_model_by_id_or_provider_name_and_an_unknown_one_is_a_404_naming_the_known():
    rt = runtime()
    one = reply(rt, "/v1/models/claude-3.5-sonnet")
    assert one.status == 200 and orjson.loads(one.body)["owned_by"] == "anthropic"
    by_name = reply(rt, "/v1/models/claude-sonnet-4-6")
    assert orjson.loads(by_name.body)["id"] == "claude-3.5-sonnet"
    missing = reply(rt, "/v1/models/gpt-4o", route_conf=orjson.dumps({"policy": "eu"}))
    error = orjson.loads(missing.body)["error"]
    assert missing.status == 404 and error["code"] == "model_not_found" and "mistral-large" in error["message"]


def test_anthropic_clients_get_anthropics_list_format():
    body = orjson.loads(reply(runtime(), "/v1/models", anthropic=True).body)
    assert body["has_more"] is False and body["first_id"] == "auto"
    assert all(m["type"] == "model" and m["display_name"] == m["id"] for m in body["data"])


def test_other_methods_paths_a_bad_route_conf_and_the_switch():
    rt = runtime()
    assert reply(rt, "/v1/models", method="POST") is None and reply(rt, "/v1/chat/completions") is None
    bad = reply(rt, "/v1/models", route_conf=b"{broken")
    assert bad.status >= 400 and orjson.loads(bad.body)["error"]["message"]
    assert reply(runtime(models_endpoint=False), "/v1/models") is None


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_switch_is_named(value):
    cfg = parse_config({"server": {"models_endpoint": value}})
    assert any("server.models_endpoint" in p for p in edge_section_problems(cfg))
