"""ext_proc over grpcio's asyncio server: kept as a measured alternative transport."""
from __future__ import annotations

from collections.abc import Callable

import grpc

from llm_router.gateways.envoy.h2grpc import Deferred, Session

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


class GrpcioServer:
    """Serves ext_proc with grpc.aio on HOST:PORT or unix:PATH."""

    def __init__(self, open_session: Callable[[dict[str, str]], Session]):
        self.open_session = open_session
        self._server: grpc.aio.Server | None = None

    async def _process(self, requests, context):
        session = self.open_session({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        try:
            async for message in requests:
                replies = session.on_message(message)
                if isinstance(replies, Deferred):
                    for reply in replies.now:
                        yield reply
                    replies = await replies.later
                for reply in replies:
                    yield reply
                if session.finished:
                    return
        finally:
            session.on_close()

    async def start(self, address: str) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Process": grpc.stream_stream_rpc_method_handler(self._process),  # no (de)serializers: raw bytes
        })
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers((handler,))
        bound = self._server.add_insecure_port(address if address.startswith("unix:") else address)
        if not bound and not address.startswith("unix:"):
            raise OSError(f"grpcio could not bind {address}")
        await self._server.start()

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
