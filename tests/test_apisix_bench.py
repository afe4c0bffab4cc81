"""`llm-router bench apisix` runs end to end (bounded; checks the report, not the speed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_bench_apisix_steps_times_the_runners_own_steps():
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "bench", "apisix", "--requests", "300", "--warmup", "30",
                          "--concurrency", "1", "--steps", "--json"], capture_output=True, text=True, timeout=240, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-2000:]
    steps = json.loads(out.stdout)["steps"]
    from llm_router.bench.apisix_steps import STEPS

    assert steps["calls"] >= 300  # the warm-up and the measured calls, each found in the marks
    assert all(steps[name] > 0 for name in STEPS)
    # medians of the parts of a call add up to about the median call
    assert 0.5 * steps["p50_us"] < sum(steps[name] for name in STEPS) < 2 * steps["p50_us"]


@pytest.mark.parametrize("early", [False, True])
def test_steps_are_read_from_marks_with_and_without_an_answer_poll(early):
    from llm_router.bench.apisix_steps import STEPS, steps

    def call(t: int, polled: bool) -> list[tuple[str, int]]:
        # request in at t, body request out at t+10 (early: t+2), body handled t+30..t+100, Rewrite out at t+110
        body = [("h0", t + 30), ("h1", t + 100), ("out", t + 110)]
        first = [("in", t), ("out", t + 2), ("h0", t + 3), ("h1", t + 7)] if early else \
            [("in", t), ("h0", t + 1), ("h1", t + 5), ("out", t + 10)]
        return first + ([] if polled else [("in", t + 29)]) + body

    for polled in (True, False):
        marks = [("h0", 0), ("out", 1)]  # a partial call before the first whole one is skipped
        for k in range(5):
            marks += call(1000 + 200 * k, polled)
        got = steps([(kind, ns * 1000) for kind, ns in marks])  # marks in ns, steps in us
        assert got["calls"] == 5
        assert [got[name] for name in STEPS] == ([2.0, 28.0] if early else [10.0, 20.0]) + [70.0, 10.0, 90.0, 4.0]
    assert steps([("in", 1)]) == {"calls": 0}


@pytest.mark.parametrize("target", ["apisix", "nginx"])
def test_a_bad_config_is_named_not_a_traceback(tmp_path, target):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: {default: {strategy: nonsense}}\n")
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "bench", target, "--config", str(bad)],
                         capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    if "libnginx-mod-http-lua" not in out.stderr:  # without nginx, bench nginx says that first
        assert "invalid config" in out.stderr and "strategy" in out.stderr
