"""End to end through a real APISIX (container) + etcd + the runner + fake providers.

The containers use the host network so everything stays on 127.0.0.1: APISIX's proxy and Admin
API listen on free loopback ports, etcd too, and APISIX reaches the runner's socket through a
bind-mounted directory (path_for_test) and the fake providers on the host's loopback.
Skipped where there is no Docker engine.
"""
from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import orjson
import pytest
from conftest import sse_data_lines, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APISIX_IMAGE = os.environ.get("LLM_ROUTER_APISIX_IMAGE", "apache/apisix:3.18.0-debian")
ETCD_IMAGE = os.environ.get("LLM_ROUTER_ETCD_IMAGE", "quay.io/coreos/etcd:v3.5.17")
ADMIN_KEY = secrets.token_hex(16)
USAGE_LOG_KEY = secrets.token_hex(16)


def _docker_or_skip():
    pytest.importorskip("testcontainers", reason="testcontainers is not installed (pip install '.[test]')")
    docker = pytest.importorskip("docker", reason="the docker SDK is not installed")
    try:
        docker.from_env().ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine reachable here ({type(exc).__name__}); these tests run where Docker is")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """etcd + APISIX containers, fake providers and the runner; yields URLs and handles."""
    _docker_or_skip()
    import httpx
    from testcontainers.core.container import DockerContainer

    from llm_router.fakes import FakeProviders

    from apisix_emulator import RunnerProcess, remove_dir, runner_config_at_fakes, socket_dir

    fakes = FakeProviders.from_config().start()
    sockdir = socket_dir()
    os.chmod(sockdir, 0o755)  # APISIX's workers (another user) must reach the socket
    sock = os.path.join(sockdir, "runner.sock")
    work = tmp_path_factory.mktemp("apisix")
    # the runner's catalog points at the fakes
    metrics_port = _free_port()
    cfg_path = runner_config_at_fakes(work / "llm-router.yaml", fakes, metrics_port)
    runner = RunnerProcess(sock, config=cfg_path, env={**fakes.env(), "LLM_ROUTER_USAGE_LOG_KEY": USAGE_LOG_KEY}).start()

    etcd_port, gw_port, admin_port = _free_port(), _free_port(), _free_port()
    etcd = (DockerContainer(ETCD_IMAGE).with_kwargs(network_mode="host")
            .with_command(f"etcd --listen-client-urls http://127.0.0.1:{etcd_port} "
                          f"--advertise-client-urls http://127.0.0.1:{etcd_port} "
                          f"--listen-peer-urls http://127.0.0.1:{_free_port()}"))
    conf = work / "config.yaml"
    conf.write_text(f"""
apisix:
  node_listen:
    - ip: 127.0.0.1
      port: {gw_port}
  enable_ipv6: false
deployment:
  role: traditional
  role_traditional:
    config_provider: etcd
  admin:
    admin_key:
      - name: admin
        key: {ADMIN_KEY}
        role: admin
    admin_listen:
      ip: 127.0.0.1
      port: {admin_port}
    allow_admin:
      - 127.0.0.0/24
  etcd:
    host:
      - "http://127.0.0.1:{etcd_port}"
    prefix: "/apisix-{secrets.token_hex(4)}"
ext-plugin:
  path_for_test: {sock}
nginx_config:
  error_log_level: warn
