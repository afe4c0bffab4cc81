"""`llm-router bench apisix`: the runner over its Unix socket, driven as APISIX drives it.

Each request is the full ext-plugin exchange for a 1 KB chat body: HTTPReqCall -> ExtraInfo
ReqBody -> body -> Rewrite, on kept-alive connections. The client is a compact asyncio
protocol on uvloop that sends pre-built frames (made once with the generated flatbuffers code)
and only checks reply types on the hot path; it decodes a sample of replies fully. Runner CPU
comes from /proc (utime + stime of the runner and its worker processes).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import yaml

from llm_router import compiled_build
from llm_router.bench import with_classifier, without_memo
from llm_router.classify import native
from llm_router.commands.common import at_least
from llm_router.config import load_config
from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.emulator import (
    Emulator, RouteConf, build_extra_info_resp, build_prepare_conf, build_req_call, decode_reply,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 256  # replies decoded in full with the generated code
DEFAULT_KEYS = {"OPENAI_API_KEY": "sk-bench-openai", "ANTHROPIC_API_KEY": "sk-bench-anthropic",
                "DEEPSEEK_API_KEY": "sk-bench-deepseek", "TOGETHER_API_KEY": "bench-together",
                "MISTRAL_API_KEY": "bench-mistral", "GEMINI_API_KEY": "bench-gemini"}
PROMPT = ("Our team runs a small web shop on a single Postgres instance. Orders sometimes time out during "
          "sales. Explain what could cause slow inserts into the orders table and suggest how to find the "
          "bottleneck, then outline two or three fixes with their tradeoffs. ")
HEADERS = [("host", "api.example.com"), ("content-type", "application/json"), ("authorization", "Bearer client-key"),
           ("user-agent", "openai-python/1.51.0"), ("accept", "application/json"), ("content-length", "1024")]


def register(sub) -> None:
    p = sub.add_parser("apisix", help="ext-plugin runner latency, throughput and CPU per request over its socket")
    p.add_argument("--requests", type=at_least(1), default=20000, help="requests per concurrency level (default %(default)s)")
    p.add_argument("--concurrency", type=at_least(1), nargs="+", default=[1, 32], help="connection counts (default: 1 32)")
    p.add_argument("--warmup", type=at_least(0), default=1000, help="requests before measuring (default %(default)s)")
    p.add_argument("--classifier", default=None, help="classifier of the default policy (rules, semantic, ...)")
    p.add_argument("--workers", type=at_least(1), default=1, help="runner processes (default %(default)s)")
    p.add_argument("--body-bytes", type=int, default=1024, help="chat body size (default %(default)s)")
    p.add_argument("--config", "-c", metavar="FILE", help="runner config (default: built-in defaults)")
    p.add_argument("--compare-poll", action="store_true",
                   help="also measure a runner that never polls for APISIX's answer (server.apisix_answer_poll_us: 0)")
    p.add_argument("--compare-native", action="store_true",
                   help="also measure a runner with the semantic classifier's C kernels off (LLM_ROUTER_NATIVE=0: "
                        "numpy does the same arithmetic; `numpy` in the JSON)")
    p.add_argument("--compare-early", action="store_true",
                   help="also measure a runner that reads each call before asking for its body (server.apisix_early_body: "
                        "false; `no_early` in the JSON)")
    p.add_argument("--compare-floor", action="store_true",
                   help="also measure the floor: a minimal runner on the same socket work that only rewrites the model "
                        "(llm_router.bench.apisix_floor; `floor` in the JSON)")
    p.add_argument("--steps", action="store_true",
                   help="also time the runner's own steps over one connection's calls (llm_router.bench.apisix_steps; "
                        "`steps` in the JSON: median us from the HTTPReqCall to the body request written, waiting for the "
                        "body, routing it, writing the Rewrite, on to the next HTTPReqCall, and reading the call: before "
                        "the body request, or while the body is awaited when it was asked for early)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def chat_body(size: int) -> bytes:
    """A chat request body of about `size` bytes."""
    base = {"model": "auto", "messages": [{"role": "system", "content": "You are a helpful engineer."},
                                          {"role": "user", "content": ""}], "temperature": 0.2}
    empty = len(orjson.dumps(base))
    text = (PROMPT * (size // len(PROMPT) + 1))[:max(1, size - empty)]
    base["messages"][1]["content"] = text
    return orjson.dumps(base)


# ---- the runner process ----------------------------------------------------------------------

def runner_pids(pid: int) -> list[int]:
    """The runner and its worker processes."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return out + [int(c) for c in children]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def start_runner(sock_path: str, config: str | None, workers: int, log_file: str, floor: bool = False,
                 env_extra: dict[str, str] | None = None, steps_out: str | None = None,
                 module: str | None = None) -> subprocess.Popen:
    """Start `serve --apisix` (or, with `floor`, the minimal runner of bench.apisix_floor; with `module`, another
    runner run as `python -m MODULE --socket PATH`, e.g. bench.apisix_trivial; with `steps_out`, the runner timing its
    steps into that file, bench.apisix_steps) and wait for its socket."""
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in DEFAULT_KEYS.items()}, **(env_extra or {})}
    env.pop("APISIX_LISTEN_ADDRESS", None)
    if floor:
        module = "llm_router.bench.apisix_floor"
    if module:
        cmd = [sys.executable, "-m", module, "--socket", sock_path]
    else:
        cmd = [sys.executable, "-m", "llm_router.cli", "serve", "--apisix", "--socket", sock_path, "--workers",
               str(workers), "--log-file", log_file]
        if steps_out:
            cmd[1:3] = ["-m", "llm_router.bench.apisix_steps", "--steps-out", steps_out]
        if config:
            cmd += ["--config", config]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log if module else subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runner exited with {proc.returncode}; see {log_file}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock_path)
            return proc
        except OSError:
            time.sleep(0.02)
    stop_runner(proc)
    raise RuntimeError("runner did not open its socket in 120 s")


