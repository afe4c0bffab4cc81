"""ext_proc over grpclib (pure-Python asyncio gRPC): kept as a measured alternative transport."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpclib.const
from grpclib.encoding.base import CodecBase
from grpclib.server import Server

from llm_router.gateways.envoy.h2grpc import Deferred, Session

log = logging.getLogger("llm_router.envoy.grpclib")
SERVICE_METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


class RawCodec(CodecBase):
    """Messages stay bytes: sessions parse and build them themselves."""

    __content_subtype__ = "proto"

    def encode(self, message: bytes, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


class _Handler:
    def __init__(self, open_session: Callable[[dict[str, str]], Session]):
        self.open_session = open_session

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {SERVICE_METHOD: grpclib.const.Handler(self.process, grpclib.const.Cardinality.STREAM_STREAM, bytes, bytes)}

    async def process(self, stream) -> None:
        session = self.open_session({k: v for k, v in stream.metadata.items() if isinstance(v, str)})
        try:
            async for message in stream:
                replies = session.on_message(message)
                if isinstance(replies, Deferred):
                    for reply in replies.now:
                        await stream.send_message(reply)
                    replies = await replies.later
                for reply in replies:
                    await stream.send_message(reply)
                if session.finished:
                    return
        finally:
            session.on_close()


class GrpclibServer:
    """Serves ext_proc with grpclib on HOST:PORT or unix:PATH."""

    def __init__(self, open_session: Callable[[dict[str, str]], Session]):
        self._server = Server([_Handler(open_session)], codec=RawCodec())

    async def start(self, address: str) -> None:
        if address.startswith("unix:"):
            await self._server.start(path=address[5:])
        else:
            host, _, port = address.rpartition(":")
            await self._server.start(host.strip("[]") or "127.0.0.1", int(port))

    async def stop(self, grace: float = 5.0) -> None:
        self._server.close()
        await self._server.wait_closed()
