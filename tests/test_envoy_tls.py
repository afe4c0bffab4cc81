"""Providers over real TLS: the production cluster settings (SNI, CA trust, SAN match) through a real Envoy,
and the runner's own calls (cascade, hedge, fallback) with a private CA bundle."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from fixtures_envoy import InThreadProcessor, restored, short_tmp, wait_requests
from llm_router.config import parse_config
from llm_router.fakes import FakeProviders
from llm_router.gateways.envoy.bootstrap import RouteSpec, build, spec_from_config
from llm_router.gateways.envoy.stack import free_port, start_envoy_on_free_ports, stop_all
from llm_router.orchestrate.client import UpstreamClient
from llm_router.orchestrate.settings import OrchestrateSettings, tls_context
from llm_router.plan import UpstreamCall
from llm_router.router import build_catalog
from tls_certs import CA, server_context

pytestmark = pytest.mark.envoy

CFG = {"policies": {
    "default": {"classifier": "none", "strategy": "ladder", "client_model": "honor", "explain": True, "fallbacks": 0,
                "ladder": {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}},
    # gpt-4o, falling back to mistral-large: both over HTTP/2 with good certificates
    "fb": {"classifier": "none", "strategy": "ladder", "explain": True, "fallbacks": 1,
           "constraints": {"models": ["gpt-4o", "mistral-large"]},
           "ladder": {"LOW": "gpt-4o", "MEDIUM": "gpt-4o", "HIGH": "gpt-4o", "CRITICAL": "gpt-4o"}}}}
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "deepseek": "api.deepseek.com",
         "mistral": "api.mistral.ai"}


def body(model: str, **extra) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "say hello over TLS"}], **extra})


@pytest.fixture(scope="module")
def tls_stack():
    """Envoy with TLS clusters built as in production, each aimed at a TLS fake on 127.0.0.1.

    openai and mistral: a certificate for their host from the trusted CA; anthropic: the trusted
    CA, but a certificate for another name; deepseek: the right name from a CA Envoy does not trust.
    Every fake offers HTTP/2 and HTTP/1.1 by ALPN, as the real providers do.
    """
    with short_tmp() as wd:
        trusted, rogue = CA(wd / "pki", "llm-router test CA"), CA(wd / "pki", "untrusted CA")
        certs = {"openai": trusted.issue(HOSTS["openai"]), "anthropic": trusted.issue("evil.example"),
                 "deepseek": rogue.issue(HOSTS["deepseek"]), "mistral": trusted.issue(HOSTS["mistral"])}
        sni: dict[str, list[str]] = {name: [] for name in certs}
        cfg = parse_config(CFG)
        fakes = {name: FakeProviders.from_config(cfg, names=[name], tls=server_context(*certs[name], sni[name]))
                 for name in certs}
        procs: list = []
        try:
            for f in fakes.values():
                f.start()
            ports = {name: free_port() for name in cfg.providers}  # unused providers: nothing listens
            ports.update({name: f.ports[name] for name, f in fakes.items()})
            env = {k: v for f in fakes.values() for k, v in f.env().items()}
            address = f"unix:{wd}/p.sock"
            proc = InThreadProcessor(cfg, address, env=env).start()
            procs.append(proc)

            def bootstrap(port: int, admin: int) -> dict:
                spec = spec_from_config(cfg, listen=("127.0.0.1", port), processor=address, local_ports=ports,
                                        admin=("127.0.0.1", admin), routes=(RouteSpec("/fb/", policy="fb"), RouteSpec("/")))
                upstreams = tuple(replace(u, tls=True) if u.name in set(certs) else u for u in spec.upstreams)
                return build(replace(spec, upstreams=upstreams, ca_bundle=str(trusted.pem_path)))

            envoy, port = start_envoy_on_free_ports(bootstrap, wd, procs)
            yield {"url": f"http://127.0.0.1:{port}", "fakes": fakes, "sni": sni, "observer": proc.observer,
                   "envoy": envoy, "trusted": trusted, "wd": wd}
        finally:
            stop_all(procs)
            for f in fakes.values():
                f.stop()


def test_production_tls_cluster_verifies_the_provider_and_sends_sni_host_and_key(tls_stack):
    r = httpx.post(tls_stack["url"] + "/v1/chat/completions", content=body("gpt-4o"),
                   headers={"content-type": "application/json", "authorization": "Bearer sk-client"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-router-model"] == "gpt-4o"
    fakes = tls_stack["fakes"]["openai"]
    [got] = wait_requests(fakes, "openai")
    assert got.headers["host"] == "api.openai.com"
    assert got.headers["authorization"] == f"Bearer {fakes.keys()['openai']}"
    assert "api.openai.com" in tls_stack["sni"]["openai"]
    assert got.http_version == "2"  # Envoy negotiated HTTP/2 by ALPN, as with the real providers
    assert got.json["model"] == "gpt-4o"
    assert int(got.headers["content-length"]) == len(got.body)
    assert r.json()["usage"]["total_tokens"] > 0


def test_stream_over_tls_arrives_and_its_usage_is_observed(tls_stack):
    with httpx.stream("POST", tls_stack["url"] + "/v1/chat/completions", content=body("gpt-4o", stream=True),
                      headers={"content-type": "application/json"}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert text.rstrip().endswith("data: [DONE]")
    last = [line for line in text.splitlines() if line.startswith("data: {") and '"usage"' in line][-1]
    reported = orjson.loads(last[6:])["usage"]
    _, status, usage, _ = tls_stack["observer"].response_for(r.headers["x-llm-router-request-id"])
    assert (status, usage.input_tokens, usage.output_tokens) == (200, reported["prompt_tokens"], reported["completion_tokens"])


@pytest.mark.parametrize("model, provider, why", [
    ("claude-3.5-sonnet", "anthropic", "certificate names another host"),
    ("deepseek-v2", "deepseek", "certificate from a CA Envoy does not trust"),
])
def test_envoy_refuses_a_provider_whose_certificate_does_not_check_out(tls_stack, model, provider, why):
    envoy = tls_stack["envoy"]
    before = envoy.counter(f"cluster.{provider}.ssl.fail_verify_san") + envoy.counter(f"cluster.{provider}.ssl.fail_verify_error")
    r = httpx.post(tls_stack["url"] + "/v1/chat/completions", content=body(model),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 503, (why, r.status_code, r.text)
    assert r.headers["x-llm-router-model"] == model
    assert not tls_stack["fakes"][provider].requests(provider), f"{why}: no request may reach it"
    assert tls_stack["sni"][provider], "the TLS handshake was attempted"
    after = envoy.counter(f"cluster.{provider}.ssl.fail_verify_san") + envoy.counter(f"cluster.{provider}.ssl.fail_verify_error")
    assert after > before, why
    assert "sk-" not in r.text and "fake-" not in r.text


@pytest.fixture
def h2_fakes(tls_stack):
    """The stack's good fakes with records cleared and default behaviour, restored afterwards."""
    with restored(*(tls_stack["fakes"][name] for name in ("openai", "mistral"))):
        yield tls_stack["fakes"]