def runs_compiled(pid: int) -> bool:
    """Whether a runner process moved onto a compiled build (compiled_build.switch marks its environment)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(item.startswith(compiled_build.ACTIVE_ENV.encode() + b"=") for item in f.read().split(b"\0"))
    except OSError:
        return False


def stop_runner(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the compact client ------------------------------------------------------------------------

class _Conn(asyncio.Protocol):
    """Runs `count` sequential requests on one connection; records each latency (ns)."""

    def __init__(self, req: bytes, body: bytes, count: int, lat: list[int], samples: list, done: asyncio.Future):
        self.req, self.body, self.left = req, body, count
        self.lat, self.samples, self.done = lat, samples, done
        self.reader = framing.FrameReader()
        self.stage = 0
        self.t0 = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._next()

    def _next(self) -> None:
        self.stage = 0
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.req)

    def data_received(self, data: bytes) -> None:
        for rpc_type, payload in self.reader.feed(data):
            if self.stage == 0:
                if rpc_type != framing.RPC_EXTRA_INFO:
                    return self._fail(f"expected ExtraInfo (type 3), got type {rpc_type}")
                self.stage = 1
                self.transport.write(self.body)
            else:
                self.lat.append(time.perf_counter_ns() - self.t0)
                if rpc_type != framing.RPC_HTTP_REQ_CALL:
                    return self._fail(f"expected HTTPReqCall (type 2), got type {rpc_type}")
                if len(self.lat) % SAMPLE_EVERY == 1:
                    self.samples.append(payload)
                self.left -= 1
                if self.left:
                    self._next()
                else:
                    self.transport.close()
                    if not self.done.done():
                        self.done.set_result(None)

    def _fail(self, why: str) -> None:
        self.transport.close()
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"runner closed the connection ({exc})"))


async def _drive(path: str, req: bytes, body: bytes, total: int, conns: int) -> tuple[list[int], list[bytes], float]:
    loop = asyncio.get_running_loop()
    lat: list[int] = []
    samples: list[bytes] = []
    per, extra = divmod(total, conns)
    futures = []
    t0 = time.perf_counter()
    for i in range(conns):
        fut = loop.create_future()
        futures.append(fut)
        count = per + (1 if i < extra else 0)
        if count:
            await loop.create_unix_connection(lambda c=count, f=fut: _Conn(req, body, c, lat, samples, f), path)
        else:
            fut.set_result(None)
    await asyncio.gather(*futures)
    return lat, samples, time.perf_counter() - t0


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


@dataclass
class Result:
    """One concurrency level."""

    concurrency: int
    requests: int
    p50_us: float
    p99_us: float
    rps: float
    cpu_us_per_req: float  # runner processes
    client_cpu_us_per_req: float  # this process (to show the client is not the bottleneck)


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


@dataclass
class Target:
    """A running runner as the client drives it: socket, processes (for CPU) and the pre-built frames."""

    path: str
    pids: list[int]
    req: bytes
    body: bytes


def measure_interleaved(targets: list[Target], total: int, conns: int, warmup: int, rounds: int) -> list[Result]:
    """One concurrency level on several runners, in alternating rounds (so all see the same machine state)."""
    loop = _loop()
    lat: list[list[int]] = [[] for _ in targets]
    samples: list[bytes] = []
    cpu = [0.0] * len(targets)
    client = [0.0] * len(targets)
    elapsed = [0.0] * len(targets)
    per, extra = divmod(total, rounds)
    try:
        for t in targets:
            if warmup:
                loop.run_until_complete(_drive(t.path, t.req, t.body, warmup, conns))
        for r in range(rounds):
            n = per + (1 if r < extra else 0)
            for i, t in enumerate(targets):
                cpu0, client0 = cpu_seconds(t.pids), time.process_time()
                got, seen, took = loop.run_until_complete(_drive(t.path, t.req, t.body, n, conns))
                cpu[i] += cpu_seconds(t.pids) - cpu0
                client[i] += time.process_time() - client0
                elapsed[i] += took
                lat[i] += got
                samples += seen
    finally:
        loop.close()
    for payload in samples:  # full decode of a sample with the generated code
        reply = decode_reply(framing.RPC_HTTP_REQ_CALL, framing.RPC_HTTP_REQ_CALL, payload).fields
        if reply["action"] != "rewrite" or not reply["body"]:
            raise RuntimeError(f"unexpected reply: {reply}")
    out = []
    for i in range(len(targets)):
        lat[i].sort()
        out.append(Result(conns, total, round(pct(lat[i], 0.5), 1), round(pct(lat[i], 0.99), 1), round(total / elapsed[i]),
                          round(cpu[i] / total * 1e6, 1), round(client[i] / total * 1e6, 1)))
    return out


def inprocess_costs(config: str | None, body: bytes, n: int = 3000) -> tuple[float, float]:
    """CPU per request in this process, without sockets: (Runtime.decide alone, Runner on both frames).

    The runner's CPU over the socket minus the second is the event loop and kernel share; the
    second minus the first is what the adapter adds to routing (decoding, reply building).
    """
    from llm_router.gateways.apisix.runner import Conversation, Runner
    from llm_router.gateways.apisix.tokens import TokenStore
    from llm_router.runtime import Exchange, Runtime

    saved = {k: os.environ.get(k) for k in DEFAULT_KEYS}
    os.environ.update({k: os.environ.get(k) or v for k, v in DEFAULT_KEYS.items()})
    try:
        cfg = load_config(config)
        rt = Runtime(cfg)
        runner = Runner(Runtime(cfg), TokenStore(ttl=3600))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    conv = Conversation()
    prep = runner.on_frame(conv, framing.RPC_PREPARE_CONF, build_prepare_conf((("llm-router", '{"policy": "default"}'),),
                                                                                "route#bench#ext-plugin-pre-req#1"))
    token = decode_reply(1, prep[0], prep[4:]).fields["token"]
    req = build_req_call(1, token, headers=HEADERS)
    info = build_extra_info_resp(body)

    def both() -> None:
        runner.on_frame(conv, framing.RPC_HTTP_REQ_CALL, req)
        runner.on_frame(conv, framing.RPC_EXTRA_INFO, info)

    for i in range(300):
        rt.decide(body, path="/v1/chat/completions", ex=Exchange(f"w{i}", "bench", 0.0))
        both()
    t0 = time.process_time()
    for i in range(n):
        rt.decide(body, path="/v1/chat/completions", ex=Exchange(str(i), "bench", 0.0))
    t1 = time.process_time()
    for _ in range(n):
        both()
    t2 = time.process_time()
    return round((t1 - t0) / n * 1e6, 1), round((t2 - t1) / n * 1e6, 1)


def run(args) -> int:
    workdir = tempfile.mkdtemp(prefix="lr-bench-apisix-", dir="/tmp")
    data = with_classifier(args.config, args.classifier)
    config = os.path.join(workdir, "config.yaml")
    Path(config).write_text(yaml.safe_dump(without_memo(data)))  # one body repeated: measure it unremembered
    body = chat_body(args.body_bytes)
    configs = [config]
    # runners differing in one server setting: JSON key, the setting
    variants = [(key, setting) for key, setting, wanted in (("no_poll", {"apisix_answer_poll_us": 0}, args.compare_poll),
                                                            ("no_early", {"apisix_early_body": False}, args.compare_early))
                if wanted]
    for key, setting in variants:
        configs.append(os.path.join(workdir, f"{key}.yaml"))
        server = {**(data.get("server") or {}), **setting}
        Path(configs[-1]).write_text(yaml.safe_dump(without_memo({**data, "server": server})))
    procs: list[subprocess.Popen] = []
    try:
        targets = []
        model = ""
        for i, conf in enumerate(configs):
            proc, target, routed = _start_target(args, os.path.join(workdir, f"runner{i}"), conf, body)
            procs.append(proc)
            targets.append(target)
            model = model or routed
        if args.compare_native:
            proc, target, _ = _start_target(args, os.path.join(workdir, "numpy"), config, body,
                                            env_extra={native.OFF_ENV: "0"})
            procs.append(proc)
            targets.append(target)
        if args.compare_floor:
            proc, target, _ = _start_target(args, os.path.join(workdir, "floor"), None, body, floor=True)
            procs.append(proc)
            targets.append(target)
        # with a second runner, each level alternates between them in 4 rounds
        compiled = runs_compiled(targets[0].pids[0])
        levels = [measure_interleaved(targets, args.requests, c, args.warmup, rounds=4 if len(targets) > 1 else 1)
                  for c in args.concurrency]
        results = [level[0] for level in levels]
        varied = {key: [level[1 + k] for level in levels] for k, (key, _) in enumerate(variants)}
        numpy_only = [level[len(configs)] for level in levels] if args.compare_native else None
        floor = [level[-1] for level in levels] if args.compare_floor else None
        decide_us, inproc_us = inprocess_costs(config, body)
        steps = _steps(args, workdir, config, body) if args.steps else None
    finally:
        for proc in procs:
            stop_runner(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    cfg = load_config(args.config)
    classifier = args.classifier or cfg.policies[cfg.default_policy].classifier
    out = {"target": "apisix", "body_bytes": len(body), "classifier": classifier, "workers": args.workers,
           "routed_to": model, "native_kernels": native.KERNELS is not None, "compiled_runner": compiled,
           "decide_us": decide_us,
           "runner_inprocess_us": inproc_us,
           "results": {f"c{r.concurrency}": asdict(r) for r in results}}
    # the runners measured beside the real one: JSON key, label, their levels
    compared = [("no_poll", "without answer polling", varied.get("no_poll")),
                ("no_early", "without early body requests", varied.get("no_early")),
                ("numpy", "C kernels off (numpy)", numpy_only), ("floor", "floor (minimal runner)", floor)]
    for key, _, levels_of in compared:
        if levels_of is not None:
            out[key] = {f"c{r.concurrency}": asdict(r) for r in levels_of}
    if steps is not None:
        out["steps"] = steps
    if args.json:
        print(json.dumps(out))
    else:
        print(f"APISIX ext-plugin runner: {len(body)} B chat body, classifier {classifier}, {args.workers} process(es), "
              f"routed to {model}, {'compiled request path' if compiled else 'plain Python'}")
        print(f"  in-process CPU per request: Runtime.decide {decide_us} us, runner on both frames {inproc_us} us "
              f"(adapter share {inproc_us - decide_us:.1f} us)")
        for r in results:
            print(f"  concurrency {r.concurrency:>3}: p50 {r.p50_us:8.1f} us  p99 {r.p99_us:8.1f} us  {r.rps:>8} req/s  "
                  f"runner CPU {r.cpu_us_per_req:6.1f} us/req  (client {r.client_cpu_us_per_req:.1f} us/req)")
        for _, label, levels_of in compared:
            for r in levels_of or ():
                print(f"  {label}, concurrency {r.concurrency:>3}: p50 {r.p50_us:8.1f} us  p99 {r.p99_us:8.1f} us  "
                      f"{r.rps:>8} req/s  runner CPU {r.cpu_us_per_req:6.1f} us/req")
        if steps is not None:
            print("  steps of one connection's calls (median us): " + ", ".join(f"{k} {v}" for k, v in steps.items()))
    return 0


def _steps(args, workdir: str, config: str, body: bytes) -> dict:
    """One connection's calls on a runner that times its own steps (bench.apisix_steps): the p50 and the step medians."""
    out_file = os.path.join(workdir, "steps.json")
    proc, target, _ = _start_target(args, os.path.join(workdir, "steps"), config, body, steps_out=out_file)
    try:
        level = measure_interleaved([target], args.requests, 1, args.warmup, rounds=1)[0]
    finally:
        stop_runner(proc)
    if not os.path.exists(out_file):
        raise RuntimeError(f"the timed runner wrote no steps (exit status {proc.returncode})")
    with open(out_file) as f:
        return {"p50_us": level.p50_us, **json.load(f)}


