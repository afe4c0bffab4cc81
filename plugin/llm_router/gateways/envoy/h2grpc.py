"""A lean HTTP/2 gRPC server for one kind of peer: Envoy calling ext_proc's Process method.

Why not grpclib/grpcio: per request the processor exchanges a handful of small frames, and in
generic stacks the HTTP/2 machinery (events, state machines, per-stream tasks) costs several
times the routing itself. This server handles frames directly in `data_received`, runs the
synchronous session inline (no task per stream) and writes each turn's replies in one call.

Still a correct HTTP/2 endpoint: connection preface and SETTINGS (ack, initial window, max
frame size), flow control both ways (large replies wait for WINDOW_UPDATE), HPACK decoding with
the `hpack` library (we advertise a zero-size dynamic table, so header blocks repeat byte for
byte and their decoding is cached), CONTINUATION, padding, PING, RST_STREAM, GOAWAY both ways,
and gRPC status trailers (UNIMPLEMENTED for other methods, INTERNAL when a session fails).
"""
from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import hpack

log = logging.getLogger("llm_router.envoy.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PROCESS_PATH = b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 1, 2, 3, 4, 5

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9

GRPC_OK, GRPC_UNIMPLEMENTED, GRPC_INTERNAL, GRPC_UNAVAILABLE = 0, 12, 13, 14

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
WINDOW_REFILL = 1 << 30  # give back received bytes in big steps: fewer WINDOW_UPDATE frames
MAX_MESSAGE = 64 << 20  # gRPC message size accepted from the peer
MAX_HEADER_BLOCK = 256 << 10
HEADER_CACHE = 256

_FRAME = struct.Struct(">HBBBL")  # 24-bit length split 16+8, type, flags, stream id
_U32 = struct.Struct(">L")

_STATUS_200 = b"\x88"  # :status 200, static table index 8
_CONTENT_TYPE = b"\x0f\x10\x10application/grpc"  # content-type (static index 31), not indexed
_RESPONSE_HEADERS = _STATUS_200 + _CONTENT_TYPE
_TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update to 0: we never index what we send


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (short strings only)."""
    return b"\x00" + bytes((len(name),)) + name + _length(value) + value


def _length(value: bytes) -> bytes:
    n = len(value)
    if n < 127:
        return bytes((n,))
    out = bytearray((127,))
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def _grpc_message(text: str) -> bytes:
    """grpc-message value: percent-encoded as the gRPC spec asks."""
    out = []
    for b in text.encode("utf-8")[:512]:
        out.append(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}")
    return "".join(out).encode()


def trailers_block(status: int, message: str = "", *, with_headers: bool = False) -> bytes:
    """The header block ending a gRPC response (trailers-only when with_headers)."""
    block = _RESPONSE_HEADERS if with_headers else b""
    block += _literal(b"grpc-status", str(status).encode())
    if message:
        block += _literal(b"grpc-message", _grpc_message(message))
    return block


_OK_TRAILERS = trailers_block(GRPC_OK)


class Deferred:
    """A session's reply that needs awaiting (the processor calls models itself, e.g. a cascade).

    `now` is sent at once (e.g. a message-timeout extension); `later` is awaited and its replies
    sent when it finishes; then the stream ends if the session is finished. A stream closed by
    Envoy meanwhile cancels `later`.
    """

    __slots__ = ("now", "later")

    def __init__(self, now: list[bytes], later: Coroutine[Any, Any, list[bytes]]):
        self.now = now
        self.later = later


class Session(Protocol):
    """What a service gives the transport for one gRPC stream."""

    finished: bool

    def on_message(self, data: bytes) -> list[bytes] | Deferred: ...

    def on_close(self) -> None: ...


class ProtocolError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class _Stream:
    __slots__ = ("sid", "session", "parts", "have", "need", "send_window", "pending", "headers_sent",
                 "remote_closed", "local_closed", "recv_consumed", "end_after", "task")

    def __init__(self, sid: int, session: Session | None, send_window: int):
        self.sid = sid
        self.session = session
        self.parts: list[bytes] = []
        self.have = 0
        self.need = -1
        self.send_window = send_window
        self.pending: list[bytes] = []  # DATA payload waiting for flow-control window
        self.headers_sent = False
        self.remote_closed = False
        self.local_closed = False
        self.recv_consumed = 0
        self.end_after: bytes | None = None  # trailers block to send once pending data is out
        self.task: asyncio.Task | None = None  # a Deferred reply being awaited


class H2GrpcProtocol(asyncio.Protocol):
    """One HTTP/2 connection from Envoy."""

    def __init__(self, server: "H2GrpcServer"):
        self.server = server
        self.open_session = server.open_session
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.preface = False
        self.streams: dict[int, _Stream] = {}
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self.header_cache: dict[tuple[int, bytes], tuple[bytes, dict[str, str], bool]] = {}
        self.peer_max_frame = DEFAULT_FRAME
        self.peer_window = DEFAULT_WINDOW  # peer's SETTINGS_INITIAL_WINDOW_SIZE
        self.conn_window = DEFAULT_WINDOW  # what we may still send on the connection
        self.recv_unacked = 0
        self.continuation: tuple[int, int, list[bytes]] | None = None
        self.last_sid = 0
        self.goaway = False  # we sent GOAWAY: no new streams
        self.peer_goaway = False
        self.first_block = True
        self.out: list[bytes] = []
        self.blocked: set[_Stream] = set()
        self.half_closed: list[_Stream] = []
        self.closed = False

    # ---- connection -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        settings = b"".join(struct.pack(">HL", k, v) for k, v in (
            (S_HEADER_TABLE_SIZE, 0), (S_ENABLE_PUSH, 0), (S_INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (S_MAX_CONCURRENT_STREAMS, self.server.max_streams)))
        transport.write(_frame(SETTINGS, 0, 0, settings) + _frame(WINDOW_UPDATE, 0, 0, _U32.pack(MAX_WINDOW - DEFAULT_WINDOW)))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server.connections.discard(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._close_session(stream)
        self.server._maybe_idle()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except ProtocolError as exc:
            log.warning("HTTP/2 protocol error from peer: %s", exc)
            self._fail(exc.code)
            return
        except Exception:
            log.exception("HTTP/2 connection failed")
            self._fail(INTERNAL_ERROR)
            return
        if self.half_closed:
            self._finish_half_closed()
        if self.out:
            out, self.out = self.out, []
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if self.goaway and not self.streams:
            self.transport.close()

    def _fail(self, code: int) -> None:
        self.out.clear()
        self.transport.write(_frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(code)))
        self.transport.close()

    def shutdown(self) -> None:
        """Graceful close: GOAWAY, finish the streams in flight, then close."""
        if self.closed or self.goaway:
            return
        self.goaway = True
        self.transport.write(_frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(NO_ERROR)))
        if not self.streams:
            self.transport.close()

    # ---- frames in --------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        if not self.preface:
            if len(buf) < 24:
                if not PREFACE.startswith(buf):
                    raise ProtocolError(PROTOCOL_ERROR, "bad connection preface")
                self.buf = buf
                return
            if buf[:24] != PREFACE:
                raise ProtocolError(PROTOCOL_ERROR, "bad connection preface")
            self.preface = True
            pos = 24
        end = len(buf)
        unpack = _FRAME.unpack_from
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(buf, pos)
            length = (hi << 8) | lo
            if length > DEFAULT_FRAME:
                raise ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
            stop = pos + 9 + length
            if stop > end:
                break
            payload = buf[pos + 9:stop]
            pos = stop
            sid &= 0x7FFFFFFF
            if self.continuation is not None and ftype != CONTINUATION:
                raise ProtocolError(PROTOCOL_ERROR, "expected CONTINUATION")
            if ftype == DATA:
                self._on_data(sid, flags, payload)
            elif ftype == HEADERS:
                self._on_headers(sid, flags, payload)
            elif ftype == WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif ftype == RST_STREAM:
                self._on_rst(sid, payload)
            elif ftype == SETTINGS:
                self._on_settings(sid, flags, payload)
            elif ftype == PING:
                if sid != 0 or length != 8:
                    raise ProtocolError(PROTOCOL_ERROR if sid else FRAME_SIZE_ERROR, "bad PING")
                if not flags & ACK:
                    self.out.append(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                self.peer_goaway = True
            elif ftype == CONTINUATION:
                self._on_continuation(sid, flags, payload)
            elif ftype == PUSH_PROMISE:
                raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # PRIORITY and unknown frame types are ignored, as RFC 9113 allows.
        self.buf = buf[pos:] if pos < end else b""

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self.recv_unacked += length
        if self.recv_unacked >= WINDOW_REFILL:
            self.out.append(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_unacked)))
            self.recv_unacked = 0
        if flags & PADDED:
            if not payload or payload[0] >= length:
                raise ProtocolError(PROTOCOL_ERROR, "bad DATA padding")
            payload = payload[1:length - payload[0]]
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_sid:
                raise ProtocolError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream we already closed: the bytes were counted above
        if stream.remote_closed:
            self._reset(stream, STREAM_CLOSED)
            return
        stream.recv_consumed += length
        if stream.recv_consumed >= WINDOW_REFILL:
            self.out.append(_frame(WINDOW_UPDATE, 0, sid, _U32.pack(stream.recv_consumed)))
            stream.recv_consumed = 0
        if payload and not stream.local_closed:
            self._feed(stream, payload)
        if flags & END_STREAM:
            stream.remote_closed = True
            self.half_closed.append(stream)

    def _feed(self, stream: _Stream, payload: bytes) -> None:
        """Collect gRPC length-prefixed messages and hand complete ones to the session."""
        if not stream.parts and len(payload) >= 5 and payload[0] == 0:
            # Fast path: the frame holds whole messages.
            n = _U32.unpack_from(payload, 1)[0] + 5
            if n == len(payload):
                self._message(stream, payload[5:])
                return
        stream.parts.append(payload)
        stream.have += len(payload)
        while True:
            if stream.need < 0:
                if stream.have < 5:
                    return
                head = b"".join(stream.parts)
                stream.parts = [head]
                if head[0] != 0:
                    self._end(stream, GRPC_UNIMPLEMENTED, "compressed messages are not supported")
                    return
                size = _U32.unpack_from(head, 1)[0]
                if size > MAX_MESSAGE:
                    self._end(stream, GRPC_INTERNAL, f"message of {size} bytes is too large")
                    return
                stream.need = size + 5
            if stream.have < stream.need:
                return
            whole = b"".join(stream.parts)
            msg, rest = whole[5:stream.need], whole[stream.need:]
            stream.parts = [rest] if rest else []
            stream.have = len(rest)
            stream.need = -1
            self._message(stream, msg)
            if stream.local_closed:
                return

    def _message(self, stream: _Stream, msg: bytes) -> None:
        session = stream.session
        try:
            replies = session.on_message(msg)
        except Exception:
            log.exception("ext_proc session failed on stream %d", stream.sid)
            self._end(stream, GRPC_INTERNAL, "llm-router failed to process the request")
            return
        if isinstance(replies, Deferred):
            if replies.now:
                self._send_messages(stream, replies.now)
            stream.task = asyncio.get_running_loop().create_task(self._deferred(stream, replies.later))
            return
        if replies:
            self._send_messages(stream, replies)
        if session.finished:
            self._end(stream, GRPC_OK)

    async def _deferred(self, stream: _Stream, later: Coroutine[Any, Any, list[bytes]]) -> None:
        """Await a deferred reply, then send it and end the stream as the session says."""
        try:
            replies = await later
        except Exception:
            log.exception("ext_proc session failed on stream %d", stream.sid)
            replies = None
        stream.task = None
        if self.closed or self.streams.get(stream.sid) is not stream or stream.local_closed:
            return  # Envoy gave up on the stream meanwhile
        if replies is None:
            self._end(stream, GRPC_INTERNAL, "llm-router failed to process the request")
        else:
            if replies:
                self._send_messages(stream, replies)
            if stream.session is None or stream.session.finished:
                self._end(stream, GRPC_OK)
        if self.out:
            out, self.out = self.out, []
            self.transport.write(b"".join(out))
        if self.goaway and not self.streams:
            self.transport.close()

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ProtocolError(PROTOCOL_ERROR, "bad HEADERS padding")
            payload = payload[1:len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._on_header_block(sid, flags, payload)
        else:
            self.continuation = (sid, flags, [payload])

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if self.continuation is None or self.continuation[0] != sid:
            raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        parts = self.continuation[2]
        parts.append(payload)
        if sum(len(p) for p in parts) > MAX_HEADER_BLOCK:
            raise ProtocolError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            first_flags = self.continuation[1]
            self.continuation = None
            self._on_header_block(sid, first_flags, b"".join(parts))

    def _decode(self, block: bytes) -> tuple[bytes, dict[str, str], bool]:
        """(:path, metadata, ok) of a header block; cached while the dynamic table stays empty."""
        table = self.decoder.header_table
        key = (table.maxsize, block)
        if not table.dynamic_entries:
            hit = self.header_cache.get(key)
            if hit is not None:
                return hit
        was_empty = not table.dynamic_entries
        try:
            headers = self.decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            raise ProtocolError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        path = b""
        ctype_ok = False
        meta: dict[str, str] = {}
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                ctype_ok = value.startswith(b"application/grpc")
            elif not name.startswith(b":"):
                meta[name.decode("latin-1")] = value.decode("latin-1")
        result = (path, meta, ctype_ok)
        if was_empty and not table.dynamic_entries and table.maxsize == key[0]:
            if len(self.header_cache) >= HEADER_CACHE:
                self.header_cache.clear()
            self.header_cache[key] = result
        return result

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        path, meta, ctype_ok = self._decode(block)
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from the client
            if flags & END_STREAM:
                stream.remote_closed = True
                self.half_closed.append(stream)
            return
        if sid % 2 == 0 or sid <= self.last_sid:
            raise ProtocolError(PROTOCOL_ERROR, f"HEADERS on stream {sid} that cannot be opened")
        self.last_sid = sid
        if self.goaway:
            self.out.append(_frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM)))
            return
        if path != PROCESS_PATH or not ctype_ok:
            stream = _Stream(sid, None, self.peer_window)
            stream.remote_closed = bool(flags & END_STREAM)
            self.streams[sid] = stream
            why = f"unknown method {path.decode('latin-1')!r}" if path != PROCESS_PATH else "content-type must be application/grpc"
            self._end(stream, GRPC_UNIMPLEMENTED, why)
            return
        try:
            session = self.open_session(meta)
        except Exception:
            log.exception("could not open an ext_proc session")
            session = None
        stream = _Stream(sid, session, self.peer_window)
        self.streams[sid] = stream
        if session is None:
            self._end(stream, GRPC_UNAVAILABLE, "llm-router cannot serve this stream")
        elif flags & END_STREAM:
            stream.remote_closed = True
            self.half_closed.append(stream)

    def _on_rst(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4 or sid == 0:
            raise ProtocolError(PROTOCOL_ERROR, "bad RST_STREAM")
        stream = self.streams.pop(sid, None)
        if stream is not None:
            self.blocked.discard(stream)
            self._close_session(stream)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "bad SETTINGS length")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HL", payload, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 16_777_215:
                    raise ProtocolError(PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
        self.out.append(_frame(SETTINGS, ACK, 0))
        self._flush_blocked()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise ProtocolError(PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self.conn_window += inc
            if self.conn_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                return
            if inc == 0:
                self._reset(stream, PROTOCOL_ERROR)
                return
            stream.send_window += inc
            if stream.send_window > MAX_WINDOW:
                self._reset(stream, FLOW_CONTROL_ERROR)
                return
        self._flush_blocked()

    # ---- frames out -------------------------------------------------------------------

    def _send_headers(self, stream: _Stream, block: bytes, flags: int) -> None:
        if self.first_block:
            block = _TABLE_SIZE_ZERO + block
            self.first_block = False
        self.out.append(_frame(HEADERS, flags | END_HEADERS, stream.sid, block))

    def _send_messages(self, stream: _Stream, messages: list[bytes]) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            self._send_headers(stream, _RESPONSE_HEADERS, 0)
        pack = _U32.pack
        data = b"".join(b"\x00" + pack(len(m)) + m for m in messages)
        self._send_data(stream, data)

    def _send_data(self, stream: _Stream, data: bytes) -> None:
        if stream.pending:
            stream.pending.append(data)
            return
        n = len(data)
        if n <= self.peer_max_frame and n <= self.conn_window and n <= stream.send_window:
            self.conn_window -= n
            stream.send_window -= n
            self.out.append(_FRAME.pack(n >> 8, n & 0xFF, DATA, 0, stream.sid) + data)
            return
        stream.pending.append(data)
        self._drain(stream)

    def _drain(self, stream: _Stream) -> None:
        """Send as much pending data as the windows allow; trailers follow the last byte."""
        out = self.out
        while stream.pending:
            room = min(self.conn_window, stream.send_window)
            if room <= 0:
                self.blocked.add(stream)
                return
            data = stream.pending[0]
            size = min(len(data), room, self.peer_max_frame)
            chunk = data[:size]
            if size < len(data):
                stream.pending[0] = data[size:]
            else:
                stream.pending.pop(0)
            self.conn_window -= size
            stream.send_window -= size
            out.append(_frame(DATA, 0, stream.sid, chunk))
        self.blocked.discard(stream)
        if stream.end_after is not None:
            block, stream.end_after = stream.end_after, None
            self._send_headers(stream, block, END_STREAM)
            self._after_local_close(stream)

    def _flush_blocked(self) -> None:
        if self.blocked:
            for stream in list(self.blocked):
                if stream.sid in self.streams:
                    self._drain(stream)
                else:
                    self.blocked.discard(stream)

    def _end(self, stream: _Stream, status: int, message: str = "") -> None:
        """End our side of a gRPC stream with a status (after any data still queued)."""
        if stream.local_closed:
            return
        stream.local_closed = True
        stream.parts = []
        if status == GRPC_OK and stream.headers_sent:
            block = _OK_TRAILERS
        else:
            block = trailers_block(status, message, with_headers=not stream.headers_sent)
        stream.headers_sent = True
        if stream.pending:
            stream.end_after = block
            return
        self._send_headers(stream, block, END_STREAM)
        self._after_local_close(stream)

    def _after_local_close(self, stream: _Stream) -> None:
        if stream.remote_closed and self.streams.pop(stream.sid, None) is not None:
            self._close_session(stream)

    def _reset(self, stream: _Stream, code: int) -> None:
        self.out.append(_frame(RST_STREAM, 0, stream.sid, _U32.pack(code)))
        if self.streams.pop(stream.sid, None) is not None:
            self.blocked.discard(stream)
            self._close_session(stream)

    def _finish_half_closed(self) -> None:
        """Streams the peer ended: end ours with OK unless the peer also reset them."""
        done, self.half_closed = self.half_closed, []
        for stream in done:
            if stream.sid not in self.streams:
                continue
            if stream.local_closed:
                if stream.end_after is None:
                    self._after_local_close(stream)
            elif stream.task is None:  # a deferred reply ends the stream itself
                self._end(stream, GRPC_OK)

    def _close_session(self, stream: _Stream) -> None:
        if stream.task is not None:
            stream.task.cancel()
            stream.task = None
        session, stream.session = stream.session, None
        if session is not None:
            try:
                session.on_close()
            except Exception:
                log.exception("ext_proc session close failed on stream %d", stream.sid)


class H2GrpcServer:
    """Serves ext_proc over TCP or a Unix socket with H2GrpcProtocol connections."""

    def __init__(self, open_session: Callable[[dict[str, str]], Session], *, max_streams: int = 100_000):
        self.open_session = open_session
        self.max_streams = max_streams
        self.connections: set[H2GrpcProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self._idle: asyncio.Event | None = None

    async def start(self, address: str) -> Any:
        """Listen on HOST:PORT or unix:PATH; returns the asyncio server."""
        loop = asyncio.get_running_loop()
        factory = lambda: H2GrpcProtocol(self)  # noqa: E731
        if address.startswith("unix:"):
            self._server = await loop.create_unix_server(factory, path=address[5:])
        else:
            host, _, port = address.rpartition(":")
            self._server = await loop.create_server(factory, host=host.strip("[]") or "127.0.0.1", port=int(port))
        return self._server

    def _maybe_idle(self) -> None:
        if self._idle is not None and not self.connections:
            self._idle.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, GOAWAY every connection, wait for streams in flight (bounded)."""
        if self._server is not None:
            self._server.close()
        self._idle = asyncio.Event()
        for conn in list(self.connections):
            conn.shutdown()
        self._maybe_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
