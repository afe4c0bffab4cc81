"""Cost of the runner's own calls, side by side in one run: a bare httpx POST vs fallback, cascade and hedge.

    python -m llm_router.orchestrate.bench [--requests 200] [--json]

Fake providers run in a separate process (`llm-router fakes`), so the CPU time measured here is
the orchestrator's own: decision replay excluded, HTTP client, scoring and accounting included.
Sequential requests on 127.0.0.1; numbers are relative (2 shared cores).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from llm_router.config import parse_config
from llm_router.runtime import Exchange, Runtime

BODY = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "What does a load balancer do?"}]})
SCENARIOS = {
    # name: (policy, fake behaviour per provider index in the chain: None = default)
    # a plain (ladder) decision walked by the runner: what the APISIX post-resp fallback runs
    "chain fallback, first answers": ({"extends": "default"}, {}),
    "chain fallback, first fails 500": ({"extends": "default"}, {0: {"status": 500}}),
    "cascade verify, 1 step": ({"strategy": "cascade", "params": {"scorer": "verify"}}, {}),
    "cascade logprob, 3 steps": ({"strategy": "cascade", "params": {"scorer": "logprob", "floor": 0.6}},
                                 {0: {"default_quality": 0.0}, 1: {"default_quality": 0.0}}),
    "hedge n=3 first": ({"strategy": "hedge", "params": {"n": 3, "scorer": "verify"}}, {}),
}


def start_fakes(workdir: str) -> tuple[subprocess.Popen, dict]:
    ports_file = os.path.join(workdir, "ports.json")
    proc = subprocess.Popen([sys.executable, "-m", "llm_router.cli", "fakes", "--ports-file", ports_file],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(ports_file) and os.path.getsize(ports_file) > 0:
            try:
                return proc, json.loads(Path(ports_file).read_text())
            except json.JSONDecodeError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("fake providers did not start")


def control(url: str, what: str, payload: dict | None = None) -> None:
    httpx.post(f"{url}/_fake/{what}", json=payload or {}, timeout=10, trust_env=False).raise_for_status()


async def bare(url: str, path: str, key: str, n: int) -> tuple[list[float], float]:
    async with httpx.AsyncClient(trust_env=False) as client:
        lat = []
        cpu0 = time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            r = await client.post(url + path, content=BODY, headers={"authorization": f"Bearer {key}",
                                                                       "content-type": "application/json"})
            r.read()
            lat.append(time.perf_counter() - t0)
        return lat, time.process_time() - cpu0


async def orchestrated(rt: Runtime, policy: dict, n: int) -> tuple[list[float], float, float]:
    from llm_router.orchestrate import orchestrate

    lat, calls = [], 0
    cpu = 0.0
    for _ in range(n):
        ex = Exchange(rt.new_request_id(), "bench", time.monotonic())
        rt.decide(BODY, path="/v1/chat/completions", ex=ex, route_conf=policy)
        c0, t0 = time.process_time(), time.perf_counter()
        rep = await orchestrate(rt, ex, ex.request, ex.decision)
        lat.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
        calls += len([s for s in rep.steps if not s.startswith(("no answer", "picked"))])
        assert rep.status == 200, rep.body
    await rt.stop()
    return lat, cpu, calls / n


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = max(10, min(args.requests, 5000))
    with tempfile.TemporaryDirectory() as d:
        proc, info = start_fakes(d)
        try:
            ports = info["ports"]
            os.environ.update(info["env"])
            base = parse_config({})
            providers = {p: {**base.providers[p].model_dump(), "base_url": f"http://127.0.0.1:{ports[p]}"} for p in ports}
            rows = []
            lat, cpu = asyncio.run(bare(f"http://127.0.0.1:{ports['deepseek']}", "/v1/chat/completions",
                                        info["keys"]["deepseek"], n))
            rows.append({"scenario": "bare httpx POST (1 call)", "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                         "cpu_us_per_request": cpu / n * 1e6, "calls_per_request": 1.0})
            for name, (policy, behaviours) in SCENARIOS.items():
                rt = Runtime(parse_config({"providers": providers}))
                ex = Exchange("probe", "bench", 0.0)
                rt.decide(BODY, path="/v1/chat/completions", ex=ex, route_conf=policy)
                chain = [m.provider for m in ex.decision.chain]
                for p in ports:
                    control(f"http://127.0.0.1:{ports[p]}", "reset")
                for i, b in behaviours.items():
                    control(f"http://127.0.0.1:{ports[chain[i]]}", "behaviour", b)
                lat, cpu, calls = asyncio.run(orchestrated(rt, policy, n))
                rows.append({"scenario": name, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                             "cpu_us_per_request": cpu / n * 1e6, "calls_per_request": calls})
        finally:
            proc.terminate()
            proc.wait(10)
    if args.json:
        print(json.dumps({"requests": n, "rows": rows}, indent=2))
    else:
        print(f"{n} sequential requests per scenario, fakes in another process on 127.0.0.1")
        print(f"{'scenario':32s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU us/req':>11s} {'calls/req':>10s}")
        for r in rows:
            print(f"{r['scenario']:32s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['cpu_us_per_request']:11.0f} "
                  f"{r['calls_per_request']:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
