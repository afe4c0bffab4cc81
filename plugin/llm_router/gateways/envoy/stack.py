"""Run Envoy, the processor and fake providers on 127.0.0.1: for the demo, the benchmark and tests.

Every process is started in its own session, tracked by PID and stopped by PID (SIGTERM, then
SIGKILL after a grace period); readiness is polled, never slept for.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm_router.config import Config
from llm_router.gateways.envoy.binary import envoy_path
from llm_router.gateways.envoy.bootstrap import build, render, spec_from_config

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed demo leaves nothing behind (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


_PICK = random.SystemRandom()  # not the global generator: a test that seeds it must not make processes pick alike


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for client sockets' local ports (Linux's default where it cannot be read)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, picked at random below the ephemeral range.

    Port 0 would hand out a port from the ephemeral range, which the kernel also gives to client
    sockets: any connection opened before a child process binds the port could take it (a full
    test run once failed that way). Below the range only another listener can.
    """
    low = 10000
    high = _ephemeral_range()[0] - 1
    for _ in range(50):
        port = _PICK.randint(low, high) if high > low else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, proc: "Proc | None" = None, interval: float = 0.02) -> None:
    """Poll until check() is true; fail naming what, with the process's log tail if it died."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.popen.returncode}\n{proc.log_tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s" + (f"\n{proc.log_tail()}" if proc else ""))
        time.sleep(interval)


def can_connect(address: str) -> bool:
    """Whether something accepts connections on HOST:PORT or unix:PATH."""
    if address.startswith("unix:"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            return s.connect_ex(address[5:]) == 0
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


class Proc:
    """A child process in its own session, stopped by PID."""

    def __init__(self, name: str, argv: list[str], *, log_path: Path, env: Mapping[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.child_env = env
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=dict(self.child_env) if self.child_env is not None else None, start_new_session=True,
                                          preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL: always reaps the process."""
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"  [{self.name}] {line}" for line in text[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (Linux /proc)."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class EnvoyProcess(Proc):
    """Envoy with a generated bootstrap; ready when its admin endpoint says LIVE."""

    def __init__(self, bootstrap: Mapping[str, Any], workdir: Path, *, name: str = "envoy", concurrency: int = 1,
                 log_level: str = "warning"):
        self.bootstrap = bootstrap
        self.config_path = workdir / f"{name}.envoy.yaml"
        self.config_path.write_text(render(bootstrap))
        admin = bootstrap.get("admin", {}).get("address", {}).get("socket_address", {})
        self.admin = (admin.get("address"), admin.get("port_value")) if admin else None
        super().__init__(name, [str(envoy_path()), "-c", str(self.config_path), "--concurrency", str(concurrency),
                                "-l", log_level, "--disable-hot-restart", "--log-format", "[%L] %v"],
                         log_path=workdir / f"{name}.log")

    def admin_get(self, path: str, timeout: float = 5.0) -> str:
        assert self.admin is not None, "no admin address"
        with urllib.request.urlopen(f"http://{self.admin[0]}:{self.admin[1]}{path}", timeout=timeout) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> "EnvoyProcess":
        wait_for(lambda: self.admin_get("/ready", 2).strip() == "LIVE", timeout=timeout, what=self.name, proc=self)
        return self

    def counter(self, name: str) -> int:
        """One stat counter's value (0 when absent)."""
        for line in self.admin_get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


class ProcessorProcess(Proc):
    """`python -m llm_router.gateways.envoy.server` (routing or no-op service)."""

    def __init__(self, address: str, workdir: Path, *, config: str | Path | None = None, service: str = "route",
                 transport: str | None = None, env: Mapping[str, str] | None = None, name: str = "processor",
                 cli: bool = False):
        self.address = address
        full_env = {**os.environ, **(env or {})}
        if cli:  # exactly what a user runs: llm-router serve --envoy ADDR
            argv = [sys.executable, "-m", "llm_router.cli", "serve", "--envoy", address]
            if transport:
                full_env["LLM_ROUTER_ENVOY_TRANSPORT"] = transport
        else:
            argv = [sys.executable, "-m", "llm_router.gateways.envoy.server", "--envoy", address, "--service", service]
            if transport:
                argv += ["--transport", transport]
        if config is not None:
            argv += ["--config", str(config)]
        super().__init__(name, argv, log_path=workdir / f"{name}.log", env=full_env)

    def wait_ready(self, timeout: float = 60.0) -> "ProcessorProcess":
        wait_for(lambda: can_connect(self.address), timeout=timeout, what=self.name, proc=self)
        return self


PORT_ATTEMPTS = 5


def start_envoy_on_free_ports(bootstrap_for: Callable[[int, int], Mapping[str, Any]], workdir: Path, procs: list[Proc], *,
                              name: str = "envoy", timeout: float = 60.0) -> tuple[EnvoyProcess, int]:
    """Envoy on a listener and an admin port that were free, waited until ready; returns it and its port.

    A port found free can be taken before Envoy binds it (another process's listener or a client
    socket's ephemeral port); Envoy then exits with "Address already in use", and it is started
    again on new ports, up to PORT_ATTEMPTS times. The running Envoy is appended to `procs`.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        envoy = EnvoyProcess(bootstrap_for(port, free_port()), workdir, name=name).start()
        procs.append(envoy)
        try:
            envoy.wait_ready(timeout)
            return envoy, port
        except RuntimeError as exc:
            exited = envoy.popen is not None and envoy.popen.poll() is not None
            if not exited or "Address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                raise
            procs.remove(envoy)
    raise AssertionError("unreachable")


@dataclass
class RoutedStack:
    """A processor and the Envoy that routes through it, listening on 127.0.0.1:port."""

    processor: ProcessorProcess
    envoy: EnvoyProcess
    port: int


def start_routed(cfg: Config, workdir: Path, procs: list[Proc], *, local_ports: Mapping[str, int], envoy_name: str = "envoy",
                 socket_name: str = "ext_proc", **processor: Any) -> RoutedStack:
    """Start a processor (ProcessorProcess options in `processor`) and an Envoy for `cfg` in front of it.

    Both are appended to `procs` as soon as they start, so the caller's stop_all() stops them.
    Envoy is waited for (it is restarted on new ports if one was taken meanwhile); the processor,
    which starts meanwhile, is not.
    """
    sock = f"unix:{workdir}/{socket_name}.sock"
    proc = ProcessorProcess(sock, workdir, **processor).start()
    procs.append(proc)

    def bootstrap(port: int, admin: int) -> Mapping[str, Any]:
        return build(spec_from_config(cfg, listen=("127.0.0.1", port), processor=sock, local_ports=dict(local_ports),
                                      admin=("127.0.0.1", admin)))

    envoy, port = start_envoy_on_free_ports(bootstrap, workdir, procs, name=envoy_name)
    return RoutedStack(proc, envoy, port)


class FakesProcess(Proc):
    """`llm-router fakes` in a child process; ports are read from the JSON file it writes when ready."""

    def __init__(self, workdir: Path, *, config: str | Path | None = None, extra: list[str] = (), name: str = "fakes"):
        self.ports_file = workdir / f"{name}.json"
        argv = [sys.executable, "-m", "llm_router.cli", "fakes", "--ports-file", str(self.ports_file), *extra]
        if config is not None:
            argv += ["--config", str(config)]
        super().__init__(name, argv, log_path=workdir / f"{name}.log")
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 60.0) -> "FakesProcess":
        import json

        wait_for(lambda: self.ports_file.exists() and self.ports_file.stat().st_size > 0, timeout=timeout, what=self.name, proc=self)
        self.info = json.loads(self.ports_file.read_text())
        return self

    @property
    def ports(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.info["ports"].items()}

    @property
    def env(self) -> dict[str, str]:
        return dict(self.info["env"])


def workdir(prefix: str = "llm-router-") -> tempfile.TemporaryDirectory:
    """A temporary directory short enough for Unix socket paths."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp")


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


def stop_all(procs: list[Proc]) -> None:
    """Stop processes in reverse start order; never raises."""
    for p in reversed(procs):
        with contextlib.suppress(Exception):
            p.stop()

