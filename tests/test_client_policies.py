"""client_policies: a route's policy lets clients pick another policy by model name (`auto-cheap`), and only those."""
from __future__ import annotations

import orjson
import pytest

from llm_router.config import ConfigError, parse_config
from llm_router.credentials import Credentials
from llm_router.decision import Decision, RouteError
from llm_router.router import Router, build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.secrets.env import EnvStore

KEYS = {"OPENAI_API_KEY": "sk-o", "DEEPSEEK_API_KEY": "sk-d", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "sk-m"}
LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
HARD = "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."


def data(**default) -> dict:
    return {"policies": {
        "default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "explain": True,
                    "client_policies": {"auto-cheap": "cheap", "auto-eu": "eu"}, **default},
        "cheap": {"classifier": "rules", "strategy": "ladder", "ladder": {t: "deepseek-v2" for t in LADDER},
                  "constraints": {"models": ["deepseek-v2"]}, "explain": True},
        "eu": {"classifier": "rules", "strategy": "ladder", "ladder": {t: "mistral-large" for t in LADDER},
               "constraints": {"require_tags": ["eu"]}, "client_model": "honor"},
        "locked": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER},
    }}


def chat(model: str, text: str = HARD) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


def test_a_listed_name_routes_by_that_policy_and_others_do_not_switch():
    router = Router(parse_config(data()))
    _, plain = router.route(chat("auto"))
    _, cheap = router.route(chat("auto-cheap"))
    _, eu = router.route(chat("auto-eu"))  # 'eu' honours client models, but the name chose the policy, not a model
    assert (plain.model.id, plain.policy) == ("claude-3.5-sonnet", "default")
    assert (cheap.model.id, cheap.policy) == ("deepseek-v2", "cheap")
    assert (eu.model.id, eu.policy) == ("mistral-large", "eu")
    locked = router.policy_for(orjson.dumps({"policy": "locked"}))
    _, refused = router.route(chat("auto-cheap"), policy=locked)  # a route whose policy lists no names
    assert (refused.policy, refused.model.id) == ("locked", "claude-3.5-sonnet")  # client_model route: the name is ignored


def test_the_runtime_accounts_explains_and_lists_under_the_chosen_policy():
    cfg = parse_config(data())
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]))
    ex = Exchange(rt.new_request_id(), "/v1/chat/completions", 0.0)
    call = rt.decide(chat("auto-cheap"), path="/v1/chat/completions", ex=ex)
    assert not isinstance(call, Refusal) and ex.policy.name == "cheap"
    assert orjson.loads(call.body)["model"] == "deepseek-flash" and ("authorization", "Bearer sk-d") in call.set_headers
    assert ("x-llm-router-model", "deepseek-v2") in call.response_headers
    assert 'strategy="ladder"' in rt.metrics.exposition().decode()
    listed = rt.models_reply("GET", "/v1/models", ex=Exchange("m", "r", 0.0))
    ids = [m["id"] for m in orjson.loads(listed.body)["data"]]
    assert ids[:3] == ["auto", "auto-cheap", "auto-eu"] and "gpt-4o" in ids


@pytest.mark.parametrize("names, expected", [
    ({"auto-x": "missing"}, "client_policies.auto-x: unknown policy 'missing'"),
    ({"gpt-4o": "cheap"}, "client_policies.gpt-4o: is also a model of the catalog"),
    ({"deepseek-flash": "cheap"}, "client_policies.deepseek-flash: is also a model of the catalog"),
    ({"auto": "cheap"}, "cannot name a policy"),
])
def test_bad_names_are_refused_naming_them(names, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(data(client_policies=names))
    assert expected in str(err.value)


def test_unknown_model_names_still_get_the_routes_usual_answer():
    router = Router(parse_config(data(client_model="honor")))
    _, unknown = router.route(chat("auto-typo"))
    assert isinstance(unknown, RouteError) and unknown.field == "model" and "one of: auto-cheap, auto-eu, deepseek-v2" in unknown.message
    _, listed = router.route(chat("auto-cheap"))
    assert isinstance(listed, Decision) and listed.policy == "cheap"
