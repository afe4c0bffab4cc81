"""`llm-router demo`: real Envoy + the processor + fake providers on 127.0.0.1, a built-in workload, a summary.

`--gateway nginx` runs the same through the APISIX runner behind a real nginx + lua-nginx-module (bench/lua's
ext-plugin client, pre-req and post-resp), where APISIX itself cannot be installed.

Every prompt goes through Envoy and llm-router; the same routed request (same model, same body)
is then sent straight to the fake provider, so "added latency" is the paired difference
(through Envoy + router) - (direct to the fake), measured in the same run. Costs come from the
usage the fakes report, priced with the catalog; the baseline prices the same usage at the most
expensive model of the policy. Everything started is stopped at the end, on errors and on Ctrl-C.

`--fail deepseek,together` makes those fake providers answer 503 for the whole run: Envoy retries
each failed attempt on the next model of the decision's chain, the health breakers open for the
failing models after a few failures, and the summary shows every request answered and the
fallbacks taken (paired latency is measured on requests answered by their first attempt).
"""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from llm_router.commands.common import add_config_arg, at_least, load_or_exit
from llm_router.config import utc_now

MESSAGES_PATH = "/v1/messages"
CHAT_PATH = "/v1/chat/completions"


def register(sub) -> None:
    p = sub.add_parser("demo", help="route a built-in workload through a real Envoy and fake providers, print the savings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--limit", type=at_least(1), default=None, help="replay only the first N prompts")
    p.add_argument("--workload", metavar="FILE", help="JSONL workload (default: the built-in one)")
    p.add_argument("--transport", default=None, help="processor transport: h2 (default), grpclib, grpcio")
    p.add_argument("--gateway", choices=("envoy", "nginx"), default="envoy",
                   help="envoy (default): the ext_proc processor behind a real Envoy; nginx: the APISIX runner behind a "
                        "real nginx + lua-nginx-module (APISIX's engine) calling it as ext-plugin-pre-req and -post-resp do")
    p.add_argument("--workers", type=at_least(1), default=1,
                   help="with --gateway nginx: APISIX runner processes on its socket (default %(default)s)")
    p.add_argument("--shadow", action="store_true",
                   help="shadow mode: serve every request as asked (the reference model) and show what routing would spend")
    p.add_argument("--fail", metavar="PROVIDER[,PROVIDER]",
                   help="these fake providers answer 503 for the whole run: requests fall back along their chain")
    add_config_arg(p)
    p.set_defaults(func=run)


@dataclass(slots=True)
class Outcome:
    """One workload item: what happened through Envoy and directly."""

    model: str | None
    status: int
    input_tokens: int
    output_tokens: int
    routed_ms: float
    direct_ms: float | None
    attempts: int = 1  # upstream attempts Envoy made (x-envoy-attempt-count): > 1 means a fallback answered
    api: str = "chat"  # the API the client spoke: chat (OpenAI) or messages (Anthropic)
    agent: bool = False  # a coding agent's call (system prompt, tools, maybe a tool result)


def load_workload(path: str | None) -> list[dict[str, Any]]:
    text = Path(path).read_text() if path else resources.files("llm_router").joinpath("data/workload.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def agent_kit() -> dict[str, Any]:
    """The coding agent's standing system prompt and tool definitions (Anthropic's tool shape)."""
    return json.loads(resources.files("llm_router").joinpath("data/agent.json").read_text())


def agent_request(item: dict[str, Any]) -> tuple[str, bytes]:
    """A coding agent's call: its system prompt and tools, the user's instruction, and, for a later call of the
    loop, the tool the model called and the result (Anthropic: blocks in the messages; OpenAI: tool messages)."""
    kit = agent_kit()
    call = item.get("tool_call")
    stream = bool(item.get("stream"))
    if item.get("api") == "messages":
        messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": item["prompt"]}]}]
        if call:
            messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": call["name"],
                                                            "input": call["input"]}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": call["result"]}]}]
        # with extended thinking on, as Claude Code sends it: models that do not think get the turn without it
        body: dict[str, Any] = {"model": "auto", "max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 4096},
                                "system": kit["system"], "tools": kit["tools"], "messages": messages, "stream": stream}
        return MESSAGES_PATH, orjson.dumps(body)
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in kit["tools"]]
    chat: list[dict[str, Any]] = [{"role": "system", "content": kit["system"]}, {"role": "user", "content": item["prompt"]}]
    if call:
        chat += [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                     "name": call["name"], "arguments": json.dumps(call["input"])}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": call["result"]}]
    return CHAT_PATH, orjson.dumps({"model": "auto", "messages": chat, "tools": tools, "stream": stream})


