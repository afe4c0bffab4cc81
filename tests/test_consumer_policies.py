"""Consumer policies: `accounting.consumer_policies` gives a consumer (the consumer_header's value, e.g.
set by the gateway's auth, or `key:<hash>` of its credential) its own policy on every route.

A free tier on the cheap model, a research team on the strong ones, whatever route they call.
"""
from __future__ import annotations

import hashlib

import httpx
import orjson
import pytest

from apisix_emulator import RouteConf, runner_session
from fixtures_envoy import config_data, restored, running_fakes, running_stack  # noqa: F401
from llm_router.cli import main
from llm_router.config import ConfigError, parse_config
from llm_router.runtime import Exchange, Refusal, Runtime

HARD = "Prove that the square root of 2 is irrational, step by step, then generalise the proof to any non-square integer."


def chat(prompt: str = HARD) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]})


def data(**accounting) -> dict:
    d = config_data()
    d["accounting"] = {"consumer_header": "x-consumer-id", "consumer_policies": {"free-tier": "cheap"}, **accounting}
    return d


def with_forwards(d: dict) -> dict:
    """The route's policy forwards embeddings to OpenAI, the free tier's to Mistral."""
    d["policies"]["default"]["forward"] = {"embeddings": "openai"}
    d["policies"]["cheap"]["forward"] = {"embeddings": "mistral"}
    return d


def listed(reply) -> list[str]:
    return [m["id"] for m in orjson.loads(reply.body)["data"]]


def decide(rt: Runtime, headers) -> object:
    return rt.decide(chat(), path="/v1/chat/completions", ex=Exchange("r", "chat", 0.0), headers=headers)


def test_a_mapped_consumer_gets_its_policy_on_any_route(provider_keys):
    rt = Runtime(parse_config(data()), telemetry=False)
    free = decide(rt, [("x-consumer-id", "free-tier")])
    other = decide(rt, [("x-consumer-id", "research")])
    anonymous = decide(rt, None)
    assert not isinstance(free, Refusal) and free.model.id == "deepseek-v2"  # the cheap policy's only model
    assert not isinstance(other, Refusal) and other.model.id == "claude-3.5-sonnet"  # the route's policy: HIGH -> Claude
    assert not isinstance(anonymous, Refusal) and anonymous.model.id == "claude-3.5-sonnet"
    # The consumer's policy wins over the route's (here a route naming the default policy explicitly).
    ex = Exchange("r2", "chat", 0.0)
    pinned = rt.decide(chat(), path="/v1/chat/completions", ex=ex, route_conf=orjson.dumps({"policy": "default"}),
                       headers=[("x-consumer-id", "free-tier")])
    assert pinned.model.id == "deepseek-v2" and ex.policy.name == "cheap"


def test_a_consumer_known_by_its_credential(provider_keys):
    key_id = "key:" + hashlib.sha256(b"Bearer sk-client-free").hexdigest()[:12]
    d = config_data()
    d["accounting"] = {"consumer_policies": {key_id: "cheap"}}
    rt = Runtime(parse_config(d), telemetry=False)
    assert decide(rt, [("authorization", "Bearer sk-client-free")]).model.id == "deepseek-v2"
    assert decide(rt, [("authorization", "Bearer sk-client-paid")]).model.id == "claude-3.5-sonnet"


@pytest.mark.parametrize("mapping, says", [({"free-tier": "nope"}, "accounting.consumer_policies: unknown policies ['nope']"),
                                           (["free-tier"], "accounting.consumer_policies: must map consumer ids to policy names")])
def test_bad_consumer_policies_are_named(mapping, says, provider_keys, tmp_path, capsys):
    import yaml

    bad = data()
    bad["accounting"]["consumer_policies"] = mapping
    with pytest.raises(ConfigError) as err:
        Runtime(parse_config(bad))
    assert says in str(err.value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["check", str(path)]) == 2 and says in capsys.readouterr().err


def test_a_reload_that_removes_a_mapped_policy_is_refused(provider_keys):
    rt = Runtime(parse_config(data()), telemetry=False)
    new = data()
    del new["policies"]["cheap"]
    new["policies"]["default"]["client_policies"] = {}
    new["accounting"]["consumer_policies"] = {}  # even if the new file drops the mapping: accounting needs a restart
    with pytest.raises(ConfigError) as err:
        rt.prepare_reload(parse_config(new))
    assert "['cheap'] removed, which accounting.consumer_policies names" in str(err.value)