@pytest.mark.parametrize("failure", [{"disconnect": True}, {"status": 429}, {"status": 503}])
def test_an_http2_provider_failing_before_its_answer_falls_back_to_the_next(tls_stack, h2_fakes, failure):
    h2_fakes["openai"].set_behaviour("openai", **failure)
    r = httpx.post(tls_stack["url"] + "/fb/v1/chat/completions", content=body("auto"),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, (failure, r.text)
    assert r.headers["x-llm-router-model"] == "mistral-large"
    assert r.headers["x-envoy-attempt-count"] == "2"
    [first] = wait_requests(h2_fakes["openai"], "openai")
    [second] = wait_requests(h2_fakes["mistral"], "mistral")
    assert (first.http_version, second.http_version) == ("2", "2")
    assert second.headers["host"] == "api.mistral.ai"
    assert second.headers["authorization"] == f"Bearer {h2_fakes['mistral'].keys()['mistral']}"
    assert h2_fakes["openai"].keys()["openai"] not in str(second.headers)
    assert second.json["model"] == "mistral-large-latest"
    rid = r.headers["x-llm-router-request-id"]
    attempts = tls_stack["observer"].attempts_for(rid, 2)
    assert [a[0].call.model.id for a in attempts] == ["gpt-4o", "mistral-large"]
    assert attempts[1][1] == 200 and attempts[0][1] != 200


def test_http2_stream_chunks_are_not_held_back_by_envoy(tls_stack, h2_fakes):
    """Each SSE event goes out as the provider sends it: the first with the headers, the rest 200 ms apart."""
    h2_fakes["openai"].set_behaviour("openai", chunks=3, chunk_ms=200)
    with httpx.Client(timeout=30) as client:  # one client: its set-up cost stays out of the timings
        client.post(tls_stack["url"] + "/v1/chat/completions", content=body("gpt-4o"),
                    headers={"content-type": "application/json"})  # the pooled connections exist
        t0 = time.perf_counter()
        arrivals = []
        with client.stream("POST", tls_stack["url"] + "/v1/chat/completions", content=body("gpt-4o", stream=True),
                           headers={"content-type": "application/json"}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                if chunk:
                    arrivals.append(time.perf_counter() - t0)
    # The role event is written before the first 200 ms pause: it must not wait for the content.
    assert arrivals[0] < 0.15, arrivals
    assert arrivals[-1] - arrivals[0] > 0.5, arrivals  # three pauses: spread out, not bunched at the end


def test_an_http2_stream_reset_midway_reaches_the_client_as_a_broken_stream(tls_stack, h2_fakes):
    # chunk_ms: the answer must have started at the client before the reset (else Envoy answers 503 itself)
    h2_fakes["openai"].set_behaviour("openai", break_after_chunks=2, chunks=6, chunk_ms=50)
    seen = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", tls_stack["url"] + "/v1/chat/completions", content=body("gpt-4o", stream=True),
                          headers={"content-type": "application/json"}, timeout=30) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                seen += chunk
    assert seen.count(b"data: {") >= 1  # the chunks before the reset arrived
    assert b"[DONE]" not in seen  # an error, not a silently short answer


def test_fakes_speak_http2_with_flow_control_for_long_answers():
    with short_tmp() as wd:
        ca = CA(wd, "h2 CA")
        sni: list[str] = []
        fakes = FakeProviders.from_config(parse_config(CFG), names=["openai"], tls=server_context(*ca.issue("localhost"), sni))
        fakes.set_behaviour("openai", texts={"gpt-4o": "long answer " * 20_000})  # larger than the 64 KiB initial window
        with fakes, httpx.Client(http2=True, verify=tls_context(str(ca.pem_path)), timeout=30) as client:
            url = f"https://localhost:{fakes.ports['openai']}/v1/chat/completions"
            auth = {"authorization": f"Bearer {fakes.keys()['openai']}"}
            r = client.post(url, content=body("gpt-4o"), headers=auth)
            assert r.http_version == "HTTP/2" and r.status_code == 200
            assert len(r.content) > 65_535
            assert r.json()["choices"][0]["message"]["content"].startswith("long answer long answer")
            assert fakes.requests("openai")[-1].http_version == "2"
            fakes.set_behaviour("openai", texts={}, status=429)
            r = client.post(url, content=body("gpt-4o"), headers=auth)
            assert r.status_code == 429 and r.headers["x-ratelimit-remaining-requests"] == "0"
            fakes.set_behaviour("openai", status=None, chunk_ms=50, chunks=4)
            with client.stream("POST", url, content=body("gpt-4o", stream=True), headers=auth) as s:
                arrivals = [time.perf_counter() for _ in s.iter_raw()]
            assert len(arrivals) >= 4 and arrivals[-1] - arrivals[0] >= 0.1  # streamed, not sent at the end


def test_fake_http2_server_waits_for_window_updates_on_a_small_window():
    """A client that grants 1 KiB at a time still gets the whole answer: the fake respects flow control."""
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    with short_tmp() as wd:
        ca = CA(wd, "window CA")
        fakes = FakeProviders.from_config(parse_config(CFG), names=["openai"], tls=server_context(*ca.issue("localhost"), []))
        fakes.set_behaviour("openai", texts={"gpt-4o": "flow " * 10_000})  # ~50 KB, 50 windows
        with fakes:
            ctx = tls_context(str(ca.pem_path))
            ctx.set_alpn_protocols(["h2"])
            raw = socket.create_connection(("127.0.0.1", fakes.ports["openai"]), timeout=20)
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                assert sock.selected_alpn_protocol() == "h2"
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
                conn.local_settings = h2.settings.Settings(client=True, initial_values={
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
                conn.initiate_connection()
                payload = body("gpt-4o")
                conn.send_headers(1, [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "https"),
                                      (":authority", "localhost"), ("content-type", "application/json"),
                                      ("authorization", f"Bearer {fakes.keys()['openai']}"),
                                      ("content-length", str(len(payload)))])
                conn.send_data(1, payload, end_stream=True)
                sock.sendall(conn.data_to_send())
                status, length, got, done = None, None, bytearray(), False
                while not done:
                    data = sock.recv(65536)
                    assert data, "connection closed before the answer ended"
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.ResponseReceived):
                            hdrs = dict(ev.headers)
                            status, length = hdrs[":status"], int(hdrs["content-length"])
                        elif isinstance(ev, h2.events.DataReceived):
                            assert ev.flow_controlled_length <= 1024  # never more than the window granted
                            got += ev.data
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded):
                            done = True
                        elif isinstance(ev, h2.events.StreamReset):
                            raise AssertionError(f"stream reset: {ev.error_code}")
                    sock.sendall(conn.data_to_send())
        assert status == "200" and length == len(got) > 40_000
        assert orjson.loads(bytes(got))["choices"][0]["message"]["content"].startswith("flow flow")


