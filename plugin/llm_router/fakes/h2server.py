"""HTTP/2 for the fake providers (negotiated by ALPN over TLS, as the real providers offer it).

The same handlers answer as over HTTP/1.1: `H2Responder` has `Responder`'s methods, with a cut
connection mapped to a stream reset (RST_STREAM), which is how an HTTP/2 provider fails mid-answer.
"""
from __future__ import annotations

import asyncio
import logging

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from llm_router.fakes.http import MAX_BODY, Handler, Request

log = logging.getLogger("llm_router.fakes")

# Connection-specific headers HTTP/2 forbids (RFC 9113, 8.2.2); an HTTP/1.1 handler may add them.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})


class _Conn:
    """One HTTP/2 connection: the h2 state machine, its socket and the flow-control waiters."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.writer = writer
        self.window_open = asyncio.Event()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        self.flush()
        await self.writer.drain()


class H2Responder:
    """Writes one response on one stream: whole (`send`) or streamed (`start`, `write`, `end`)."""

    __slots__ = ("conn", "stream_id", "started", "chunked", "keep_alive")

    def __init__(self, conn: _Conn, stream_id: int):
        self.conn = conn
        self.stream_id = stream_id
        self.started = False
        self.chunked = False
        self.keep_alive = True

    def _headers(self, status: int, headers: list[tuple[str, str]], *, end: bool = False) -> None:
        fields = [(":status", str(status)), *((k.lower(), v) for k, v in headers if k.lower() not in _HOP_BY_HOP)]
        self.started = True
        self.conn.h2.send_headers(self.stream_id, fields, end_stream=end)

    async def _data(self, data: bytes, *, end: bool) -> None:
        """Send data within the peer's flow-control window, waiting for WINDOW_UPDATE when it is full."""
        h2c, sid = self.conn.h2, self.stream_id
        view = memoryview(data)
        while view:
            room = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
            if room <= 0:
                self.conn.window_open.clear()
                await self.conn.drain()
                await self.conn.window_open.wait()
                continue
            h2c.send_data(sid, view[:room].tobytes(), end_stream=end and len(view) <= room)
            view = view[room:]
            await self.conn.drain()
        if end and not data:
            h2c.end_stream(sid)
            await self.conn.drain()

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._headers(status, [*headers, ("content-length", str(len(body)))], end=not body)
        if body:
            await self._data(body, end=True)
        else:
            await self.conn.drain()

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.chunked = True
        self._headers(status, headers)
        await self.conn.drain()

    async def write(self, data: bytes) -> None:
        if data:
            await self._data(data, end=False)

    async def end(self) -> None:
        await self._data(b"", end=True)

    async def send_part(self, status: int, headers: list[tuple[str, str]], body: bytes, keep: int) -> None:
        """Announce the whole body, send only its first `keep` bytes, then reset the stream."""
        self._headers(status, [*headers, ("content-length", str(len(body)))])
        await self._data(body[:keep], end=False)
        self.abort()

    def abort(self) -> None:
        """Reset the stream now: the peer sees the answer break off."""
        self.started = True
        try:
            self.conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.H2Error:
            pass  # the stream already ended
        self.conn.flush()


async def _answer(handler: Handler, conn: _Conn, req: Request, stream_id: int) -> None:
    responder = H2Responder(conn, stream_id)
    try:
        await handler(req, responder)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except h2.exceptions.StreamClosedError:
        pass  # the client reset the stream (it gave up): nothing more to send
    except Exception:
        log.exception("fake handler failed for %s %s (HTTP/2)", req.method, req.path)
        if not responder.started:
            await responder.send(500, [("content-type", "text/plain")], b"fake provider bug")
        else:
            responder.abort()


async def serve_h2_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer HTTP/2 streams on one connection until the peer closes it (each stream in its own task)."""
    conn = _Conn(writer)
    conn.h2.initiate_connection()
    pending: dict[int, tuple[dict[str, str], bytearray]] = {}
    tasks: set[asyncio.Task] = set()
    try:
        await conn.drain()
        while True:
            data = await reader.read(65536)
            if not data:
                break
            try:
                events = conn.h2.receive_data(data)
            except h2.exceptions.ProtocolError:
                conn.flush()  # h2 queued a GOAWAY naming the error
                break
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    headers: dict[str, str] = {}
                    for raw_name, raw_value in ev.headers or ():
                        name = raw_name if isinstance(raw_name, str) else raw_name.decode("latin-1")
                        value = raw_value if isinstance(raw_value, str) else raw_value.decode("latin-1")
                        key = "host" if name == ":authority" else name
                        headers[key] = f"{headers[key]}, {value}" if key in headers else value
                    pending[ev.stream_id] = (headers, bytearray())
                elif isinstance(ev, h2.events.DataReceived):
                    conn.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    got = pending.get(ev.stream_id)
                    if got is not None:
                        got[1].extend(ev.data or b"")
                        if len(got[1]) > MAX_BODY:
                            pending.pop(ev.stream_id)
                            conn.h2.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                elif isinstance(ev, h2.events.StreamEnded):
                    got = pending.pop(ev.stream_id, None)
                    if got is not None:
                        hdrs, body = got
                        req = Request(hdrs.pop(":method", ""), hdrs.pop(":path", ""),
                                      {k: v for k, v in hdrs.items() if not k.startswith(":")}, bytes(body), version="2")
                        task = asyncio.create_task(_answer(handler, conn, req, ev.stream_id))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                    conn.window_open.set()
                elif isinstance(ev, h2.events.StreamReset):
                    pending.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return
            await conn.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
