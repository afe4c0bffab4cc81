"""With `serve --apisix --workers N`: the processes hand each other what reached the wrong one.

APISIX takes a runner connection at random for every call. So a request's response call
(ext-plugin-post-resp), its stream's usage log and the scrape of /metrics often reach another process
than the one that routed the request and holds its state. Each process listens on a Unix socket in the
supervisor's private directory (mode 0700), named by the prefix its request ids start with; a process
that gets another's response sends it there. Messages are pickled: only processes of the same user,
started by the same supervisor from the same code, can reach the directory.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llm_router.local_rpc import frame as _frame
from llm_router.local_rpc import read_message, recv_message

log = logging.getLogger("llm_router.apisix")

ASK_TIMEOUT_S = 58.0  # a retry down the chain may take the orchestrator's whole deadline (55 s); APISIX waits 60 s
SCRAPE_TIMEOUT_S = 2.0  # per process, when /metrics gathers the others' counters
# Gauges that are a process's view of shared state: the aggregate is the most cautious one, not a sum.
MIN_GAUGES = frozenset({"llm_router_budget_remaining_usd"})


def prefix_of(request_id: str) -> str:
    """The process part of a request id (`Runtime.new_request_id`: prefix-counter-random)."""
    return request_id.split("-", 1)[0]


class Peers:
    """This process's end: its own listener, and links to the other processes by their request-id prefix."""

    def __init__(self, directory: str | Path, prefix: str, handlers: dict[str, Callable[[Any], Any]]):
        self.directory = Path(directory)
        self.prefix = prefix
        self.handlers = handlers
        self.path = self.directory / f"peer-{prefix}.sock"
        self._server: asyncio.AbstractServer | None = None
        self._links: dict[str, _Link] = {}
        self._connecting: dict[str, asyncio.Future] = {}  # one connection per process, also while it is being made
        self._tasks: set[asyncio.Task] = set()
        self.tables: dict[str, Callable[[Any], None]] = {}  # shared tables by name: what learns the others' entries
        self._others: list[str] = []
        self._others_at = float("-inf")
        handlers.setdefault("learn", self._learn)

    def owner(self, request_id: str) -> str | None:
        """The other process that routed this request, when it is one of ours and still listening."""
        prefix = prefix_of(request_id)
        if prefix == self.prefix or not prefix:
            return None
        if prefix in self._links or (self.directory / f"peer-{prefix}.sock").exists():
            return prefix
        return None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        try:
            self.path.unlink()
        except OSError:
            pass
        for link in list(self._links.values()):
            link.close()
        self._links.clear()
        for task in list(self._tasks):
            task.cancel()

    # ---- sending -----------------------------------------------------------------------------

    def send(self, request_id: str, kind: str, payload: Any) -> None:
        """Hand `payload` to the process that routed `request_id`; no answer is awaited."""
        self.send_to(prefix_of(request_id), kind, payload)

    def send_to(self, prefix: str, kind: str, payload: Any) -> None:
        task = asyncio.ensure_future(self._call(prefix, kind, payload, False))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not hand a message to another runner process: %s", task.exception())

    async def ask(self, request_id: str, kind: str, payload: Any, timeout: float = ASK_TIMEOUT_S) -> Any:
        """Hand `payload` to the process that routed `request_id` and return its answer."""
        return await asyncio.wait_for(self._call(prefix_of(request_id), kind, payload, True), timeout)

    async def _call(self, prefix: str, kind: str, payload: Any, answer: bool) -> Any:
        link = self._links.get(prefix)
        if link is None or link.closed:
            link = await self._link(prefix)
        return await link.call(kind, payload, answer)

    async def _link(self, prefix: str) -> _Link:
        """The connection to a process, made once: messages sent meanwhile wait for it and keep their order."""
        connecting = self._connecting.get(prefix)
        if connecting is None:
            connecting = self._connecting[prefix] = asyncio.ensure_future(self._connect(prefix))
            connecting.add_done_callback(lambda _: self._connecting.pop(prefix, None))
        return await asyncio.shield(connecting)

    async def _connect(self, prefix: str) -> _Link:
        path = self.directory / f"peer-{prefix}.sock"
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            _gone(path)
            raise
        link = self._links[prefix] = _Link(reader, writer)
        return link

    # ---- receiving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                msg_id, kind, payload = await read_message(reader)
                result = self._run(kind, payload)
                if inspect.isawaitable(result):  # (a compiled runner's coroutines are not asyncio's own type)
                    task = asyncio.ensure_future(self._answer_later(writer, msg_id, result))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif msg_id:
                    writer.write(_frame((msg_id, True, result)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _run(self, kind: str, payload: Any) -> Any:
        handler = self.handlers.get(kind)
        if handler is None:
            log.warning("another runner process sent an unknown message %r", kind)
            return None
        try:
            return handler(payload)
        except Exception:
            log.exception("handling a %s message of another runner process failed", kind)
            return None

    async def _answer_later(self, writer: asyncio.StreamWriter, msg_id: int, pending: Any) -> None:
        try:
            ok, result = True, await pending
        except Exception as exc:
            log.exception("handling a message of another runner process failed")
            ok, result = False, f"{type(exc).__name__}: {exc}"
        if msg_id and not writer.is_closing():
            writer.write(_frame((msg_id, ok, result)))

    # ---- from a thread (the metrics listener) ------------------------------------------------

    def others(self) -> list[str]:
        """The prefixes of the other processes listening now."""
        out = []
        for path in self.directory.glob("peer-*.sock"):
            prefix = path.name[5:-5]
            if prefix != self.prefix:
                out.append(prefix)
        return sorted(out)

    def ask_blocking(self, prefix: str, kind: str, payload: Any = None, timeout: float = SCRAPE_TIMEOUT_S) -> Any:
        """One question to another process over a connection of its own (for threads off the event loop)."""
        path = self.directory / f"peer-{prefix}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                _gone(path)
                raise
            s.sendall(_frame((1, kind, payload)))
            _, ok, result = recv_message(s)
        if not ok:
            raise RuntimeError(result)
        return result

    def share(self, name: str, table: Any, count: Callable[[str, float], None] | None = None) -> None:
        """Share an in-memory table (conversation affinity, kept reasoning) with the other processes, as
        redis_sync does through Redis: what this process adds goes to every other one, batched per loop turn."""
        batch: list[tuple[Any, str]] = []

        def flush() -> None:
            out = batch[:]
            batch.clear()
            for prefix in self.others_cached():
                self.send_to(prefix, "learn", (name, out))
            if count is not None:
                count("sent", len(out))

        def heard(key: Any, value: str) -> None:
            if not batch:
                asyncio.get_running_loop().call_soon(flush)
            batch.append((key, value))

        def learn(payload: tuple[str, list[tuple[Any, str]]]) -> None:
            for key, value in payload[1]:
                table.learn(key, value)
            if count is not None:
                count("received", len(payload[1]))

        table.listener = heard
        self.tables[name] = learn

    def _learn(self, payload: tuple[str, list]) -> None:
        learn = self.tables.get(payload[0])
        if learn is not None:
            learn(payload)

    def others_cached(self, max_age_s: float = 1.0) -> list[str]:
        """`others()`, listed at most once a second (a process that starts later is seen within that)."""
        now = time.monotonic()
        if now - self._others_at > max_age_s:
            self._others, self._others_at = self.others(), now
        return self._others

    def merged(self, own: list[Any]) -> list[Any]:
        """This process's metric families with every other process's folded in (a process that does not answer in
        time is left out, and logged)."""
        others = []
        for prefix in self.others():
            try:
                others.append(self.ask_blocking(prefix, "metrics"))
            except Exception as exc:
                log.warning("/metrics leaves out runner process %s: %s", prefix, exc)
        return merge(own, others)


class _Link:
    """A connection to another process: messages out, answers matched to their questions by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.waiting: dict[int, asyncio.Future] = {}
        self.next_id = 1
        self.closed = False
        self.reading = asyncio.ensure_future(self._read_answers())

    async def call(self, kind: str, payload: Any, answer: bool) -> Any:
        msg_id = 0
        future = None
        if answer:
            msg_id = self.next_id
            self.next_id += 1
            future = self.waiting[msg_id] = asyncio.get_running_loop().create_future()
        self.writer.write(_frame((msg_id, kind, payload)))
        await self.writer.drain()
        if future is None:
            return None
        try:
            return await future
        finally:
            self.waiting.pop(msg_id, None)

    async def _read_answers(self) -> None:
        error: BaseException = ConnectionError("the other runner process closed the connection")
        try:
            while True:
                msg_id, ok, result = await read_message(self.reader)
                future = self.waiting.get(msg_id)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(result)
                    else:
                        future.set_exception(RuntimeError(result))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = ConnectionError(f"the other runner process closed the connection ({exc})")
        except asyncio.CancelledError:
            pass
        finally:
            self.closed = True
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(error)
            self.writer.close()

    def close(self) -> None:
        self.closed = True
        self.reading.cancel()
        self.writer.close()


def _gone(path: Path) -> None:
    """Forget the socket of a process that is gone (a respawned one listens under a new prefix)."""
    try:
        path.unlink()
    except OSError:
        pass


# ---- /metrics over all processes -------------------------------------------------------------

def snapshot(families: Iterable[Any]) -> list[tuple[str, str, str, list[tuple[str, dict, float]]]]:
    """Metric families as plain data (name, type, help, samples) to send to the process serving /metrics."""
    return [(m.name, m.type, m.documentation, [(s.name, dict(s.labels), float(s.value)) for s in m.samples])
            for m in families]


def merge(own: list[Any], others: list[list[tuple[str, str, str, list[tuple[str, dict, float]]]]]) -> list[Any]:
    """One set of families for all processes: counters and histograms summed, gauges at their highest (a model's
    breaker open in any process) or, for what is left of a budget, at their lowest."""
    from prometheus_client.metrics_core import Metric

    order: list[str] = []
    kinds: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple], float]] = {}
    for name, typ, doc, samples in [*snapshot(own), *(fam for snap in others for fam in snap)]:
        if name not in kinds:
            order.append(name)
            kinds[name] = (typ, doc)
            values[name] = {}
        into = values[name]
        pick: Callable[[float, float], float]
        if typ == "gauge":
            pick = min if name in MIN_GAUGES else max
        else:
            pick = _add
        for sample, labels, value in samples:
            key = (sample, tuple(sorted(labels.items())))
            into[key] = pick(into[key], value) if key in into else value
    out = []
    for name in order:
        typ, doc = kinds[name]
        fam = Metric(name, doc, typ)
        for (sample, pairs), value in values[name].items():
            fam.add_sample(sample, dict(pairs), value)
        out.append(fam)
    return out


def _add(a: float, b: float) -> float:
    return a + b

