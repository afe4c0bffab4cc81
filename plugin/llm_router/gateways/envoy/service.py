"""The routing ext_proc service: ProcessingRequest in, ProcessingResponse bytes out, per gRPC stream.

Transport-neutral: a transport (our HTTP/2 one, grpclib or grpcio) opens a Session per gRPC
stream, hands it each message and writes back what it returns. The session only translates
between ext_proc and `Runtime`; routing happens in the core.

Expected filter setup (see bootstrap.py): request headers SEND, request body STREAMED with
send_body_without_waiting_for_header_response (one round trip: the header reply is held until
the body is complete), response headers SKIP, response body STREAMED, response_attributes
["response.code"], request_attributes ["xds.route_metadata"], receiving namespace "llm_router",
forwarding namespace "llm_router.response" (rate-limit headers copied by header_to_metadata).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from llm_router.accounting import SSEUsage, Usage, usage_from_json
from llm_router.decision import RouteError
from llm_router.gateways.envoy import wire
from llm_router.gateways.envoy.route_conf import RouteConfCache
from llm_router.runtime import Exchange, Refusal, Runtime

log = logging.getLogger("llm_router.envoy")

FILTER_ATTRS = "envoy.filters.http.ext_proc"
ROUTE_ATTR = "xds.route_metadata"
STATUS_ATTR = "response.code"
RESPONSE_NAMESPACE = "llm_router.response"  # rate-limit response headers, copied by header_to_metadata
METADATA_NAMESPACE = "llm_router"
NO_RESPONSE = 0  # status reported when the stream ended before any upstream response was seen
# Marks our own local replies, so Envoy's local_reply_config leaves their OpenAI-format body alone.
LOCAL_REPLY_KEY = "local_reply"

_STREAM_MODES = ("request_headers", "request_body", "response_headers", "response_body", "request_trailers",
                 "response_trailers")


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How the routing service treats requests and responses."""

    observe_responses: bool = True  # read status and usage from responses (accounting, health)
    max_body_bytes: int | None = None  # request body limit; None = each policy's max_body_bytes
    max_json_response_bytes: int = 4 << 20  # JSON answers above this are not scanned for usage
    metadata_namespace: str = METADATA_NAMESPACE


class Services:
    """Picks the service for a gRPC stream by its `x-llm-router-service` metadata (default: routing).

    Envoy sets that header through the filter's grpc_service.initial_metadata, so one processor can
    serve the routing filter and, later, a per-attempt upstream filter on the same socket.
    """

    HEADER = "x-llm-router-service"

    def __init__(self, services: dict[str, Callable[[dict[str, str]], Any]], default: str = "route"):
        self.services = services
        self.default = services[default]

    def open(self, metadata: dict[str, str] | None = None) -> Any:
        name = metadata.get(self.HEADER) if metadata else None
        if name is None:
            return self.default(metadata)
        found = self.services.get(name)
        if found is None:
            raise LookupError(f"no ext_proc service {name!r} (known: {sorted(self.services)})")
        return found(metadata)


