"""A small asyncio HTTP/1.1 server: keep-alive, content-length or chunked request bodies, streamed replies."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("llm_router.fakes")

MAX_HEAD = 64 << 10
MAX_BODY = 64 << 20
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 529: "Overloaded"}


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    version: str = "1.1"  # "2" when it came over HTTP/2


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Responder:
    """Writes one response: whole (`send`) or streamed (`start`, `write`, `end`)."""

    __slots__ = ("writer", "started", "chunked", "keep_alive")

    def __init__(self, writer: asyncio.StreamWriter, keep_alive: bool):
        self.writer = writer
        self.started = False
        self.chunked = False
        self.keep_alive = keep_alive

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not self.keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.started = True
        self.writer.write(self._head(status, [*headers, ("content-length", str(len(body)))]) + body)
        await self.writer.drain()

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.started = self.chunked = True
        self.writer.write(self._head(status, [*headers, ("transfer-encoding", "chunked")]))
        await self.writer.drain()

    async def write(self, data: bytes) -> None:
        if data:
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def send_part(self, status: int, headers: list[tuple[str, str]], body: bytes, keep: int) -> None:
        """Announce the whole body, send only its first `keep` bytes, then cut the connection."""
        self.started = True
        self.writer.write(self._head(status, [*headers, ("content-length", str(len(body)))]) + body[:keep])
        await self.writer.drain()
        self.abort()

    def abort(self) -> None:
        """Cut the connection now (no terminating chunk): the peer sees a reset or a truncated body."""
        self.started = True
        self.keep_alive = False
        self.writer.transport.abort()


class Reply(Protocol):
    """What a handler writes its response through: `Responder` (HTTP/1.1) or `H2Responder` (HTTP/2)."""

    started: bool
    keep_alive: bool

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def end(self) -> None: ...

    async def send_part(self, status: int, headers: list[tuple[str, str]], body: bytes, keep: int) -> None: ...

    def abort(self) -> None: ...


Handler = Callable[[Request, Reply], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise HttpError(400, "bad request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"bad header line {line[:40]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        size = 0
        while True:
            line = await reader.readline()
            n = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if n == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            size += n
            if size > MAX_BODY:
                raise HttpError(413, "body too large")
            parts.append(await reader.readexactly(n))
            await reader.readline()
        body = b"".join(parts)
    else:
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            raise HttpError(413, "body too large")
        body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body)


async def serve_connection(handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer requests on one connection until the peer closes it (HTTP/2 when TLS negotiated it)."""
    tls = writer.get_extra_info("ssl_object")
    if tls is not None and tls.selected_alpn_protocol() == "h2":
        from llm_router.fakes.h2server import serve_h2_connection

        await serve_h2_connection(handler, reader, writer)
        return
    try:
        while True:
            try:
                req = await _read_request(reader)
            except HttpError as exc:
                r = Responder(writer, keep_alive=False)
                await r.send(exc.status, [("content-type", "text/plain")], str(exc).encode())
                break
            if req is None:
                break
            keep = req.headers.get("connection", "").lower() != "close"
            responder = Responder(writer, keep)
            try:
                await handler(req, responder)
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("fake handler failed for %s %s", req.method, req.path)
                if not responder.started:
                    await responder.send(500, [("content-type", "text/plain")], b"fake provider bug")
                else:
                    break
            if not keep or not responder.keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
