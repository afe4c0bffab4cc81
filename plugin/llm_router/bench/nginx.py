"""`llm-router bench nginx`: what the runner adds behind a real nginx + Lua gateway, side by side in one run.

Setups, each a server block of one nginx (one worker, lua-nginx-module) proxying a 1 KB chat request to a static
upstream (another nginx): `nginx` without a plugin; `trivial`, the ext-plugin client calling a runner written the
obvious way (streams, flatbuffers Builder per reply: bench.apisix_trivial); `floor`, the least runner
(bench.apisix_floor); `router`, llm-router's runner routing every request; with --post-resp, `router_post_resp`,
the same with ext-plugin-post-resp after it (the Lua client makes the upstream call and sends HTTPRespCall). Sequential latency is measured in
alternating rounds with a keep-alive client; throughput with wrk at 32 connections; runner CPU from /proc.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_router.bench import with_classifier, without_memo
from llm_router.bench.apisix import chat_body, cpu_seconds, runner_pids, runs_compiled, start_runner, stop_runner
from llm_router.bench.envoy import UPSTREAM_BODY, RawClient, pct, wrk
from llm_router.bench.nginx_gateway import (
    NginxNotFound, NginxProcess, Server, find_nginx, gateway_conf, static_conf,
)
from llm_router.commands.common import at_least
from llm_router.config import default_data
from llm_router.gateways.envoy.stack import free_port

PATH = "/v1/chat/completions"
SETUPS = ("nginx", "trivial", "floor", "router")


def register(sub) -> None:
    p = sub.add_parser("nginx", help="the runner behind a real nginx + Lua gateway: nginx alone vs trivial, floor and "
                                     "llm-router runners")
    p.add_argument("--requests", type=at_least(1), default=4000, help="sequential requests per setup (default %(default)s)")
    p.add_argument("--rounds", type=at_least(1), default=4, help="alternating latency rounds (default %(default)s)")
    p.add_argument("--warmup", type=at_least(0), default=500, help="requests per setup before measuring (default %(default)s)")
    p.add_argument("--concurrency", type=at_least(1), default=32, help="wrk connections (default %(default)s)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per setup (default %(default)s)")
    p.add_argument("--threads", type=at_least(1), default=1, help="wrk threads (default %(default)s)")
    p.add_argument("--workers", type=at_least(1), default=1, help="llm-router runner processes (default %(default)s)")
    p.add_argument("--classifier", default=None, help="classifier of the default policy (rules, semantic, ...)")
    p.add_argument("--config", "-c", metavar="FILE", help="router config (default: built-in defaults)")
    p.add_argument("--post-resp", action="store_true",
                   help="also measure llm-router with ext-plugin-post-resp (the Lua client calls the upstream, then "
                        "HTTPRespCall; `router_post_resp` in the JSON)")
    p.add_argument("--pin", action="store_true",
                   help="put the gateway's worker and every runner on CPU 0, the client, wrk and the upstream on CPU 1 "
                        "(as worker_cpu_affinity and a taskset runner would): no cross-core wake-up between nginx and runner")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


@dataclass
class Setup:
    """A server block and the runner behind it."""

    name: str
    server: Server
    runner: subprocess.Popen | None = None
    lat_ms: list[float] = field(default_factory=list)
    c1_cpu_s: float = 0.0
    load: dict[str, Any] = field(default_factory=dict)

    def runner_cpu(self) -> float:
        return cpu_seconds(runner_pids(self.runner.pid)) if self.runner else 0.0


def _router_config(args, workdir: Path) -> str:
    data = with_classifier(args.config, args.classifier)
    path = workdir / "router.yaml"
    path.write_text(yaml.safe_dump(without_memo(data)))  # one body repeated: measure it unremembered
    return str(path)


def _progress(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def run(args) -> int:
    try:
        ng = find_nginx()
    except NginxNotFound as exc:
        print(f"bench nginx: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="lr-bench-nginx-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # run as root, nginx's workers are another user (nobody), as APISIX's are
    config = _router_config(args, workdir)
    body = chat_body(1024)
    names = SETUPS + (("router_post_resp",) if args.post_resp else ())
    setups = [Setup(name, Server(name, None if name == "nginx" else str(workdir / f"{name}.sock"),
                                 post_resp=name == "router_post_resp")) for name in names]
    nginxes: list[NginxProcess] = []
    try:
        for s in setups[1:]:
            log = str(workdir / f"{s.name}.log")
            router = s.name.startswith("router")
            s.runner = start_runner(s.server.socket, config if router else None, args.workers if router else 1, log,
                                    floor=s.name == "floor",
                                    module="llm_router.bench.apisix_trivial" if s.name == "trivial" else None)
        up_port = free_port()
        nginxes.append(NginxProcess(ng, workdir / "upstream", static_conf(ng, workdir / "upstream", up_port, UPSTREAM_BODY),
                                    [up_port]).start())
        providers = sorted(default_data()["providers"])
        conf = gateway_conf(ng, workdir / "gateway", [s.server for s in setups], {p: up_port for p in providers},
                            default=providers[0])
        gateway = NginxProcess(ng, workdir / "gateway", conf, [s.server.port for s in setups])
        nginxes.append(gateway.start())
        if args.pin:
            _pin(setups, gateway, nginxes[0])
        try:
            result = _measure(args, setups, gateway, body)
        except Exception:
            print(f"bench nginx: the gateway's error log ends:\n{gateway.error_log()[-2000:]}", file=sys.stderr)
            raise
        result["compiled_runner"] = runs_compiled(setups[3].runner.pid)
        result["nginx"] = subprocess.run([ng.binary, "-v"], capture_output=True, text=True, check=False).stderr.strip().split("/")[-1]
        result["classifier"] = args.classifier or "default policy's"
        result["router_workers"] = args.workers
        result["pinned"] = args.pin
    finally:
        for n in reversed(nginxes):
            n.stop()
        for s in setups:
            if s.runner:
                stop_runner(s.runner)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 1 if result.get("non_2xx") else 0  # a setup that failed requests measured something else


def _pin(setups: list[Setup], gateway: NginxProcess, upstream: NginxProcess) -> None:
    """Gateway worker and runners on CPU 0; this process (so the client and wrk), the upstream on CPU 1."""
    if len(os.sched_getaffinity(0)) < 2:
        raise RuntimeError("--pin needs two CPUs")
    near = [pid for s in setups if s.runner for pid in runner_pids(s.runner.pid)] + gateway.worker_pids()
    far = [os.getpid(), upstream.proc.pid, *upstream.worker_pids()]
    for pids, cpu in ((near, 0), (far, 1)):
        for pid in pids:
            for task in os.listdir(f"/proc/{pid}/task"):  # every thread: affinity is per thread
                os.sched_setaffinity(int(task), {cpu})


def _measure(args, setups: list[Setup], gateway: NginxProcess, body: bytes) -> dict[str, Any]:
    clients = {s.name: RawClient(s.server.port, PATH, body) for s in setups}
    for s in setups:
        clients[s.name].timed(args.warmup)
    for s in setups[3:]:
        _check_routed(s, body)
    rounds = max(1, args.rounds)
    per_round = max(1, args.requests // rounds)
    _progress(args, f"bench nginx: {per_round * rounds} sequential requests per setup in {rounds} rounds, "
                    f"then wrk -c{args.concurrency} {args.duration:g}s each")
    for _ in range(rounds):
        for s in setups:
            cpu0 = s.runner_cpu()
            s.lat_ms += clients[s.name].timed(per_round)
            s.c1_cpu_s += s.runner_cpu() - cpu0
    for c in clients.values():
        c.close()
    workdir = gateway.workdir
    for s in setups:
        cpu0, gw0 = s.runner_cpu(), cpu_seconds(gateway.worker_pids())
        s.load = wrk(s.server.port, concurrency=args.concurrency, duration=args.duration, threads=args.threads,
                     wd=workdir, body=body)
        n = max(1, s.load["requests"])
        s.load["runner_cpu_us_per_req"] = round((s.runner_cpu() - cpu0) / n * 1e6, 1)
        s.load["nginx_cpu_us_per_req"] = round((cpu_seconds(gateway.worker_pids()) - gw0) / n * 1e6, 1)
    base = setups[0]
    base_p50, base_p99 = pct(base.lat_ms, 0.5) * 1000, pct(base.lat_ms, 0.99) * 1000
    out: dict[str, Any] = {"target": "nginx", "body_bytes": len(body), "setups": {}}
    for s in setups:
        p50, p99 = pct(s.lat_ms, 0.5) * 1000, pct(s.lat_ms, 0.99) * 1000
        row = {"c1": {"requests": len(s.lat_ms), "p50_us": round(p50, 1), "p99_us": round(p99, 1),
                      "runner_cpu_us_per_req": round(s.c1_cpu_s / max(1, len(s.lat_ms)) * 1e6, 1)},
               f"c{args.concurrency}": {**s.load, "rps": round(s.load["rps"])}}
        if s is not base:
            row["added_p50_us"] = round(p50 - base_p50, 1)
            row["added_p99_us"] = round(p99 - base_p99, 1)
            row["rps_vs_nginx"] = round(s.load["rps"] / max(1.0, base.load["rps"]), 3)
        out["setups"][s.name] = row
    errors = {s.name: s.load["non_2xx"] for s in setups if s.load["non_2xx"]}
    if errors:
        out["non_2xx"] = errors
    return out


def _check_routed(router: Setup, body: bytes) -> None:
    """The router's setup really went through the runner: its reply carries the request id the runner set."""
    import httpx

    reply = httpx.post(f"http://127.0.0.1:{router.server.port}{PATH}", content=body,
                       headers={"content-type": "application/json"}, timeout=30)
    if "x-llm-router-request-id" not in reply.headers:
        raise RuntimeError("the router's setup answered without the runner's request id: the runner was not called")


def _print_table(r: dict[str, Any]) -> None:
    conc = next(k for k in r["setups"]["nginx"] if k.startswith("c") and k != "c1")
    print(f"nginx {r['nginx']} + lua-nginx-module, 1 worker; 1 KB chat body; classifier: {r['classifier']}; "
          f"compiled runner: {r['compiled_runner']}")
    print(f"{'setup':<16} {'p50 us':>8} {'p99 us':>8} {'added p50':>10} {conc + ' req/s':>11} {'vs nginx':>9} "
          f"{'runner CPU us/req':>18}")
    for name, row in r["setups"].items():
        print(f"{name:<16} {row['c1']['p50_us']:>8.1f} {row['c1']['p99_us']:>8.1f} {row.get('added_p50_us', 0):>10.1f} "
              f"{row[conc]['rps']:>11} {row.get('rps_vs_nginx', 1):>9.3f} {row[conc]['runner_cpu_us_per_req']:>18.1f}")
    if r.get("non_2xx"):
        print(f"non-2xx answers: {r['non_2xx']}")
