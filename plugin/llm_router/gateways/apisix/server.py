"""`llm-router serve --apisix`: the Unix-socket runner, one or several processes on one socket."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from llm_router import compiled_build, state
from llm_router.config import Config, ConfigError, load_config
from llm_router.gateways.apisix.encode import REQ_BODY_FRAME
from llm_router.gateways.apisix.framing import FrameReader
from llm_router.gateways.apisix.runner import CLOSE, PLUGIN_NAME, Conversation, Deferred, Runner, Stats
from llm_router.gateways.apisix.tokens import TOKEN_SPACE, TokenStore, ttl_from_env
from llm_router.loop_thread import new_loop
from llm_router.runtime import Runtime, defer_sighup, sighup_reloader

log = logging.getLogger("llm_router.apisix")

SOCKET_MODE_UMASK = 0o011  # socket file 0766: nginx workers (user nobody) may connect from the first instant
SHUTDOWN_GRACE_S = 0.8  # APISIX sends SIGKILL 1 s after SIGTERM
BACKLOG = 1024
READ_SIZE = 262144  # per read while polling for an answer (uvloop reads 256 KiB too)


def socket_path(args_socket: str | None, environ: dict[str, str] | None = None) -> str:
    """The socket path from --socket or APISIX_LISTEN_ADDRESS (unix:PATH)."""
    env = os.environ if environ is None else environ
    raw = args_socket or env.get("APISIX_LISTEN_ADDRESS", "")
    path = raw[len("unix:"):] if raw.startswith("unix:") else raw
    if not path:
        raise ValueError("no socket path: give --socket PATH or set APISIX_LISTEN_ADDRESS=unix:PATH")
    return path


def bind_socket(path: str) -> socket.socket:
    """A listening Unix socket, created with its final mode (umask set before bind, not chmod after)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from an earlier runner
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(SOCKET_MODE_UMASK)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class Activity:
    """A process's connections: how many have a call in flight, an epoll set of them to see which have data, and
    the replies of this turn of the event loop, written together at its end."""

    __slots__ = ("calls", "ready", "outbox", "flush_at_end", "stats")

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()
        self.calls = 0  # waiting for APISIX's answer or for a deferred reply
        self.ready = select.epoll()  # every connection, level-triggered; the kernel drops a socket when it closes
        self.outbox: list[tuple[asyncio.Transport, bytes]] = []
        self.flush_at_end = False  # a flush is scheduled for the end of this turn

    def send(self, transport: asyncio.Transport, frame: bytes) -> None:
        """Queue a reply; the turn's replies go out together once every ready connection was read.

        Each write to a connection whose reader sleeps wakes that reader on another core, which costs the
        writer several microseconds on a VM. Under load many connections are ready in one turn: writing
        their replies back to back wakes each sleeping nginx worker once, not once per reply.
        """
        self.outbox.append((transport, frame))
        if not self.flush_at_end:
            self.flush_at_end = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send_now(self, transport: asyncio.Transport, frame: bytes) -> None:
        """Write a frame at once, after the replies queued before it."""
        self.outbox.append((transport, frame))
        self.flush()

    def flush(self) -> None:
        """Write the queued replies (to the connections still open)."""
        self.flush_at_end = False
        box = self.outbox
        if box:
            self.outbox = []
            self.stats.reply_flushes += 1
            self.stats.replies_flushed += len(box)
            for transport, frame in box:
                if not transport.is_closing():
                    transport.write(frame)

    def watch(self, fd: int) -> None:
        try:
            self.ready.register(fd, select.EPOLLIN)
        except FileExistsError:  # a number reused before the old socket left the set
            self.ready.modify(fd, select.EPOLLIN)