""")
    apisix = (DockerContainer(APISIX_IMAGE).with_kwargs(network_mode="host")
              .with_volume_mapping(str(conf), "/usr/local/apisix/conf/config.yaml", "ro")
              .with_volume_mapping(sockdir, sockdir, "rw"))
    started = []
    try:
        etcd.start()
        started.append(etcd)
        apisix.start()
        started.append(apisix)
        admin = f"http://127.0.0.1:{admin_port}"
        wait_for(lambda: httpx.get(f"{admin}/apisix/admin/routes", headers={"X-API-KEY": ADMIN_KEY}, timeout=2).status_code == 200,
                 120, "the APISIX Admin API", interval=0.2)
        yield {"admin": admin, "gateway": f"http://127.0.0.1:{gw_port}", "fakes": fakes, "config": cfg_path,
               "runner": runner, "apisix": apisix, "metrics": f"http://127.0.0.1:{metrics_port}"}
    finally:
        for c in reversed(started):
            c.stop()
        runner.stop()
        fakes.stop()
        remove_dir(sockdir)


def _cli(stack, *args: str) -> int:
    from llm_router.cli import main

    return main(["apisix", *args, "--admin", stack["admin"], "--key", ADMIN_KEY, "--config", stack["config"]])


@pytest.fixture(scope="module")
def enabled_route(stack):
    import httpx

    assert _cli(stack, "upstreams", "--apply") == 0
    route = {"uri": "/v1/*", "name": "llm", "upstream_id": "llm-openai",
             "plugins": {"response-rewrite": {"headers": {"set": {"x-kept-plugin": "yes"}}}}}
    r = httpx.put(f"{stack['admin']}/apisix/admin/routes/llm", json=route, headers={"X-API-KEY": ADMIN_KEY})
    assert r.status_code in (200, 201), r.text
    os.environ["LLM_ROUTER_USAGE_LOG_KEY"] = USAGE_LOG_KEY  # http-logger's auth_header, as the runner expects
    try:
        assert _cli(stack, "enable", "llm", "--post-resp", "--conf", '{"extends": "default", "explain": true}',
                    "--stream-usage", f"{stack['metrics']}/v1/usage-log") == 0
    finally:
        del os.environ["LLM_ROUTER_USAGE_LOG_KEY"]
    stored = httpx.get(f"{stack['admin']}/apisix/admin/routes/llm", headers={"X-API-KEY": ADMIN_KEY}).json()["value"]
    assert "response-rewrite" in stored["plugins"] and stored["upstream_id"] == "llm-openai"
    wait_for(lambda: httpx.post(f"{stack['gateway']}/v1/chat/completions", timeout=10,
                                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200,
             60, "the route to serve through the runner", interval=0.2)
    return "llm"


def _chat(prompt: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra}


def test_requests_are_routed_with_the_provider_key(stack, enabled_route):
    import httpx

    fakes = stack["fakes"]
    fakes.clear()
    easy = httpx.post(f"{stack['gateway']}/v1/chat/completions", json=_chat("hi there, thanks!"),
                      headers={"Authorization": "Bearer client-key"}, timeout=30)
    hard = httpx.post(f"{stack['gateway']}/v1/chat/completions", timeout=30, json=_chat(
        "Prove rigorously that the sum of two even integers is even, then derive a formal proof step by step."),
        headers={"Authorization": "Bearer client-key"})
    assert easy.status_code == 200 and hard.status_code == 200, (easy.text, hard.text)
    assert easy.headers["x-llm-router-model"] != hard.headers["x-llm-router-model"]
    assert easy.headers["x-kept-plugin"] == "yes"  # the route's own plugins still run
    seen = {r.provider: r for r in fakes.requests()}
    assert len(seen) == 2
    for provider, rec in seen.items():
        sent = rec.json["model"]
        assert sent != "auto"
        headers = {k.lower(): v for k, v in rec.headers.items()}
        auth = headers.get("authorization") or headers.get("x-api-key") or ""
        assert fakes.keys()[provider] in auth and "client-key" not in auth
        assert "x-llm-router-upstream" in headers  # the header traffic-split routed on
        assert int(headers["content-length"]) == len(rec.body)


def test_sse_streams_through_and_keeps_its_content_type(stack, enabled_route):
    status, headers, events = sse_data_lines(f"{stack['gateway']}/v1/chat/completions", _chat("hi, tell me a story", stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert len(events) > 2 and events[-1].strip() == "data: [DONE]"
    sent = stack["fakes"].requests()[-1].json
    assert sent["stream_options"] == {"include_usage": True}


def test_a_streams_tokens_are_counted_from_http_logger(stack, enabled_route):
    import httpx

    def output_tokens() -> float:
        text = httpx.get(f"{stack['metrics']}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("llm_router_tokens_total{") and 'direction="output"' in line)

    before = output_tokens()
    _, _, events = sse_data_lines(f"{stack['gateway']}/v1/chat/completions", _chat("hi, tell me a story", stream=True))
    completion = [orjson.loads(e[5:])["usage"]["completion_tokens"] for e in events if '"usage"' in e][-1]
    # http-logger posts the exchange's copy once it is over (batched, inactive_timeout 1 s)
    wait_for(lambda: output_tokens() - before == completion, 60, "the stream's tokens on the runner's /metrics", interval=0.2)


def test_spoofed_routing_header_is_overwritten(stack, enabled_route):
    import httpx

    fakes = stack["fakes"]
    fakes.clear()
    r = httpx.post(f"{stack['gateway']}/v1/chat/completions", json=_chat("hi there, thanks!"), timeout=30,
                   headers={"x-llm-router-upstream": "openai", "Authorization": "Bearer attacker"})
    assert r.status_code == 200
    providers = {rec.provider for rec in fakes.requests()}
    assert providers and "openai" not in providers  # the cheap model's provider, not the client's pick


def test_bad_request_gets_an_openai_error_from_the_gateway(stack, enabled_route):
    import httpx

    r = httpx.post(f"{stack['gateway']}/v1/chat/completions", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert orjson.loads(r.content)["error"]["param"] == "body"


def test_enable_refuses_a_route_matching_on_the_routing_header(stack):
    import httpx

    route = {"uri": "/v2/*", "upstream_id": "llm-openai", "vars": [["http_x_llm_router_upstream", "!=", "x"]]}
    httpx.put(f"{stack['admin']}/apisix/admin/routes/spoofable", json=route, headers={"X-API-KEY": ADMIN_KEY})
    assert _cli(stack, "enable", "spoofable") == 1


def test_disable_restores_the_route(stack, enabled_route):
    import httpx

    assert _cli(stack, "disable", enabled_route) == 0
    stored = httpx.get(f"{stack['admin']}/apisix/admin/routes/{enabled_route}", headers={"X-API-KEY": ADMIN_KEY}).json()["value"]
    assert set(stored["plugins"]) == {"response-rewrite"}
    assert _cli(stack, "enable", enabled_route, "--post-resp") == 0  # leave it enabled for any later test


def test_runner_logs_hold_no_keys(stack, enabled_route):
    log = Path(stack["runner"].log_file).read_text()
    assert all(k not in log for k in stack["fakes"].keys().values())
