"""The committed production bootstrap (envoy/envoy.yaml), run by the real Envoy exactly as shipped.

Only what points outside this machine changes: each provider's DNS name resolves to a TLS fake on
127.0.0.1 (the cluster keeps its host name for SNI, the SAN check and the Host header), the CA
bundle is the test CA's, and the listener, admin and processor socket use free local addresses.
Every route, filter, timeout, retry policy and TLS setting is the file's own.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from fixtures_envoy import InThreadProcessor, restored, short_tmp, wait_requests
from llm_router.config import load_config
from llm_router.fakes import FakeProviders
from llm_router.gateways.envoy.bootstrap import EXT_PROC_CLUSTER
from llm_router.gateways.envoy.stack import start_envoy_on_free_ports, stop_all
from tls_certs import CA, server_context

pytestmark = pytest.mark.envoy

ROOT = Path(__file__).resolve().parents[1]
GREETING = {"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]}
HARD = {"model": "auto", "messages": [{"role": "user", "content":
        "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."}]}


def localised(boot: dict, *, ports: dict[str, int], ca: Path, socket: Path, listen: int, admin: int) -> dict:
    """The production bootstrap with only its addresses and CA bundle made local."""
    boot = copy.deepcopy(boot)
    res = boot["static_resources"]
    res["listeners"][0]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen}
    boot["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin}
    by_host = {h: ports[name] for name, h in HOSTS.items()}
    for cluster in res["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        if cluster["name"] == EXT_PROC_CLUSTER:
            endpoint["address"]["pipe"]["path"] = str(socket)
            continue
        host = endpoint["hostname"]
        assert endpoint["address"]["socket_address"] == {"address": host, "port_value": 443}
        endpoint["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": by_host[host]}
        tls = cluster["transport_socket"]["typed_config"]
        assert tls["sni"] == host
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] = str(ca)
    return boot


HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "deepseek": "api.deepseek.com",
         "google": "generativelanguage.googleapis.com", "together": "api.together.xyz", "mistral": "api.mistral.ai"}


@pytest.fixture(scope="module")
def prod():
    cfg = load_config(None)  # the catalog envoy.yaml was generated from
    assert {p: load_config(None).providers[p].base_url for p in HOSTS} == {p: f"https://{h}" for p, h in HOSTS.items()}
    with short_tmp() as wd:
        ca = CA(wd / "pki", "production test CA")
        sni: list[str] = []
        fakes = FakeProviders.from_config(cfg, tls=server_context(*ca.issue(*HOSTS.values()), sni))
        procs: list = []
        try:
            fakes.start()
            socket = wd / "ext_proc.sock"
            proc = InThreadProcessor(cfg, f"unix:{socket}", env=fakes.env()).start()
            procs.append(proc)
            production = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())
            envoy, listen = start_envoy_on_free_ports(
                lambda port, admin: localised(production, ports=fakes.ports, ca=ca.pem_path, socket=socket, listen=port,
                                              admin=admin), wd, procs, name="prod")
            yield {"url": f"http://127.0.0.1:{listen}", "fakes": fakes, "sni": sni, "observer": proc.observer}
        finally:
            stop_all(procs)
            fakes.stop()


@pytest.fixture
def fresh(prod):
    with restored(prod["fakes"]):
        yield prod["fakes"]


def post(prod, body: dict, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    return httpx.post(prod["url"] + path, content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", "authorization": "Bearer sk-client-own", **headers})


@pytest.mark.parametrize("body, provider", [(GREETING, "deepseek"), (HARD, "anthropic")])
def test_the_shipped_bootstrap_routes_over_verified_tls_with_the_providers_key(prod, fresh, body, provider):
    r = post(prod, body)
    assert r.status_code == 200, r.text
    assert r.headers["x-fake-provider"] == provider
    [got] = wait_requests(fresh, provider)
    assert got.headers["host"] == HOSTS[provider] and HOSTS[provider] in prod["sni"]
    assert got.http_version == "2"
    assert fresh.keys()[provider] in (got.headers.get("authorization", "").removeprefix("Bearer "), got.headers.get("x-api-key"))
    assert "sk-client-own" not in str(got.headers)
    assert int(got.headers["content-length"]) == len(got.body)


def test_the_shipped_bootstrap_falls_back_to_the_next_provider(prod, fresh):
    fresh.set_behaviour("deepseek", status=503)
    r = post(prod, GREETING)
    assert r.status_code == 200, r.text
    assert r.headers["x-envoy-attempt-count"] == "2"
    assert r.headers["x-fake-provider"] != "deepseek"
    [failed] = fresh.requests("deepseek")
    assert failed.status == 503
    answered = r.headers["x-fake-provider"]
    [got] = fresh.requests(answered)
    assert got.headers["host"] == HOSTS[answered]


def test_the_shipped_bootstrap_streams_and_observes_usage(prod, fresh):
    fresh.set_behaviour(chunk_ms=100, chunks=3)
    t0 = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", prod["url"] + "/v1/chat/completions", content=orjson.dumps({**GREETING, "stream": True}),
                      headers={"content-type": "application/json"}, timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            arrivals.append(time.perf_counter() - t0)
            text = chunk.decode()
    assert arrivals[-1] - arrivals[0] > 0.2 and text.rstrip().endswith("[DONE]")
    _, status, usage, _ = prod["observer"].response_for(r.headers["x-llm-router-request-id"])
    assert status == 200 and usage.output_tokens > 0


def test_the_shipped_bootstrap_passes_other_paths_to_the_default_provider_untouched(prod, fresh):
    r = httpx.get(prod["url"] + "/v1/files", headers={"authorization": "Bearer sk-client-own"}, timeout=30)
    [got] = wait_requests(fresh, "openai")
    assert got.path == "/v1/files" and got.headers["host"] == "api.openai.com"
    assert got.headers["authorization"] == "Bearer sk-client-own"  # not routed: the client's own credential
    assert r.status_code == 401  # the fake's files API refuses the client's own key, as OpenAI would
    listed = httpx.get(prod["url"] + "/v1/models", headers={"authorization": "Bearer sk-client-own"}, timeout=30)
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == "auto"  # answered by the processor
    assert len(fresh.requests("openai")) == 1
