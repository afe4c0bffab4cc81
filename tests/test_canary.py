"""Canary: known fake provider keys go through both adapters; none may come back out anywhere.

Traffic runs through a real Envoy + `llm-router serve --envoy` and through `llm-router serve
--apisix` driven by the APISIX emulator, with the decision log on, prompts logged (redaction off,
so only the secret masking protects them) and metrics served. Afterwards no key may appear in
response headers or bodies (errors included), the /metrics text, the decision log or the
processes' own logs -- while the fakes prove each key did reach its provider.
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import pytest

from apisix_emulator import Emulator, RouteConf, RunnerProcess, remove_dir, socket_dir
from conftest import free_port, wait_for
from llm_router.config import load_config
from llm_router.fakes import FakeProviders
from llm_router.gateways.envoy.binary import EnvoyNotFound, envoy_path
from llm_router.gateways.envoy.stack import start_routed, stop_all, write_config

CLIENT_KEY = "sk-client-canary-9f8e7d6c5b4a"


def prompts(leak: str) -> list[tuple[str, bytes]]:
    """Requests that reach several providers, stream, fail, and carry a key inside the prompt."""
    def chat(text: str, **kw) -> bytes:
        return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}], **kw})
    return [
        ("/v1/chat/completions", chat("hi there!")),
        ("/v1/chat/completions", chat("Write a SQL query that joins orders and customers and sums revenue per month.")),
        ("/v1/chat/completions", chat("Prove rigorously that the square root of 2 is irrational, step by step.", stream=True)),
        ("/v1/chat/completions", chat("Design a distributed, fault-tolerant consensus architecture; analyse the "
                                      "trade-offs step by step and compare Raft with Paxos.")),
        ("/v1/chat/completions", chat(f"my key {leak} stopped working, why?")),
        ("/v1/messages", orjson.dumps({"model": "claude-3-5-sonnet-20240620", "max_tokens": 64,
                                       "messages": [{"role": "user", "content": "hello"}]})),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}'),  # 400
        ("/v1/chat/completions", b"{not json"),  # 400
    ]


def config_data(metrics_port: int, log_path: Path) -> dict:
    """Defaults with every policy explaining itself, prompts logged unredacted and metrics served."""
    cfg = load_config()
    policies = {n: {**p.model_dump(exclude_unset=True), "explain": True} for n, p in cfg.policies.items()}
    return {"policies": policies, "metrics": {"listen": f"127.0.0.1:{metrics_port}", "decision_log": str(log_path),
                                              "log_prompts": True, "redact_pii": False}}


def assert_no_keys(keys: list[str], where: str, text: str) -> None:
    for key in keys:
        assert key not in text, f"a provider key appeared in {where}"


@pytest.fixture
def fakes():
    f = FakeProviders.from_config(load_config()).start()
    yield f
    f.stop()


def test_no_key_leaves_through_envoy(fakes, tmp_path):
    try:
        envoy_path()
    except EnvoyNotFound as exc:
        pytest.skip(f"no Envoy binary: {exc}")
    keys = list(fakes.keys().values())
    metrics_port = free_port()
    cfg_path = write_config(tmp_path / "canary.yaml", config_data(metrics_port, tmp_path / "decisions.jsonl"))
    cfg = load_config(cfg_path)
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="canary-", dir="/tmp"))
    procs = []
    try:
        stack = start_routed(cfg, short, procs, local_ports=fakes.ports, config=cfg_path, env=fakes.env(), cli=True)
        proc, envoy, listen = stack.processor, stack.envoy, stack.port
        proc.wait_ready(60)
        envoy.wait_ready(60)
        seen: list[str] = []
        with httpx.Client(timeout=30.0) as client:
            for path, body in prompts(fakes.keys()["deepseek"]):
                r = client.post(f"http://127.0.0.1:{listen}{path}", content=body,
                                headers={"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}",
                                         "x-api-key": CLIENT_KEY})
                seen.append(f"{r.status_code} {dict(r.headers)} {r.text}")
            statuses = [int(s.split(" ", 1)[0]) for s in seen]
            assert statuses.count(200) >= 6 and statuses[-2:] == [400, 400], statuses

            def settled() -> bool:
                text = client.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                return "llm_router_responses_total" in text and text.count("llm_router_responses_total{") >= 1
            wait_for(settled, 30, "the processor's metrics")
            metrics = client.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        stop_all(procs)
    assert_no_keys(keys + [CLIENT_KEY], "a response to the client", "\n".join(seen))
    assert_no_keys(keys + [CLIENT_KEY], "/metrics", metrics)
    log = (tmp_path / "decisions.jsonl").read_text()
    assert "stopped working" in log  # prompts are logged ...
    assert_no_keys(keys + [CLIENT_KEY], "the decision log", log)  # ... with the key masked
    for p in procs:
        assert_no_keys(keys + [CLIENT_KEY], f"the {p.name} log", p.log_tail(10_000))
    # the canary is live: each provider that was used received its own key, never the client's
    used = [name for name in fakes.keys() if fakes.requests(name)]
    assert len(used) >= 3, used
    for name in used:
        for rec in fakes.requests(name):
            text = str(rec.headers)
            assert fakes.keys()[name] in text and CLIENT_KEY not in text
    import shutil

    shutil.rmtree(short, ignore_errors=True)


def test_no_key_leaves_through_the_apisix_runner(fakes, tmp_path):
    keys = list(fakes.keys().values())
    metrics_port = free_port()
    cfg_path = write_config(tmp_path / "canary.yaml", config_data(metrics_port, tmp_path / "decisions.jsonl"))
    sockdir = socket_dir()
    runner = RunnerProcess(os.path.join(sockdir, "runner.sock"), config=str(cfg_path), env=fakes.env()).start()
    route = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
    em = Emulator(runner.path, timeout=30)
    seen: list[str] = []
    upstream: list[str] = []
    try:
        for path, body in prompts(fakes.keys()["deepseek"]):
            out = em.http_req_call(route, path=path, body=body,
                                   headers=[("Authorization", f"Bearer {CLIENT_KEY}"), ("x-api-key", CLIENT_KEY),
                                            ("Content-Type", "application/json")])
            seen.append(f"{out.status} {out.response_headers} {out.body!r} {out.error}")
            upstream.append(str(out.upstream_headers))
        statuses = [s.split(" ", 1)[0] for s in seen]
        assert statuses.count("None") >= 6 and statuses[-2:] == ["400", "400"], statuses
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        em.close()
        runner.stop()
        remove_dir(sockdir)
    assert_no_keys(keys + [CLIENT_KEY], "a response to the client", "\n".join(seen))
    assert_no_keys(keys + [CLIENT_KEY], "/metrics", metrics)
    assert_no_keys(keys + [CLIENT_KEY], "the decision log", (tmp_path / "decisions.jsonl").read_text())
    assert_no_keys(keys + [CLIENT_KEY], "the runner log", runner.log())
    # the runner did inject provider keys upstream (and removed the client's)
    assert any(k in u for u in upstream for k in keys)
    for (path, _), s, u in zip(prompts("x"), seen, upstream):
        if s.startswith("None"):  # this request went upstream
            assert CLIENT_KEY not in u, (path, u)
