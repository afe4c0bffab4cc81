"""Shared helpers and fixtures for tests through a real Envoy with fake providers.

Import what a test module needs:  from fixtures_envoy import fakes, stack, ...  (pytest picks up
imported fixtures). Every process is started on 127.0.0.1 with free ports, polled for readiness
and stopped by PID; the in-thread processor runs the real RoutingService over the real HTTP/2
transport, with a recording observer so tests can assert what reaches Runtime.on_response.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from llm_router.config import Config, parse_config
from llm_router.fakes import FakeProviders
from llm_router.gateways.envoy.binary import EnvoyNotFound, envoy_path
from llm_router.gateways.envoy.bootstrap import RouteSpec, build, spec_from_config
from llm_router.gateways.envoy.stack import (EnvoyProcess, ProcessorProcess, free_port, start_envoy_on_free_ports,  # noqa: F401
                                              stop_all, wait_for, write_config)
from llm_router.loop_thread import LoopThread

LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
BODY_LIMIT = 64 * 1024
# A Claude model from before extended thinking: the seed's Claude 3.5 Sonnet, as a host that still serves it would (the
# built-in slot calls Claude Sonnet 4.6 since Anthropic retired it), for tests of what such a model refuses.
CLAUDE_3_5 = {"provider": "anthropic", "name": "claude-3-5-sonnet-20240620", "input_price": 3.0, "output_price": 15.0,
              "context_window": 200000, "max_output_tokens": 8192, "capabilities": ["tools", "vision", "code", "streaming"],
              "tier": "HIGH", "quality": 0.94, "body": {"drop": ["thinking"]}}


def config_data(**server_envoy: Any) -> dict[str, Any]:
    """The test config: built-in catalog, explain on, a small body limit, and a 'cheap' policy."""
    data: dict[str, Any] = {
        "policies": {
            "default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "reference_model": "gpt-4o",
                        "explain": True, "max_body_bytes": BODY_LIMIT, "client_policies": {"auto-cheap": "cheap"}},
            "cheap": {"classifier": "rules", "strategy": "ladder", "explain": True, "max_body_bytes": BODY_LIMIT,
                      "ladder": {t: "deepseek-v2" for t in LADDER}, "constraints": {"models": ["deepseek-v2"]}},
            "pinned": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "explain": False,
                       "client_model": "honor", "max_body_bytes": BODY_LIMIT},
            "shadow": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "reference_model": "gpt-4o",
                       "explain": True, "shadow": True, "max_body_bytes": BODY_LIMIT},
        },
    }
    if server_envoy:
        data["server"] = {"envoy": server_envoy}
    return data


def slot_policies(slot: str, name: str, only: str) -> dict[str, Any]:
    """The test config with two policies on one built-in slot: `name` laddered on it at every tier, `only` allowed no other."""
    data = config_data()
    data["policies"][name] = {"classifier": "rules", "strategy": "ladder", "explain": True, "ladder": {t: slot for t in LADDER}}
    data["policies"][only] = {**data["policies"][name], "constraints": {"models": [slot]}}
    return data


def require_envoy() -> Path:
    try:
        return envoy_path()
    except EnvoyNotFound as exc:
        pytest.skip(f"no Envoy binary: {exc}")


class RecordingObserver:
    """Remembers every decision and response the Runtime reports (thread-safe enough for tests)."""

    def __init__(self) -> None:
        self.decisions: list[Any] = []
        self.responses: list[tuple[Any, int, Any, float]] = []
        self.fallbacks: list[tuple[Any, str, str, str]] = []  # (exchange, from model, to model, reason)
        self.headers: dict[str, Any] = {}  # request id -> response headers reported with on_response (last attempt)
        self.attempt_headers: dict[tuple[str, int], Any] = {}  # (request id, attempt) -> those headers
        self._lock = threading.Lock()

    def on_decision(self, ex) -> None:
        with self._lock:
            self.decisions.append(ex)

    def on_response(self, ex, status, usage, latency_s, headers=None) -> None:
        ex = replace(ex)  # a snapshot: callers may reuse the exchange for the next call (orchestration does)
        with self._lock:
            self.responses.append((ex, status, usage, latency_s))
            self.headers[ex.request_id] = headers
            self.attempt_headers[(ex.request_id, ex.attempt)] = headers

    def on_fallback(self, ex, from_model, to_model, reason) -> None:
        with self._lock:
            self.fallbacks.append((ex, from_model, to_model, reason))

    def attempts_for(self, request_id: str, count: int, timeout: float = 10.0) -> list[tuple[Any, int, Any, float]]:
        """The on_response calls of a request once there are `count` of them, in attempt order."""
        found: list = []

        def check() -> bool:
            with self._lock:
                found[:] = [r for r in self.responses if r[0].request_id == request_id]
            return len(found) >= count

        wait_for(check, timeout=timeout, what=f"{count} on_response call(s) for {request_id}")
        return sorted(found, key=lambda r: r[0].attempt)

    def fallbacks_for(self, request_id: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(f, t, why) for ex, f, t, why in self.fallbacks if ex.request_id == request_id]

    def response_for(self, request_id: str, timeout: float = 10.0) -> tuple[Any, int, Any, float]:
        """The on_response call for a request id (waits for it: it comes after the client got the body)."""
        found: list = []

        def check() -> bool:
            with self._lock:
                found[:] = [r for r in self.responses if r[0].request_id == request_id]
            return bool(found)

        wait_for(check, timeout=timeout, what=f"on_response for {request_id}")
        return found[0]

    def clear(self) -> None:
        with self._lock:
            self.decisions.clear()
            self.responses.clear()
            self.headers.clear()
            self.attempt_headers.clear()
            self.fallbacks.clear()


class InThreadProcessor:
    """The routing service on a Unix socket, served from a background thread's event loop."""

    def __init__(self, cfg: Config, address: str, *, env: dict[str, str], transport: str = "h2",
                 observer: RecordingObserver | None = None, services: Any = None):
        self.cfg = cfg
        self.env = env
        self.address = address
        self.transport = transport
        self.observer = observer or RecordingObserver()
        self.services = services  # optional: (RoutingService) -> opener, to replace a service in a test
        self._thread = LoopThread("ext-proc")
        self._server: Any = None
        self.runtime = None
        self.service = None  # the RoutingService, once started

    def start(self) -> "InThreadProcessor":
        from llm_router.credentials import Credentials
        from llm_router.gateways.envoy.server import make_server, service_options
        from llm_router.gateways.envoy.service import RoutingService
        from llm_router.gateways.envoy.settings import EnvoySettings
        from llm_router.router import build_catalog
        from llm_router.runtime import Runtime
        from llm_router.secrets.env import EnvStore

        async def up() -> None:
            creds = Credentials.resolve(build_catalog(self.cfg), [EnvStore(self.env)], missing="skip")
            self.runtime = Runtime(self.cfg, credentials=creds, observer=self.observer, telemetry=False)
            service = self.service = RoutingService(self.runtime, service_options(EnvoySettings.from_config(self.cfg), self.cfg))
            opener = self.services(service) if self.services is not None else service.services().open
            self._server = make_server(self.transport, opener)
            await self._server.start(self.address)

        async def down() -> None:
            await self._server.stop(2.0)

        self._thread.start(up, down, timeout=30)
        return self

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the processor's event loop (a runtime's take_changes, ...); its result."""
        return self._thread.run(coro, timeout)

    def stop(self) -> None:
        self._thread.stop()


class HungProcessor:
    """Accepts connections and reads forever without answering: a processor that is too slow."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._closed = False

    def start(self) -> "HungProcessor":
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def stop(self) -> None:
        self._closed = True
        for c in self.conns:
            c.close()
        self.sock.close()