class RunnerProtocol(asyncio.Protocol):
    """One APISIX connection: frames in, replies out, several RPCs in a row."""

    __slots__ = ("runner", "conns", "transport", "reader", "conv", "busy", "activity", "active", "fd")

    def __init__(self, runner: Runner, conns: set, activity: Activity):
        self.runner = runner
        self.conns = conns
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.conv = Conversation()
        self.busy: asyncio.Future | None = None  # a deferred reply being computed (runner-side upstream calls)
        self.activity = activity
        self.active = False  # counted in activity.calls
        self.fd = -1

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conns.add(self)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        if self.fd >= 0:
            self.activity.watch(self.fd)

    def data_received(self, data: bytes) -> None:
        activity = self.activity
        if not activity.calls and self.busy is None and not self.reader.pending and self.runner.ask_early(self.conv, data):
            activity.send_now(self.transport, REQ_BODY_FRAME)
        self._handle(data)
        # A call now waits for APISIX's answer (the body, mostly). When no other call is in flight, poll the
        # socket for it a little while instead of going back to sleep: an answer within the window saves the
        # wake-up from epoll, which costs more than the wait on a small VM. Under load some other call is in
        # flight, or a new one waits on another connection (which ends a poll at once), so no CPU goes to waiting.
        wait = self.runner.answer_poll_ns
        while wait and self.conv.pending is not None and activity.calls == 1 and self.fd >= 0 \
                and not self.transport.is_closing():
            activity.flush()  # the question goes out before waiting for its answer
            if self.transport.get_write_buffer_size():
                break
            self.runner.prepare(self.conv)  # in the time the answer takes to come
            data = self._poll_answer(wait)
            if not data:
                return
            self._handle(data)
        if not activity.calls:
            activity.flush()  # nothing else in flight: no other reply of this turn to wait for

    def _poll_answer(self, wait: int) -> bytes:
        """Bytes read from the socket within `wait` ns (b"" when none came, or another connection has data: the
        event loop takes over)."""
        stats = self.runner.stats
        stats.answer_polls += 1
        fd = self.fd
        ready = self.activity.ready.poll
        deadline = time.perf_counter_ns() + wait
        while time.perf_counter_ns() < deadline:
            events = ready(0)
            if not events:
                continue
            if len(events) > 1 or events[0][0] != fd:  # a new call waits elsewhere: serve it, do not spin
                return b""
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:  # reset: the event loop's own read reports it
                return b""
            if data:
                stats.answer_polls_caught += 1
            return data  # b"": APISIX closed the connection, which the event loop sees too
        return b""

    def _handle(self, data: bytes) -> None:
        on_frame = self.runner.on_frame
        conv = self.conv
        transport = self.transport
        try:
            for rpc_type, payload in self.reader.feed(data):
                if self.busy is not None:
                    # APISIX waits for our reply before it sends anything else on this connection
                    log.warning("protocol error: a frame arrived while a reply was being computed; closing the connection")
                    self.busy.cancel()
                    transport.close()
                    return
                out = on_frame(conv, rpc_type, payload)
                if out is None:  # the body request went out early (Runner.ask_early)
                    continue
                if isinstance(out, Deferred):
                    self.busy = asyncio.ensure_future(self._finish(out))
                    continue
                if out is CLOSE or not out:
                    self.activity.flush()  # replies before the close go out first
                    transport.close()
                    return
                self.activity.send(transport, out)
        finally:
            conv.asked = False  # consumed by the call it was for; never left for a later frame
            self._count(conv.pending is not None or self.busy is not None)

    def _count(self, active: bool) -> None:
        """Keep activity.calls in step with whether this connection has a call in flight."""
        if active != self.active:
            self.active = active
            self.activity.calls += 1 if active else -1

    async def _finish(self, deferred: Deferred) -> None:
        """Await a deferred reply and write it (an internal failure answers SERVICE_UNAVAILABLE)."""
        from llm_router.gateways.apisix import encode

        try:
            frame = await deferred.awaitable
        except asyncio.CancelledError:
            return
        except Exception:
            self.runner.stats.internal_errors += 1
            log.exception("deferred reply failed")
            frame = encode.SERVICE_UNAVAILABLE_FRAME
        finally:
            self.busy = None
            self._count(self.conv.pending is not None and self.fd >= 0)  # fd -1: the connection is gone
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def connection_lost(self, exc) -> None:
        self.conns.discard(self)
        self.fd = -1
        self._count(False)
        if self.busy is not None:  # APISIX gave up (its 60 s timeout) or went away: stop the calls
            self.busy.cancel()

    @property
    def idle(self) -> bool:
        """No call half-way through and no partial frame buffered."""
        return self.conv.pending is None and not self.reader.pending and self.busy is None


@dataclass
class Options:
    """How one runner process serves."""

    plugin_name: str = PLUGIN_NAME
    ttl: float = 3600 * 1.2
    token_base: int | None = None
    index: int = 0
    stride: int = 1
    shared_dir: str | None = None
    metrics_listen: str | None = None  # served by the first process only


def build_runner(cfg: Config, opts: Options, runtime_factory: Callable[[Config], Runtime] = Runtime) -> Runner:
    """Runtime + token store + runner for one process."""
    tokens = TokenStore(ttl=opts.ttl, base=opts.token_base, index=opts.index, stride=opts.stride,
                        shared_dir=opts.shared_dir)
    runtime = runtime_factory(worker_config(cfg, opts.index))
    redact_secrets(runtime.credentials.values())
    return Runner(runtime, tokens, plugin_name=opts.plugin_name)


