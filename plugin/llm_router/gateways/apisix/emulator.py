"""An APISIX-side emulator of the ext-plugin protocol, for tests and the benchmark.

It does what apisix/plugins/ext-plugin/init.lua does, byte for byte: requests are built with the
flatbuffers code generated from ext_plugin.fbs; each RPC takes a kept-alive connection from a
pool (or opens one) and gives it back after a clean exchange; a missing conf token triggers
PrepareConf on a *second* connection while the first is held; the token is cached per worker
(lrucache) and in a shared dict (0.9 x TTL); "conf token not found" flushes both caches and the
call is retried up to 3 times; ExtraInfo requests are answered in a loop; any other failure
gives 503. Every frame the runner sends is checked: it must decode completely with the
generated code, and its type must equal the request's (or be an interleaved type 3, or type 0).
"""
from __future__ import annotations

import itertools
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import flatbuffers

from llm_router.gateways.apisix import framing
from llm_router.gateways.apisix.framing import (
    RPC_ERROR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF, FrameError,
)
from llm_router.gateways.apisix.proto.A6 import TextEntry as TE
from llm_router.gateways.apisix.proto.A6.Err import Resp as ErrResp
from llm_router.gateways.apisix.proto.A6.ExtraInfo import Req as EIReq, Resp as EIResp, Var as EIVar
from llm_router.gateways.apisix.proto.A6.HTTPReqCall import Req as HReq, Resp as HResp, Rewrite as HRewrite, Stop as HStop
from llm_router.gateways.apisix.proto.A6.HTTPRespCall import Req as RReq, Resp as RResp
from llm_router.gateways.apisix.proto.A6.PrepareConf import Req as PReq, Resp as PResp

ERR_MESSAGES = {0: "bad request", 1: "service unavailable", 2: "conf token not found"}
METHOD_CODES = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS",
                                            "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE"))}
CONF_TOKEN_CACHE_TIME = 3600.0  # hard-coded in APISIX's helper.get_conf_token_cache_time()


class ProtocolViolation(AssertionError):
    """The runner sent bytes APISIX would not accept."""


class RPCError(Exception):
    """An RPC failed the way init.lua's rpc_call fails (the message is APISIX's)."""


# ---- building requests (as APISIX does, with a flatbuffers Builder) ---------------------------

def _entries(b: flatbuffers.Builder, pairs: Sequence[tuple[str, str | None]]) -> list[int]:
    out = []
    for name, value in pairs:
        n = b.CreateString(name)
        v = b.CreateString(value) if value is not None else None
        TE.Start(b)
        TE.AddName(b, n)
        if v is not None:
            TE.AddValue(b, v)
        out.append(TE.End(b))
    return out


def _vector(b: flatbuffers.Builder, start: Callable, items: list[int]) -> int:
    start(b, len(items))
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def build_prepare_conf(conf: Sequence[tuple[str, str]], key: str) -> bytes:
    """PrepareConf.Req payload."""
    b = flatbuffers.Builder(256)
    k = b.CreateString(key)
    vec = _vector(b, PReq.StartConfVector, _entries(b, conf))
    PReq.Start(b)
    PReq.AddKey(b, k)
    PReq.AddConf(b, vec)
    b.Finish(PReq.End(b))
    return bytes(b.Output())


def build_req_call(rid: int, token: int, *, method: str = "POST", path: str = "/v1/chat/completions",
                   headers: Sequence[tuple[str, str]] = (), args: Sequence[tuple[str, str | None]] = (),
                   src_ip: bytes = b"\x7f\x00\x00\x01") -> bytes:
    """HTTPReqCall.Req payload (the body is not part of it: the runner asks for it)."""
    b = flatbuffers.Builder(512)
    p = b.CreateString(path)
    ip = b.CreateByteVector(src_ip)
    a = _vector(b, HReq.StartArgsVector, _entries(b, args))
    h = _vector(b, HReq.StartHeadersVector, _entries(b, headers))
    HReq.Start(b)
    HReq.AddId(b, rid)
    HReq.AddConfToken(b, token)
    HReq.AddSrcIp(b, ip)
    HReq.AddPath(b, p)
    HReq.AddArgs(b, a)
    HReq.AddHeaders(b, h)
    HReq.AddMethod(b, METHOD_CODES[method])
    b.Finish(HReq.End(b))
    return bytes(b.Output())


