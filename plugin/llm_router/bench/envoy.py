"""`llm-router bench envoy`: what llm-router adds to Envoy, measured side by side in one run.

Three setups in front of the same upstream, each a real Envoy (--concurrency 1):
  envoy   Envoy alone, one fixed route to the upstream;
  noop    Envoy + the ext_proc filter exactly as the router uses it + a processor that changes nothing;
  router  Envoy + llm-router (semantic classifier when available, else rules).
The upstream is a second Envoy answering every request with `direct_response` (a JSON body with
usage), so it is never what saturates. Latency: a raw-socket keep-alive HTTP/1.1 client, one
request at a time, rounds interleaved across setups. Throughput: wrk at --concurrency connections.
CPU per request: the processor's CPU seconds (from /proc) during the router's wrk run / requests
(also reported for the sequential latency rounds as cpu_ms_per_req_c1).
RSS: the processor's resident memory after warm-up and again after --rss-requests routed requests.

--compare-fallback adds, in the same run, `router-nofb`: the same processor behind an Envoy built
with server.envoy.fallback off (no retry policy, no per-attempt filter): what the fallback
machinery costs when nothing fails. --fallback-path adds `router-fail1`: the first model of the
benchmark request's chain answers 503 (a second direct_response Envoy), so every request is
answered by its second model: what one fallback costs. --compare-observe adds `router-noobs`: the
router without response observation (no upstream observer filter): what observing costs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from llm_router.bench import envoy_inprocess, without_memo
from llm_router.commands.common import at_least
from llm_router.config import load_config
from llm_router.gateways.envoy.stack import (EnvoyProcess, ProcessorProcess, start_envoy_on_free_ports, start_routed, stop_all,
                                             workdir, write_config)

UPSTREAM_BODY = (b'{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,'
                 b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
                 b'"usage":{"prompt_tokens":250,"completion_tokens":2,"total_tokens":252}}')

# ~1 KB chat body, written for this benchmark.
PROMPT = ("Our team maintains a Python service that ingests CSV exports from three vendors, normalises the columns and "
          "writes them to PostgreSQL. Lately imports fail on files with a UTF-8 byte order mark and on rows where the "
          "amount column uses a comma as the decimal separator. Explain how to make the parser robust to both without "
          "breaking files that already work, suggest a small set of unit tests, and say whether we should validate rows "
          "before or after type conversion. Keep the answer practical; we run Python 3.11 with pandas 2 and SQLAlchemy 2. "
          "We also want to log rejected rows with enough context to fix them by hand later, without flooding the logs.")
BODY = orjson.dumps({"model": "auto", "messages": [
    {"role": "system", "content": "You are a careful senior engineer. Answer concisely."},
    {"role": "user", "content": PROMPT}], "max_tokens": 400})
PATH = "/v1/chat/completions"


# ---- clients ----------------------------------------------------------------------------

class RawClient:
    """A keep-alive HTTP/1.1 client on a plain socket: costs far less than what it measures."""

    def __init__(self, port: int, path: str = PATH, body: bytes = BODY):
        self.port = port
        self.request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                        f"content-length: {len(body)}\r\n\r\n").encode() + body
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _read_more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def one(self) -> int:
        """Send one request, read the whole response; returns the status."""
        if self.sock is None:
            self._connect()
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self._read_more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            while len(rest) < n:
                self.buf = head + b"\r\n\r\n" + rest
                self._read_more()
                rest = self.buf.partition(b"\r\n\r\n")[2]
            self.buf = rest[n:]
        else:  # chunked
            while not rest.endswith(b"0\r\n\r\n"):
                self.buf = head + b"\r\n\r\n" + rest
                self._read_more()
                rest = self.buf.partition(b"\r\n\r\n")[2]
            self.buf = b""
        if headers.get(b"connection") == b"close":
            self.close()
        return status

    def timed(self, n: int) -> list[float]:
        """Milliseconds per request for n sequential requests."""
        out = []
        perf = time.perf_counter_ns
        for _ in range(n):
            t0 = perf()
            status = self.one()
            out.append((perf() - t0) / 1e6)
            if status != 200:
                raise RuntimeError(f"benchmark request got HTTP {status}")
        return out


def wrk(port: int, *, concurrency: int, duration: float, threads: int, wd: Path, body: bytes = BODY) -> dict[str, float]:
    """Requests/s and request count from wrk at a fixed number of connections."""
    script = wd / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    seconds = max(1, math.ceil(duration))  # wrk takes whole seconds
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script),
                          f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not total:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)), "non_2xx": int(errors.group(1)) if errors else 0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# ---- setups -----------------------------------------------------------------------------

def upstream_bootstrap(port: int, admin: int, status: int = 200) -> dict[str, Any]:
    body = UPSTREAM_BODY.decode() if status == 200 else '{"error": {"message": "overloaded", "type": "server_error"}}'
    return {
        "static_resources": {"listeners": [{
            "name": "upstream", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "up", "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": status, "body": {"inline_string": body}},
                    "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
    }


def plain_bootstrap(port: int, admin: int, upstream: int) -> dict[str, Any]:
    """Envoy alone: one route to the upstream."""
    boot = upstream_bootstrap(port, admin)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "plain"
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}]
    boot["static_resources"]["clusters"] = [{
        "name": "up", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]}}]
    return boot


def router_config(classifier: str, observe: bool = True, fallback: bool = True) -> dict[str, Any]:
    """The default catalog and policy, with the chosen classifier (response observation, fallback on or off)."""
    base = load_config(None)
    policy = base.policies[base.default_policy].model_dump(exclude_unset=True)
    policy["classifier"] = classifier
    out: dict[str, Any] = {"policies": {base.default_policy: policy}}
    envoy: dict[str, Any] = {}
    if not observe:
        envoy["observe_responses"] = False
    if not fallback:
        envoy["fallback"] = False
    if envoy:
        out["server"] = {"envoy": envoy}
    return without_memo(out)  # one body repeated: measure it unremembered


def primary_provider(cfg) -> str:
    """The provider of the first model the router picks for the benchmark request."""
    from llm_router.router import Router

    router = Router(cfg)
    _, decision = router.route(BODY, path=PATH, policy=router.policy_for(None))
    return decision.model.provider


def choose_classifier(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    return "semantic" if importlib.util.find_spec("llm_router.classify.semantic") else "rules"


class Setup:
    """One Envoy (+ processor) under test."""

    def __init__(self, name: str, envoy: EnvoyProcess, port: int, processor: ProcessorProcess | None = None):
        self.name = name
        self.envoy = envoy
        self.port = port
        self.processor = processor
        self.client = RawClient(port)
        self.samples: list[float] = []
        self.load: dict[str, float] = {}


# Optional setups measured against `router` in the same run: (setup name, result key).
COMPARED = (("router-nofb", "no_fallback"), ("router-noobs", "no_observe"), ("router-fail1", "one_fallback"))


def run(args) -> int:
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    classifier = choose_classifier(args.classifier)
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    procs: list[Any] = []
    with workdir("llmr-bench-") as tmp:
        wd = Path(tmp)
        try:
            result = _run(args, wd, procs, classifier, transports)
        finally:
            stop_all(procs)
    if args.json:
        print(json.dumps(result, indent=None if args.compact else 2))
    else:
        _print_table(result)
    return 0


# Keys the benchmark's processor injects (the direct_response upstream ignores them).
BENCH_KEYS = {"OPENAI_API_KEY": "sk-bench-openai", "ANTHROPIC_API_KEY": "sk-bench-anthropic",
              "GEMINI_API_KEY": "bench-gemini", "TOGETHER_API_KEY": "bench-together", "MISTRAL_API_KEY": "bench-mistral",
              "DEEPSEEK_API_KEY": "sk-bench-deepseek"}


def _progress(args, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)


def _run(args, wd: Path, procs: list, classifier: str, transports: list[str]) -> dict[str, Any]:
    _, up_port = start_envoy_on_free_ports(upstream_bootstrap, wd, procs, name="upstream")
    cfg_path = write_config(wd / "router.yaml", router_config(classifier, observe=not args.no_observe))
    cfg = load_config(cfg_path)
    ports = {p: up_port for p in cfg.providers}

    setups: list[Setup] = []
    plain, port = start_envoy_on_free_ports(lambda port, admin: plain_bootstrap(port, admin, up_port), wd, procs)
    setups.append(Setup("envoy", plain, port))

    def with_processor(name: str, service: str, transport: str, *, config=cfg, config_path=cfg_path,
                       local_ports=ports) -> Setup:
        stack = start_routed(config, wd, procs, local_ports=local_ports, envoy_name=name, socket_name=name,
                             config=config_path, service=service, transport=transport, env=BENCH_KEYS, name=f"{name}-proc")
        return Setup(name, stack.envoy, stack.port, stack.processor)

    setups.append(with_processor("noop", "noop", transports[0]))
    for t in transports:
        setups.append(with_processor("router" if t == transports[0] else f"router-{t}", "route", t))
    if args.compare_fallback:
        nofb_path = write_config(wd / "router-nofb.yaml", router_config(classifier, observe=not args.no_observe, fallback=False))
        setups.append(with_processor("router-nofb", "route", transports[0], config=load_config(nofb_path), config_path=nofb_path))
    if args.compare_observe:
        noobs_path = write_config(wd / "router-noobs.yaml", router_config(classifier, observe=False))
        setups.append(with_processor("router-noobs", "route", transports[0], config=load_config(noobs_path),
                                     config_path=noobs_path))
    if args.fallback_path:
        _, fail_port = start_envoy_on_free_ports(lambda port, admin: upstream_bootstrap(port, admin, status=503), wd, procs,
                                                 name="upstream-503")
        # Health would soon take the failing model out of selection; here every request must meet it first.
        fail_data = {**router_config(classifier, observe=not args.no_observe), "health": {"min_requests": 10**9}}
        fail_path = write_config(wd / "router-fail1.yaml", fail_data)
        setups.append(with_processor("router-fail1", "route", transports[0], config=load_config(fail_path),
                                     config_path=fail_path, local_ports={**ports, primary_provider(cfg): fail_port}))
    for p in procs:
        p.wait_ready(120)
    _progress(args, f"bench envoy: classifier={classifier}, transports={','.join(transports)}, "
                    f"{args.requests} sequential requests per setup, wrk -c{args.concurrency} {args.duration:g}s")

    # Warm-up (connections, caches, classifier), then RSS baseline.
    for s in setups:
        s.client.timed(args.warmup)
    rss_start = {s.name: s.processor.rss_bytes() for s in setups if s.processor}
    routed = {s.name: args.warmup for s in setups}

    rounds = max(1, args.rounds)
    per_round = max(1, args.requests // rounds)
    cpu_c1 = {s.name: 0.0 for s in setups}
    for r in range(rounds):
        for s in setups:
            cpu0 = s.processor.cpu_seconds() if s.processor else 0.0
            s.samples += s.client.timed(per_round)
            if s.processor:
                cpu_c1[s.name] += s.processor.cpu_seconds() - cpu0
            routed[s.name] += per_round
        _progress(args, f"  latency round {r + 1}/{rounds} done")
    for s in setups:
        s.client.close()

    for s in setups:
        user0, sys0 = s.processor.cpu_split() if s.processor else (0.0, 0.0)
        s.load = wrk(s.port, concurrency=args.concurrency, duration=args.duration, threads=args.threads, wd=wd)
        if s.processor:
            user1, sys1 = s.processor.cpu_split()
            per = 1000 / max(1, s.load["requests"])
            s.load["cpu_ms_per_req"] = (user1 - user0 + sys1 - sys0) * per
            s.load["cpu_sys_ms_per_req"] = (sys1 - sys0) * per  # kernel share: socket I/O and wake-ups
        routed[s.name] += s.load["requests"]
        _progress(args, f"  wrk {s.name}: {s.load['rps']:.0f} req/s")

    # Soak the router processors until --rss-requests have gone through, then read RSS again.
    for s in setups:
        if s.processor is None or s.name in ("noop", "router-nofb", "router-fail1", "router-noobs"):
            continue
        while routed[s.name] < args.rss_requests:
            left = args.rss_requests - routed[s.name]
            extra = wrk(s.port, concurrency=args.concurrency, duration=max(1.0, min(30.0, left / max(1.0, s.load["rps"]) + 0.5)),
                        threads=args.threads, wd=wd)
            routed[s.name] += extra["requests"]
    rss_end = {s.name: s.processor.rss_bytes() for s in setups if s.processor}

    def summary(s: Setup) -> dict[str, Any]:
        out = {"p50_ms": round(statistics.median(s.samples), 3), "p99_ms": round(pct(s.samples, 0.99), 3),
               "rps": round(s.load["rps"], 1)}
        if s.load.get("non_2xx"):
            out["non_2xx"] = s.load["non_2xx"]
        if s.processor:
            out["cpu_ms_per_req"] = round(s.load["cpu_ms_per_req"], 4)
            out["cpu_sys_ms_per_req"] = round(s.load["cpu_sys_ms_per_req"], 4)
            out["cpu_ms_per_req_c1"] = round(cpu_c1[s.name] * 1000 / max(1, len(s.samples)), 4)
            out["rss_mb_start"] = round(rss_start[s.name] / 2**20, 1)
            out["rss_mb_end"] = round(rss_end[s.name] / 2**20, 1)
            out["requests_served"] = routed[s.name]
        return out

    by = {s.name: s for s in setups}
    base, router = by["envoy"], by["router"]
    result: dict[str, Any] = {
        "envoy": summary(base), "noop": summary(by["noop"]), "router": summary(router),
        "added_p50_ms": round(statistics.median(router.samples) - statistics.median(base.samples), 3),
        "added_p99_ms": round(pct(router.samples, 0.99) - pct(base.samples, 0.99), 3),
        "rps_ratio": round(router.load["rps"] / base.load["rps"], 3),
        "cpu_ms_per_req": round(router.load["cpu_ms_per_req"], 4),
        "classifier": classifier, "transport": transports[0], "observe_responses": not args.no_observe,
        "latency": f"raw-socket keep-alive client, concurrency 1, {len(base.samples)} requests per setup in {rounds} interleaved rounds",
        "throughput": f"wrk -t{args.threads} -c{args.concurrency} -d{args.duration:g}s",
        "upstream": "Envoy direct_response (JSON with usage)",
        "rss_requests": {s.name: routed[s.name] for s in setups if s.processor and s.name != "noop"},
    }
    for name, key in COMPARED:
        if name in by:
            s = by[name]
            result[key] = {**summary(s),
                           "router_minus_this_p50_ms": round(statistics.median(router.samples) - statistics.median(s.samples), 3),
                           "router_minus_this_p99_ms": round(pct(router.samples, 0.99) - pct(s.samples, 0.99), 3),
                           "router_minus_this_cpu_ms_per_req": round(router.load["cpu_ms_per_req"] - s.load["cpu_ms_per_req"], 4)}
    for t in transports[1:]:
        s = by[f"router-{t}"]
        result.setdefault("transports", {})[t] = {
            **summary(s), "added_p50_ms": round(statistics.median(s.samples) - statistics.median(base.samples), 3),
            "added_p99_ms": round(pct(s.samples, 0.99) - pct(base.samples, 0.99), 3),
            "rps_ratio": round(s.load["rps"] / base.load["rps"], 3)}
    # The same Python work without sockets, Envoy or load: what is left of the live CPU is the
    # transport, the event loop, and caches shared with Envoy and wrk on this machine.
    _progress(args, "in-process: routing and observing sessions without sockets")
    inproc = envoy_inprocess.measure(cfg, BODY, PATH, UPSTREAM_BODY, BENCH_KEYS)
    live_ms = router.load["cpu_ms_per_req"]
    python_ms = (inproc.route_us + (inproc.observe_us if not args.no_observe else 0.0)) / 1000
    result["inprocess"] = {"route_us": inproc.route_us, "decide_us": inproc.decide_us, "observe_us": inproc.observe_us,
                           "route_cold_p50_us": inproc.route_cold_us, "observe_cold_p50_us": inproc.observe_cold_us,
                           "live_over_inprocess": round(live_ms / python_ms, 2) if python_ms else None}
    return result


def _print_table(r: dict[str, Any]) -> None:
    print(f"classifier {r['classifier']}, transport {r['transport']}; {r['latency']}; {r['throughput']}; upstream: {r['upstream']}")
    print(f"{'setup':14s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>9s} {'cpu ms/req':>11s} {'cpu c=1':>8s} {'rss MB':>12s}")
    rows = [("envoy", r["envoy"]), ("noop", r["noop"]), ("router", r["router"])]
    rows += [(f"router-{t}", v) for t, v in r.get("transports", {}).items()]
    rows += [(name, r[key]) for name, key in COMPARED if key in r]
    for name, v in rows:
        rss = f"{v['rss_mb_start']}->{v['rss_mb_end']}" if "rss_mb_start" in v else ""
        cpu = f"{v['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in v else ""
        c1 = f"{v['cpu_ms_per_req_c1']:.3f}" if "cpu_ms_per_req_c1" in v else ""
        print(f"{name:14s} {v['p50_ms']:8.3f} {v['p99_ms']:8.3f} {v['rps']:9.0f} {cpu:>11s} {c1:>8s} {rss:>12s}")
    print(f"added by llm-router: p50 {r['added_p50_ms']:.3f} ms, p99 {r['added_p99_ms']:.3f} ms; "
          f"rps ratio {r['rps_ratio']:.3f}; processor CPU {r['cpu_ms_per_req']:.3f} ms per request")
    if "inprocess" in r:
        v = r["inprocess"]
        print(f"in process, no sockets: routing session {v['route_us']:.1f} us (Runtime.decide {v['decide_us']:.1f} us), "
              f"observing session {v['observe_us']:.1f} us; live CPU is {v['live_over_inprocess']}x that")
        print(f"the same with the caches cold (16 MB touched before each session, p50): routing {v['route_cold_p50_us']:.1f} us, "
              f"observing {v['observe_cold_p50_us']:.1f} us")
    if "no_fallback" in r:
        v = r["no_fallback"]
        print(f"fallback machinery when nothing fails (router - router-nofb): p50 {v['router_minus_this_p50_ms']:+.3f} ms, "
              f"p99 {v['router_minus_this_p99_ms']:+.3f} ms, CPU {v['router_minus_this_cpu_ms_per_req']:+.3f} ms/req")
    if "no_observe" in r:
        v = r["no_observe"]
        print(f"observing responses (router - router-noobs): p50 {v['router_minus_this_p50_ms']:+.3f} ms, "
              f"CPU {v['router_minus_this_cpu_ms_per_req']:+.3f} ms/req")
    if "one_fallback" in r:
        v = r["one_fallback"]
        print(f"one fallback (router-fail1 - router): p50 {-v['router_minus_this_p50_ms']:+.3f} ms, "
              f"CPU {-v['router_minus_this_cpu_ms_per_req']:+.3f} ms/req")


def register(sub) -> None:
    p = sub.add_parser("envoy", help="overhead of llm-router in Envoy: Envoy alone vs no-op processor vs router")
    p.add_argument("--requests", type=at_least(1), default=2000, help="sequential requests per setup for latency (default %(default)s)")
    p.add_argument("--concurrency", type=at_least(1), default=32, help="wrk connections for throughput and CPU (default %(default)s)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per setup (default %(default)s)")
    p.add_argument("--threads", type=at_least(1), default=1, help="wrk threads (default %(default)s)")
    p.add_argument("--rounds", type=at_least(1), default=4, help="interleaved latency rounds (default %(default)s)")
    p.add_argument("--warmup", type=at_least(0), default=300, help="requests per setup before measuring (default %(default)s)")
    p.add_argument("--rss-requests", type=int, default=20_000, help="routed requests before the final RSS reading")
    p.add_argument("--transport", default="h2", help="processor transport(s): h2, grpclib, grpcio; comma-separated to compare")
    p.add_argument("--classifier", default="auto", help="semantic | rules | hybrid | none | auto (semantic when installed)")
    p.add_argument("--no-observe", action="store_true", help="route only: no response observation (usage, health)")
    p.add_argument("--compare-fallback", action="store_true",
                   help="also measure the router behind an Envoy without the fallback machinery (server.envoy.fallback off)")
    p.add_argument("--compare-observe", action="store_true",
                   help="also measure the router without response observation (same run)")
    p.add_argument("--fallback-path", action="store_true",
                   help="also measure requests whose first model answers 503 (every request takes one fallback)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_router.bench.envoy")
    sub = parser.add_subparsers(dest="target", required=True)
    register(sub)
    args = parser.parse_args(["envoy", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
