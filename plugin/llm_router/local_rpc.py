"""Length-prefixed pickled messages between processes of one runner, over Unix sockets in a private directory."""
from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

LENGTH = struct.Struct("!I")
MAX_MESSAGE = 256 << 20


def frame(message: Any) -> bytes:
    """One message as it goes on the wire."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message from a stream (IncompleteReadError when the other end closed)."""
    size = LENGTH.unpack(await reader.readexactly(LENGTH.size))[0]
    if size > MAX_MESSAGE:
        raise ConnectionError(f"a message of {size} bytes is over the limit of {MAX_MESSAGE}")
    return pickle.loads(await reader.readexactly(size))


def recv_message(s: socket.socket) -> Any:
    """The next message from a blocking socket."""
    return pickle.loads(_recv_exactly(s, LENGTH.unpack(_recv_exactly(s, LENGTH.size))[0]))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = s.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the other process closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
