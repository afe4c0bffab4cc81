"""The ext-plugin conversation: frames in, reply frames out, Runtime in the middle.

Transport-free and synchronous: the server feeds it whole frames per connection; every reply
is bytes to write. Routing itself is Runtime.decide's; this module only translates.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from llm_router.accounting import SSEUsage, Usage, usage_from_json
from llm_router.config import ConfigError, parse_policy
from llm_router.decision import RouteError
from llm_router.encodings import accept_encoding_override, inflate
from llm_router.gateways.apisix import decode, encode
from llm_router.gateways.apisix.framing import (
    HEADER_SIZE, MAX_PAYLOAD, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_NAMES, RPC_PREPARE_CONF, FrameError,
    parse_header,
)
from llm_router.gateways.apisix.tokens import Entry, TokenStore
from llm_router.gateways.apisix.usage_log import StreamLog
from llm_router.forward import PRICED_APIS
from llm_router.orchestrate import OrchestratedReply, fallback, orchestrate, wants_orchestration
from llm_router.plan import FALLBACK_4XX, REQUEST_ID_HEADER, UpstreamCall
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.stored import MARK

log = logging.getLogger("llm_router.apisix")

PLUGIN_NAME = "llm-router"
REQUEST_ID_VAR = "http_" + REQUEST_ID_HEADER.replace("-", "_")
MAX_RESP_BODY = 4 << 20  # larger answers are streamed through unread (no usage from them)
MAX_EXCHANGES = 4096  # awaiting their response call; oldest dropped first
BODY_LIMIT = MAX_PAYLOAD - 64  # the largest body APISIX can pass in one ExtraInfo frame
# Response headers APISIX filters itself (ext-plugin-post-resp); never hand them back.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade", "content-length", "apisix-cache-status", "date", "server",
                        "x-pad", "x-accel-expires", "x-accel-redirect", "x-accel-limit-rate", "x-accel-buffering",
                        "x-accel-charset"})
JSON_HEADERS = (("content-type", "application/json"),)

CLOSE = b""  # a reply meaning: drop this connection (the peer broke the protocol)
# Upstream statuses after which ext-plugin-post-resp retries on the next model of the chain.
FALLBACK_STATUSES = FALLBACK_4XX | {500, 502, 503, 504, 529}
# How long a process with one call in flight polls its socket for APISIX's answer before sleeping in epoll (an answer
# within it saves the wake-up; `llm-router bench apisix --compare-poll` measures the difference); 0 turns polling off.
ANSWER_POLL_US = 100
# A whole POST HTTPReqCall reaching an idle process gets its body request before it is read (server.apisix_early_body):
# APISIX fetches the body while the runner decodes the call. `bench apisix --compare-early` measures the difference.
EARLY_BODY = True
FALLBACK_MAX_BODY = 1 << 20  # request bodies kept for a post-resp fallback, each at most ...
FALLBACK_KEPT_BYTES = 64 << 20  # ... and all together at most
# A route's ext-plugin-post-resp conf reaches the runner only with its first response: the first
# requests of a route not yet known to have it are remembered anyway, so they can be accounted
# and fall back too.
PROBE_REQUESTS = 8
# server.apisix_stream_usage: a streamed answer's call waits this long for its usage from APISIX's http-logger
# (POST /v1/usage-log) before it is accounted without usage; at most this many wait at once.
STREAM_USAGE_WAIT_S = 120.0
MAX_PARKED = 10_000
REQUEST_ID_FRAME = encode.extra_info_var_frame(REQUEST_ID_VAR)
REQUEST_ID_AND_BODY_FRAMES = REQUEST_ID_FRAME + encode.RESP_BODY_FRAME


def _answer_shape(headers: list) -> tuple[str, str, str]:
    """The upstream answer's content-type (lower case), content-length and content-encoding, from its headers."""
    ctype = length = encoding = ""
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type":
            ctype = (value or "").lower()
        elif lname == "content-length":
            length = value or ""
        elif lname == "content-encoding":
            encoding = (value or "").lower().strip()
    return ctype, length, encoding


def _bounded_json(shape: tuple[str, str, str]) -> bool:
    """A whole JSON document of at most MAX_RESP_BODY bytes (what is read for its usage; streams pass unread)."""
    ctype, length, _ = shape
    return "json" in ctype and "event-stream" not in ctype and length.isdigit() and 0 < int(length) <= MAX_RESP_BODY


class Deferred:
    """A reply that needs upstream calls first (cascade, hedge, fallback): the server awaits it, then writes it."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[bytes]):
        self.awaitable = awaitable


@dataclass(slots=True)
class Compiled:
    """What a conf token stands for: the route's policy conf, or why it is unusable."""

    route_conf: bytes | None = None
    error: RouteError | None = None
    scope: str = ""  # conf_type#conf_id: pre-req and post-resp of one route share it
    max_body: int = BODY_LIMIT


