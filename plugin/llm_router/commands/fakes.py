"""`llm-router fakes`: run the fake providers standalone (one port per provider of the catalog)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from llm_router.commands.common import add_config_arg, load_or_exit


def register(sub) -> None:
    p = sub.add_parser("fakes", help="run fake LLM providers (OpenAI-compatible and Anthropic) on 127.0.0.1")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="first port; providers get consecutive ports (default: free ports)")
    p.add_argument("--provider", action="append", help="only these providers (repeatable; default: all in the catalog)")
    p.add_argument("--first-byte-ms", type=float, default=0.0, help="delay before each response starts")
    p.add_argument("--chunk-ms", type=float, default=0.0, help="delay between streamed events")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with 500")
    p.add_argument("--rate-limit-rate", type=float, default=0.0, help="share of requests answered with 429")
    p.add_argument("--fail", metavar="PROVIDER[,PROVIDER]", help="these providers answer every request with 503")
    p.add_argument("--set", action="append", default=[], metavar="PROVIDER.FIELD=VALUE",
                   help="a failure pattern or other behaviour for one provider ('*' for all), repeatable: "
                        "fail_first=N, fail_status=503, status=429, retry_after_s=2, first_byte_ms=3000, "
                        "break_after_chunks=K, disconnect=true, chunk_ms=50, ... (change later: POST /_fake/behaviour)")
    p.add_argument("--any-model", action="store_true", help="accept any model name (default: the catalog's models only)")
    p.add_argument("--ports-file", metavar="FILE", help="write {ports, keys, env} as JSON here once listening")
    p.add_argument("--seed", type=int, default=0)
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llm_router.fakes import Behaviour, FakeProviders
    from llm_router.fakes.patterns import behaviour_changes

    cfg = load_or_exit(args.config)
    names = args.provider or sorted(cfg.providers)
    unknown = sorted(set(names) - set(cfg.providers))
    if unknown:
        print(f"error: unknown providers {unknown} (known: {sorted(cfg.providers)})", file=sys.stderr)
        return 2
    for name, value in (("--error-rate", args.error_rate), ("--rate-limit-rate", args.rate_limit_rate)):
        if not 0 <= value <= 1:
            print(f"error: {name} must be between 0 and 1, got {value}", file=sys.stderr)
            return 2
    try:
        changes = behaviour_changes(names, fail=args.fail, sets=args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    behaviour = Behaviour(first_byte_ms=args.first_byte_ms, chunk_ms=args.chunk_ms, error_rate=args.error_rate,
                          rate_limit_rate=args.rate_limit_rate)
    ports = {name: args.port + i for i, name in enumerate(sorted(names))} if args.port else None
    fakes = FakeProviders.from_config(cfg, behaviour=behaviour, only_catalog_models=not args.any_model, names=names,
                                      ports=ports, seed=args.seed)
    for name, fields in changes.items():
        fakes.set_behaviour(name, **fields)
    fakes.host = args.host
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_serve(fakes, args.ports_file))


async def _serve(fakes, ports_file: str | None) -> int:
    try:
        await fakes.start_async()
    except OSError as exc:
        print(f"error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    info = {"ports": fakes.ports, "keys": fakes.keys(), "env": fakes.env(),
            "urls": {name: fakes.url(name) for name in fakes.providers}}
    for name in sorted(fakes.providers):
        f = fakes.providers[name]
        pattern = describe_failures(f.behaviour)
        print(f"fake {name:10s} {fakes.url(name)}  key {f.key}{'  ' + pattern if pattern else ''}", file=sys.stderr)
    print("control: GET /_fake/requests, POST /_fake/behaviour {json}, POST /_fake/reset on any port", file=sys.stderr)
    if ports_file:
        tmp = f"{ports_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, ports_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fakes.stop_async()
    return 0


def describe_failures(b) -> str:
    """The failure pattern a fake was started with, in a few words (empty when it behaves)."""
    parts = []
    if b.status is not None:
        parts.append(f"answers {b.status}")
    if b.fail_first:
        parts.append(f"first {b.fail_first} answered {b.fail_status}")
    if b.first_byte_ms:
        parts.append(f"first byte after {b.first_byte_ms:g} ms")
    if b.break_after_chunks is not None:
        parts.append(f"cuts answers after {b.break_after_chunks} chunks")
    if b.disconnect:
        parts.append("disconnects")
    if b.error_rate or b.rate_limit_rate:
        parts.append(f"{b.error_rate:.0%} 500s, {b.rate_limit_rate:.0%} 429s")
    return "(" + "; ".join(parts) + ")" if parts else ""