def _call(base_url: str, key: str) -> UpstreamCall:
    catalog = build_catalog(parse_config(CFG))
    provider = replace(catalog.providers["openai"], base_url=base_url)
    return UpstreamCall(model=catalog.models["gpt-4o"], provider=provider, path="/v1/chat/completions", body=body("gpt-4o"),
                        set_headers=(("authorization", f"Bearer {key}"),), remove_headers=(), response_headers=())


def test_runner_calls_verify_tls_against_a_private_ca_bundle():
    with short_tmp() as wd:
        ca = CA(wd, "private CA")
        sni: list[str] = []
        fakes = FakeProviders.from_config(parse_config(CFG), names=["openai"], tls=server_context(*ca.issue("localhost"), sni))
        with fakes:
            call = _call(f"https://localhost:{fakes.ports['openai']}", fakes.keys()["openai"])

            async def send(settings: OrchestrateSettings):
                client = UpstreamClient(settings, route_header="x-llm-router-upstream")
                try:
                    return await client.send(call, timeout_s=20, request_id="tls-1")
                finally:
                    await client.aclose()

            trusted = asyncio.run(send(OrchestrateSettings.from_config({"orchestrate": {"ca_bundle": str(ca.pem_path)}})))
            assert trusted.status == 200, trusted.error
            assert orjson.loads(trusted.body)["usage"]["total_tokens"] > 0
            assert sni == ["localhost"]
            [got] = fakes.requests("openai")
            assert got.http_version == "2"  # httpx negotiated HTTP/2 by ALPN
            assert got.headers["authorization"] == f"Bearer {fakes.keys()['openai']}"

            system = asyncio.run(send(OrchestrateSettings()))  # the system's CAs do not know the private CA
            assert system.status == 0
            assert "CERTIFICATE_VERIFY_FAILED" in system.error or "certificate verify failed" in system.error
            assert fakes.keys()["openai"] not in system.error
            assert len(fakes.requests("openai")) == 1