def worker_config(cfg: Config, index: int) -> Config:
    """The config as worker `index` runs it: one /metrics endpoint per runner, served by the first process."""
    if index > 0 and cfg.metrics.get("listen"):
        return cfg.model_copy(update={"metrics": {k: v for k, v in cfg.metrics.items() if k != "listen"}})
    return cfg


async def _serve_async(sock: socket.socket, runner: Runner, metrics_listen: str | None = None,
                       ready: Callable[[asyncio.Event], None] | None = None, config_path: str | None = None,
                       index: int = 0, sighup_pending: Callable[[], bool] | None = None,
                       peers_dir: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT (main thread) or until the event handed to `ready` is set; SIGHUP reloads the config.

    With `peers_dir` (several processes on one socket), the processes hand each other the response calls, stream
    usage logs and metrics that belong to another (gateways.apisix.peers)."""
    loop = asyncio.get_running_loop()
    conns: set[RunnerProtocol] = set()
    activity = Activity(runner.stats)
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reload_config = sighup_reloader(runner.runtime, config_path, lambda cfg: worker_config(cfg, index))

        def reload() -> None:
            reload_config().add_done_callback(lambda _: runner.apply_settings())

        loop.add_signal_handler(signal.SIGHUP, reload)
        if sighup_pending is not None and sighup_pending():
            reload()  # a SIGHUP that came while starting
    peers = await start_peers(runner, peers_dir, index == 0) if peers_dir else None
    # The usage log is served whatever the setting, so a reload can turn it on; with it off, posts get a 404.
    runner.runtime.usage_log = usage_log_handler(runner, loop)
    sweeper = loop.create_task(_sweep_parked(runner))
    await runner.runtime.start(metrics_listen=metrics_listen)
    server = await loop.create_unix_server(lambda: RunnerProtocol(runner, conns, activity), sock=sock, backlog=BACKLOG)
    runner.runtime.serving = True
    if ready:
        ready(stop)
    await stop.wait()
    runner.runtime.serving = False
    server.close()
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    while True:
        activity.flush()  # replies of this turn reach APISIX before their connections close
        for proto in [c for c in conns if c.idle]:
            proto.transport.close()
        if not conns or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.01)  # let calls half-way through get their last frame
    for proto in list(conns):
        if proto.busy is not None:
            proto.busy.cancel()
        proto.transport.abort()
    sweeper.cancel()
    if peers is not None:
        await peers.stop()
        runner.peers = None
    runner.flush_parked()
    await runner.runtime.stop()
    activity.ready.close()
    log.info("runner %d stopped: %s", os.getpid(), runner.stats)


def usage_log_handler(runner: Runner, loop: asyncio.AbstractEventLoop) -> Callable[..., tuple[int, bytes]]:
    """POST /v1/usage-log as the metrics listener's thread relays it: the entries go to the runner on its own loop."""
    from llm_router.gateways.apisix.usage_log import UsageLogError, handle, key_from_env

    key = key_from_env()
    if not key and runner.stream_usage:
        log.warning("server.apisix_stream_usage is on without $LLM_ROUTER_USAGE_LOG_KEY: anyone who reaches the "
                    "metrics listener can post usage for a stream; set the key (apisix enable --stream-usage passes it "
                    "to http-logger)")

    def take(logs) -> None:
        loop.call_soon_threadsafe(take_usage, runner, logs)

    def serve(method, size, read, authorization=None) -> tuple[int, bytes]:
        if not runner.stream_usage:
            return 404, UsageLogError(404, "stream usage is off: set server.apisix_stream_usage: true (a SIGHUP "
                                           "reloads it)").body()
        return handle(method, size, read, take, authorization=authorization, key=key)

    return serve


def take_usage(runner: Runner, logs: list) -> None:
    """Logged streams: each to the process that routed it (this one's to its runner)."""
    peers = runner.peers
    if peers is None:
        runner.take_usage(logs)
        return
    mine: list = []
    theirs: dict[str, list] = {}
    for entry in logs:
        owner = peers.owner(entry.request_id)
        if owner is None:
            mine.append(entry)
        else:
            theirs.setdefault(owner, []).append(entry)
    for owner, batch in theirs.items():
        peers.send_to(owner, "usage", batch)
    if mine:
        runner.take_usage(mine)


async def start_peers(runner: Runner, directory: str, serves_metrics: bool):
    """This process's link to the others; the one serving /metrics reports every process's counters."""
    from llm_router.gateways.apisix.peers import Peers, prefix_of, snapshot

    runtime = runner.runtime
    telemetry = runtime.telemetry

    def metrics(_) -> list:
        m = runtime.metrics
        return snapshot(m.collect_own()) if m is not None else []

    def model_of(request_id: str) -> str | None:
        answered = telemetry.answered if telemetry is not None else None
        return answered.get(request_id) if answered is not None else None

    peers = Peers(directory, prefix_of(runtime.new_request_id()),
                  {"resp": lambda m: runner.peer_response(*m), "usage": runner.take_usage, "metrics": metrics,
                   "model_of": model_of})
    await peers.start()
    log.info("runner process %s serves the other processes on %s", peers.prefix, peers.path)
    runner.peers = peers
    if serves_metrics and runtime.metrics is not None:
        runtime.metrics.merge = peers.merged
    if runtime.affinity_sync is None and runtime.metrics is not None:  # no Redis: the processes share them directly
        m = runtime.metrics
        peers.share("affinity", runtime.router.affinity, lambda what, n: m.affinity_shared.inc((what,), n))
        peers.share("reasoning", runtime.router.reasoning, lambda what, n: m.reasoning_shared.inc((what,), n))
    if telemetry is not None and runtime.config.metrics.get("feedback_log"):
        # every process remembers who answered; the one serving /v1/feedback asks the others for theirs
        telemetry.answered = AnsweredAnywhere(peers) if serves_metrics else {}
    return peers


class AnsweredAnywhere(dict):
    """Request id -> the model that answered it: this process's, else the process that routed the request."""

    def __init__(self, peers) -> None:
        super().__init__()
        self.peers = peers

    def get(self, request_id, default=None):
        found = super().get(request_id)
        if found is not None:
            return found
        owner = self.peers.owner(request_id) if isinstance(request_id, str) else None
        if owner is None:
            return default
        try:
            return self.peers.ask_blocking(owner, "model_of", request_id) or default
        except Exception as exc:
            log.warning("could not ask runner process %s who answered %s: %s", owner, request_id, exc)
            return default


async def _sweep_parked(runner: Runner, every_s: float = 5.0) -> None:
    """Account streams whose usage log is overdue, also while no traffic comes."""
    while True:
        await asyncio.sleep(every_s)
        runner.sweep(runner.clock())


def run_process(sock: socket.socket, runner: Runner, metrics_listen: str | None = None, config_path: str | None = None,
                index: int = 0, sighup_pending: Callable[[], bool] | None = None, peers_dir: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT in this process."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    # config, catalog and models are long-lived: keep them out of every garbage collection
    gc.collect()
    gc.freeze()
    try:
        loop.run_until_complete(_serve_async(sock, runner, metrics_listen, config_path=config_path, index=index,
                                             sighup_pending=sighup_pending, peers_dir=peers_dir))
    finally:
        loop.close()


def setup_logging(log_file: str | None) -> None:
    """Log to a file (APISIX copies stdout/stderr into its error.log) or stderr."""
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("llm_router")
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LLM_ROUTER_LOG_LEVEL", "INFO").upper())
    root.propagate = False


def redact_secrets(values: list[str]) -> None:
    """Mask these values in every llm_router log line (defence in depth: nothing logs them)."""
    if values:
        for handler in logging.getLogger("llm_router").handlers:
            handler.addFilter(_Redact(values))


class _Redact(logging.Filter):
    """Replaces secret values in log records (defence in depth: the runner does not log them)."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


def server_problem(cfg: Config) -> str | None:
    """What is wrong with the edge sections (the runner's server settings among them), checked before listening."""
    from llm_router.edge_sections import edge_section_problems

    problems = edge_section_problems(cfg)
    return "; ".join(problems) if problems else None


def serve(args) -> int:
    """Entry point of `llm-router serve --apisix`."""
    sighup_pending = defer_sighup()
    try:
        path = socket_path(getattr(args, "socket", None))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: invalid config {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    problem = server_problem(cfg)
    if problem:
        print(f"error: invalid config: {problem}", file=sys.stderr)
        return 2
    workers = getattr(args, "workers", None)  # --workers and server.workers are checked at least 1 before this
    if workers is None:
        workers = int(cfg.server.get("workers", 1))
    setup_logging(getattr(args, "log_file", None))
    opts = Options(plugin_name=str(cfg.server.get("apisix_plugin_name", PLUGIN_NAME)), ttl=ttl_from_env(),
                   metrics_listen=getattr(args, "metrics", None))
    try:
        sock = bind_socket(path)
    except OSError as exc:
        print(f"error: cannot listen on {path}: {exc.strerror}", file=sys.stderr)
        return 1
    log.info("llm-router APISIX runner listening on unix:%s (%d process%s, token ttl %.0fs, %s)",
             path, workers, "" if workers == 1 else "es", opts.ttl, compiled_build.describe())
    try:
        config_path = getattr(args, "config", None)
        if workers == 1:
            run_process(sock, build_runner(cfg, opts), opts.metrics_listen, config_path, sighup_pending=sighup_pending)
        else:
            _supervise(sock, cfg, opts, workers, config_path, sighup_pending)
    finally:
        sock.close()
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


def _supervise(sock: socket.socket, cfg: Config, opts: Options, workers: int, config_path: str | None = None,
               sighup_pending: Callable[[], bool] | None = None) -> None:
    """Pre-fork workers on the shared socket, share tokens through a private directory, respawn.

    SIGHUP is passed to every worker (each reloads the config itself); the supervisor reads the
    file too, so a worker it respawns later starts with the config the others run. With state in
    memory (the default), one more process holds it for all of them (state.serve_memory), so a
    spend limit counts every process's spend.
    """
    shared = tempfile.mkdtemp(prefix="llm-router-apisix-tokens-")
    base = random.SystemRandom().randrange(1, TOKEN_SPACE)
    children: dict[int, int] = {}  # pid -> worker index (STATE_PROCESS: the one holding the memory state)
    current = {"cfg": cfg}  # what a (re)spawned worker starts with; SIGHUP reads the file again
    stopping = False
    memory = os.path.join(shared, "state.sock") if cfg.state.get("backend", "memory") == "memory" else None

    supervisor = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _exit_with(supervisor)
                if index == STATE_PROCESS:
                    assert memory is not None
                    _hold_state(memory)
                    return
                state.MEMORY_SOCKET = memory
                pending = defer_sighup()  # a SIGHUP while this worker starts is replayed once it serves
                wopts = Options(opts.plugin_name, opts.ttl, base, index, workers, shared)
                run_process(sock, build_runner(current["cfg"], wopts), opts.metrics_listen if index == 0 else None,
                            config_path, index, pending, peers_dir=shared)
            except BaseException:
                log.exception("%s failed", _name(index))
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid, index in list(children.items()):
            if index != STATE_PROCESS:  # the state outlives the workers: they write their last spend to it
                _kill(pid, signal.SIGTERM)

    def on_hup(signum, frame) -> None:
        try:
            current["cfg"] = load_config(config_path)
        except ConfigError as exc:
            log.error("config reload refused in the supervisor: %s", "; ".join(exc.problems))
        for pid, index in list(children.items()):
            if index != STATE_PROCESS:
                _kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    if sighup_pending is not None and sighup_pending():
        on_hup(signal.SIGHUP, None)  # one came while starting
    try:
        if memory is not None:
            spawn(STATE_PROCESS)
            _wait_for_socket(memory)
        for i in range(workers):
            if stopping:  # SIGTERM while starting: spawn no more
                break
            spawn(i)
        last_spawn: dict[int, float] = {}
        while children:
            if stopping and set(children.values()) == {STATE_PROCESS}:
                for left in list(children):  # every worker is gone: the state may go too
                    _kill(left, signal.SIGTERM)
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = children.pop(pid, None)
            if index is None or stopping:
                continue
            log.warning("%s (pid %d) exited with status %d; respawning", _name(index), pid, status)
            if time.monotonic() - last_spawn.get(index, 0.0) < 1.0:
                time.sleep(1.0)  # a worker that dies at once must not spin the CPU
            last_spawn[index] = time.monotonic()
            spawn(index)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


STATE_PROCESS = -1  # the supervisor's child that holds the memory state of all workers


def _exit_with(parent: int) -> None:
    """Get SIGTERM when the supervisor dies: APISIX SIGKILLs a runner that has not stopped 1 s after SIGTERM, and
    its children must not serve on, or hold state, without it (Linux; elsewhere they outlive it)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)


def _name(index: int) -> str:
    return "the state process" if index == STATE_PROCESS else f"worker {index}"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _hold_state(path: str) -> None:
    """The state process: serve one memory state to the workers until SIGTERM."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the config is the workers' business

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await state.serve_memory(path, stop)

    asyncio.run(main())


def _wait_for_socket(path: str, timeout: float = 10.0) -> None:
    """Until the state process listens (workers that start earlier would only log a missed first sync)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
