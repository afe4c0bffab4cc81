"""The ext_proc services: ProcessingRequest in, ProcessingResponse bytes out, one session per gRPC stream.

Transport-neutral: a transport (our HTTP/2 one, grpclib or grpcio) opens a session per gRPC
stream, hands it each message and writes back what it returns; when `session.finished` is set
it ends the stream with OK. Sessions only translate between ext_proc and `Runtime`.

Three filters in Envoy (see bootstrap.py) use three services of one processor, chosen by the
gRPC metadata x-llm-router-service:
- "route" (the routing filter, in the listener): request headers SEND, request body STREAMED with
  send_body_without_waiting_for_header_response. The header reply is held until the body is
  complete, so a request costs one round trip; the stream ends right after the reply. Besides
  model, path, credential and body it writes the fallback chain: slot headers for Envoy's
  per-attempt cluster choice, and the chain and API as dynamic metadata (see fallback.py).
- "attempt" (an upstream filter on the provider clusters, skipped on attempt 1): rewrites each
  fallback attempt for its provider (attempt.py).
- "observe" (an upstream filter in observability mode): every attempt's response headers and body
  are sent without waiting for us, so no SSE chunk is ever delayed. It finds the routed request by
  the request id in dynamic metadata and reports each attempt (status, usage, latency, rate-limit
  headers) to `Runtime.on_response`, and each move along the chain to the telemetry's on_fallback.

A non-streaming request whose decision is a cascade or a hedge is answered by the processor itself
(`llm_router.orchestrate`, which calls the models and accounts every call): the routing stream
asks Envoy for more time, awaits the orchestration and answers with an immediate response.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from llm_router.accounting import SSEUsage, Usage, usage_from_json
from llm_router.decision import RouteError
from llm_router.encodings import StreamInflater, accept_encoding_override, inflate
from llm_router.gateways.envoy import wire
from llm_router.gateways.envoy.attempt import AttemptService, AttemptSession
from llm_router.gateways.envoy.h2grpc import Deferred
from llm_router.gateways.envoy.fallback import (API_KEY, ATTEMPT_HEADER, CHAIN_KEY, CLIENT_RETRY_HEADERS, MAX_RETRIES_HEADER,
                                                PER_TRY_TIMEOUT_HEADER, chain_text, retriable, slot_headers)
from llm_router.gateways.envoy.route_conf import RouteConfCache
from llm_router.forward import PRICED_APIS
from llm_router.orchestrate import orchestrate, wants_orchestration
from llm_router.plan import UpstreamCall, fallback_reason
from llm_router.ratelimits import is_rate_limit_header
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.stored import MARK

log = logging.getLogger("llm_router.envoy")

METADATA_NAMESPACE = "llm_router"
REQUEST_ID_KEY = "x-llm-router-request-id"
# Marks our own local replies, so Envoy's local_reply_config leaves their OpenAI-format body alone.
LOCAL_REPLY_KEY = "local_reply"
NO_RESPONSE = 0  # status reported when the stream ended before any upstream response was seen

_REQUEST_TRAILERS_CONTINUE = wire.field(5, b"")
_RESPONSE_HEADERS_CONTINUE = wire.field(2, b"")
_RESPONSE_TRAILERS_CONTINUE = wire.field(6, b"")


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How the services treat requests and responses."""

    observe_responses: bool = True  # keep routed exchanges for the observe service (accounting, health)
    max_body_bytes: int | None = None  # request body limit; None = each policy's max_body_bytes
    max_json_response_bytes: int = 4 << 20  # JSON answers above this are not scanned for usage
    max_pending: int = 100_000  # routed exchanges waiting for their response (oldest dropped beyond)
    metadata_namespace: str = METADATA_NAMESPACE
    first_byte_timeout_ms: int = 30_000  # per attempt, streams: until the response starts
    answer_timeout_ms: int = 120_000  # per attempt, non-streaming: until the answer starts
    orchestrate_timeout_s: float = 60.0  # how long Envoy waits for a cascade/hedge answer (<= its max_message_timeout)