def test_ca_bundle_settings_are_validated_with_the_field_named(tmp_path: Path):
    from llm_router.config import ConfigError
    from llm_router.gateways.envoy.settings import EnvoySettings

    with pytest.raises(ValueError, match=r"server\.orchestrate\.ca_bundle: no such file"):
        OrchestrateSettings.from_config({"orchestrate": {"ca_bundle": str(tmp_path / "missing.pem")}})
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match=r"server\.orchestrate\.ca_bundle: .*junk\.pem holds no PEM CA certificate"):
        OrchestrateSettings.from_config({"orchestrate": {"ca_bundle": str(tmp_path / "junk.pem")}})
    with pytest.raises(ConfigError, match=r"server\.envoy\.ca_bundle.*absolute path"):
        EnvoySettings.from_config(parse_config({**CFG, "server": {"envoy": {"ca_bundle": "certs/ca.pem"}}}))
    cfg = parse_config({**CFG, "server": {"envoy": {"ca_bundle": "/etc/pki/tls/certs/ca-bundle.crt"}}})
    spec = spec_from_config(cfg, listen=("127.0.0.1", 1), processor="unix:/tmp/x.sock")
    tls = build(spec)["static_resources"]["clusters"][1]["transport_socket"]["typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": "/etc/pki/tls/certs/ca-bundle.crt"}
