"""`llm-router bench apisix` runs end to end (bounded; checks the report, not the speed)."""
from __future__ import annotations

import json
import subprocess
import sys

from apisix_emulator import REPO


def test_bench_apisix_reports_latency_throughput_and_cpu():
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "bench", "apisix", "--requests", "300", "--warmup", "30",
                          "--concurrency", "1", "8", "--compare-poll", "--compare-floor", "--json"], capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["body_bytes"] >= 1000 and report["routed_to"]
    for level in ("c1", "c8"):
        r = report["results"][level]
        assert r["requests"] == 300
        assert 0 < r["p50_us"] <= r["p99_us"]
        assert r["rps"] > 0 and r["cpu_us_per_req"] > 0
    assert report["decide_us"] > 0 and report["runner_inprocess_us"] > 0
    assert set(report["no_poll"]) == {"c1", "c8"}  # the same levels measured on a runner that never polls
    assert report["no_poll"]["c1"]["requests"] == 300 and report["no_poll"]["c1"]["p50_us"] > 0
    assert set(report["floor"]) == {"c1", "c8"}  # and on the minimal runner (the floor)
    floor = report["floor"]["c8"]
    # 300 floor requests burn a few ms, under /proc's 10 ms tick: its CPU may read 0 here, so only >= 0
    assert floor["requests"] == 300 and 0 < floor["p50_us"] <= floor["p99_us"] and floor["rps"] > 0
    assert floor["cpu_us_per_req"] >= 0


def test_the_floor_runner_rewrites_the_model_as_apisix_expects(tmp_path):
    from llm_router.bench.apisix import chat_body, start_runner, stop_runner
    from llm_router.bench.apisix_floor import MODEL
    from llm_router.gateways.apisix.emulator import Emulator, RouteConf

    sock = str(tmp_path / "floor.sock")
    proc = start_runner(sock, None, 1, str(tmp_path / "floor.log"), floor=True)
    try:
        route = RouteConf(conf=(("llm-router", "{}"),), conf_id="floor")
        em = Emulator(sock)
        body = chat_body(1024)
        for _ in range(3):  # several calls on one kept-alive connection
            out = em.http_req_call(route, headers=[("authorization", "Bearer client-key")], body=body)
            assert out.ok, out
            assert json.loads(out.upstream_body)["model"] == MODEL
            assert json.loads(out.upstream_body)["messages"] == json.loads(body)["messages"]
        em.close()
    finally:
        stop_runner(proc)
    assert proc.returncode == 0
