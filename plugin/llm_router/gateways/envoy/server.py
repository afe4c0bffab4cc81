"""`llm-router serve --envoy ADDR`: the ext_proc processor process.

Also runnable as `python -m llm_router.gateways.envoy.server` with a choice of transport and
service (routing or no-op), which the benchmark and tests use to compare variants.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any

from llm_router import compiled_build
from llm_router.config import Config, ConfigError, load_config
from llm_router.gateways.envoy.settings import TRANSPORTS, EnvoySettings

log = logging.getLogger("llm_router.envoy")
TRANSPORT_ENV = "LLM_ROUTER_ENVOY_TRANSPORT"


def make_server(transport: str, open_session: Callable[[dict[str, str]], Any]) -> Any:
    """A transport server object with async start(address) / stop(grace)."""
    if transport == "h2":
        from llm_router.gateways.envoy.h2grpc import H2GrpcServer

        return H2GrpcServer(open_session)
    if transport == "grpclib":
        from llm_router.gateways.envoy.grpclib_server import GrpclibServer

        return GrpclibServer(open_session)
    if transport == "grpcio":
        from llm_router.gateways.envoy.grpcio_server import GrpcioServer

        return GrpcioServer(open_session)
    raise ValueError(f"unknown transport {transport!r} (known: {', '.join(TRANSPORTS)})")


def check_address(address: str) -> str:
    """Validate HOST:PORT or unix:PATH; remove a stale socket file left by a dead process."""
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError("unix: address needs a path, e.g. unix:/run/llm-router.sock")
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode):
                raise ValueError(f"{path} exists and is not a socket")
            os.unlink(path)
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {address!r} must be HOST:PORT or unix:PATH")
    return address


def setup_logging(log_file: str | None, level: str = "INFO") -> None:
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("llm_router")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def run(address: str, transport: str, build: Callable[[], tuple[Any, Callable, Any]], grace: float,
              metrics: str | None = None, config_path: str | None = None,
              sighup_pending: Callable[[], bool] | None = None) -> int:
    """Start the service, listen, and run until SIGTERM/SIGINT; then drain and stop. SIGHUP reloads the config."""
    runtime, open_session, _ = build()
    if runtime is not None:
        await runtime.start(metrics_listen=metrics)
    server = make_server(transport, open_session)
    await server.start(address)
    if runtime is not None:
        runtime.serving = True
    # Everything loaded so far (catalog, classifier tables, compiled policies) lives for the whole
    # process: keep it out of the collector's way so per-request garbage collection stays cheap.
    gc.collect()
    gc.freeze()
    log.info("ext_proc processor listening on %s (transport %s, %s)", address, transport, compiled_build.describe())
    print(f"llm-router ext_proc ready on {address} (transport {transport})", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if runtime is not None:
        from llm_router.runtime import sighup_reloader

        reload = sighup_reloader(runtime, config_path)
        loop.add_signal_handler(signal.SIGHUP, reload)
        if sighup_pending is not None and sighup_pending():
            reload()  # a SIGHUP that came while starting
    try:
        await stop.wait()
    finally:
        log.info("stopping: draining streams (up to %.1fs)", grace)
        if runtime is not None:
            runtime.serving = False  # /readyz fails first, so load balancers stop sending
        await server.stop(grace)
        if runtime is not None:
            await runtime.stop()
        if address.startswith("unix:"):
            try:
                os.unlink(address[5:])
            except FileNotFoundError:
                pass
    return 0


def service_options(settings: EnvoySettings, cfg: Config) -> Any:
    """The routing service's options from server.envoy (and server.orchestrate's deadline)."""
    from llm_router.gateways.envoy.service import ServiceOptions

    return ServiceOptions(observe_responses=settings.observe_responses, max_body_bytes=settings.max_body_bytes,
                          first_byte_timeout_ms=round(settings.first_byte_timeout_s * 1000),
                          answer_timeout_ms=round(settings.answer_timeout_s * 1000),
                          orchestrate_timeout_s=settings.orchestrate_wait_s(cfg))


def routing_builder(cfg: Config, settings: EnvoySettings) -> Callable[[], tuple[Any, Callable, Any]]:
    def build():
        from llm_router.gateways.envoy.service import RoutingService
        from llm_router.runtime import Runtime

        runtime = Runtime(cfg)
        missing = [p for p in runtime.catalog.providers if not runtime.credentials.has(p)]
        if missing:
            log.warning("no credential loaded for providers: %s (their requests go out without a key)", ", ".join(sorted(missing)))
        service = RoutingService(runtime, service_options(settings, cfg))
        return runtime, service.services().open, service
    return build


def noop_builder() -> Callable[[], tuple[Any, Callable, Any]]:
    def build():
        from llm_router.gateways.envoy.noop import NoopService

        service = NoopService()
        return None, service.open, service
    return build


def serve(args) -> int:
    """Entry point of `llm-router serve --envoy ADDR`."""
    from llm_router.runtime import defer_sighup

    sighup_pending = defer_sighup()
    setup_logging(getattr(args, "log_file", None))
    try:
        cfg = load_config(args.config)
        settings = EnvoySettings.from_config(cfg)
        address = check_address(args.envoy)
    except ConfigError as exc:
        print(f"error: invalid config {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (getattr(args, "workers", None) or 1) > 1:
        log.warning("--workers is for the APISIX runner; for Envoy run one processor per socket and list them "
                    "as endpoints of the ext_proc cluster")
    transport = os.environ.get(TRANSPORT_ENV) or settings.transport
    if transport not in TRANSPORTS:
        print(f"error: {TRANSPORT_ENV}={transport!r} is not one of {', '.join(TRANSPORTS)}", file=sys.stderr)
        return 2
    install_uvloop()
    try:
        return asyncio.run(run(address, transport, routing_builder(cfg, settings), settings.grace_s,
                               metrics=getattr(args, "metrics", None), config_path=args.config,
                               sighup_pending=sighup_pending))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {address}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m llm_router.gateways.envoy.server`: pick service and transport explicitly."""
    p = argparse.ArgumentParser(prog="python -m llm_router.gateways.envoy.server")
    p.add_argument("--envoy", required=True, metavar="ADDR", help="HOST:PORT or unix:PATH")
    p.add_argument("--config", "-c", metavar="FILE")
    p.add_argument("--service", choices=("route", "noop"), default="route")
    p.add_argument("--transport", choices=TRANSPORTS)
    p.add_argument("--log-file", metavar="FILE")
    p.add_argument("--metrics", metavar="ADDR", help="Prometheus endpoint HOST:PORT")
    args = p.parse_args(argv)
    if args.transport:
        os.environ[TRANSPORT_ENV] = args.transport
    if args.service == "route":
        return serve(args)
    setup_logging(args.log_file)
    install_uvloop()
    try:
        address = check_address(args.envoy)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(address, args.transport or "h2", noop_builder(), 2.0))


if __name__ == "__main__":
    sys.exit(main())