class RoutingService:
    """Routes each LLM request of a stream through `Runtime`; one Session per gRPC stream."""

    def __init__(self, runtime: Runtime, options: ServiceOptions | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.options = options or ServiceOptions()
        self.clock = clock
        self.route_confs = RouteConfCache(METADATA_NAMESPACE)
        self.route_header = runtime.route_header
        self.mutations = wire.MutationCache()
        limits = getattr(runtime, "limits", None)
        self.wants_headers = bool(limits is not None and getattr(limits, "rules", None))
        self.local_reply_metadata = wire.dynamic_metadata(self.options.metadata_namespace, {LOCAL_REPLY_KEY: "llm-router"})

    def open(self, metadata: dict[str, str] | None = None) -> "Session":
        """A new session for one gRPC stream (one HTTP request through Envoy)."""
        return Session(self)


class Session:
    """One HTTP request/response as seen over one ext_proc stream."""

    __slots__ = ("svc", "ex", "path", "route_conf", "chunks", "messages", "size", "limit", "finished", "routed",
                 "status", "sse", "json", "json_size", "reported", "passthrough", "headers", "rate_headers")

    def __init__(self, svc: RoutingService):
        self.svc = svc
        self.ex: Exchange | None = None
        self.path = ""
        self.route_conf: Any = None
        self.chunks: list[bytes] = []
        self.messages = 0  # request body messages received (each gets exactly one reply)
        self.size = 0
        self.limit = 0
        self.finished = False  # the server should end the gRPC stream (OK) after sending replies
        self.routed = False
        self.passthrough = False
        self.status = NO_RESPONSE
        self.sse: SSEUsage | None = None
        self.json: list[bytes] | None = None
        self.json_size = 0
        self.reported = False
        self.headers: list[tuple[str, str]] | None = None  # client headers, kept only when spend limits need them
        self.rate_headers: list[tuple[str, str]] | None = None

    # ---- messages ---------------------------------------------------------------------

    def on_message(self, data: bytes) -> list[bytes]:
        """Replies (serialized ProcessingResponse) for one ProcessingRequest, in order."""
        req = ProcessingRequest.FromString(data)
        kind = req.WhichOneof("request")
        if kind == "request_body":
            return self._request_body(req.request_body)
        if kind == "request_headers":
            return self._request_headers(req)
        if kind == "response_body":
            return self._response_body(req)
        if kind == "response_headers":
            return self._response_headers(req)
        if kind == "request_trailers":
            return [wire.field(5, b"")]
        if kind == "response_trailers":
            return [wire.field(6, b"")]
        return []

    def _request_headers(self, req: ProcessingRequest) -> list[bytes]:
        svc = self.svc
        runtime = svc.runtime
        path = ""
        client_route = False
        route_name = svc.route_header
        header_list = req.request_headers.headers.headers
        for h in header_list:
            key = h.key
            if key == ":path":
                path = (h.raw_value or h.value.encode()).decode("latin-1")
            elif key == route_name:
                client_route = True
        if svc.wants_headers:
            self.headers = [(h.key, (h.raw_value or h.value.encode()).decode("latin-1")) for h in header_list]
        self.path = path
        if not runtime.handles(path):
            # Not an LLM API: leave it alone, but never let a client pick our routing header.
            self.passthrough = True
            self.finished = True
            if client_route:
                common = wire.common_response(headers=wire.header_mutation(remove=(route_name,)), clear_route_cache=True)
                return [wire.request_headers_reply(common)]
            return [wire.REQUEST_HEADERS_CONTINUE]
        if req.attributes:
            self.route_conf = svc.route_confs.get(req.attributes)
        self.ex = Exchange(request_id=runtime.new_request_id(), route=path, started=svc.clock())
        policy = runtime.policy_for(self.route_conf)
        limit = svc.options.max_body_bytes
        if not isinstance(policy, RouteError):
            limit = policy.conf.max_body_bytes if limit is None else min(limit, policy.conf.max_body_bytes)
        self.limit = limit or (8 << 20)
        if req.request_headers.end_of_stream:
            return self._decide(b"", 0)
        return []  # the header reply waits for the body (one round trip)

    def _request_body(self, body_msg) -> list[bytes]:
        if self.passthrough or self.ex is None:
            return [wire.REQUEST_BODY_CONTINUE]
        self.messages += 1
        chunk = body_msg.body
        if chunk:
            self.size += len(chunk)
            if self.size > self.limit:
                return self._too_large()
            self.chunks.append(chunk)
        if not body_msg.end_of_stream:
            return []
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._decide(body, self.messages)

    def _decide(self, body: bytes, n_chunks: int) -> list[bytes]:
        svc = self.svc
        ex = self.ex
        result = svc.runtime.decide(body, path=self.path, ex=ex, route_conf=self.route_conf, headers=self.headers)
        self.chunks = []
        if isinstance(result, Refusal):
            self.finished = True
            return [wire.immediate_reply(result.status, result.body, result.headers, details="llm_router_refused",
                                         metadata=svc.local_reply_metadata)]
        call = result
        self.routed = True
        headers = (svc.mutations.encode((*call.set_headers, (":path", call.path)), call.remove_headers)
                   + wire.content_length_option(len(call.body)))
        meta = wire.dynamic_metadata(svc.options.metadata_namespace, call.response_headers) if call.response_headers else b""
        out = [wire.request_headers_reply(wire.common_response(headers=headers, clear_route_cache=True), meta)]
        if n_chunks:
            out += [wire.REQUEST_BODY_CLEAR] * (n_chunks - 1)
            out.append(wire.request_body_reply(wire.common_response(body=call.body)))
        if not svc.options.observe_responses:
            self.finished = True
        elif ex.request is not None and ex.request.stream:
            self.sse = SSEUsage()
        else:
            self.json = []
        return out

    def _too_large(self) -> list[bytes]:
        self.finished = True
        self.chunks = []
        error = RouteError(413, f"request body exceeds the limit of {self.limit} bytes", code="request_too_large", field="body")
        ex = self.ex
        ex.error = error
        refusal = self.svc.runtime.refusal(error, ex)
        self.svc.runtime.observer.on_decision(ex)
        return [wire.immediate_reply(refusal.status, refusal.body, refusal.headers, details="llm_router_body_too_large",
                                     metadata=self.svc.local_reply_metadata)]

    def _response_headers(self, req: ProcessingRequest) -> list[bytes]:
        for h in req.response_headers.headers.headers:
            if h.key == ":status":
                self.status = int(h.raw_value or h.value or 0)
                break
        return [wire.field(2, b"")]

    def _response_body(self, req: ProcessingRequest) -> list[bytes]:
        if not self.routed or self.reported:
            return [wire.RESPONSE_BODY_CONTINUE]
        if self.status == NO_RESPONSE and req.attributes:
            attrs = req.attributes.get(FILTER_ATTRS)
            if attrs is not None:
                code = attrs.fields.get(STATUS_ATTR)
                if code is not None:
                    self.status = int(code.number_value)
            if self.rate_headers is None and req.HasField("metadata_context"):
                found = req.metadata_context.filter_metadata.get(RESPONSE_NAMESPACE)
                if found is not None:
                    self.rate_headers = [(k, v.string_value) for k, v in found.fields.items()]
        body_msg = req.response_body
        chunk = body_msg.body
        if chunk:
            if self.sse is not None:
                self.sse.feed(chunk)
            elif self.json is not None:
                self.json_size += len(chunk)
                if self.json_size <= self.svc.options.max_json_response_bytes:
                    self.json.append(chunk)
                else:
                    self.json = None
        if body_msg.end_of_stream:
            self._report()
        return [wire.RESPONSE_BODY_CONTINUE]

    # ---- end of stream ----------------------------------------------------------------

    def _usage(self) -> Usage | None:
        if self.sse is not None:
            self.sse.finish()
            return self.sse.usage
        if self.json:
            return usage_from_json(self.json[0] if len(self.json) == 1 else b"".join(self.json))
        return None

    def _report(self) -> None:
        self.reported = True
        ex = self.ex
        try:
            self.svc.runtime.on_response(ex, self.status, self._usage(), self.svc.clock() - ex.started, self.rate_headers)
        except Exception:  # an observer bug must not break the stream
            log.exception("on_response hook failed for request %s", ex.request_id)

    def on_close(self) -> None:
        """The stream ended (Envoy closed or reset it): report a response not yet reported."""
        if self.routed and not self.reported and self.svc.options.observe_responses:
            self._report()
