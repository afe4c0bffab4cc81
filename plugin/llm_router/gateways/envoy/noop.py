"""A processor that changes nothing, with the routing service's message pattern: the benchmark's baseline."""
from __future__ import annotations

from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from llm_router.gateways.envoy import wire


class NoopService:
    """Answers every ext_proc message with 'continue', holding the header reply until the body ends."""

    def open(self, metadata: dict[str, str] | None = None) -> "NoopSession":
        return NoopSession()


class NoopSession:
    __slots__ = ("finished", "chunks")

    def __init__(self) -> None:
        self.finished = False
        self.chunks = 0

    def on_message(self, data: bytes) -> list[bytes]:
        req = ProcessingRequest.FromString(data)
        kind = req.WhichOneof("request")
        if kind == "request_headers":
            return [wire.REQUEST_HEADERS_CONTINUE] if req.request_headers.end_of_stream else []
        if kind == "request_body":
            self.chunks += 1
            if not req.request_body.end_of_stream:
                return []
            n, self.chunks = self.chunks, 0
            return [wire.REQUEST_HEADERS_CONTINUE] + [wire.REQUEST_BODY_CONTINUE] * n
        if kind == "response_body":
            return [wire.RESPONSE_BODY_CONTINUE]
        if kind == "response_headers":
            return [wire.field(2, b"")]
        if kind == "request_trailers":
            return [wire.field(5, b"")]
        if kind == "response_trailers":
            return [wire.field(6, b"")]
        return []

    def on_close(self) -> None:
        pass