@dataclass
class Stack:
    """Envoy + processor + fakes, ready."""

    url: str
    port: int
    envoy: EnvoyProcess
    fakes: FakeProviders
    cfg: Config
    wd: Path
    processor: Any = None
    observer: RecordingObserver | None = None
    procs: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        stop_all(self.procs)


def start_stack(wd: Path, fakes: FakeProviders, cfg_data: dict[str, Any], *, processor: str = "thread",
                processor_address: str | None = None, routes: tuple[RouteSpec, ...] | None = None,
                failure_allow: bool | None = None, message_timeout_ms: int | None = None, name: str = "envoy",
                transport: str = "h2", local_ports: dict[str, int] | None = None, services: Any = None) -> Stack:
    """Start what a test needs; processor: 'thread' (in-process, observed), 'subprocess', 'cli' (llm-router serve) or 'none'.

    local_ports: provider -> port for Envoy's clusters (default: the fakes'); services: see InThreadProcessor.
    """
    require_envoy()
    cfg = parse_config(cfg_data)
    cfg_path = write_config(wd / f"{name}-config.yaml", cfg_data)
    address = processor_address or f"unix:{wd}/{name}.sock"
    procs: list[Any] = []
    observer = None
    proc: Any = None
    try:
        if processor == "thread":
            proc = InThreadProcessor(cfg, address, env=fakes.env(), transport=transport, services=services).start()
            observer = proc.observer
            procs.append(proc)
        elif processor in ("subprocess", "cli"):
            proc = ProcessorProcess(address, wd, config=cfg_path, env=fakes.env(), name=f"{name}-processor",
                                    transport=transport, cli=processor == "cli").start()
            procs.append(proc)
            proc.wait_ready(60)
        changes: dict[str, Any] = {}
        if failure_allow is not None:
            changes["failure_allow"] = failure_allow
        if message_timeout_ms is not None:
            changes["message_timeout_ms"] = message_timeout_ms

        def bootstrap(port: int, admin: int) -> dict[str, Any]:
            spec = spec_from_config(cfg, listen=("127.0.0.1", port), processor=address, local_ports=local_ports or fakes.ports,
                                    admin=("127.0.0.1", admin), routes=routes)
            return build(replace(spec, **changes) if changes else spec)

        envoy, port = start_envoy_on_free_ports(bootstrap, wd, procs, name=name)
    except BaseException:
        stop_all(procs)
        raise
    return Stack(url=f"http://127.0.0.1:{port}", port=port, envoy=envoy, fakes=fakes, cfg=cfg, wd=wd, processor=proc,
                 observer=observer, procs=procs)


