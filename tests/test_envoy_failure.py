"""Failure modes through a real Envoy: processor down or too slow, fail-open vs fail-closed; the CLI processor."""
from __future__ import annotations

import os
import signal

import httpx
import orjson
import pytest

from fixtures_envoy import (HungProcessor, config_data, fakes, fresh_fakes, short_wd, start_stack,  # noqa: F401
                            wait_requests)
from llm_router.gateways.envoy.stack import wait_for

pytestmark = pytest.mark.envoy

GREETING = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi there"}]})


def post(url: str, body: bytes = GREETING) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json",
                                                                          "authorization": "Bearer client-key"}, timeout=30)


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_processor_down(fresh_fakes, short_wd, fail_open):
    wd = short_wd
    stack = start_stack(wd, fresh_fakes, config_data(), processor="none", processor_address=f"unix:{wd}/nobody.sock",
                        failure_allow=fail_open)
    try:
        r = post(stack.url)
        if fail_open:
            # Passed through unmodified to the default route's provider, with the client's own credential.
            [got] = wait_requests(fresh_fakes, "openai")
            assert got.body == GREETING
            assert got.headers["authorization"] == "Bearer client-key"
            assert r.headers.get("x-fake-provider") == "openai"
        else:
            assert r.status_code == 500
            err = r.json()["error"]  # Envoy's own reply, in OpenAI's error format
            assert err["type"] == "server_error" and "ext_proc" in err["message"]
            assert not fresh_fakes.requests()
    finally:
        stack.stop()


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_processor_too_slow(fresh_fakes, short_wd, fail_open):
    wd = short_wd
    hung = HungProcessor(f"{wd}/hung.sock").start()
    try:
        stack = start_stack(wd, fresh_fakes, config_data(), processor="none", processor_address=f"unix:{wd}/hung.sock",
                            failure_allow=fail_open, message_timeout_ms=300)
        try:
            r = post(stack.url)
            if fail_open:
                [got] = wait_requests(fresh_fakes, "openai")
                assert got.body == GREETING
                assert r.headers.get("x-fake-provider") == "openai"
            else:
                assert r.status_code == 504
                err = r.json()["error"]
                assert err["type"] == "server_error" and "timeout" in err["message"]
                assert not fresh_fakes.requests()
        finally:
            stack.stop()
    finally:
        hung.stop()


def test_cli_processor_routes_and_stops_cleanly_on_sigterm(fresh_fakes, short_wd):
    """`llm-router serve --envoy unix:PATH`: route, then SIGTERM."""
    wd = short_wd
    stack = start_stack(wd, fresh_fakes, config_data(), processor="cli")
    try:
        r = post(stack.url)
        assert r.status_code == 200, r.text
        assert r.headers["x-llm-router-model"] == "deepseek-v2"
        [got] = wait_requests(fresh_fakes, "deepseek")
        assert got.headers["authorization"] == "Bearer fake-deepseek-key"
        proc = stack.processor
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.popen.wait(20) == 0
        assert not os.path.exists(f"{wd}/envoy.sock")  # the socket file is removed
        # With the processor gone the filter fails closed (the default policy's failure_mode).
        assert post(stack.url).status_code == 500
    finally:
        stack.stop()


def test_processor_restart_is_picked_up(fresh_fakes, short_wd):
    wd = short_wd
    stack = start_stack(wd, fresh_fakes, config_data(), processor="subprocess")
    try:
        assert post(stack.url).status_code == 200
        old = stack.processor
        old.stop()
        from llm_router.gateways.envoy.stack import ProcessorProcess

        new = ProcessorProcess(old.address, wd, config=wd / "envoy-config.yaml", env=fresh_fakes.env(), name="restarted").start()
        stack.procs.append(new)
        new.wait_ready(60)
        wait_for(lambda: post(stack.url).status_code == 200, timeout=30, what="routing after a processor restart")
    finally:
        stack.stop()


def test_bad_config_is_refused_naming_the_field(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  envoy:\n    transport: carrier-pigeon\n")
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "serve", "--envoy", f"unix:{tmp_path}/x.sock",
                          "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "server.envoy.transport" in out.stderr
    bad.write_text("server:\n  envoy:\n    first_byte_timeout_s: -1\n    fallback: maybe\n")
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "serve", "--envoy", f"unix:{tmp_path}/x.sock",
                          "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "server.envoy.first_byte_timeout_s" in out.stderr and "server.envoy.fallback" in out.stderr
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "serve", "--envoy", "nonsense"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "HOST:PORT or unix:PATH" in out.stderr