class Parked:
    """A streamed answer's call, accounted once its usage comes from the usage log (or its wait ends)."""

    __slots__ = ("ex", "status", "latency_s", "headers", "until")

    def __init__(self, ex: Exchange, status: int, latency_s: float, headers: list, until: float) -> None:
        self.ex = ex
        self.status = status
        self.latency_s = latency_s
        self.headers = headers
        self.until = until


@dataclass(slots=True, init=False)
class Pending:
    """A call waiting for APISIX's answer to our ExtraInfo request."""

    # "body" | "rid" | "resp_body" | "held" (a reply waiting for the answer to an early body request) | "rid+body"
    # (the request id and the answer asked for at once) | "asked_body" (the id came, in `reply`; the answer follows)
    kind: str
    rid: int
    entry: Entry | None
    call: decode.ReqCall | None = None
    status: int = 0
    headers: list = field(default_factory=list)
    exchange: Exchange | None = None
    shape: tuple[str, str, str] = ("", "", "")  # the answer's content-type, content-length, content-encoding
    reply: bytes = b""  # "held": sent once the body the call turned out not to need has come; "asked_body": the id

    def __init__(self, kind: str, rid: int, entry: Entry | None, call: decode.ReqCall | None = None, status: int = 0,
                 headers: list | None = None, exchange: Exchange | None = None, shape: tuple[str, str, str] = ("", "", ""),
                 reply: bytes = b"") -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.kind = kind
        self.rid = rid
        self.entry = entry
        self.call = call
        self.status = status
        self.headers = [] if headers is None else headers
        self.exchange = exchange
        self.shape = shape
        self.reply = reply


class Conversation:
    """Per-connection state: at most one call in flight (APISIX runs one RPC per connection)."""

    __slots__ = ("pending", "asked")

    def __init__(self) -> None:
        self.pending: Pending | None = None
        self.asked = False  # the body of the HTTPReqCall being read was asked for already (Runner.ask_early)


@dataclass(slots=True)
class Stats:
    """Counters the runner keeps (scraped as llm_router_apisix_runner_events_total{event}, read by tests)."""

    prepare_conf: int = 0
    req_calls: int = 0
    rewrites: int = 0
    stops: int = 0
    passes: int = 0
    resp_calls: int = 0
    token_misses: int = 0
    bad_frames: int = 0
    internal_errors: int = 0
    unmatched_responses: int = 0  # response calls with our request id that no request waits for (restart, evicted)
    unrouted_responses: int = 0  # response calls without our request id: calls the runner let through unrouted
    to_peers: int = 0  # response calls handed to the process that routed their request (--workers > 1)
    from_peers: int = 0  # ... and response calls of this process's requests that another process handed over
    peer_failures: int = 0  # ... that could not be handed over (that process is gone or did not answer)
    stream_usage_logged: int = 0  # streamed answers accounted with the usage APISIX's http-logger posted
    stream_usage_unmatched: int = 0  # logged exchanges with no streamed answer waiting (another process's, expired)
    stream_usage_expired: int = 0  # streamed answers accounted without usage: no log came in time
    orchestrated: int = 0  # answered by the runner's own calls (cascade, hedge)
    fallbacks: int = 0  # post-resp: a failed answer replaced by the runner's retry down the chain
    sent_on: int = 0  # unrouted calls sent to one provider with its key (stored responses, forwarded APIs)
    answer_polls: int = 0  # the socket polled for APISIX's answer instead of sleeping (server.apisix_answer_poll_us)
    answer_polls_caught: int = 0  # ... and the answer came while polling
    early_body_asks: int = 0  # bodies asked for before their HTTPReqCall was read (server.apisix_early_body)
    early_body_unused: int = 0  # ... whose call needed no body after all (a token miss, a bad route conf): reply held
    reply_flushes: int = 0  # turns of the event loop that wrote replies (several connections' replies go out together)
    replies_flushed: int = 0  # ... and the replies they wrote (over reply_flushes: replies per wake-up of nginx)