def request_for(item: dict[str, Any]) -> tuple[str, bytes]:
    """Path and body of a workload item (OpenAI chat or Anthropic messages; a coding agent's call when `agent`)."""
    if item.get("agent"):
        return agent_request(item)
    stream = bool(item.get("stream"))
    if item.get("api") == "messages":
        body: dict[str, Any] = {"model": "auto", "max_tokens": 512, "messages": [{"role": "user", "content": item["prompt"]}]}
        if item.get("system"):
            body["system"] = item["system"]
        if stream:
            body["stream"] = True
        return MESSAGES_PATH, orjson.dumps(body)
    messages = ([{"role": "system", "content": item["system"]}] if item.get("system") else []) + [
        {"role": "user", "content": item["prompt"]}]
    body = {"model": "auto", "messages": messages}
    if stream:
        body["stream"] = True
    return CHAT_PATH, orjson.dumps(body)


def usage_of(content: bytes, streamed: bool) -> tuple[int, int]:
    from llm_router.accounting import SSEUsage, usage_from_json

    if streamed:
        sse = SSEUsage()
        sse.feed(content)
        sse.finish()
        u = sse.usage
    else:
        u = usage_from_json(content)
    return (u.input_tokens, u.output_tokens) if u else (0, 0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0.0


def run(args) -> int:
    from llm_router.bench.nginx_gateway import NginxNotFound, find_nginx
    from llm_router.gateways.envoy.binary import EnvoyNotFound, envoy_path

    if getattr(args, "workers", 1) > 1 and getattr(args, "gateway", "envoy") != "nginx":
        print("error: --workers is for --gateway nginx (the APISIX runner); Envoy's processor runs one process",
              file=sys.stderr)
        return 2
    cfg_user = load_or_exit(args.config)
    try:
        find_nginx() if getattr(args, "gateway", "envoy") == "nginx" else envoy_path()
    except (EnvoyNotFound, NginxNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failing = [name.strip() for name in (args.fail or "").split(",") if name.strip()]
    unknown = sorted(set(failing) - set(cfg_user.providers))
    if unknown:
        print(f"error: --fail: unknown providers {unknown} (known: {sorted(cfg_user.providers)})", file=sys.stderr)
        return 2
    args.failing = failing
    items = load_workload(args.workload)[: args.limit] if args.limit else load_workload(args.workload)
    if not items:
        print("error: the workload is empty", file=sys.stderr)
        return 2

    def on_term(signum, frame):  # a TERM must still run the cleanup below
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        summary = _run(args, cfg_user, items)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 0


def _demo_config(cfg_user, metrics_port: int, shadow: bool = False) -> dict[str, Any]:
    """The user's (or built-in) config with explanation headers on, so the demo can see each choice,
    and the processor's Prometheus endpoint on a free loopback port, so the demo can scrape it."""
    policies = {name: {**p.model_dump(exclude_unset=True), "explain": True, **({"shadow": 1.0} if shadow else {})}
                for name, p in cfg_user.policies.items()}
    data = cfg_user.model_dump(exclude_unset=True)
    data["policies"] = policies
    data["metrics"] = {**data.get("metrics", {}), "listen": f"127.0.0.1:{metrics_port}"}
    return data


def scrape(port: int) -> dict[str, float]:
    """The processor's /metrics as {metric name: value summed over labels}."""
    import httpx

    from llm_router.metrics import scrape_totals

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
    return {name: round(value, 6) for name, value in scrape_totals(text).items()
            if name.startswith("llm_router_") and not name.endswith(("_bucket", "_created"))}


def _run(args, cfg_user, items: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx

    from llm_router.config import load_config
    from llm_router.gateways.envoy.stack import FakesProcess, free_port, start_routed, stop_all, workdir, write_config

    procs: list[Any] = []
    progress = sys.stderr.isatty() or not args.json
    tty = sys.stderr.isatty()
    with workdir("llmr-demo-") as tmp:
        wd = Path(tmp)
        try:
            metrics_port = free_port()
            cfg_path = write_config(wd / "demo.yaml", _demo_config(cfg_user, metrics_port, getattr(args, "shadow", False)))
            cfg = load_config(cfg_path)
            from llm_router.gateways.envoy.binary import envoy_version

            nginx = getattr(args, "gateway", "envoy") == "nginx"
            _say(progress, "starting fake providers, the llm-router APISIX runner and nginx + lua-nginx-module on 127.0.0.1 ..."
                 if nginx else f"starting fake providers, the llm-router processor and Envoy {envoy_version()} on 127.0.0.1 ...")
            failing = getattr(args, "failing", [])
            if failing:
                _say(progress, f"failing providers for this run: {', '.join(failing)} (every request answered 503)")
            fakes = FakesProcess(wd, config=cfg_path, extra=["--fail", ",".join(failing)] if failing else []).start()
            procs.append(fakes)
            fakes.wait_ready(60)
            if nginx:
                base = _start_nginx_stack(wd, cfg_path, fakes, procs, getattr(args, "workers", 1))
            else:
                stack = start_routed(cfg, wd, procs, local_ports=fakes.ports, config=cfg_path, env=fakes.env,
                                     transport=args.transport)
                proc, envoy = stack.processor, stack.envoy
                proc.wait_ready(60)
                envoy.wait_ready(60)
                base = f"http://127.0.0.1:{stack.port}"
            from llm_router.router import build_catalog

            catalog = build_catalog(cfg)
            outcomes: list[Outcome] = []
            started = utc_now()
            t0 = time.monotonic()
            with httpx.Client(timeout=30.0) as routed, httpx.Client(timeout=30.0) as direct:
                for i, item in enumerate(items, 1):
                    outcomes.append(_one(item, base, routed, direct, catalog, fakes))
                    if progress and (i % (10 if tty else 50) == 0 or i == len(items)):
                        print(f"{chr(13) if tty else ''}  {i}/{len(items)} requests  ({time.monotonic() - t0:.1f}s)",
                              end="" if tty else "\n", file=sys.stderr, flush=True)
            if progress and tty:
                print(file=sys.stderr)
            summary = _summarise(outcomes, catalog, cfg)
            summary["gateway"] = "nginx + lua-nginx-module (the APISIX runner)" if nginx else "Envoy"
            if nginx:
                summary["runner_workers"] = getattr(args, "workers", 1)
            # Costs are at the prices in effect when the run began: peak hours (DeepSeek's) double some of them.
            summary["priced_at"] = started.strftime("%Y-%m-%d %H:%M")
            summary["peak_prices"] = sorted(mid for mid, m in cfg.models.items() if m.peak is not None and m.peak.covers(started))
            summary["metrics"] = _settled_metrics(metrics_port, len(outcomes) - summary["errors"])
            summary["fallbacks"]["taken"] = fallbacks_taken(metrics_port)
            summary["failing_providers"] = getattr(args, "failing", [])
            if getattr(args, "shadow", False):
                served, routed = summary["metrics"].get("llm_router_cost_usd_total", 0.0), \
                    summary["metrics"].get("llm_router_shadow_cost_usd_total", 0.0)
                summary["shadow"] = {"served_cost_usd": served, "routed_cost_usd": routed,
                                     "saving": round(1 - routed / served, 4) if served else 0.0,
                                     "would_route": shadow_shares(metrics_port)}
            return summary
        finally:
            stop_all(procs)


class _Runner:
    """`serve --apisix` started by the demo, stopped by PID."""

    def __init__(self, proc) -> None:
        self.proc = proc

    def stop(self) -> None:
        from llm_router.bench.apisix import stop_runner

        stop_runner(self.proc)


def _start_nginx_stack(wd: Path, cfg_path: Path, fakes, procs: list[Any], workers: int = 1) -> str:
    """The APISIX runner on a socket and an nginx whose Lua client calls it before and after each provider call
    (ext-plugin-pre-req and -post-resp) and posts each stream's body to its /v1/usage-log (http-logger), one upstream
    per fake provider; returns the gateway's base URL."""
    from llm_router.bench.apisix import start_runner
    import secrets

    import yaml

    from llm_router.bench.nginx_gateway import NginxProcess, Server, find_nginx, gateway_conf
    from llm_router.gateways.apisix.usage_log import KEY_ENV

    os.chmod(wd, 0o755)  # run as root, nginx's worker is another user (nobody): it must reach the socket
    sock = str(wd / "runner.sock")
    # the runner calls providers itself on a fallback: at the fakes, as nginx's upstreams do
    data = yaml.safe_load(cfg_path.read_text())
    providers = {name: dict(p) for name, p in (data.get("providers") or {}).items()}
    for name, port in fakes.ports.items():
        providers[name] = {**providers.get(name, {}), "base_url": f"http://127.0.0.1:{port}"}
    # streams' usage comes from the gateway's copy of their bodies (http-logger's part), posted to the listener
    server_conf = {**(data.get("server") or {}), "apisix_stream_usage": True}
    runner_cfg = cfg_path.with_name("runner.yaml")
    runner_cfg.write_text(yaml.safe_dump({**data, "providers": providers, "server": server_conf}, sort_keys=False))
    key = secrets.token_hex(16)  # what `apisix enable --stream-usage` gives http-logger from $LLM_ROUTER_USAGE_LOG_KEY
    procs.append(_Runner(start_runner(sock, str(runner_cfg), workers, str(wd / "runner.log"),
                                      env_extra={**fakes.env, KEY_ENV: key})))
    ng = find_nginx()
    listener = int(str(data["metrics"]["listen"]).rsplit(":", 1)[1])
    _wait_ready(listener)  # streams' logs go there from the first call on (with --workers, its process may start last)
    server = Server("demo", sock, conf="{}", post_resp=True, usage_log_port=listener, usage_log_key=key)
    gateway = NginxProcess(ng, wd / "nginx", gateway_conf(ng, wd / "nginx", [server], fakes.ports,
                                                          default=sorted(fakes.ports)[0]), [server.port])
    procs.append(gateway)
    gateway.start()
    return f"http://127.0.0.1:{server.port}"


def _wait_ready(port: int, timeout: float = 120.0) -> None:
    """Wait until the runner's listener answers /readyz."""
    import urllib.request

    from llm_router.gateways.envoy.stack import wait_for

    url = f"http://127.0.0.1:{port}/readyz"
    wait_for(lambda: urllib.request.urlopen(url, timeout=5).status == 200, timeout=timeout,
             what=f"the runner's listener on port {port}")


FALLBACK_LINE = re.compile(r'^llm_router_fallbacks_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def fallbacks_taken(port: int) -> dict[str, int]:
    """'from -> to (reason)' -> count, from the processor's llm_router_fallbacks_total."""
    import httpx

    out: dict[str, int] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text.splitlines():
        m = FALLBACK_LINE.match(line)
        if m is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        count = int(float(m.group("value")))
        if count:
            out[f"{labels.get('from_model')} -> {labels.get('to_model')} ({labels.get('reason')})"] = count
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def shadow_shares(port: int) -> dict[str, float]:
    """Model -> share of requests routing would have sent it, from llm_router_shadow_requests_total."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_router_shadow_requests_total":
                counts[sample.labels["model"]] += sample.value
    total = sum(counts.values())
    return {m: round(n / total, 4) for m, n in counts.most_common()} if total else {}


def _settled_metrics(port: int, answered: int, timeout: float = 10.0) -> dict[str, float]:
    """Scrape once every answered request has been accounted (responses are observed asynchronously)."""
    deadline = time.monotonic() + timeout
    metrics = scrape(port)
    while metrics.get("llm_router_responses_total", 0) < answered and time.monotonic() < deadline:
        time.sleep(0.05)
        metrics = scrape(port)
    return metrics


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def _one(item: dict[str, Any], base: str, routed, direct, catalog, fakes) -> Outcome:
    from llm_router.orchestrate import respond

    path, body = request_for(item)
    api = "messages" if path == MESSAGES_PATH else "chat"
    agent = bool(item.get("agent"))
    stream = bool(item.get("stream"))
    headers = {"content-type": "application/json", "authorization": "Bearer client-key-that-must-not-leak"}
    t = time.perf_counter()
    r = routed.post(base + path, content=body, headers=headers)
    routed_ms = (time.perf_counter() - t) * 1000
    model_id = r.headers.get("x-llm-router-model")  # the model that answered (after any fallback)
    attempts = int(r.headers.get("x-envoy-attempt-count") or 1)
    steps = r.headers.get(respond.STEPS_HEADER)
    if steps:  # APISIX's runner tried the chain itself: its explanation lists each model it called
        attempts = max(attempts, len(steps.split(" -> ")))
    if r.status_code != 200 or model_id not in catalog.models:
        return Outcome(model_id, r.status_code, 0, 0, routed_ms, None, attempts, api, agent)
    inp, out = usage_of(r.content, stream)
    if attempts > 1:  # the routed time includes the failed attempts: not a measure of the router's overhead
        return Outcome(model_id, r.status_code, inp, out, routed_ms, None, attempts, api, agent)
    # The same upstream call, straight to the provider's fake: what Envoy + llm-router added is the difference.
    from llm_router.catalog import fill_model
    from llm_router.request import api_for_path, parse_request, render_body

    model = catalog.models[model_id]
    provider = catalog.providers[model.provider]
    req = parse_request(body, api_for_path(path))
    direct_body = render_body(req, model.name, dialect=catalog.dialect_of(model),
                              max_output=model.max_output)
    key = fakes.info["keys"][provider.name]
    auth = {"authorization": f"Bearer {key}"} if provider.auth == "bearer" else {provider.auth: key}
    t = time.perf_counter()
    target = fill_model(provider.paths[req.api], model.name)
    d = direct.post(f"http://127.0.0.1:{fakes.ports[provider.name]}{target}", content=direct_body,
                    headers={"content-type": "application/json", **auth, **dict(provider.headers)})
    direct_ms = (time.perf_counter() - t) * 1000
    return Outcome(model_id, r.status_code, inp, out, routed_ms, direct_ms if d.status_code == 200 else None, attempts, api,
                   agent)


def _summarise(outcomes: list[Outcome], catalog, cfg) -> dict[str, Any]:
    n = len(outcomes)
    ok = [o for o in outcomes if o.status == 200 and o.model in catalog.models]
    policy = cfg.policies[cfg.default_policy]
    allowed = [m for m in catalog.models.values()]
    priciest = catalog.models.get(policy.reference_model or "") or max(allowed, key=lambda m: m.blended_price)
    cost = sum(catalog.models[o.model].cost(o.input_tokens, o.output_tokens) for o in ok)
    baseline = sum(priciest.cost(o.input_tokens, o.output_tokens) for o in ok)
    share = Counter(o.model for o in ok)
    per_api = Counter(o.api for o in outcomes)
    by_api: dict[str, Counter[str | None]] = {}
    for o in ok:
        by_api.setdefault(o.api, Counter())[o.model] += 1
    agents = [o for o in outcomes if o.agent]
    agent_share = Counter(o.model for o in ok if o.agent)
    diffs = [o.routed_ms - o.direct_ms for o in ok if o.direct_ms is not None]
    fell_back = [o for o in ok if o.attempts > 1]
    return {
        "requests": n,
        "errors": n - len(ok),
        "error_statuses": dict(Counter(str(o.status) for o in outcomes if o.status != 200 or o.model not in catalog.models)),
        "fallbacks": {"requests": len(fell_back), "attempts": sum(o.attempts - 1 for o in fell_back),
                      "answered_by": dict(Counter(o.model for o in fell_back).most_common())},
        "model_share": {m: round(c / n, 4) for m, c in share.most_common()},
        # per client API (chat: OpenAI format, messages: Anthropic format), shares of that API's requests
        "by_api": {api: {"requests": per_api[api], "model_share": {m: round(c / per_api[api], 4) for m, c in cnt.most_common()}}
                   for api, cnt in sorted(by_api.items())},
        # a coding agent's calls (both formats), shares of those calls
        "agent": {"requests": len(agents), "model_share": {m: round(c / len(agents), 4) for m, c in agent_share.most_common()}},
        "cost_per_1k": round(cost / n * 1000, 4),
        "baseline_cost_per_1k": round(baseline / n * 1000, 4),
        "saving": round(1 - cost / baseline, 4) if baseline else 0.0,
        "added_p50_ms": round(statistics.median(diffs), 3) if diffs else None,
        "added_p99_ms": round(pct(diffs, 0.99), 3) if diffs else None,
        "baseline_model": priciest.id,
    }


def _print(s: dict[str, Any]) -> None:
    gateway = s.get("gateway", "Envoy")
    print(f"\nllm-router demo: {s['requests']} requests through {gateway} + llm-router to fake providers, {s['errors']} errors\n")
    print(f"{'model':22s} {'share':>7s}")
    for model, share in s["model_share"].items():
        print(f"{model:22s} {share * 100:6.1f}%")
    for api, part in (s.get("by_api") or {}).items():
        fmt = "OpenAI format" if api == "chat" else "Anthropic format"
        shown = ", ".join(f"{m} {v * 100:.1f}%" for m, v in part["model_share"].items())
        print(f"  {api} ({fmt}, {part['requests']} requests): {shown}")
    agent = s.get("agent") or {}
    if agent.get("requests"):
        shown = ", ".join(f"{m} {v * 100:.1f}%" for m, v in agent["model_share"].items())
        print(f"  coding agent ({agent['requests']} of them, with its system prompt and tools): {shown}")
    fb = s.get("fallbacks") or {}
    if s.get("failing_providers") or fb.get("requests"):
        print(f"\nfailing providers: {', '.join(s.get('failing_providers') or []) or 'none'}; "
              f"{fb.get('requests', 0)} requests answered after a fallback ({fb.get('attempts', 0)} failed attempts retried), "
              f"{s['errors']} errors")
        for move, count in (fb.get("taken") or {}).items():
            print(f"  {count:5d}  {move}")
    print(f"\ncost per 1K queries:  ${s['cost_per_1k']:.4f} {'served' if s.get('shadow') else 'routed'}  vs  ${s['baseline_cost_per_1k']:.4f} "
          f"all to {s['baseline_model']}  ->  saving {s['saving'] * 100:.1f}%")
    if s.get("priced_at"):
        peaks = s.get("peak_prices") or []
        print(f"prices:               as billed at {s['priced_at']} UTC"
              + (f"; {', '.join(peaks)} at peak-hour prices" if peaks else "; no model in its peak hours"))
    m = s.get("metrics") or {}
    if m:
        spend, saved = m.get("llm_router_cost_usd_total", 0.0), m.get("llm_router_saving_usd_total", 0.0)
        print(f"spend (router):       ${spend:.4f} for these requests, ${saved:.4f} saved against the reference model "
              f"({saved / (spend + saved) * 100 if spend + saved else 0:.1f}%), "
              f"{int(m.get('llm_router_tokens_total', 0))} tokens; from its /metrics")
    sh = s.get("shadow")
    if sh:
        print(f"shadow mode:          every request was served as asked; routing would have spent ${sh['routed_cost_usd']:.4f} "
              f"instead of ${sh['served_cost_usd']:.4f} (saving {sh['saving'] * 100:.1f}%), sending "
              + ", ".join(f"{m} {v * 100:.0f}%" for m, v in sh["would_route"].items()))
    if s["added_p50_ms"] is not None:
        print(f"added latency:        p50 {s['added_p50_ms']:.2f} ms, p99 {s['added_p99_ms']:.2f} ms "
              f"(through {gateway} + llm-router minus the same call straight to the fake, paired per request)")
