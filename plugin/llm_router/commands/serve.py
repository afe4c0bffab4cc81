"""`llm-router serve`: run the Envoy ext_proc processor or the APISIX ext-plugin runner."""
from __future__ import annotations

import os
import sys

from llm_router import compiled_build
from llm_router.commands.common import add_config_arg, at_least


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve Envoy (ext_proc gRPC) or APISIX (ext-plugin runner)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--envoy", metavar="ADDR", help="ext_proc listen address: HOST:PORT or unix:PATH")
    mode.add_argument("--apisix", action="store_true", help="run as APISIX ext-plugin runner (socket from APISIX_LISTEN_ADDRESS)")
    p.add_argument("--socket", metavar="PATH", help="APISIX runner socket path (overrides APISIX_LISTEN_ADDRESS)")
    p.add_argument("--workers", type=at_least(1), default=None, help="processes serving the socket (default: config server.workers or 1)")
    p.add_argument("--metrics", metavar="ADDR", help="Prometheus endpoint HOST:PORT (default: config metrics.listen)")
    p.add_argument("--log-file", metavar="FILE", help="log here instead of stderr")
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.envoy and not args.socket and not os.environ.get("APISIX_LISTEN_ADDRESS"):
        print("error: --apisix needs --socket PATH or APISIX_LISTEN_ADDRESS=unix:PATH", file=sys.stderr)
        return 2
    compiled_build.switch()  # onto the compiled request path where `llm-router compile` built it for these sources
    if args.envoy:
        from llm_router.gateways.envoy.server import serve
    else:
        from llm_router.gateways.apisix.server import serve
    return serve(args)