def test_a_consumer_policy_also_governs_forwards_stored_responses_and_the_model_list(provider_keys):
    """Not only routed calls: what a consumer may reach is its policy's, on every kind of call."""
    rt = Runtime(parse_config(with_forwards(data())), telemetry=False)
    free, paid = [("x-consumer-id", "free-tier")], [("x-consumer-id", "research")]

    def forward(headers):
        return rt.forwarded("/v1/embeddings", ex=Exchange("f", "emb", 0.0), headers=headers)

    assert forward(free).model.provider == "mistral" and forward(paid).model.provider == "openai"
    assert forward(None).model.provider == "openai"

    def models(headers):
        return rt.models_reply("GET", "/v1/models", ex=Exchange("m", "models", 0.0), headers=headers)

    assert listed(models(free)) == ["auto", "deepseek-v2"]  # the cheap policy's one model
    assert len(listed(models(paid))) == len(listed(models(None))) > 2
    assert "deepseek-v2" in listed(models(paid))

    def stored(headers):
        return rt.stored_response("/v1/responses/resp_unknown", ex=Exchange("s", "resp", 0.0), headers=headers)

    refused = stored(free)
    assert isinstance(refused, Refusal) and refused.status == 404
    assert "no model of policy 'cheap' is served by a provider that stores Responses answers" in refused.body.decode()
    assert "policy 'cheap'" not in bytes(getattr(stored(paid), "body", b"")).decode()


# ---- through the real Envoy and the APISIX runner ----------------------------------------------

@pytest.fixture(scope="module")
def fakes():
    yield from running_fakes(with_forwards(data()))


@pytest.fixture(scope="module")
def stack(fakes, tmp_path_factory):
    yield from running_stack(tmp_path_factory, "envoy-consumers", fakes, with_forwards(data()))


@pytest.mark.envoy
def test_envoy_routes_each_consumer_by_its_policy(stack, fakes):
    with restored(fakes):
        for who, model in (("free-tier", "deepseek-v2"), ("research", "claude-3.5-sonnet")):
            r = httpx.post(stack.url + "/v1/chat/completions", content=chat(), timeout=30,
                           headers={"content-type": "application/json", "x-consumer-id": who})
            assert r.status_code == 200, r.text
            assert r.headers["x-llm-router-model"] == model, who


def test_apisix_runner_routes_each_consumer_by_its_policy(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    with runner_session(Runtime(parse_config(data())), "consumers") as em, restored(fakes):
        for who, provider, name in (("free-tier", "deepseek", "deepseek-flash"), ("research", "anthropic", "claude-sonnet-4-6")):
            resp = proxy(em, RouteConf(conf=(("llm-router", "{}"),), conf_id="consumers"),
                         upstreams={name: fakes.url(name) for name in fakes.providers}, body=chat(),
                         headers=[("content-type", "application/json"), ("x-consumer-id", who)])
            assert resp.status == 200, resp.body
            assert fakes.requests(provider)[-1].json["model"] == name, who
        assert len(fakes.requests("deepseek")) == 1 and len(fakes.requests("anthropic")) == 1


EMBED = orjson.dumps({"model": "text-embedding-3-small", "input": "some text"})


@pytest.mark.envoy
def test_envoy_lists_and_forwards_by_the_consumers_policy(stack, fakes):
    with restored(fakes):
        for who, provider, models in (("free-tier", "mistral", ["auto", "deepseek-v2"]), ("research", "openai", None)):
            headers = {"x-consumer-id": who}
            r = httpx.get(stack.url + "/v1/models", headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            got = [m["id"] for m in r.json()["data"]]
            assert got == models if models else len(got) > 2, who
            r = httpx.post(stack.url + "/v1/embeddings", content=EMBED, timeout=30,
                           headers={**headers, "content-type": "application/json"})
            assert r.status_code == 200, r.text
            assert len(fakes.requests(provider)) == 1 and fakes.requests(provider)[-1].path.endswith("/embeddings"), who


def test_apisix_runner_lists_and_forwards_by_the_consumers_policy(fakes, monkeypatch):
    from llm_router.gateways.apisix.emulator import proxy

    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    route = RouteConf(conf=(("llm-router", "{}"),), conf_id="consumers-forward")
    upstreams = {name: fakes.url(name) for name in fakes.providers}
    with runner_session(Runtime(parse_config(with_forwards(data()))), "consumers-forward") as em, restored(fakes):
        for who, provider, models in (("free-tier", "mistral", ["auto", "deepseek-v2"]), ("research", "openai", None)):
            headers = [("x-consumer-id", who)]
            resp = proxy(em, route, upstreams=upstreams, path="/v1/models", method="GET", headers=headers)
            assert resp.status == 200, resp.body
            got = [m["id"] for m in orjson.loads(resp.body)["data"]]
            assert got == models if models else len(got) > 2, who
            resp = proxy(em, route, upstreams=upstreams, path="/v1/embeddings", body=EMBED,
                         headers=[*headers, ("content-type", "application/json")])
            assert resp.status == 200, resp.body
            assert len(fakes.requests(provider)) == 1, who