class Services:
    """Picks the service for a gRPC stream by its `x-llm-router-service` metadata (default: routing).

    Envoy sets that header through each filter's grpc_service.initial_metadata, so one processor
    serves the routing filter and the two upstream filters (per-attempt rewrite, observer).
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
    """Routes LLM requests through `Runtime` ("route"), rewrites fallback attempts ("attempt") and
    observes every attempt's response ("observe")."""

    def __init__(self, runtime: Runtime, options: ServiceOptions | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.options = options or ServiceOptions()
        self.clock = clock
        self.route_confs = RouteConfCache(METADATA_NAMESPACE)
        self.route_header = runtime.route_header
        self.mutations = wire.MutationCache()
        self.wants_headers = bool(getattr(runtime, "wants_headers", False))
        self.local_reply_metadata = wire.dynamic_metadata(self.options.metadata_namespace, {LOCAL_REPLY_KEY: "llm-router"})
        self.metadata = wire.MetadataEncoder(self.options.metadata_namespace)
        self.pending: dict[str, Exchange] = {}  # request id -> routed exchange awaiting its response
        self.attempts = AttemptService(runtime, self.options.metadata_namespace, self.local_reply_metadata)
        # Per-attempt timeouts, as header values (streams wait for the first byte, others for the answer).
        self.per_try = {True: str(self.options.first_byte_timeout_ms), False: str(self.options.answer_timeout_ms)}
        self.retry_removals = CLIENT_RETRY_HEADERS
        self.orchestrate_timeout = wire.override_message_timeout(self.options.orchestrate_timeout_s)

    def open(self, metadata: dict[str, str] | None = None) -> "Session":
        """A routing session for one gRPC stream (one HTTP request through Envoy)."""
        return Session(self)

    def open_observer(self, metadata: dict[str, str] | None = None) -> "ObserveSession":
        """An observing session for one response (the observability-mode filter's stream)."""
        return ObserveSession(self)

    def open_attempt(self, metadata: dict[str, str] | None = None) -> AttemptSession:
        """A per-attempt rewrite session (the upstream filter on fallback attempts)."""
        return AttemptSession(self.attempts)

    def services(self) -> Services:
        return Services({"route": self.open, "observe": self.open_observer, "attempt": self.open_attempt})

    def expect_response(self, ex: Exchange) -> None:
        pending = self.pending
        if len(pending) >= self.options.max_pending:
            # Responses that never came (client gone, observer filter not configured): drop the oldest.
            for key in list(pending)[: max(1, len(pending) // 10)]:
                del pending[key]
        pending[ex.request_id] = ex

    def fallback(self, ex: Exchange, from_model: str, to_model: str, reason: str) -> None:
        """One move along the chain: the runtime's telemetry counts it (llm_router_fallbacks_total)."""
        hook = getattr(self.runtime.observer, "on_fallback", None)
        if hook is None:
            return
        try:
            hook(ex, from_model, to_model, reason)
        except Exception:  # an observer bug must not break the stream
            log.exception("on_fallback hook failed for request %s", ex.request_id)

    def report(self, ex: Exchange, status: int, usage: Usage | None, headers: list[tuple[str, str]] | None) -> None:
        try:
            self.runtime.on_response(ex, status, usage, self.clock() - ex.started, headers)
        except Exception:  # an observer bug must not break the stream
            log.exception("on_response hook failed for request %s", ex.request_id)


class Session:
    """The request side of one HTTP request: route it, or refuse it, or let it pass."""

    __slots__ = ("svc", "ex", "path", "route_conf", "chunks", "messages", "size", "limit", "finished", "passthrough",
                 "headers", "accept")

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
        self.passthrough = False
        self.headers: list[tuple[str, str]] | None = None  # client headers, kept only when spend limits need them
        self.accept: tuple[tuple[str, str], ...] = ()  # accept-encoding to send instead of the client's (encodings.py)

    def on_message(self, data: bytes) -> list[bytes]:
        """Replies (serialized ProcessingResponse) for one ProcessingRequest, in order."""
        req = ProcessingRequest.FromString(data)
        kind = req.WhichOneof("request")
        if kind == "request_body":
            return self._request_body(req.request_body)
        if kind == "request_headers":
            return self._request_headers(req)
        if kind == "response_body":
            return [wire.RESPONSE_BODY_CONTINUE]
        if kind == "response_headers":
            return [_RESPONSE_HEADERS_CONTINUE]
        if kind == "request_trailers":
            return [_REQUEST_TRAILERS_CONTINUE]
        if kind == "response_trailers":
            return [_RESPONSE_TRAILERS_CONTINUE]
        return []

    def _request_headers(self, req: ProcessingRequest) -> list[bytes]:
        svc = self.svc
        runtime = svc.runtime
        path = ""
        client_route = anthropic = False
        method = b""
        route_name = svc.route_header
        header_list = req.request_headers.headers.headers
        for h in header_list:
            key = h.key
            if key == ":path":
                path = (h.raw_value or h.value.encode()).decode("latin-1")
            elif key == ":method":
                method = h.raw_value or h.value.encode()
            elif key == route_name:
                client_route = True
            elif key == "anthropic-version":
                anthropic = True
            elif key == "accept-encoding" and svc.options.observe_responses:
                override = accept_encoding_override((h.raw_value or h.value.encode()).decode("latin-1"))
                if override:  # usage must stay readable: ask only for codings we can inflate
                    self.accept = override
        if svc.wants_headers:
            self.headers = [(h.key, (h.raw_value or h.value.encode()).decode("latin-1")) for h in header_list]
        self.path = path
        if MARK in path:
            replies = self._sent_on(req, path, runtime.stored_response)
            if replies is not None:
                return replies
        elif method == b"GET" and "/models" in path:
            replies = self._models(req, path, anthropic)
            if replies is not None:
                return replies
        if not runtime.handles(path):
            replies = self._sent_on(req, path, runtime.forwarded)
            if replies is not None:
                return replies
            # Not an LLM API: leave it alone, but never let a client pick our routing header.
            self._pass_body(req)
            if client_route:
                common = wire.common_response(headers=wire.header_mutation(remove=(route_name,)), clear_route_cache=True)
                return [wire.request_headers_reply(common)]
            return [wire.REQUEST_HEADERS_CONTINUE]
        self.ex, self.route_conf = self._exchange(req, path)
        policy = runtime.policy_for(self.route_conf)
        limit = svc.options.max_body_bytes
        if not isinstance(policy, RouteError):
            limit = policy.conf.max_body_bytes if limit is None else min(limit, policy.conf.max_body_bytes)
        self.limit = limit or (8 << 20)
        if req.request_headers.end_of_stream:
            return self._decide(b"", 0)
        return []  # the header reply waits for the body (one round trip)

    def _exchange(self, req: ProcessingRequest, path: str) -> tuple[Exchange, Any]:
        """A new exchange and the route's conf (from Envoy's route metadata). The exchange's route label
        is the path without its query: the label of metrics and spend limits, bounded in cardinality."""
        svc = self.svc
        route_conf = svc.route_confs.get(req.attributes) if req.attributes else None
        return Exchange(request_id=svc.runtime.new_request_id(), route=path.partition("?")[0], started=svc.clock()), route_conf

    def _sent_on(self, req: ProcessingRequest, path: str, find: Callable[..., UpstreamCall | Refusal | None]) -> list[bytes] | None:
        """A call sent on unrouted to one provider with its key: a stored response (`runtime.stored_response`)
        or a forwarded API (`runtime.forwarded`); None when `find` says it is not such a call."""
        ex, route_conf = self._exchange(req, path)
        result = find(path, ex=ex, route_conf=route_conf, headers=self.headers)
        if result is None:
            return None
        svc = self.svc
        if isinstance(result, Refusal):
            self.passthrough = self.finished = True
            return [wire.immediate_reply(result.status, result.body, result.headers, details="llm_router_refused",
                                         metadata=svc.local_reply_metadata)]
        self._pass_body(req)  # its body (a cancel's, an upload) passes as it is
        if ex.extra.get("forward") in PRICED_APIS and svc.options.observe_responses:
            svc.expect_response(ex)  # priced from its answer's usage
        return self._unrouted(result, 0, streams="stream=true" in path.partition("?")[2])

    def _pass_body(self, req: ProcessingRequest) -> None:
        """Let the request's body pass untouched. The stream ends once Envoy has sent it all: with
        the body sent without waiting for the header reply, chunks may already be on their way, and
        each needs its reply (ending the stream earlier left such uploads hanging until a timeout)."""
        self.passthrough = True
        self.finished = req.request_headers.end_of_stream

    def _models(self, req: ProcessingRequest, path: str, anthropic: bool) -> list[bytes] | None:
        """`GET .../models[/{id}]`: the route's models, answered by the processor (None: not such a call)."""
        ex, route_conf = self._exchange(req, path)
        reply = self.svc.runtime.models_reply("GET", path, ex=ex, route_conf=route_conf, anthropic=anthropic,
                                              headers=self.headers)
        if reply is None:
            return None
        self.passthrough = self.finished = True
        return [wire.immediate_reply(reply.status, reply.body, reply.headers, details="llm_router_models",
                                     metadata=self.svc.local_reply_metadata)]

    def _request_body(self, body_msg) -> list[bytes]:
        if self.passthrough or self.ex is None:
            if body_msg.end_of_stream:
                self.finished = True
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
        self.finished = True  # whatever happens, this stream has nothing more to do
        if isinstance(result, Refusal):
            return [wire.immediate_reply(result.status, result.body, result.headers, details="llm_router_refused",
                                         metadata=svc.local_reply_metadata)]
        call = result
        if ex.decision is None:
            return self._unrouted(call, n_chunks)
        if ex.decision.mode != "fallback" and wants_orchestration(ex):
            return self._orchestrated(ex)
        chain = ex.decision.chain
        slots, unused = slot_headers(tuple(m.upstream for m in chain))
        # The chain's slots, the attempt counter the cluster matcher reads, how many retries and how
        # long each may wait: all overwrite whatever the client sent (Envoy reads them as controls).
        control = ((ATTEMPT_HEADER, "0"), (MAX_RETRIES_HEADER, str(len(slots) - 1)),
                   (PER_TRY_TIMEOUT_HEADER, svc.per_try[bool(ex.request.stream)]))
        headers = (svc.mutations.encode((*call.set_headers, (":path", call.path), *slots, *control, *self.accept),
                                        (*call.remove_headers, *unused, *svc.retry_removals))
                   + wire.content_length_option(len(call.body)))
        meta = svc.metadata.encode((*call.response_headers, (CHAIN_KEY, chain_text(tuple(m.id for m in chain))),
                                    (API_KEY, ex.request.api)))
        out = [wire.request_headers_reply(wire.common_response(headers=headers, clear_route_cache=True), meta)]
        if n_chunks:
            out += [wire.REQUEST_BODY_CLEAR] * (n_chunks - 1)
            out.append(wire.request_body_replacement(call.body))
        if svc.options.observe_responses:
            svc.expect_response(ex)
        return out

    def _unrouted(self, call: UpstreamCall, n_chunks: int, streams: bool = False) -> list[bytes]:
        """A call the runtime planned without routing (a stored response, a token count): its provider, key,
        path and, when the call has one, its new body; one attempt."""
        svc = self.svc
        slots, unused = slot_headers((call.model.upstream,))
        control = ((ATTEMPT_HEADER, "0"), (MAX_RETRIES_HEADER, "0"), (PER_TRY_TIMEOUT_HEADER, svc.per_try[streams]))
        # Not through the mutation cache: these paths differ per call.
        headers = wire.header_mutation((*call.set_headers, (":path", call.path), *slots, *control, *self.accept),
                                       (*call.remove_headers, *unused, *svc.retry_removals))
        if call.body:
            headers += wire.content_length_option(len(call.body))
        # The request id travels as dynamic metadata: the client's response header, and the observer's key.
        meta = svc.metadata.encode(call.response_headers) if call.response_headers else b""
        out = [wire.request_headers_reply(wire.common_response(headers=headers, clear_route_cache=True), meta)]
        if n_chunks and call.body:
            out += [wire.REQUEST_BODY_CLEAR] * (n_chunks - 1)
            out.append(wire.request_body_replacement(call.body))
        return out

    def _orchestrated(self, ex: Exchange) -> Deferred:
        """Cascade or hedge: the processor calls the models; Envoy gets the answer as an immediate response."""
        svc = self.svc

        async def answer() -> list[bytes]:
            try:
                reply = await orchestrate(svc.runtime, ex, ex.request, ex.decision)
            except Exception:  # orchestrate() should never raise; the runner never dies of a request
                log.exception("orchestration failed for request %s", ex.request_id)
                error = RouteError(502, "router error while calling the models", code="router_error")
                refusal = svc.runtime.refusal(error, ex)
                return [wire.immediate_reply(refusal.status, refusal.body, refusal.headers, details="llm_router_orchestrated",
                                             metadata=svc.local_reply_metadata)]
            return [wire.immediate_reply(reply.status, reply.body, reply.headers, details="llm_router_orchestrated",
                                         metadata=svc.local_reply_metadata)]

        return Deferred([svc.orchestrate_timeout], answer())

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

    def on_close(self) -> None:
        pass


class ObserveSession:
    """The response side of one upstream attempt: status, rate-limit headers and usage, never delaying it.

    Runs as an upstream filter, so each attempt of a fallback chain has its own session: the request
    headers tell which attempt (x-envoy-attempt-count), hence which model of the chain, it is. An
    attempt that never gets a response (connect failure, reset, per-try timeout) is reported with
    status 0 when its stream closes.
    """

    __slots__ = ("svc", "ex", "root", "attempt", "finished", "status", "headers", "sse", "json", "json_size", "reported",
                 "encoding", "inflater")

    def __init__(self, svc: RoutingService):
        self.svc = svc
        self.ex: Exchange | None = None  # this attempt: its own call (model) and start time
        self.root: Exchange | None = None  # the routed request, as the routing filter left it
        self.attempt = 1
        self.finished = False
        self.status = NO_RESPONSE
        self.headers: list[tuple[str, str]] | None = None
        self.sse: SSEUsage | None = None
        self.json: list[bytes] | None = None
        self.json_size = 0
        self.reported = False
        self.encoding = ""
        self.inflater: StreamInflater | None = None  # a compressed SSE answer, inflated as it passes

    def on_message(self, data: bytes) -> list[bytes]:
        """Observability mode: Envoy ignores replies, so none are sent."""
        if self.finished:
            return []
        req = ProcessingRequest.FromString(data)
        kind = req.WhichOneof("request")
        if kind == "response_body":
            self._body(req.response_body)
        elif kind == "response_headers":
            self._headers(req)
        elif kind == "request_headers":
            attempt = 1
            for h in req.request_headers.headers.headers:
                if h.key == ATTEMPT_HEADER:
                    try:
                        attempt = int(h.raw_value or h.value)
                    except ValueError:
                        pass
                    break
            self._bind(req, attempt)
        return []

    def _bind(self, req: ProcessingRequest, attempt: int) -> None:
        """Find the routed request; for a fallback attempt, report the move and make this attempt's exchange."""
        svc = self.svc
        ns = req.metadata_context.filter_metadata.get(svc.options.metadata_namespace)
        rid = ns.fields.get(REQUEST_ID_KEY) if ns is not None else None
        root = svc.pending.get(rid.string_value) if rid is not None else None
        if root is None:  # not a request we routed (or already finished): nothing to do
            self.finished = True
            return
        self.root = root
        self.attempt = attempt
        if attempt <= 1:
            self.ex = root
            return
        if root.decision is None:  # a forwarded call has one attempt
            self.finished = True
            return
        chain = root.decision.chain
        if attempt > len(chain):  # more attempts than models: not ours to account
            self.finished = True
            return
        to = chain[attempt - 1]
        self.ex = replace(root, call=svc.runtime.attempt(root, to.id), attempt=attempt, started=svc.clock())
        statuses = root.extra.get("attempts") or {}
        svc.fallback(root, chain[attempt - 2].id, to.id, fallback_reason(statuses.get(attempt - 1)))

    def _headers(self, req: ProcessingRequest) -> None:
        if self.ex is None:  # no request headers seen (request_header_mode SKIP): the first attempt
            self._bind(req, 1)
            if self.ex is None:
                return
        ex = self.ex
        rate: list[tuple[str, str]] = []
        for h in req.response_headers.headers.headers:
            key = h.key
            if key == ":status":
                self.status = int(h.raw_value or h.value or 0)
            elif is_rate_limit_header(key):  # handed to on_response: rate-limit signals for health and pools
                rate.append((key, (h.raw_value or h.value.encode()).decode("latin-1")))
            elif key == "content-encoding":
                self.encoding = (h.raw_value or h.value.encode()).decode("latin-1").strip().lower()
        self.headers = rate or None
        if self.attempt > 1 or retriable(self.status):
            # The next attempt's session reads why this one was abandoned.
            self.root.extra.setdefault("attempts", {})[self.attempt] = self.status
        if retriable(self.status):
            # A failure has no usage to wait for, and Envoy may abandon its body for the next attempt:
            # health hears of it now, not when the stream is finally closed.
            self._report()
            return
        if ex.request is not None and ex.request.stream:
            self.sse = SSEUsage()
            if self.encoding and self.encoding != "identity":
                self.inflater = StreamInflater(self.encoding, self.sse.feed)
        else:
            self.json = []
        if req.response_headers.end_of_stream:
            self._report()

    def _body(self, body_msg) -> None:
        if self.ex is None:
            return
        chunk = body_msg.body
        if chunk:
            if self.inflater is not None:
                self.inflater.feed(chunk)
            elif self.sse is not None:
                self.sse.feed(chunk)
            elif self.json is not None:
                self.json_size += len(chunk)
                if self.json_size <= self.svc.options.max_json_response_bytes:
                    self.json.append(chunk)
                else:
                    self.json = None
        if body_msg.end_of_stream:
            self._report()

    def _usage(self) -> Usage | None:
        if self.sse is not None:
            self.sse.finish()
            return self.sse.usage
        if self.json:
            body = self.json[0] if len(self.json) == 1 else b"".join(self.json)
            if self.encoding:
                body = inflate(body, self.encoding, self.svc.options.max_json_response_bytes)
            return usage_from_json(body)
        return None

    def _report(self) -> None:
        self.reported = True
        self.finished = True
        ex = self.ex
        if not retriable(self.status) or ex.decision is None or self.attempt >= len(ex.decision.chain):
            # No further attempt can follow this one: the request is done.
            pending = self.svc.pending
            if pending.get(ex.request_id) is self.root:
                del pending[ex.request_id]
        self.svc.report(ex, self.status, self._usage(), self.headers)

    def on_close(self) -> None:
        """The stream ended early (no response, upstream reset, client gone): report what was seen."""
        if self.ex is not None and not self.reported:
            self._report()