def _start_target(args, prefix: str, config: str | None, body: bytes, floor: bool = False,
                  env_extra: dict[str, str] | None = None, steps_out: str | None = None) -> tuple[subprocess.Popen, Target, str]:
    """Start a runner on `config` (or the floor runner) and check it rewrites the body: (process, target, model)."""
    sock_path = prefix + ".sock"
    proc = start_runner(sock_path, config, 1 if steps_out else args.workers, prefix + ".log", floor=floor,
                        env_extra=env_extra, steps_out=steps_out)
    try:
        route = RouteConf(conf=(("llm-router", '{"policy": "default"}'),), conf_id="bench")
        em = Emulator(sock_path)
        token = em.prepare_conf(route)
        check = em.http_req_call(route, headers=HEADERS, body=body)
        em.close()
        if not check.ok:
            raise RuntimeError(f"the runner refused the benchmark request: {check}")
    except BaseException:
        stop_runner(proc)
        raise
    req = framing.frame(framing.RPC_HTTP_REQ_CALL, build_req_call(1, token, headers=HEADERS))
    body_frame = framing.frame(framing.RPC_EXTRA_INFO, build_extra_info_resp(body))
    return proc, Target(sock_path, runner_pids(proc.pid), req, body_frame), orjson.loads(check.upstream_body)["model"]
