"""ext-plugin framing: 1 byte RPC type, 24-bit big-endian length, then one flatbuffer."""
from __future__ import annotations

from collections.abc import Iterator

RPC_ERROR = 0
RPC_PREPARE_CONF = 1
RPC_HTTP_REQ_CALL = 2
RPC_EXTRA_INFO = 3
RPC_HTTP_RESP_CALL = 4
RPC_NAMES = {0: "RPC_ERROR", 1: "RPC_PREPARE_CONF", 2: "RPC_HTTP_REQ_CALL", 3: "RPC_EXTRA_INFO", 4: "RPC_HTTP_RESP_CALL"}

HEADER_SIZE = 4
MAX_PAYLOAD = (1 << 24) - 1  # APISIX refuses to send or accept more


class FrameError(Exception):
    """A frame that cannot be sent or parsed."""


def header(rpc_type: int, length: int) -> bytes:
    """The 4-byte frame header."""
    if length > MAX_PAYLOAD:
        raise FrameError(f"payload of {length} bytes exceeds the 24-bit frame limit of {MAX_PAYLOAD} bytes")
    return bytes((rpc_type, length >> 16, (length >> 8) & 0xFF, length & 0xFF))


def frame(rpc_type: int, payload: bytes) -> bytes:
    """A whole frame: header and payload."""
    return header(rpc_type, len(payload)) + payload


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """(rpc type, payload length) of the header at offset."""
    return data[offset], (data[offset + 1] << 16) | (data[offset + 2] << 8) | data[offset + 3]


class FrameReader:
    """Reassembles frames from a byte stream that may split or join them arbitrarily."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Add received bytes; yield every frame now complete as (rpc type, payload)."""
        buf = self._buf
        if not buf:
            # Fast path: whole frames in one read need no copy into the buffer.
            n = len(data)
            pos = 0
            while n - pos >= HEADER_SIZE:
                size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
                end = pos + HEADER_SIZE + size
                if end > n:
                    break
                yield data[pos], data[pos + HEADER_SIZE:end]
                pos = end
            if pos < n:
                buf += data[pos:] if pos else data
            return
        buf += data
        while len(buf) >= HEADER_SIZE:
            size = (buf[1] << 16) | (buf[2] << 8) | buf[3]
            end = HEADER_SIZE + size
            if len(buf) < end:
                return
            rpc_type = buf[0]
            payload = bytes(buf[HEADER_SIZE:end])
            del buf[:end]
            yield rpc_type, payload

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)
