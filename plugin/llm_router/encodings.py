"""Content codings of provider answers: which ones the router can read usage from, and reading them.

Usage is read from the answer's body (JSON or SSE). The router can inflate gzip and deflate, not
brotli or zstd, so routed requests ask the provider only for codings it can read: a client that
accepts `br, gzip` (browsers, curl --compressed, some SDKs) then gets gzip, and its answer is still
accounted from the provider's own usage figures instead of the decision's estimate.
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

READABLE = frozenset(("gzip", "x-gzip", "deflate", "identity"))


@functools.lru_cache(maxsize=512)  # a client sends the same value every time: each is parsed once
def readable_accept_encoding(value: str) -> str | None:
    """The client's accept-encoding restricted to codings the router can read; None when it already is.

    Unreadable codings (br, zstd, compress, `*`) are dropped with their q-values; when nothing is
    left the answer comes uncompressed ("identity").
    """
    kept = []
    changed = False
    for part in value.split(","):
        coding = part.partition(";")[0].strip().lower()
        if not coding:
            continue
        if coding in READABLE:
            kept.append(part.strip())
        else:
            changed = True
    return (", ".join(kept) or "identity") if changed else None


def accept_encoding_override(value: str) -> tuple[tuple[str, str], ...]:
    """The accept-encoding header to send upstream instead of the client's `value`; () when the client's is readable."""
    readable = readable_accept_encoding(value)
    return (("accept-encoding", readable),) if readable is not None else ()


def _decompressor(encoding: str) -> zlib._Decompress | None:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    return None


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A whole gzip/deflate answer decompressed (at most `limit` bytes); identity or unknown codings as
    they are; b"" when it cannot be decompressed."""
    d = _decompressor(encoding)
    if d is None:
        return body
    try:
        return d.decompress(body, limit)
    except zlib.error:
        if encoding == "deflate":  # raw deflate, as some servers send it
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body, limit)
            except zlib.error:
                pass
        return b""


class StreamInflater:
    """Decompresses a gzip/deflate stream piece by piece as it passes (an SSE answer), handing each
    decompressed piece to `sink`; never holds more than one step's output."""

    __slots__ = ("_d", "_head", "_sink", "failed")

    STEP = 1 << 20  # output per decompress call: a small compressed chunk cannot expand without bound at once
    HEAD = 1 << 16  # "deflate" input kept until output proves its framing (zlib-wrapped or raw)

    def __init__(self, encoding: str, sink: Callable[[bytes], None]):
        self._d = _decompressor(encoding)
        # "deflate" may arrive raw instead of zlib-wrapped: its first bytes are kept to decode them again
        self._head: bytes | None = b"" if encoding == "deflate" else None
        self._sink = sink
        self.failed = self._d is None

    def feed(self, chunk: bytes) -> None:
        """Decompress the next piece of the stream; after a decoding error the rest is ignored."""
        d = self._d
        if d is None or self.failed or not chunk:
            return
        if self._head is not None:
            self._head = self._head + chunk if len(self._head) < self.HEAD else None
        data = chunk
        try:
            while data:
                out = d.decompress(data, self.STEP)
                if out:
                    self._head = None
                    self._sink(out)
                data = d.unconsumed_tail
        except zlib.error:
            head, self._head = self._head, None
            if head is None:
                self.failed = True
                return
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            self.feed(head)