class Runner:
    """Answers ext-plugin RPCs with the Runtime's decisions."""

    def __init__(self, runtime: Runtime, tokens: TokenStore, *, plugin_name: str = PLUGIN_NAME,
                 clock: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.tokens = tokens
        self.plugin_name = plugin_name
        self.clock = clock
        self.stats = Stats()
        self.entries = encode.EntryCache()
        self.exchanges: dict[str, Exchange] = {}
        self._post_resp_scopes: set[str] = set()
        self._removals: dict[tuple[str, ...], tuple[tuple[str, None], ...]] = {}
        self.fallback_enabled = True
        self.answer_poll_ns = 0
        self.early_body = EARLY_BODY
        self.stream_usage = False
        self.apply_settings()
        self.parked: dict[str, Parked] = {}  # request id -> a streamed answer's call waiting for its usage log
        # request id -> a stream's usage whose log came before its response call did (with --workers > 1 the call
        # may still be on its way from the process APISIX asked)
        self.early_usage: dict[str, Usage | None] = {}
        # With --workers > 1, the other processes (gateways.apisix.peers.Peers): a response call of a request another
        # process routed goes to that process, which holds the request's state.
        self.peers: Any = None
        self._kept_bytes = 0  # request bytes held for post-resp fallbacks
        self._probed: dict[str, int] = {}  # scope -> requests remembered before post-resp was seen
        if runtime.metrics is not None:
            runtime.metrics.sources.append(self._metric_families)

    def apply_settings(self) -> None:
        """Take the runner's settings from the runtime's config (at start, and after each reload)."""
        server = self.runtime.config.server
        self.fallback_enabled = bool(server.get("apisix_fallback", True))
        poll_us = server.get("apisix_answer_poll_us", ANSWER_POLL_US)
        # Polling pays only while APISIX can answer on another core; on one core it would only delay the answer.
        self.answer_poll_ns = int(poll_us * 1000) if usable_cpus() > 1 else 0
        self.early_body = bool(server.get("apisix_early_body", EARLY_BODY))
        self.stream_usage = bool(server.get("apisix_stream_usage", False))

    def _metric_families(self) -> Iterator[Any]:
        """The protocol counters as one Prometheus family, read at scrape time (nothing on the hot path)."""
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily("llm_router_apisix_runner_events", "What the APISIX runner's process did with the RPCs "
                                  "it got (req_calls, rewrites, stops, token_misses, bad_frames, answer_polls, ...)",
                                  labels=("event",))
        for name, value in asdict(self.stats).items():
            fam.add_metric((name,), float(value))
        yield fam

    # ---- dispatch -------------------------------------------------------------------------

    def ask_early(self, conv: Conversation, data: bytes) -> bool:
        """Whether `data`, read by an idle process, is one whole POST HTTPReqCall whose body to ask for before
        reading it: the body request then goes out at once, and APISIX fetches the body while the call is decoded.

        Only calls the router decides for qualify: POST to an LLM API path, not a stored response or a forwarded
        API (whose bodies never cross the socket), and no content-length of 1 MB or more. The reply of one that
        turns out not to need its body (an unknown token, a bad route conf) waits for the body to come.
        """
        if not self.early_body or conv.pending is not None or len(data) < HEADER_SIZE + 8:
            return False
        rpc_type, length = parse_header(data)
        if rpc_type != RPC_HTTP_REQ_CALL or length != len(data) - HEADER_SIZE:
            return False
        target = decode.req_target(data, HEADER_SIZE)
        if target is None or target[0] != decode.METHOD_POST or MARK in target[1] or not self.runtime.handles(target[1]) \
                or decode.may_be_large(data):
            return False
        conv.asked = True
        self.stats.early_body_asks += 1
        return True

    def on_frame(self, conv: Conversation, rpc_type: int, payload: bytes) -> bytes | Deferred | None:
        """The reply to one frame (CLOSE: drop the connection; Deferred: await it first; None: nothing to send
        yet: the body request went out early, or a second ExtraInfo answer is on its way); never raises."""
        out = self._reply(conv, rpc_type, payload)
        if conv.asked and rpc_type == RPC_HTTP_REQ_CALL:
            conv.asked = False
            pending = conv.pending
            if pending is not None and pending.kind == "body":
                return None  # the call waits for its body, already asked for
            if out is None or out is CLOSE or isinstance(out, Deferred):
                return out
            # APISIX answers the body request first; the reply follows that answer
            self.stats.early_body_unused += 1
            conv.pending = Pending("held", 0, None, reply=out)
            return None
        return out

    def _reply(self, conv: Conversation, rpc_type: int, payload: bytes) -> bytes | Deferred | None:
        try:
            pending = conv.pending
            if pending is not None:
                if rpc_type != RPC_EXTRA_INFO:
                    log.warning("protocol error: got %s while waiting for an ExtraInfo answer; closing the connection",
                                RPC_NAMES.get(rpc_type, rpc_type))
                    self.stats.bad_frames += 1
                    conv.pending = None
                    return CLOSE
                conv.pending = None
                return self._on_extra_info(conv, pending, payload)
            if rpc_type == RPC_HTTP_REQ_CALL:
                return self._on_req_call(conv, payload)
            if rpc_type == RPC_PREPARE_CONF:
                return self._on_prepare_conf(payload)
            if rpc_type == RPC_HTTP_RESP_CALL:
                return self._on_resp_call(conv, payload)
            self.stats.bad_frames += 1
            log.warning("unexpected RPC type %d (%d bytes); answered BAD_REQUEST", rpc_type, len(payload))
            return encode.BAD_REQUEST_FRAME
        except decode.DecodeError as exc:
            self.stats.bad_frames += 1
            log.warning("bad %s frame: %s", RPC_NAMES.get(rpc_type, rpc_type), exc)
            return encode.BAD_REQUEST_FRAME
        except Exception:  # the runner never dies of a request
            self.stats.internal_errors += 1
            log.exception("internal error handling %s", RPC_NAMES.get(rpc_type, rpc_type))
            conv.pending = None
            return encode.SERVICE_UNAVAILABLE_FRAME

    # ---- PrepareConf ----------------------------------------------------------------------

    def _on_prepare_conf(self, payload: bytes) -> bytes:
        req = decode.read_prepare_conf(payload)
        self.stats.prepare_conf += 1
        entry = self.tokens.put(req.key, tuple(req.conf))
        if entry.compiled is None:
            entry.compiled = self.compile(entry)
        return encode.prepare_conf_frame(entry.token)

    def compile(self, entry: Entry) -> Compiled:
        """Validate a route's runner conf with the core schema; remember the problem if any."""
        parts = entry.key.split("#")
        scope = "#".join(parts[:2])
        if len(parts) >= 3 and parts[2] == "ext-plugin-post-resp":
            self._post_resp_scopes.add(scope)
        ours = [value for name, value in entry.conf if name == self.plugin_name]
        others = sorted({name for name, _ in entry.conf if name != self.plugin_name})
        problem = None
        if others:
            problem = f"unknown runner plugin(s) {others}; this runner serves '{self.plugin_name}'"
        elif len(ours) > 1:
            problem = f"'{self.plugin_name}' is configured {len(ours)} times; give it once"
        route_conf = (ours[0] or "").encode() if ours else b""
        if problem is None and route_conf:
            try:
                parse_policy(route_conf, self.runtime.config, source=f"{entry.route} conf")
            except ConfigError as exc:
                problem = "; ".join(exc.problems)
        if problem is not None:
            log.error("%s (key %s): invalid %s conf: %s; its requests will be refused with 500 until it is fixed",
                      entry.route, entry.key, self.plugin_name, problem)
            return Compiled(error=RouteError(500, f"llm-router conf of {entry.route} is invalid: {problem}",
                                             code="bad_route_config"), scope=scope)
        policy = self.runtime.policy_for(route_conf or None)
        if isinstance(policy, RouteError):
            log.error("%s (key %s): %s", entry.route, entry.key, policy.message)
            return Compiled(error=policy, scope=scope)
        log.info("%s: token %d, policy %s (key %s)", entry.route, entry.token, policy.name, entry.key)
        return Compiled(route_conf=route_conf or None, scope=scope, max_body=min(policy.conf.max_body_bytes, BODY_LIMIT))

    def _entry(self, token: int) -> Entry | None:
        entry = self.tokens.get(token)
        if entry is not None and entry.compiled is None:
            entry.compiled = self.compile(entry)  # a token published by a sibling process
        return entry

    # ---- HTTPReqCall ----------------------------------------------------------------------

    def _on_req_call(self, conv: Conversation, payload: bytes) -> bytes:
        call = decode.read_req_call(payload)
        self.stats.req_calls += 1
        entry = self._entry(call.conf_token)
        if entry is None:
            self.stats.token_misses += 1
            return encode.TOKEN_NOT_FOUND_FRAME
        compiled: Compiled = entry.compiled
        if compiled.error is not None:
            return self._stop(call.id, compiled.error.status, compiled.error.openai_body(), None)
        if MARK in call.path:
            stored = self._sent_on(call, entry, self.runtime.stored_response)
            if stored is not None:
                return stored
        elif call.method == decode.METHOD_GET and "/models" in call.path:
            listed = self._models(call, entry, payload)
            if listed is not None:
                return listed
        if call.method != decode.METHOD_POST or not self.runtime.handles(call.path):
            forwarded = self._sent_on(call, entry, self.runtime.forwarded)
            if forwarded is not None:
                return forwarded
            # Not an LLM call: let it through, but never with a routing header the client chose.
            self.stats.passes += 1
            return encode.rewrite_frame(call.id, headers=self.entries.vector(((self.runtime.route_header, None),)))
        length = decode.req_header(payload, b"content-length") if decode.may_be_large(payload) else None
        if length is not None and length.isdigit() and int(length) > compiled.max_body:
            # refuse before the body crosses the socket (over 16 MiB it could not cross at all)
            err = RouteError(413, f"request body of {int(length)} bytes exceeds the limit of {compiled.max_body} bytes",
                             code="request_too_large", field="body")
            return self._stop(call.id, 413, err.openai_body(), None)
        conv.pending = Pending("body", call.id, entry, call=call)
        return encode.REQ_BODY_FRAME

    def _sent_on(self, call: decode.ReqCall, entry: Entry, find: Callable[..., UpstreamCall | Refusal | None]) -> bytes | None:
        """A call sent on unrouted to one provider with its key, its body untouched: a stored response
        (`runtime.stored_response`) or a forwarded API (`runtime.forwarded`); None when it is not such a call."""
        runtime = self.runtime
        ex = Exchange(runtime.new_request_id(), entry.route, self.clock())
        result = find(call.path, ex=ex, route_conf=entry.compiled.route_conf, headers=self._client_headers(call))
        if result is None:
            return None
        if isinstance(result, Refusal):
            self.stats.stops += 1
            return encode.stop_frame(call.id, result.status, self.entries.vector((), result.headers), result.body)
        self.stats.sent_on += 1
        scope = entry.compiled.scope
        observed = ex.extra.get("forward") in PRICED_APIS and (scope in self._post_resp_scopes or self._probing(scope))
        if observed:
            self._remember(ex)  # priced from its answer's usage, in the post-resp call
        extra = ((REQUEST_ID_HEADER, ex.request_id), *(_readable_accept(call) if observed else ()))
        return encode.rewrite_frame(call.id, path=result.path, headers=self._request_headers(result, extra),
                                    resp_headers=self.entries.vector((), result.response_headers))

    def _client_headers(self, call: decode.ReqCall) -> list[tuple[str, str | None]] | None:
        """The client's headers when the runtime reads them (spend limits, consumer policies); decoding them costs."""
        return call.headers() if self.runtime.wants_headers else None

    def _models(self, call: decode.ReqCall, entry: Entry, payload: bytes) -> bytes | None:
        """`GET .../models[/{id}]`: the route's models, answered by the runner (None: not such a call)."""
        runtime = self.runtime
        ex = Exchange(runtime.new_request_id(), entry.route, self.clock())
        anthropic = decode.req_header(payload, b"anthropic-version") is not None
        reply = runtime.models_reply("GET", call.path, ex=ex, route_conf=entry.compiled.route_conf, anthropic=anthropic,
                                     headers=self._client_headers(call))
        if reply is None:
            return None
        self.stats.stops += 1
        return encode.stop_frame(call.id, reply.status, self.entries.vector((), reply.headers), reply.body)

    def _on_extra_info(self, conv: Conversation, pending: Pending, payload: bytes) -> bytes | Deferred | None:
        result = decode.read_extra_info_result(payload)
        if pending.kind == "body":
            return self._route(pending, result or b"")
        if pending.kind == "held":
            return pending.reply
        if pending.kind == "rid":
            return self._resp_matched(conv, pending, result)
        if pending.kind == "rid+body":  # the request id; the body's answer follows
            pending.kind = "asked_body"
            pending.reply = result or b""
            conv.pending = pending
            return None
        if pending.kind == "asked_body":
            return self._resp_matched(conv, pending, pending.reply, body=result)
        return self._resp_done(pending, result)

    def prepare(self, conv: Conversation) -> None:
        """What a call can have ready before its body comes: done while the runner polls for the body."""
        pending = conv.pending
        if pending is not None and pending.kind == "body" and pending.exchange is None and pending.entry is not None:
            pending.exchange = Exchange(self.runtime.new_request_id(), pending.entry.route, self.clock())

    def _route(self, pending: Pending, body: bytes) -> bytes | Deferred:
        entry = pending.entry
        assert entry is not None  # a "body" Pending always carries its route's entry
        runtime = self.runtime
        ex = pending.exchange or Exchange(runtime.new_request_id(), entry.route, self.clock())
        call = pending.call
        assert call is not None  # a "body" Pending always carries its call
        result = runtime.decide(body, path=call.path, ex=ex, route_conf=entry.compiled.route_conf,
                                headers=self._client_headers(call))
        if isinstance(result, Refusal):
            self.stats.stops += 1
            return encode.stop_frame(pending.rid, result.status, self.entries.vector((), result.headers), result.body)
        if wants_orchestration(ex):
            # cascade / hedge on a non-streaming request: the runner makes the calls and answers with a Stop
            self.stats.orchestrated += 1
            return Deferred(self._orchestrated(pending.rid, ex))
        scope = entry.compiled.scope
        # not for unrouted calls (a token count): nothing to account or fall back on
        observed = ex.decision is not None and (scope in self._post_resp_scopes or self._probing(scope))
        extra = ((REQUEST_ID_HEADER, ex.request_id), *(_readable_accept(call) if observed else ()))
        try:
            frame = encode.rewrite_frame(pending.rid, path=result.path, headers=self._request_headers(result, extra),
                                         resp_headers=self.entries.vector((), result.response_headers), body=result.body)
        except FrameError:
            err = RouteError(413, f"rewritten request body of {len(result.body)} bytes exceeds the gateway's 16 MiB limit",
                             code="request_too_large", field="body")
            return self._stop(pending.rid, 413, err.openai_body(), ex.request_id)
        self.stats.rewrites += 1
        if observed:
            self._remember(ex)
        return frame

    def _request_headers(self, call: UpstreamCall, extra: tuple[tuple[str, str], ...]) -> bytes:
        """The Rewrite's header vector: the call's headers to set, its client headers to drop, then `extra`."""
        removals = self._removals.get(call.remove_headers)
        if removals is None:
            removals = self._removals[call.remove_headers] = tuple((h, None) for h in call.remove_headers)
        return self.entries.vector(call.set_headers + removals, extra)

    async def _orchestrated(self, rid: int, ex: Exchange) -> bytes:
        assert ex.request is not None and ex.decision is not None  # set by Runtime.decide before it plans the call
        reply = await orchestrate(self.runtime, ex, ex.request, ex.decision)
        self.stats.stops += 1
        reply = _fits(reply, ex)
        return encode.stop_frame(rid, reply.status, self.entries.vector((), tuple(reply.headers)), reply.body)

    async def _fallback(self, rid: int, ex: Exchange, status: int, failed_model: str) -> bytes:
        reply = await self._fallback_reply(ex, status, failed_model)
        return encode.resp_call_frame(rid, reply.status, self.entries.vector((), tuple(reply.headers)), reply.body)

    async def _fallback_reply(self, ex: Exchange, status: int, failed_model: str) -> OrchestratedReply:
        reply = await fallback(self.runtime, ex, failed_status=status, failed_model=failed_model)
        self._forget(ex)
        return _fits(reply, ex)

    def _stop(self, rid: int, status: int, body: dict, request_id: str | None) -> bytes:
        self.stats.stops += 1
        extra = ((REQUEST_ID_HEADER, request_id),) if request_id else ()
        return encode.stop_frame(rid, status, self.entries.vector(JSON_HEADERS, extra), orjson.dumps(body))

    def _probing(self, scope: str) -> bool:
        """Whether to remember one more request of a route whose post-resp conf has not arrived yet."""
        seen = self._probed.get(scope, 0)
        if seen >= PROBE_REQUESTS:
            return False
        if len(self._probed) > 10_000:
            self._probed.clear()
        self._probed[scope] = seen + 1
        return True

    def _remember(self, ex: Exchange) -> None:
        """Keep a slim copy of the exchange until its response call (bounded); the request body too
        when a failed answer may be retried down the chain (bounded per body and in total)."""
        if ex.call is not None:  # accounting needs the call's model, not the rewritten body
            ex.call = replace(ex.call, body=b"")
        req = ex.request
        if req is not None:
            keep = (self.fallback_enabled and ex.decision is not None and ex.decision.fallbacks
                    and req.body_bytes <= FALLBACK_MAX_BODY and self._kept_bytes + req.body_bytes <= FALLBACK_KEPT_BYTES)
            if keep:
                self._kept_bytes += req.body_bytes
                ex.extra["kept"] = req.body_bytes
            else:
                req.body = {}
        exchanges = self.exchanges
        if len(exchanges) >= MAX_EXCHANGES:
            self._forget(exchanges.pop(next(iter(exchanges))))
        exchanges[ex.request_id] = ex

    def _forget(self, ex: Exchange) -> None:
        """Release what an exchange held for a fallback."""
        kept = ex.extra.pop("kept", 0)
        if kept:
            self._kept_bytes -= kept
            if ex.request is not None:
                ex.request.body = {}

    # ---- HTTPRespCall ---------------------------------------------------------------------

    def _on_resp_call(self, conv: Conversation, payload: bytes) -> bytes:
        call = decode.read_resp_call(payload)
        self.stats.resp_calls += 1
        entry = self._entry(call.conf_token)
        if entry is None:
            self.stats.token_misses += 1
            return encode.TOKEN_NOT_FOUND_FRAME
        pending = Pending("rid", call.id, entry, status=call.status, headers=call.headers,
                          shape=_answer_shape(call.headers))
        conv.pending = pending
        if call.status not in FALLBACK_STATUSES and _bounded_json(pending.shape):
            # The answer will be read for its usage if the request is ours: ask for the request id and the body
            # at once. APISIX answers ExtraInfo requests one after the other in a loop, so the second waits in the
            # socket for the first's answer to go out: one round trip instead of two.
            pending.kind = "rid+body"
            return REQUEST_ID_AND_BODY_FRAMES
        return REQUEST_ID_FRAME

    def _resp_matched(self, conv: Conversation, pending: Pending, rid: bytes | None,
                      body: bytes | None = None) -> bytes | Deferred:
        """The response call matched to its request by id; `body`: the answer, when it was asked for with the id."""
        asked = pending.kind == "asked_body"
        request_id = rid.decode("utf-8", "replace") if rid else ""
        ex = self.exchanges.pop(request_id, None) if rid else None
        if ex is None:
            peers = self.peers
            if peers is not None and request_id and peers.owner(request_id) is not None:
                return self._to_peer(pending, request_id, body)
            if request_id:
                self.stats.unmatched_responses += 1
            else:
                self.stats.unrouted_responses += 1
        elif pending.status in FALLBACK_STATUSES and ex.extra.get("kept") and ex.call is not None:
            # the gateway's call failed: account it, then the runner tries the rest of the chain itself
            return self._fall_back(pending.rid, ex, pending.status, pending.headers, self.clock())
        elif ex is not None:
            self._forget(ex)
        pending.exchange = ex
        if asked:
            return self._resp_done(pending, body if ex is not None else None)
        # Read the answer only when it is a bounded JSON document; streams pass untouched.
        if ex is not None and _bounded_json(pending.shape):
            pending.kind = "resp_body"
            conv.pending = pending
            return encode.RESP_BODY_FRAME
        return self._resp_done(pending, None)

    def _fall_back(self, rid: int, ex: Exchange, status: int, headers: list, now: float) -> Deferred:
        """Account the gateway's failed call, then retry the rest of the chain (the reply follows)."""
        return Deferred(self._fallback(rid, ex, status, self._failed(ex, status, headers, now)))

    def _failed(self, ex: Exchange, status: int, headers: list, now: float) -> str:
        """Account the gateway's failed call of a kept request; the model that failed."""
        assert ex.call is not None
        try:
            self.runtime.on_response(ex, status, None, now - ex.started, headers)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("accounting failed for %s", ex.request_id)
        self.stats.fallbacks += 1
        return ex.call.model.id

    def _resp_done(self, pending: Pending, body: bytes | None) -> bytes:
        ex = pending.exchange
        if ex is not None:
            self._settle(ex, pending.status, pending.headers, pending.shape, body, self.clock())
        return self._passed(pending)

    def _passed(self, pending: Pending) -> bytes:
        """The reply that lets the upstream's answer through untouched."""
        headers = tuple((n, v) for n, v in pending.headers if n.lower() not in HOP_BY_HOP and v is not None)
        return encode.resp_call_frame(pending.rid, 0, self.entries.vector((), headers), None)

    def _settle(self, ex: Exchange, status: int, headers: list, shape: tuple[str, str, str], body: bytes | None,
                now: float) -> None:
        """Account an answered call: now with the JSON answer's usage, or once its stream's usage log comes."""
        latency = now - ex.started
        ctype, _, encoding = shape
        if body is None and self.stream_usage and 200 <= status < 300 and not encoding and "event-stream" in ctype:
            early = self.early_usage
            if early and ex.request_id in early:
                self.stats.stream_usage_logged += 1
                self._account(ex, status, early.pop(ex.request_id), latency, headers)
            else:
                self._park(ex, status, latency, headers)
        else:
            usage = usage_from_json(inflate(body, encoding, MAX_RESP_BODY * 4)) if body else None
            self._account(ex, status, usage, latency, headers)

    def _account(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float, headers: list) -> None:
        try:
            self.runtime.on_response(ex, status, usage, latency_s, headers)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("accounting failed for %s", ex.request_id)

    # ---- usage of streamed answers (server.apisix_stream_usage) -----------------------------

    def _park(self, ex: Exchange, status: int, latency_s: float, headers: list) -> None:
        now = self.clock()
        self.sweep(now)
        parked = self.parked
        if len(parked) >= MAX_PARKED:
            self._expire(parked.pop(next(iter(parked))))
        parked[ex.request_id] = Parked(ex, status, latency_s, list(headers), now + STREAM_USAGE_WAIT_S)

    def _expire(self, p: Parked) -> None:
        self.stats.stream_usage_expired += 1
        self._account(p.ex, p.status, None, p.latency_s, p.headers)

    def sweep(self, now: float) -> None:
        """Account the streamed answers whose usage log did not come in time, without usage."""
        parked = self.parked
        while parked:
            rid = next(iter(parked))  # parked in order of their deadlines
            if parked[rid].until > now:
                break
            self._expire(parked.pop(rid))

    def take_usage(self, logs: list[StreamLog]) -> None:
        """Logged exchanges (APISIX's http-logger): each waiting stream is accounted with the usage in its SSE text."""
        for entry in logs:
            p = self.parked.pop(entry.request_id, None)
            if p is None:
                if entry.request_id in self.exchanges:  # routed here, its response call not seen yet: kept for it
                    early = self.early_usage
                    if len(early) >= MAX_PARKED:
                        del early[next(iter(early))]
                    early[entry.request_id] = _stream_usage(entry)
                else:
                    self.stats.stream_usage_unmatched += 1
                continue
            self.stats.stream_usage_logged += 1
            self._account(p.ex, p.status, _stream_usage(entry), p.latency_s, p.headers)
        self.sweep(self.clock())

    def flush_parked(self) -> None:
        """Account every waiting stream without usage (shutdown)."""
        while self.parked:
            self._expire(self.parked.pop(next(iter(self.parked))))

    # ---- several processes (--workers > 1) --------------------------------------------------

    def _to_peer(self, pending: Pending, request_id: str, body: bytes | None) -> bytes | Deferred:
        """A response call of a request another process routed: that process accounts it, or retries down the chain
        (then its reply goes back to APISIX from here)."""
        self.stats.to_peers += 1
        compiled = pending.entry.compiled if pending.entry is not None else None
        message = (request_id, pending.status, pending.headers, body, self.clock(), compiled.scope if compiled else "")
        if pending.status not in FALLBACK_STATUSES:
            self.peers.send(request_id, "resp", message)
            return self._passed(pending)
        return Deferred(self._peer_fallback(pending, request_id, message))

    async def _peer_fallback(self, pending: Pending, request_id: str, message: tuple) -> bytes:
        reply = None
        try:
            reply = await self.peers.ask(request_id, "resp", message)
        except Exception as exc:  # that process is gone or stuck: the failed answer goes through as it is
            self.stats.peer_failures += 1
            log.warning("could not hand the response of %s to the process that routed it: %s", request_id, exc)
        if reply is None:
            return self._passed(pending)
        status, headers, body = reply
        return encode.resp_call_frame(pending.rid, status, self.entries.vector((), tuple(headers)), body)

    def peer_response(self, request_id: str, status: int, headers: list, body: bytes | None, at: float,
                      scope: str = "") -> Awaitable[tuple[int, list, bytes]] | None:
        """A response call another process got for a request this one routed: account it; or, when the call failed
        and the request was kept, retry down the chain and return the reply (status, headers, body) to send."""
        if scope:  # the route has ext-plugin-post-resp: remember its requests, also if no response call reaches here
            self._post_resp_scopes.add(scope)
        ex = self.exchanges.pop(request_id, None)
        if ex is None:
            self.stats.unmatched_responses += 1
            return None
        self.stats.from_peers += 1
        if status in FALLBACK_STATUSES and ex.extra.get("kept") and ex.call is not None:
            return self._peer_retry(ex, status, self._failed(ex, status, headers, at))
        self._forget(ex)
        self._settle(ex, status, headers, _answer_shape(headers), body, at)
        return None

    async def _peer_retry(self, ex: Exchange, status: int, failed_model: str) -> tuple[int, list, bytes]:
        reply = await self._fallback_reply(ex, status, failed_model)
        return reply.status, list(reply.headers), reply.body


def _stream_usage(entry: StreamLog) -> Usage | None:
    """The usage block in a logged stream's SSE text; None when it has none or is mangled (the call is still accounted)."""
    try:
        sse = SSEUsage()
        sse.feed(entry.body)
        sse.finish()
        return sse.usage
    except Exception:
        log.warning("could not read the usage of %s's logged stream", entry.request_id)
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _fits(reply: OrchestratedReply, ex: Exchange) -> OrchestratedReply:
    """A reply APISIX can take in one frame; a larger answer becomes a 502 naming the limit."""
    if len(reply.body) + 4096 <= BODY_LIMIT:
        return reply
    err = RouteError(502, f"the answer of {len(reply.body)} bytes exceeds the ext-plugin frame limit of {BODY_LIMIT} bytes",
                     code="response_too_large")
    return OrchestratedReply(502, [("content-type", "application/json"), (REQUEST_ID_HEADER, ex.request_id)],
                             orjson.dumps(err.openai_body()))


def _readable_accept(call: decode.ReqCall) -> tuple[tuple[str, str], ...]:
    """The accept-encoding to send instead of the client's when it names codings whose usage the runner
    cannot read (br, zstd); () when the client's is fine or absent."""
    value = decode.req_header(call.payload, b"accept-encoding")
    return accept_encoding_override(value.decode("latin-1")) if value else ()


def describe(entry: Entry) -> dict[str, Any]:
    """A token entry as plain data (for debugging endpoints and tests)."""
    c: Compiled | None = entry.compiled
    return {"token": entry.token, "key": entry.key, "route": entry.route,
            "error": c.error.message if c and c.error else None}
