"""/healthz and /readyz on the metrics listener: live while the event loop runs, ready while the adapter serves."""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import httpx
import pytest

from fixtures_envoy import short_tmp
from llm_router.gateways.envoy.stack import Proc, free_port, stop_all, wait_for, write_config

KEYS = {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2", "GEMINI_API_KEY": "k3", "TOGETHER_API_KEY": "k4",
        "MISTRAL_API_KEY": "k5", "DEEPSEEK_API_KEY": "k6"}


def get(host: str, port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://{host}:{port}{path}", timeout=10)


def test_probes_follow_serving_and_catch_a_stalled_event_loop(tmp_path, monkeypatch):
    import llm_router.runtime as runtime_module
    from test_telemetry import runtime

    monkeypatch.setattr(runtime_module, "STALL_S", 0.5)
    rt = runtime(tmp_path)

    async def go() -> None:
        await rt.start()
        try:
            host, port = rt.metrics_address
            live = await asyncio.to_thread(get, host, port, "/healthz")
            ready = await asyncio.to_thread(get, host, port, "/readyz")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            assert ready.status_code == 503 and ready.json()["status"] == "not serving"
            rt.serving = True
            assert (await asyncio.to_thread(get, host, port, "/readyz")).status_code == 200
            # Block the event loop (as a runaway request would) while another thread asks.
            seen: list[httpx.Response] = []
            asker = threading.Thread(target=lambda: (time.sleep(0.8), seen.append(get(host, port, "/healthz"))))
            asker.start()
            time.sleep(1.5)  # deliberately blocking: nothing else runs on the loop meanwhile
            asker.join()
            assert seen[0].status_code == 503 and seen[0].json()["status"] == "stalled"
            assert seen[0].json()["event_loop_silent_s"] > 0.5
            await asyncio.sleep(1.2)  # the heartbeat runs again
            assert (await asyncio.to_thread(get, host, port, "/healthz")).status_code == 200
            assert (await asyncio.to_thread(get, host, port, "/metrics")).text.startswith("# HELP")  # metrics unchanged
        finally:
            await rt.stop()
        assert not rt.serving

    asyncio.run(go())


@pytest.mark.parametrize("gateway", ["envoy", "apisix"])
def test_the_served_runner_reports_ready_once_listening(gateway):
    with short_tmp() as wd:
        port = free_port()
        cfg = write_config(wd / "config.yaml", {"metrics": {"listen": f"127.0.0.1:{port}"}})
        sock = wd / "runner.sock"
        args = ["--envoy", f"unix:{sock}"] if gateway == "envoy" else ["--apisix", "--socket", str(sock)]
        proc = Proc(f"serve-{gateway}", [sys.executable, "-m", "llm_router.cli", "serve", *args, "--config", str(cfg)],
                    log_path=wd / "serve.log", env={**os.environ, **KEYS}).start()
        try:
            def ready() -> bool:
                try:
                    return get("127.0.0.1", port, "/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, timeout=60, what=f"{gateway} runner /readyz", proc=proc)
            assert sock.exists()
            assert get("127.0.0.1", port, "/healthz").json() == {"status": "ok"}
        finally:
            stop_all([proc])
        assert proc.popen is not None and proc.popen.returncode == 0, (wd / "serve.log").read_text()[-2000:]