# ---- fixtures -----------------------------------------------------------------------------

def running_fakes(cfg_data: dict[str, Any]) -> Iterator[FakeProviders]:
    """One fake per provider of a config, stopped afterwards (for a module fixture: `yield from`)."""
    f = FakeProviders.from_config(parse_config(cfg_data)).start()
    try:
        yield f
    finally:
        f.stop()


def running_stack(tmp_path_factory, name: str, fakes: FakeProviders, cfg_data: dict[str, Any], **kw: Any) -> Iterator[Stack]:
    """start_stack in a fresh temporary directory, stopped afterwards (for a module fixture: `yield from`)."""
    s = start_stack(Path(tmp_path_factory.mktemp(name)), fakes, cfg_data, **kw)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    """Fake providers for the built-in catalog, in a background thread."""
    f = FakeProviders.from_config(parse_config(config_data())).start()
    try:
        yield f
    finally:
        f.stop()


@contextlib.contextmanager
def restored(*sets: FakeProviders) -> Iterator[None]:
    """Fakes with their records cleared, and their behaviour and records restored and cleared afterwards."""
    saved = [(f, f.behaviour) for fakes in sets for f in fakes.providers.values()]
    for fakes in sets:
        fakes.clear()
    try:
        yield
    finally:
        for f, behaviour in saved:
            f.set_behaviour(behaviour)
        for fakes in sets:
            fakes.clear()


@pytest.fixture(autouse=False)
def fresh_fakes(fakes: FakeProviders) -> Iterator[FakeProviders]:
    """The module's fakes with records cleared and default behaviour, restored after the test."""
    with restored(fakes):
        yield fakes


@pytest.fixture(scope="module")
def stack(fakes: FakeProviders, tmp_path_factory) -> Iterator[Stack]:
    """Envoy + in-thread processor (recording observer) + fakes; routes: /cheap/, /pinned/ and /shadow/ policies, / -> default."""
    wd = Path(tmp_path_factory.mktemp("envoy"))
    s = start_stack(wd, fakes, config_data(), routes=(RouteSpec("/cheap/", policy="cheap"), RouteSpec("/pinned/", policy="pinned"),
                                                      RouteSpec("/shadow/", policy="shadow"), RouteSpec("/")))
    try:
        yield s
    finally:
        s.stop()


def post_api(stack: "Stack", prefix: str, api: str, chat: dict[str, Any], messages: dict[str, Any]) -> Any:
    """The chat body (api "chat") or the Messages body posted through the stack under a route prefix such as /sonnet/."""
    import httpx
    import orjson

    path, body = (f"{prefix}v1/chat/completions", chat) if api == "chat" else (f"{prefix}v1/messages", messages)
    return httpx.post(stack.url + path, content=orjson.dumps(body), timeout=30,
                      headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})


def wait_requests(fakes: FakeProviders, provider: str, count: int = 1, timeout: float = 10.0) -> list:
    """The fake's records once it has at least `count` of them."""
    wait_for(lambda: len(fakes.requests(provider)) >= count, timeout=timeout, what=f"{count} request(s) at fake {provider}")
    return fakes.requests(provider)


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to ~100 bytes), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="llmr-t-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_wd() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


def elapsed_ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