def build_extra_info_resp(result: bytes | None) -> bytes:
    """ExtraInfo.Resp payload (result absent when the value is nil)."""
    b = flatbuffers.Builder(len(result or b"") + 64)
    vec = b.CreateByteVector(result) if result is not None else None
    EIResp.Start(b)
    if vec is not None:
        EIResp.AddResult(b, vec)
    b.Finish(EIResp.End(b))
    return bytes(b.Output())


def build_resp_call(rid: int, token: int, status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    """HTTPRespCall.Req payload."""
    b = flatbuffers.Builder(512)
    h = _vector(b, RReq.StartHeadersVector, _entries(b, headers))
    RReq.Start(b)
    RReq.AddId(b, rid)
    RReq.AddStatus(b, status)
    RReq.AddHeaders(b, h)
    RReq.AddConfToken(b, token)
    b.Finish(RReq.End(b))
    return bytes(b.Output())


# ---- decoding replies strictly with the generated code ---------------------------------------

def _text(v: bytes | None, what: str) -> str | None:
    if v is None:
        return None
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(f"{what} is not valid UTF-8") from None


def _read_entries(obj, length: Callable[[], int], get: Callable[[int], object], what: str) -> list[tuple[str, str | None]]:
    out = []
    for i in range(length()):
        e = get(i)
        name = _text(e.Name(), f"{what}[{i}].name")
        if not name:
            raise ProtocolViolation(f"{what}[{i}] has no name")
        out.append((name, _text(e.Value(), f"{what}[{i}].value")))
    return out


def _bytes_of(length: Callable[[], int], get: Callable[[int], int]) -> bytes:
    return bytes(get(i) for i in range(length()))


def _body_of(table, is_none: Callable[[], bool]) -> bytes | None:
    if is_none():
        return None
    arr = table.BodyAsNumpy()
    if isinstance(arr, int):  # numpy missing: the runtime returns 0
        return _bytes_of(table.BodyLength, table.Body)
    return arr.tobytes()


@dataclass
class Reply:
    """A decoded runner reply."""

    rpc_type: int
    fields: dict


def decode_reply(request_type: int, rpc_type: int, payload: bytes) -> Reply:
    """Decode a frame from the runner completely with the generated code; raise on any defect."""
    allowed = {request_type, RPC_ERROR}
    if request_type in (RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL):
        allowed.add(RPC_EXTRA_INFO)
    if rpc_type not in allowed:
        raise ProtocolViolation(f"reply type {rpc_type} to a type {request_type} request (unexpected type)")
    try:
        return Reply(rpc_type, _DECODERS[rpc_type](payload))
    except ProtocolViolation:
        raise
    except Exception as exc:  # out-of-range offsets surface as struct/index errors
        raise ProtocolViolation(f"type {rpc_type} payload does not decode: {type(exc).__name__}: {exc}") from None


def _decode_err(p: bytes) -> dict:
    code = ErrResp.Resp.GetRootAs(p, 0).Code()
    if code not in ERR_MESSAGES:
        raise ProtocolViolation(f"unknown Err code {code}")
    return {"code": code, "message": ERR_MESSAGES[code]}


def _decode_prepare(p: bytes) -> dict:
    return {"token": PResp.Resp.GetRootAs(p, 0).ConfToken()}


def _decode_req_call(p: bytes) -> dict:
    r = HResp.Resp.GetRootAs(p, 0)
    out: dict = {"id": r.Id(), "action": None}
    kind = r.ActionType()
    if kind == 0:
        return out
    t = r.Action()
    if t is None:
        raise ProtocolViolation("action type set without an action table")
    if kind == 1:
        s = HStop.Stop()
        s.Init(t.Bytes, t.Pos)
        out.update(action="stop", status=s.Status(), headers=_read_entries(s, s.HeadersLength, s.Headers, "stop.headers"),
                   body=_body_of(s, s.BodyIsNone))
    elif kind == 2:
        w = HRewrite.Rewrite()
        w.Init(t.Bytes, t.Pos)
        out.update(action="rewrite", path=_text(w.Path(), "rewrite.path"),
                   headers=_read_entries(w, w.HeadersLength, w.Headers, "rewrite.headers"),
                   args=_read_entries(w, w.ArgsLength, w.Args, "rewrite.args"),
                   resp_headers=_read_entries(w, w.RespHeadersLength, w.RespHeaders, "rewrite.resp_headers"),
                   body=_body_of(w, w.BodyIsNone))
    else:
        raise ProtocolViolation(f"unknown action type {kind}")
    return out


def _decode_extra_info(p: bytes) -> dict:
    r = EIReq.Req.GetRootAs(p, 0)
    kind = r.InfoType()
    if kind == 1:
        t = r.Info()
        v = EIVar.Var()
        v.Init(t.Bytes, t.Pos)
        return {"info": "var", "name": _text(v.Name(), "var.name")}
    if kind in (2, 3):
        if r.Info() is None:
            raise ProtocolViolation("info type set without an info table")
        return {"info": "req_body" if kind == 2 else "resp_body"}
    raise ProtocolViolation(f"unknown ExtraInfo info type {kind}")


def _decode_resp_call(p: bytes) -> dict:
    r = RResp.Resp.GetRootAs(p, 0)
    return {"id": r.Id(), "status": r.Status(), "headers_none": r.HeadersIsNone(),
            "headers": _read_entries(r, r.HeadersLength, r.Headers, "resp.headers"), "body": _body_of(r, r.BodyIsNone)}


_DECODERS = {RPC_ERROR: _decode_err, RPC_PREPARE_CONF: _decode_prepare, RPC_HTTP_REQ_CALL: _decode_req_call,
             RPC_EXTRA_INFO: _decode_extra_info, RPC_HTTP_RESP_CALL: _decode_resp_call}


# ---- the APISIX side --------------------------------------------------------------------------

@dataclass(frozen=True)
class RouteConf:
    """An ext-plugin-* plugin config on a route, as APISIX keys and sends it."""

    conf: tuple[tuple[str, str], ...]
    conf_id: str = "1"
    conf_type: str = "route"
    plugin: str = "ext-plugin-pre-req"
    version: int = 1

    @property
    def key(self) -> str:
        return f"{self.conf_type}#{self.conf_id}#{self.plugin}#{self.version}"


class SharedDict:
    """The `ext-plugin` lua_shared_dict: conf tokens shared by all workers, with expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._d: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> int | None:
        with self._lock:
            found = self._d.get(key)
            if found is None or found[1] <= self.clock():
                return None
            return found[0]

    def set(self, key: str, token: int, ttl: float) -> None:
        with self._lock:
            self._d[key] = (token, self.clock() + ttl)

    def flush_all(self) -> None:
        with self._lock:
            self._d.clear()


@dataclass
class Outcome:
    """What APISIX does with a request after the runner answered."""

    status: int | None  # None: the request goes upstream; else APISIX answers with this status
    action: str | None = None  # "rewrite" | "stop" | None
    reply: dict = field(default_factory=dict)
    error: str | None = None
    tries: int = 1
    extra_info: list[dict] = field(default_factory=list)
    upstream_path: str = ""
    upstream_args: list[tuple[str, str | None]] = field(default_factory=list)  # the query APISIX sends upstream
    upstream_headers: dict[str, str] = field(default_factory=dict)
    upstream_body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # the local reply body (Stop) or a replaced response body

    @property
    def ok(self) -> bool:
        return self.status is None


@dataclass
class ClientResponse:
    """What the client gets from the emulated gateway (pre-req, traffic-split, upstream call, post-resp)."""

    status: int
    headers: dict[str, str]
    body: bytes
    upstream: str | None  # the upstream traffic-split picked (None: answered before any upstream call)
    pre: Outcome
    post: Outcome | None = None
    upstream_status: int | None = None  # what the provider itself answered


class Emulator:
    """One APISIX worker talking to a runner socket."""

    def __init__(self, path: str, *, worker_id: int = 0, shared: SharedDict | None = None,
                 cache_ttl: float = CONF_TOKEN_CACHE_TIME, clock: Callable[[], float] = time.monotonic,
                 pool_size: int = 32, timeout: float = 60.0, connect_timeout: float = 1.0):
        self.path = path
        self.worker_id = worker_id
        self.clock = clock
        self.shared = shared or SharedDict(clock)
        self.cache_ttl = cache_ttl
        self.pool_size = pool_size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._lru: dict[str, tuple[int, float]] = {}
        self._pool: list[socket.socket] = []
        self._count = itertools.count()
        self.connections_opened = 0
        self.frames_checked = 0
        self.prepare_conf_sent = 0
        self.log: list[tuple[str, int, int]] = []  # (direction, rpc type, payload length)

    # ---- connections ---------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        while self._pool:
            sock = self._pool.pop()
            if _peer_closed(sock):
                sock.close()
                continue
            return sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise RPCError(f"failed to connect to the unix socket {self.path}: {exc.strerror or exc}") from None
        sock.settimeout(self.timeout)
        self.connections_opened += 1
        return sock

    def _keepalive(self, sock: socket.socket) -> None:
        if len(self._pool) < self.pool_size:
            self._pool.append(sock)
        else:
            sock.close()

    def close(self) -> None:
        """Close every pooled connection."""
        for sock in self._pool:
            sock.close()
        self._pool.clear()

    @property
    def pooled(self) -> int:
        return len(self._pool)

    def send(self, sock: socket.socket, rpc_type: int, payload: bytes) -> None:
        """init.lua's send(): refuse over-long data, else header + payload in one write."""
        if len(payload) > framing.MAX_PAYLOAD:
            raise RPCError(f"the max length of data is {framing.MAX_PAYLOAD} but got {len(payload)}")
        self.log.append(("out", rpc_type, len(payload)))
        try:
            sock.sendall(framing.frame(rpc_type, payload))
        except OSError as exc:
            raise RPCError(f"failed to send: {exc}") from None

    def receive(self, sock: socket.socket) -> tuple[int, bytes]:
        """init.lua's receive(): 4-byte header, then exactly `length` bytes."""
        hdr = _recv_exact(sock, 4)
        if hdr is None:
            raise RPCError("closed")
        rpc_type, length = framing.parse_header(hdr)
        payload = b""
        if length:
            payload = _recv_exact(sock, length)
            if payload is None:
                raise RPCError("data truncated")
        self.log.append(("in", rpc_type, length))
        return rpc_type, payload

    def _expect(self, sock: socket.socket, request_type: int) -> Reply:
        rpc_type, payload = self.receive(sock)
        reply = decode_reply(request_type, rpc_type, payload)
        self.frames_checked += 1
        if rpc_type == RPC_ERROR:
            raise RPCError(reply.fields["message"])
        return reply

    # ---- tokens ---------------------------------------------------------------------------

    def flush(self) -> None:
        """create_lrucache(): forget every token (after 'conf token not found' or a runner exit)."""
        self.shared.flush_all()
        self._lru.clear()

    def _token(self, route: RouteConf) -> int:
        found = self._lru.get(route.key)
        if found is not None and found[1] > self.clock():
            return found[0]
        token = self.prepare_conf(route)
        self._lru[route.key] = (token, self.clock() + self.cache_ttl)
        return token

    def prepare_conf(self, route: RouteConf) -> int:
        """rpc_call(RPC_PREPARE_CONF): shared dict first, else ask the runner on a connection of its own."""
        token = self.shared.get(route.key)
        if token is not None:
            return token
        sock = self._connect()
        try:
            self.send(sock, RPC_PREPARE_CONF, build_prepare_conf(route.conf, route.key))
            self.prepare_conf_sent += 1
            try:
                reply = self._expect(sock, RPC_PREPARE_CONF)
            except RPCError as exc:
                raise RPCError(f"failed to receive RPC_PREPARE_CONF: {exc}") from None
        except BaseException:
            sock.close()
            raise
        self._keepalive(sock)
        token = reply.fields["token"]
        self.shared.set(route.key, token, self.cache_ttl * 0.9)
        return token

    def next_id(self) -> int:
        return (self.worker_id << 22) | (next(self._count) % (1 << 22))

    # ---- calls ----------------------------------------------------------------------------

    def http_req_call(self, route: RouteConf, *, method: str = "POST", path: str = "/v1/chat/completions",
                      headers: Iterable[tuple[str, str]] = (), args: Sequence[tuple[str, str | None]] = (),
                      body: bytes | None = b"", variables: dict[str, str] | None = None) -> Outcome:
        """ext-plugin-pre-req for one client request, with communicate()'s retries."""
        headers = [(n.lower(), v) for n, v in headers]
        return self._communicate(lambda: self._req_call_once(route, method, path, headers, args, body, variables or {}))

    def http_resp_call(self, route: RouteConf, *, status: int = 200, headers: Iterable[tuple[str, str]] = (),
                       body: bytes = b"", variables: dict[str, str] | None = None) -> Outcome:
        """ext-plugin-post-resp after the upstream answered with status and headers."""
        headers = [(n.lower(), v) for n, v in headers]
        return self._communicate(lambda: self._resp_call_once(route, status, headers, body, variables or {}))

    def _communicate(self, once: Callable[[], Outcome]) -> Outcome:
        err = ""
        for tries in range(1, 4):
            try:
                outcome = once()
            except RPCError as exc:
                err = str(exc)
                if "conf token not found" not in err:
                    return Outcome(status=503, error=err, tries=tries)
                self.flush()
                continue
            outcome.tries = tries
            return outcome
        return Outcome(status=503, error=err, tries=3)

    def _extra_info(self, sock: socket.socket, request_type: int, reply: Reply, outcome: Outcome,
                    body: bytes | None, variables: dict[str, str], resp_body: bytes | None) -> Reply:
        while reply.rpc_type == RPC_EXTRA_INFO:
            info = reply.fields
            outcome.extra_info.append(info)
            if info["info"] == "var":
                value = variables.get(info["name"])
                result = None if value is None else str(value).encode()
            elif info["info"] == "req_body":
                result = body
            elif request_type == RPC_HTTP_RESP_CALL:
                result = resp_body
            else:
                raise RPCError(f"failed to handle RPC_EXTRA_INFO: unsupported info type: {3}")
            self.send(sock, RPC_EXTRA_INFO, build_extra_info_resp(result))
            reply = self._expect(sock, request_type)
        return reply

    def _call(self, route: RouteConf, rpc: int, build: Callable[[int], bytes], req_body: bytes | None,
              variables: dict[str, str], resp_body: bytes | None) -> tuple[Reply, Outcome]:
        """One HTTPReqCall/HTTPRespCall on a keepalive connection, ExtraInfo answered, as APISIX does it."""
        sock = self._connect()
        try:
            token = self._token(route)  # may run PrepareConf on a second connection while this one is held
            self.send(sock, rpc, build(token))
            outcome = Outcome(status=None)
            name = "RPC_HTTP_REQ_CALL" if rpc == RPC_HTTP_REQ_CALL else "RPC_HTTP_RESP_CALL"
            try:
                reply = self._expect(sock, rpc)
                reply = self._extra_info(sock, rpc, reply, outcome, req_body, variables, resp_body)
            except RPCError as exc:
                raise RPCError(f"failed to receive {name}: {exc}") from None
        except BaseException:
            sock.close()
            raise
        self._keepalive(sock)
        return reply, outcome

    def _req_call_once(self, route: RouteConf, method: str, path: str, headers: list[tuple[str, str]],
                       args: Sequence[tuple[str, str | None]], body: bytes | None, variables: dict[str, str]) -> Outcome:
        reply, outcome = self._call(
            route, RPC_HTTP_REQ_CALL,
            lambda token: build_req_call(self.next_id(), token, method=method, path=path, headers=headers, args=args),
            body, variables, None)
        fields = reply.fields
        outcome.reply = fields
        outcome.action = fields["action"]
        upstream = dict(headers)
        outcome.upstream_path = path
        outcome.upstream_args = list(args)
        outcome.upstream_body = body or b""
        if fields["action"] == "stop":
            outcome.status = fields["status"] or 200
            outcome.response_headers = {n.lower(): v or "" for n, v in fields["headers"]}
            outcome.body = fields["body"]
        elif fields["action"] == "rewrite":
            if fields["path"] is not None:
                outcome.upstream_path = escape_uri(fields["path"])
            if fields["args"]:
                outcome.upstream_args = rewrite_args(outcome.upstream_args, fields["args"])
            for name, value in fields["headers"]:
                if value is None:
                    upstream.pop(name.lower(), None)
                else:
                    upstream[name.lower()] = value
            if fields["body"]:  # an empty body means "no change"
                outcome.upstream_body = fields["body"]
            outcome.response_headers = {n.lower(): v or "" for n, v in fields["resp_headers"]
                                        if n.lower() not in ("content-type", "content-location", "content-language")}
        outcome.upstream_headers = upstream
        return outcome

    def _resp_call_once(self, route: RouteConf, status: int, headers: list[tuple[str, str]], body: bytes,
                        variables: dict[str, str]) -> Outcome:
        reply, outcome = self._call(route, RPC_HTTP_RESP_CALL,
                                    lambda token: build_resp_call(self.next_id(), token, status, headers),
                                    None, variables, body)
        fields = reply.fields
        outcome.reply = fields
        # returned headers replace the upstream's; none returned: APISIX keeps them minus Content-Type & co
        if fields["headers_none"]:
            kept = {n: v for n, v in headers if n not in ("content-type", "content-location", "content-language")}
        else:
            kept = {n.lower(): v or "" for n, v in fields["headers"]}
        outcome.response_headers = kept
        outcome.body = fields["body"] if fields["body"] else body
        if fields["status"]:
            outcome.status = fields["status"]
        return outcome


_URI_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#%?")  # printable ASCII but these three


def escape_uri(path: str) -> str:
    """What APISIX does to Rewrite.path (ngx_escape_uri, NGX_ESCAPE_URI): space, '#', '%', '?',
    control bytes and non-ASCII bytes become %XX; a query put in the path is thus lost to the provider."""
    return quote(path, safe=_URI_SAFE)


def rewrite_args(current: Sequence[tuple[str, str | None]], rewrite: Sequence[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The request's query args after Rewrite.args: a name is set (a repeated name in the Rewrite adds
    values), an entry without a value deletes the name."""
    args: dict[str, list[str | None]] = {}
    for k, v in current:
        args.setdefault(k, []).append(v)
    changed: set[str] = set()
    for k, v in rewrite:
        if v is None:
            args.pop(k, None)
        elif k in changed:
            args[k].append(v)
        else:
            args[k] = [v]
            changed.add(k)
    return [(k, v) for k, values in args.items() for v in values]


def proxy(em: Emulator, route: RouteConf, *, upstreams: dict[str, str], post_resp: bool = False,
          path: str = "/v1/chat/completions", headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
          route_header: str = "x-llm-router-upstream", timeout: float = 60.0, method: str = "POST") -> ClientResponse:
    """One client request through the emulated APISIX route, end to end.

    ext-plugin-pre-req (the runner's Rewrite or Stop), traffic-split (`upstreams`: routing header
    value -> base URL), the upstream call as ext-plugin-post-resp makes it (a connection failure
    is a 502 without asking the runner), then HTTPRespCall with the upstream's status and headers
    (variables `http_<header>` from the upstream request headers) when `post_resp` is on.
    """
    import httpx

    bare, _, query = path.partition("?")  # APISIX hands the runner the path without its query, and appends it again
    args: list[tuple[str, str | None]] = [(unquote(k), unquote(v) if sep else None) for k, sep, v in
                                          (kv.partition("=") for kv in query.split("&") if kv)]
    pre = em.http_req_call(route, method=method, path=bare, headers=headers, body=body, args=args)
    if pre.status is not None:
        return ClientResponse(pre.status, dict(pre.response_headers), pre.body or b"", None, pre)
    name = pre.upstream_headers.get(route_header)
    base = upstreams.get(name or "")
    if base is None:
        return ClientResponse(502, {}, b"no upstream for this request", name, pre)
    sent = {k: v for k, v in pre.upstream_headers.items() if k not in ("host", "content-length", "transfer-encoding")}
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            sent_query = "&".join(quote(k, safe="") + ("" if v is None else "=" + quote(v, safe=""))
                                  for k, v in pre.upstream_args)
            target = base + pre.upstream_path + ("?" + sent_query if sent_query else "")
            resp = client.request(method, target, content=pre.upstream_body, headers=sent)
            up_status, up_headers, up_body = resp.status_code, [(k.lower(), v) for k, v in resp.headers.multi_items()], resp.content
    except httpx.HTTPError:
        return ClientResponse(502, {}, b"", name, pre)  # ext-plugin-post-resp: "failed to request" -> 502
    sized = any(k == "content-length" for k, _ in up_headers)
    up_headers = [(k, v) for k, v in up_headers if k not in ("content-encoding", "content-length", "transfer-encoding")]
    if sized:  # a whole (not chunked) answer: APISIX hands its length on; httpx decoded the body, so that length
        up_headers.append(("content-length", str(len(up_body))))
    if not post_resp:
        return ClientResponse(up_status, {**dict(up_headers), **pre.response_headers}, up_body, name, pre, None, up_status)
    variables = {"http_" + k.replace("-", "_"): v for k, v in pre.upstream_headers.items()}
    post = em.http_resp_call(RouteConf(route.conf, route.conf_id, route.conf_type, "ext-plugin-post-resp", route.version),
                             status=up_status, headers=up_headers, body=up_body, variables=variables)
    status = post.status or up_status
    return ClientResponse(status, {**pre.response_headers, **post.response_headers}, post.body or b"", name, pre, post,
                          up_status)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except socket.timeout:
            raise RPCError("timeout") from None
        except OSError as exc:
            raise RPCError(str(exc)) from None
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _peer_closed(sock: socket.socket) -> bool:
    """Whether a pooled connection was closed by the runner (nginx drops such keepalive sockets)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def raw_frame(rpc_type: int, payload: bytes) -> bytes:
    """A frame without the size check (tests send broken ones)."""
    n = len(payload)
    return bytes((rpc_type & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)) + payload


__all__ = ["ClientResponse", "Emulator", "RouteConf", "proxy", "SharedDict", "Outcome", "ProtocolViolation", "RPCError", "decode_reply",
           "build_prepare_conf", "build_req_call", "build_extra_info_resp", "build_resp_call", "raw_frame", "FrameError"]
