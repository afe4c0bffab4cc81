"""Test support for the APISIX runner: a runner process or thread on a real Unix socket, and the emulator."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from conftest import wait_for

from llm_router.gateways.apisix.emulator import (  # noqa: F401  (re-exported for the tests)
    Emulator, Outcome, ProtocolViolation, RouteConf, RPCError, SharedDict, build_extra_info_resp, build_prepare_conf,
    build_req_call, build_resp_call, decode_reply, raw_frame,
)

REPO = Path(__file__).resolve().parents[1]
FAKE_KEYS = {"OPENAI_API_KEY": "sk-test-openai-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002",
             "DEEPSEEK_API_KEY": "sk-ds-test-0003", "TOGETHER_API_KEY": "tg-test-0004",
             "MISTRAL_API_KEY": "mi-test-0005", "GEMINI_API_KEY": "gm-test-0006"}


wait_until = wait_for  # the name the APISIX tests use


def socket_dir() -> str:
    """A short private directory for sockets (AF_UNIX paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="lr-apisix-", dir="/tmp")


def runner_config_at_fakes(path: Path, fakes, metrics_port: int) -> str:
    """A runner config: the built-in providers at the fakes, /metrics on `metrics_port`, streams' usage read from logs."""
    import json

    from llm_router.config import default_data

    providers = {name: {**p, "base_url": fakes.url(name)} for name, p in default_data()["providers"].items()}
    path.write_text(json.dumps({"providers": providers, "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                                "server": {"apisix_stream_usage": True}}))
    return str(path)


def connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        s.connect(path)
        return True


class RunnerProcess:
    """`llm-router serve --apisix` as a child process; stopped by PID."""

    def __init__(self, path: str, *, workers: int = 1, config: str | None = None, env: dict[str, str] | None = None,
                 log_file: str | None = None, extra_args: tuple[str, ...] = (), cwd: str | None = None):
        self.path = path
        self.workers = workers
        self.config = config
        self.env = {**os.environ, **FAKE_KEYS, **(env or {})}
        self.env.pop("APISIX_LISTEN_ADDRESS", None)
        self.log_file = log_file or os.path.join(os.path.dirname(path), "runner.log")
        self.extra_args = extra_args
        self.cwd = cwd or str(REPO)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "RunnerProcess":
        cmd = [sys.executable, "-m", "llm_router.cli", "serve", "--apisix", "--socket", self.path,
               "--workers", str(self.workers), "--log-file", self.log_file, *self.extra_args]
        if self.config:
            cmd += ["--config", self.config]
        self._stderr = open(self.log_file + ".stderr", "ab")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=self.cwd)
        try:
            wait_until(lambda: self.proc.poll() is None and connectable(self.path), timeout, f"runner socket {self.path}")
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the runner by PID and wait; returns its exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._stderr.close()
        return proc.returncode

    def log(self) -> str:
        try:
            return Path(self.log_file).read_text()
        except OSError:
            return ""

    def __enter__(self) -> "RunnerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RunnerThread:
    """The runner served from a thread of the test process (to observe its Runtime and Runner)."""

    def __init__(self, path: str, runner):
        self.path = path
        self.runner = runner
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> "RunnerThread":
        from llm_router.gateways.apisix.server import _serve_async, bind_socket
        from llm_router.loop_thread import new_loop

        sock = bind_socket(self.path)
        ready = threading.Event()

        def on_ready(stop: asyncio.Event) -> None:
            self._stop = stop
            ready.set()

        def main() -> None:
            loop = self._loop = new_loop()
            try:
                loop.run_until_complete(_serve_async(sock, self.runner, ready=on_ready))
            except BaseException as exc:  # surfaced by stop()
                self._error = exc
                ready.set()
            finally:
                loop.close()
                sock.close()

        self._thread = threading.Thread(target=main, name="apisix-runner", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise TimeoutError("runner thread did not start")
        if self._error:
            raise self._error
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def call(self, fn, *args):
        """Run fn(*args) on the runner's loop and wait for its result (the runner's state belongs to that thread)."""
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append(fn(*args))
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(30):
            raise TimeoutError(f"{fn} did not run on the runner's loop")
        return box[0] if box else None

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self._error:
            raise self._error

    def __enter__(self) -> "RunnerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def recv_frame(s: socket.socket) -> tuple[int, bytes]:
    """One whole frame from a blocking socket: (RPC type, payload); ConnectionError when the runner closes."""
    from llm_router.gateways.apisix import framing

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data
    ty, n = framing.parse_header(exactly(4))
    return ty, exactly(n)


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def runner_session(runtime, name: str) -> Iterator[Emulator]:
    """The runner for `runtime` served from a thread on a fresh socket, and an emulator connected to it;
    both stopped and the socket's folder removed afterwards."""
    from llm_router.gateways.apisix.runner import Runner
    from llm_router.gateways.apisix.tokens import TokenStore

    d = socket_dir()
    thread = RunnerThread(os.path.join(d, f"{name}.sock"), Runner(runtime, TokenStore(ttl=100))).start()
    em = Emulator(thread.path, timeout=60)
    try:
        yield em
    finally:
        em.close()
        thread.stop()
        remove_dir(d)
