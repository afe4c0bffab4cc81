"""`llm-router demo` and `llm-router bench envoy`, run as a user would run them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_envoy import require_envoy
from llm_router.gateways.envoy.stack import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow]
CLI = [sys.executable, "-m", "llm_router.cli"]


def children(pid: int) -> set[int]:
    """PIDs whose parent is pid (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def test_demo_json_summary():
    require_envoy()
    out = subprocess.run([*CLI, "demo", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert {"requests", "errors", "model_share", "cost_per_1k", "baseline_cost_per_1k", "saving", "added_p50_ms",
            "added_p99_ms"} <= set(s)
    assert s["requests"] >= 200 and s["errors"] == 0
    assert abs(sum(s["model_share"].values()) - 1) < 0.01 and len(s["model_share"]) >= 3
    assert 0 < s["cost_per_1k"] < s["baseline_cost_per_1k"] and 0 < s["saving"] < 1
    assert s["added_p50_ms"] is not None and s["added_p99_ms"] >= s["added_p50_ms"]
    assert s["peak_prices"] in ([], ["deepseek-v2"]) and len(s["priced_at"]) == len("2026-11-30 02:44")  # DeepSeek's peak
    # Anthropic-format prompts are routed too: between Claude and DeepSeek's Anthropic-compatible API only
    chat, messages = s["by_api"]["chat"], s["by_api"]["messages"]
    assert chat["requests"] + messages["requests"] == s["requests"] and messages["requests"] >= 20
    assert set(messages["model_share"]) == {"claude-3.5-sonnet", "deepseek-v2"}
    assert abs(sum(messages["model_share"].values()) - 1) < 0.01 and len(chat["model_share"]) >= 3
    # a coding agent's calls (system prompt, tools, tool results): chores reach the cheapest model, hard tasks Claude
    agent = s["agent"]
    assert agent["requests"] >= 20 and {"deepseek-v2", "claude-3.5-sonnet"} <= set(agent["model_share"])


def test_demo_with_failing_providers_answers_every_request_through_fallbacks():
    require_envoy()
    out = subprocess.run([*CLI, "demo", "--json", "--limit", "80", "--fail", "deepseek,together"], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["requests"] == 80 and s["errors"] == 0 and s["failing_providers"] == ["deepseek", "together"]
    fb = s["fallbacks"]
    assert fb["requests"] > 0 and fb["attempts"] >= fb["requests"]
    assert not {"deepseek-v2", "llama-3-70b"} & set(s["model_share"])  # nothing was answered by a failing provider
    assert fb["taken"] and all(move.endswith("(server_error)") for move in fb["taken"])
    assert sum(fb["taken"].values()) == fb["attempts"]  # the processor counted every move the client saw
    assert s["metrics"]["llm_router_breaker_open"] >= 1  # health saw the failures and opened breakers
    # The breakers open at the 5th failure (min_requests), not at the next snapshot 250 ms later: with one request at a
    # time, no more than 5 failed attempts per failing model (before: 28-44 requests fell back in a 232-call run).
    assert fb["attempts"] <= 10
    bad = subprocess.run([*CLI, "demo", "--fail", "nobody"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown providers ['nobody']" in bad.stderr


def test_demo_table_and_ctrl_c_leaves_nothing_behind(tmp_path):
    require_envoy()
    proc = subprocess.Popen([*CLI, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kids: set[int] = set()
    try:
        # Wait until the demo has started its fakes, processor and Envoy, then interrupt it.
        def started() -> bool:
            kids.update(children(proc.pid))
            return len(kids) >= 3 or proc.poll() is not None
        wait_for(started, timeout=60, what="demo child processes")
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert kids, "the demo started no processes"
    wait_for(lambda: not any(alive(k) for k in kids), timeout=30, what="demo children to exit")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_bench_envoy_smoke():
    require_envoy()
    out = subprocess.run([*CLI, "bench", "envoy", "--requests", "80", "--warmup", "20", "--duration", "1",
                          "--rss-requests", "0", "--json", "--quiet", "--compare-fallback", "--compare-observe",
                          "--fallback-path"], capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for name in ("envoy", "noop", "router", "no_fallback", "no_observe", "one_fallback"):
        assert r[name]["p50_ms"] > 0 and r[name]["rps"] > 0
        assert r[name].get("non_2xx", 0) == 0  # with one failing provider every request is still answered
    assert r["one_fallback"]["p50_ms"] > r["router"]["p50_ms"]  # a fallback costs a failed attempt
    assert {"added_p50_ms", "added_p99_ms", "rps_ratio", "cpu_ms_per_req"} <= set(r)
    assert r["router"]["cpu_ms_per_req"] > 0 and r["router"]["rss_mb_end"] > 0
    assert r["router"].get("non_2xx", 0) == 0
    assert 0 <= r["router"]["cpu_sys_ms_per_req"] <= r["router"]["cpu_ms_per_req"]
    # the in-process sessions routed and observed for real: both cost something, routing includes deciding
    inproc = r["inprocess"]
    assert inproc["route_us"] > 0 and inproc["decide_us"] > 0 and inproc["observe_us"] > 0
    assert inproc["route_cold_p50_us"] > 0 and inproc["observe_cold_p50_us"] > 0
    assert inproc["live_over_inprocess"] > 0


def test_demo_in_shadow_mode_serves_as_asked_and_reports_what_routing_would_spend():
    require_envoy()
    # 80 prompts: the first 60 hold no HIGH-tier turn now that simple Anthropic-format turns go to DeepSeek too
    out = subprocess.run([*CLI, "demo", "--json", "--shadow", "--limit", "80"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["requests"] == 80 and s["errors"] == 0
    assert s["saving"] < 0.05 and s["model_share"].get("gpt-4o", 0) > 0.5  # served as asked: the reference model
    sh = s["shadow"]
    assert sh["served_cost_usd"] == s["metrics"]["llm_router_cost_usd_total"]
    assert 0 < sh["routed_cost_usd"] < sh["served_cost_usd"] and 0.3 < sh["saving"] < 1
    assert len(sh["would_route"]) >= 3 and abs(sum(sh["would_route"].values()) - 1) < 0.01
