"""Shared fixtures: a real redis-server on a free port, free ports, process cleanup."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

# The runners the tests start serve plain Python from the checkout, never a compiled build that `llm-router compile`
# (make setup) left in the environment: test_compiled_serve.py turns it on where it tests that.
os.environ["LLM_ROUTER_COMPILED"] = "0"

# Fake provider keys for tests that build a Runtime from the environment (never real keys).
TEST_KEYS = {"OPENAI_API_KEY": "sk-test-openai-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002", "GEMINI_API_KEY": "gm-test-0003",
             "TOGETHER_API_KEY": "tg-test-0004", "MISTRAL_API_KEY": "ms-test-0005", "DEEPSEEK_API_KEY": "sk-test-deepseek-0006"}


@pytest.fixture
def provider_keys(monkeypatch) -> dict[str, str]:
    """Every default provider's key variable set to a fake value for this test."""
    for name, value in TEST_KEYS.items():
        monkeypatch.setenv(name, value)
    return dict(TEST_KEYS)


def sse_data_lines(url: str, payload: dict, timeout: float = 30.0) -> tuple[int, dict[str, str], list[str]]:
    """POST a streaming request: (status, response headers, its `data:` lines in order)."""
    import httpx

    with httpx.stream("POST", url, json=payload, timeout=timeout) as resp:
        return resp.status_code, dict(resp.headers), [line for line in resp.iter_lines() if line.startswith("data:")]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (below the ephemeral range: see stack.free_port)."""
    from llm_router.gateways.envoy.stack import free_port as pick

    return pick()


def wait_for(check, timeout: float = 30.0, what: str = "condition", interval: float = 0.02):
    """Poll `check()` until it is truthy and return that value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # not ready yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process (group when it leads one), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM) if os.getpgid(proc.pid) == proc.pid else proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout)


def start_redis(port: int, workdir) -> subprocess.Popen:
    """A real redis-server (Debian's package) on 127.0.0.1:port, once it answers PING; skips the test without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; `make system-deps` installs it)")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    try:
        wait_for(ping, 30, "redis-server to answer PING")
    except BaseException:
        stop_process(proc)
        raise
    return proc


class RestartableRedis:
    """A real redis-server on one loopback port that a test stops and starts again; every one started is stopped."""

    def __init__(self, workdir) -> None:
        self.port, self.workdir = free_port(), workdir
        self.procs: list[subprocess.Popen] = []
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again), empty, once it answers PING."""
        self.procs.append(start_redis(self.port, self.workdir))

    def stop(self) -> None:
        """Stop the running one."""
        stop_process(self.procs[-1])

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session."""
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


# ---- fake providers for runtime tests (orchestration, APISIX fallback) ----------------------------

@pytest.fixture(scope="module")
def fakes():
    """The default catalog's providers as fake OpenAI/Anthropic-compatible servers on 127.0.0.1."""
    from llm_router.config import parse_config
    from llm_router.fakes import FakeProviders

    f = FakeProviders.from_config(parse_config({})).start()
    yield f
    f.stop()


@pytest.fixture
def on_fakes(fakes, monkeypatch):
    """Fakes reset to good answers with their keys in the environment; call it with policies (and server
    settings) for the config data of a Runtime whose providers are the fakes."""
    from llm_router.config import parse_config
    from llm_router.fakes import Behaviour

    for p in fakes.providers.values():
        p.set_behaviour(Behaviour(models=p.behaviour.models, default_quality=1.0))
        p.records.clear()
    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    base = parse_config({})
    providers = {n: {**base.providers[n].model_dump(), "base_url": fakes.url(n)} for n in base.providers}

    def config(policies: dict | None = None, server: dict | None = None):
        return parse_config({"providers": providers, "policies": policies or {}, "server": server or {}})
    return config


def orchestrate_once(rt, policy: str, prompt: str, **extra):
    """Decide and orchestrate one chat request under `policy`: (exchange, reply); the runtime is stopped in the same loop."""
    import asyncio

    import orjson

    from llm_router.orchestrate import orchestrate, wants_orchestration
    from llm_router.runtime import Exchange, Refusal

    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra})

    async def main():
        ex = Exchange(rt.new_request_id(), "r", time.monotonic())
        call = rt.decide(body, path="/v1/chat/completions", ex=ex, route_conf={"policy": policy})
        assert not isinstance(call, Refusal), call
        assert wants_orchestration(ex)
        try:
            return ex, await orchestrate(rt, ex, ex.request, ex.decision)
        finally:
            await rt.stop()
    return asyncio.run(main())


def orchestrated_answer(rt, fakes, texts: dict[str, str], prompt: str, policy: str):
    """Give each named model a fixed answer text on the fakes, then decide and orchestrate one request."""
    for mid, text in texts.items():
        m = rt.catalog.models[mid]
        fakes.set_behaviour(m.provider, texts={m.name: text})
    return orchestrate_once(rt, policy, prompt)[1]


@pytest.fixture
def apisix_runner_thread(monkeypatch):
    """A starter of in-process APISIX runner threads whose config polls for `poll_us` microseconds (0: never; None: the
    default), with more `server` settings as keywords, an optional observer and clock; each is stopped and its socket
    removed after the test."""
    from apisix_emulator import FAKE_KEYS, RunnerThread, remove_dir, socket_dir

    from llm_router.config import parse_config
    from llm_router.gateways.apisix.runner import Runner
    from llm_router.gateways.apisix.tokens import TokenStore
    from llm_router.runtime import Runtime

    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    d = socket_dir()
    threads: list[RunnerThread] = []

    def start(poll_us: int | None = None, *, observer=None, telemetry: bool = False, clock=None, **server) -> RunnerThread:
        if poll_us is not None:
            server["apisix_answer_poll_us"] = poll_us
        runtime = Runtime(parse_config({"server": server}), observer=observer, telemetry=telemetry)
        runner = Runner(runtime, TokenStore(ttl=100), **({"clock": clock} if clock is not None else {}))
        thread = RunnerThread(os.path.join(d, f"runner{len(threads)}.sock"), runner).start()
        threads.append(thread)
        return thread
    try:
        yield start
    finally:
        for t in threads:
            t.stop()
        remove_dir(d)
