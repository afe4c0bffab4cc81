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
    p.add_argument("--any-model", action="store_true", help="accept any model name (default: the catalog's models only)")
    p.add_argument("--ports-file", metavar="FILE", help="write {ports, keys, env} as JSON here once listening")
    p.add_argument("--seed", type=int, default=0)
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from llm_router.fakes import Behaviour, FakeProviders

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
    behaviour = Behaviour(first_byte_ms=args.first_byte_ms, chunk_ms=args.chunk_ms, error_rate=args.error_rate,
                          rate_limit_rate=args.rate_limit_rate)
    ports = {name: args.port + i for i, name in enumerate(sorted(names))} if args.port else None
    fakes = FakeProviders.from_config(cfg, behaviour=behaviour, only_catalog_models=not args.any_model, names=names,
                                      ports=ports, seed=args.seed)
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
        print(f"fake {name:10s} {fakes.url(name)}  key {fakes.providers[name].key}", file=sys.stderr)
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
