"""ext-plugin messages <-> Python values, fast: struct-based readers and replies laid out directly.

The replies are standard flatbuffers (checked against the code generated from ext_plugin.fbs in
the tests), but written front to back: root offset, vtable, table, then the table's children,
every part 4-byte aligned. Header entries are cached as position-independent blobs, so a
reply costs a few joins instead of a flatbuffers Builder run (the Builder was ~40% of a runner's
time in the measurements of the protocol notes).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from llm_router.gateways.apisix.framing import (
    MAX_PAYLOAD, RPC_ERROR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF, header,
)

_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_p32 = struct.Struct("<I").pack
_p16 = struct.Struct("<H").pack

# A6.Method
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS", "PROPFIND",
           "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE")
METHOD_POST = 2
# A6.Err.Code
BAD_REQUEST = 0
SERVICE_UNAVAILABLE = 1
CONF_TOKEN_NOT_FOUND = 2
# unions
ACTION_STOP = 1
ACTION_REWRITE = 2
INFO_VAR = 1
INFO_REQ_BODY = 2
INFO_RESP_BODY = 3


class DecodeError(Exception):
    """A payload that is not the flatbuffer it claims to be."""


# ---- reading -------------------------------------------------------------------------------

def _root(buf: bytes) -> tuple[int, int, int]:
    """(table position, vtable position, vtable size) of the root table."""
    if len(buf) < 8:
        raise DecodeError(f"payload of {len(buf)} bytes is too short for a flatbuffer")
    tpos = _u32(buf, 0)[0]
    return _open_table(buf, tpos)


def _open_table(buf: bytes, tpos: int) -> tuple[int, int, int]:
    if tpos + 4 > len(buf):
        raise DecodeError("table offset points outside the payload")
    vt = tpos - _i32(buf, tpos)[0]
    if vt < 0 or vt + 4 > len(buf):
        raise DecodeError("vtable offset points outside the payload")
    return tpos, vt, _u16(buf, vt)[0]


def _field(buf: bytes, tpos: int, vt: int, vtsize: int, slot: int) -> int:
    """Absolute position of a field, or 0 when absent."""
    o = 4 + 2 * slot
    if o >= vtsize:
        return 0
    off = _u16(buf, vt + o)[0]
    return tpos + off if off else 0


def _deref(buf: bytes, pos: int) -> int:
    return pos + _u32(buf, pos)[0]


def _bytes_at(buf: bytes, pos: int) -> bytes:
    """A string or [ubyte] vector referenced by the uoffset at pos."""
    start = _deref(buf, pos)
    n = _u32(buf, start)[0]
    start += 4
    if start + n > len(buf):
        raise DecodeError("vector runs past the end of the payload")
    return buf[start:start + n]


def _str_at(buf: bytes, pos: int) -> str:
    try:
        return _bytes_at(buf, pos).decode()
    except UnicodeDecodeError:
        raise DecodeError("string is not valid UTF-8") from None


def _entries_at(buf: bytes, pos: int) -> list[tuple[str, str | None]]:
    """A [TextEntry] vector referenced by the uoffset at pos."""
    vec = _deref(buf, pos)
    n = _u32(buf, vec)[0]
    if vec + 4 + 4 * n > len(buf):
        raise DecodeError("vector runs past the end of the payload")
    out = []
    for i in range(n):
        slot = vec + 4 + 4 * i
        tpos, vt, vtsize = _open_table(buf, slot + _u32(buf, slot)[0])
        npos = _field(buf, tpos, vt, vtsize, 0)
        vpos = _field(buf, tpos, vt, vtsize, 1)
        out.append((_str_at(buf, npos) if npos else "", _str_at(buf, vpos) if vpos else None))
    return out


@dataclass(slots=True)
class PrepareConf:
    """PrepareConf.Req: the route's runner plugin configs and its idempotency key."""

    conf: list[tuple[str, str | None]]
    key: str


@dataclass(slots=True)
class ReqCall:
    """HTTPReqCall.Req without the headers and args (read lazily: the router needs neither)."""

    id: int
    conf_token: int
    method: int
    path: str
    payload: bytes

    def headers(self) -> list[tuple[str, str | None]]:
        """The request headers APISIX sent (decoded on demand)."""
        return _vector_field(self.payload, 5)

    def args(self) -> list[tuple[str, str | None]]:
        return _vector_field(self.payload, 4)


@dataclass(slots=True)
class RespCall:
    """HTTPRespCall.Req: the upstream's status and headers."""

    id: int
    status: int
    headers: list[tuple[str, str | None]]
    conf_token: int


def _vector_field(buf: bytes, slot: int) -> list[tuple[str, str | None]]:
    tpos, vt, vtsize = _root(buf)
    pos = _field(buf, tpos, vt, vtsize, slot)
    return _entries_at(buf, pos) if pos else []


def read_prepare_conf(buf: bytes) -> PrepareConf:
    """Decode PrepareConf.Req."""
    try:
        tpos, vt, vtsize = _root(buf)
        cpos = _field(buf, tpos, vt, vtsize, 0)
        kpos = _field(buf, tpos, vt, vtsize, 1)
        return PrepareConf(_entries_at(buf, cpos) if cpos else [], _str_at(buf, kpos) if kpos else "")
    except (struct.error, IndexError):
        raise DecodeError("malformed PrepareConf request") from None


_SLOTS = [struct.Struct(f"<{n}H") for n in range(16)]


def _slots(buf: bytes, want: int) -> tuple[int, tuple[int, ...]]:
    """(table position, field offsets of the first `want` slots, 0 when absent) of the root table."""
    tpos = _u32(buf, 0)[0]
    vt = tpos - _i32(buf, tpos)[0]
    if vt < 0:
        raise DecodeError("vtable offset points outside the payload")
    n = min(want, (_u16(buf, vt)[0] - 4) // 2)
    offs = _SLOTS[n].unpack_from(buf, vt + 4) if n > 0 else ()
    return tpos, offs + (0,) * (want - len(offs))


def read_req_call(buf: bytes) -> ReqCall:
    """Decode the fields of HTTPReqCall.Req the router needs."""
    try:
        tpos, (o_id, _, o_method, o_path, _, _, o_token) = _slots(buf, 7)
        path = _str_at(buf, tpos + o_path) if o_path else ""
        return ReqCall(_u32(buf, tpos + o_id)[0] if o_id else 0, _u32(buf, tpos + o_token)[0] if o_token else 0,
                       buf[tpos + o_method] if o_method else 0, path, buf)
    except (struct.error, IndexError):
        raise DecodeError("malformed HTTPReqCall request") from None


# A string of 7-19 digits (the high bytes of its length prefix, the digits, the NUL): a number that
# long is a content-length of 1 MB or more. The regex engine scans for the literal prefix in C.
_LONG_NUMBER = re.compile(rb"\x00\x00\x00[0-9]{7,19}\x00")


def may_be_large(buf: bytes) -> bool:
    """Whether an HTTPReqCall payload may carry a content-length of 1 MB or more (no parsing)."""
    return _LONG_NUMBER.search(buf) is not None


_VT4 = struct.Struct("<4H").unpack_from  # vtable size, table size, slot 0, slot 1


def req_header(buf: bytes, name: bytes) -> bytes | None:
    """One request header's value from an HTTPReqCall.Req payload, or None.

    APISIX sends header names in lower case (ngx.req.get_headers); `name` must be lower case.
    Compares raw name bytes without decoding the other headers: cheap enough for the hot path.
    """
    if name not in buf:
        return None
    u32, i32 = _u32, _i32
    want = _p32(len(name)) + name
    try:
        tpos, offs = _slots(buf, 6)
        if not offs[5]:
            return None
        pos = tpos + offs[5]
        vec = pos + u32(buf, pos)[0]
        for slot in range(vec + 4, vec + 4 + 4 * u32(buf, vec)[0], 4):
            t = slot + u32(buf, slot)[0]
            vtsize, _, o_name, o_value = _VT4(buf, t - i32(buf, t)[0])
            if vtsize < 6 or not o_name:
                continue
            npos = t + o_name
            npos += u32(buf, npos)[0]
            if buf[npos:npos + len(want)] == want:
                return _bytes_at(buf, t + o_value) if vtsize >= 8 and o_value else None
        return None
    except (struct.error, IndexError):
        raise DecodeError("malformed HTTPReqCall headers") from None


def read_extra_info_result(buf: bytes) -> bytes | None:
    """ExtraInfo.Resp.result (None when APISIX had no value)."""
    try:
        tpos, (o_result,) = _slots(buf, 1)
        return _bytes_at(buf, tpos + o_result) if o_result else None
    except (struct.error, IndexError):
        raise DecodeError("malformed ExtraInfo response") from None


def read_resp_call(buf: bytes) -> RespCall:
    """Decode HTTPRespCall.Req."""
    try:
        tpos, vt, vtsize = _root(buf)
        p = _field(buf, tpos, vt, vtsize, 0)
        rid = _u32(buf, p)[0] if p else 0
        p = _field(buf, tpos, vt, vtsize, 1)
        status = _u16(buf, p)[0] if p else 0
        p = _field(buf, tpos, vt, vtsize, 2)
        headers = _entries_at(buf, p) if p else []
        p = _field(buf, tpos, vt, vtsize, 3)
        token = _u32(buf, p)[0] if p else 0
    except (struct.error, IndexError):
        raise DecodeError("malformed HTTPRespCall request") from None
    return RespCall(rid, status, headers, token)


# ---- writing -------------------------------------------------------------------------------
# Layout of every table written here: [2 pad bytes when the vtable length is 2 mod 4][vtable]
# [table: soffset to the vtable, then one 4-byte slot per present field][children in order].
# Offsets only point forward, as flatbuffers requires of uoffsets.

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by len % 4


def _vec(data: bytes) -> bytes:
    """A [ubyte] vector, padded to 4 bytes."""
    return _p32(len(data)) + data + _PAD[len(data) & 3]


_NUL_PAD = (b"\0\0\0\0", b"\0\0\0", b"\0\0", b"\0")  # NUL terminator + padding, by len % 4


def _string(text: bytes) -> bytes:
    """A string: length, UTF-8 bytes, NUL, padded to 4 bytes."""
    return _p32(len(text)) + text + _NUL_PAD[len(text) & 3]


_VTABLES: dict[tuple, tuple[bytes, int]] = {}


def _vtable(nslots: int, slots: tuple[int, ...]) -> tuple[bytes, int]:
    """(padded vtable, soffset) for a table whose fields sit in slot order given by `slots`."""
    key = (nslots, slots)
    found = _VTABLES.get(key)
    if found is None:
        offsets = [0] * nslots
        for i, slot in enumerate(slots):
            offsets[slot] = 4 + 4 * i
        vt = _p16(4 + 2 * nslots) + _p16(4 + 4 * len(slots)) + b"".join(_p16(o) for o in offsets)
        pad = b"\0\0" if len(vt) & 3 else b""
        found = _VTABLES[key] = (pad + vt, len(vt))
    return found


def _table(nslots: int, scalars: tuple[tuple[int, bytes], ...], refs: tuple[tuple[int, bytes, int], ...]) -> tuple[bytes, int]:
    """A table blob and where its table starts inside it.

    scalars: (slot, 4 inline bytes); refs: (slot, child blob, offset of the child's target inside
    the blob: 0 for strings and vectors, the table position for a child table).
    """
    vt, soff = _vtable(nslots, tuple(s for s, _ in scalars) + tuple(s for s, _, _ in refs))
    parts = [vt, _p32(soff)]
    parts += [v for _, v in scalars]
    field_pos = 4 + 4 * len(scalars)
    child_at = field_pos + 4 * len(refs)
    for _, child, target in refs:
        parts.append(_p32(child_at + target - field_pos))
        field_pos += 4
        child_at += len(child)
    parts += [c for _, c, _ in refs]
    return b"".join(parts), len(vt)


def _msg(rpc_type: int, table: tuple[bytes, int]) -> bytes:
    """A framed message whose root table blob follows the 4-byte root offset."""
    blob, at = table
    payload = _p32(4 + at) + blob
    return header(rpc_type, len(payload)) + payload


_TE_WITH_VALUE = struct.Struct("<4H3I").pack
_TE_NO_VALUE = struct.Struct("<4H2I").pack


_NAME_BLOBS: dict[str, bytes] = {}


def _name_blob(name: str) -> bytes:
    found = _NAME_BLOBS.get(name)
    if found is None:
        if len(_NAME_BLOBS) > 4096:
            _NAME_BLOBS.clear()
        nb = name.encode()
        found = _NAME_BLOBS[name] = _p32(len(nb)) + nb + _NUL_PAD[len(nb) & 3]
    return found


def text_entry(name: str, value: str | None) -> bytes:
    """A standalone TextEntry blob (vtable first, position independent, 4-byte aligned)."""
    nb = _name_blob(name)
    if value is None:
        # vtable [8, 8, 4, 0] | soffset 8 | name -> +4
        return _TE_NO_VALUE(8, 8, 4, 0, 8, 4) + nb
    vb = value.encode()
    # vtable [8, 12, 4, 8] | soffset 8 | name -> +8 | value -> +4 + len(name blob)
    return _TE_WITH_VALUE(8, 12, 4, 8, 8, 8, 4 + len(nb)) + nb + _p32(len(vb)) + vb + _NUL_PAD[len(vb) & 3]


_ENTRY_TABLE_AT = 8  # text_entry blobs start with their 8-byte vtable; the table follows
_VEC_HEADS = [struct.Struct(f"<{n + 1}I") for n in range(64)]


def _offsets(lengths: list[int], dist: int) -> list[int]:
    """uoffsets from consecutive vector slots to consecutive tables of these lengths (dist: the first's)."""
    out = []
    for length in lengths:
        out.append(dist)
        dist += length - 4  # the next table is `length` further, the next slot 4 further
    return out


def entry_vector(blobs: list[bytes]) -> bytes:
    """A [TextEntry] vector of text_entry blobs."""
    n = len(blobs)
    offsets = _offsets([len(b) for b in blobs], 4 * n + _ENTRY_TABLE_AT)
    head = _VEC_HEADS[n].pack(n, *offsets) if n < len(_VEC_HEADS) else struct.pack(f"<{n + 1}I", n, *offsets)
    return head + b"".join(blobs)


class EntryCache:
    """Encoded TextEntry vectors by their (name, value) pairs: header sets repeat across replies.

    A vector of k cached entries followed by m per-request ones has a slot array whose first k
    offsets depend only on (entries, m): those are kept, so a reply encodes just its m fresh entries.
    """

    __slots__ = ("_sets", "limit")

    def __init__(self, limit: int = 1024):
        self._sets: dict[tuple, tuple[tuple[int, ...], bytes, int]] = {}
        self.limit = limit

    def _static(self, entries: tuple, m: int) -> tuple[tuple[int, ...], bytes, int]:
        key = (entries, m)
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= self.limit:
                self._sets.clear()
            blobs = [text_entry(n, v) for n, v in entries]
            n = len(blobs) + m
            offsets = _offsets([len(b) for b in blobs], 4 * n + _ENTRY_TABLE_AT)
            joined = b"".join(blobs)
            # distance from the first per-request slot (k) to its table
            first_extra = 4 * n + _ENTRY_TABLE_AT + len(joined) - 4 * len(blobs)
            found = self._sets[key] = (tuple(offsets), joined, first_extra)
        return found

    def vector(self, entries: tuple[tuple[str, str | None], ...], extra: tuple[tuple[str, str | None], ...] = ()) -> bytes:
        """A [TextEntry] vector: `entries` cached as a set, `extra` (per-request values) encoded fresh."""
        m = len(extra)
        offsets, joined, dist = self._static(entries, m)
        if not m:
            n = len(offsets)
            return _VEC_HEADS[n].pack(n, *offsets) + joined if n < len(_VEC_HEADS) else entry_vector(
                [text_entry(a, b) for a, b in entries])
        blobs = [text_entry(a, b) for a, b in extra]
        n = len(offsets) + m
        if n >= len(_VEC_HEADS):
            return entry_vector([text_entry(a, b) for a, b in entries] + blobs)
        return _VEC_HEADS[n].pack(n, *offsets, *_offsets([len(b) for b in blobs], dist)) + joined + b"".join(blobs)


# HTTPReqCall.Resp{id, action=Rewrite{path, headers, resp_headers, body}}, every field present:
#  0 root -> 16 | 4 pad | 6 Resp vtable [10, 16, 4, 8, 12] | 16 Resp table: soffset 10, id,
#  action_type, action -> 48 | 32 pad | 34 Rewrite vtable [14, 20, 4, 8, 0, 12, 16] |
#  48 Rewrite table: soffset 14, path, headers, resp_headers, body | 68 children in that order
_FULL_REWRITE = struct.Struct("<I2x5HiIB3xI2x7HiIIII").pack
_PATHS: dict[str, bytes] = {}


def _full_rewrite(rid: int, path: bytes, headers: bytes, resp_headers: bytes, body: bytes) -> bytes:
    lp, lh, lr = len(path), len(headers), len(resp_headers)
    head = _FULL_REWRITE(16, 10, 16, 4, 8, 12, 10, rid, ACTION_REWRITE, 20, 14, 20, 4, 8, 0, 12, 16,
                         14, 16, 12 + lp, 8 + lp + lh, 4 + lp + lh + lr)
    n = 68 + lp + lh + lr + 4 + len(body)
    pad = _PAD[len(body) & 3]
    n += len(pad)
    return bytes((RPC_HTTP_REQ_CALL, n >> 16, (n >> 8) & 0xFF, n & 0xFF)) + b"".join(
        (head, path, headers, resp_headers, _p32(len(body)), body, pad))


def _req_call_resp(rid: int, action_type: int, action: tuple[bytes, int]) -> bytes:
    blob, at = action
    return _msg(RPC_HTTP_REQ_CALL, _table(2 + 1, ((0, _p32(rid)), (1, bytes((action_type, 0, 0, 0)))), ((2, blob, at),)))


def rewrite_frame(rid: int, *, path: str | None = None, headers: bytes | None = None,
                  resp_headers: bytes | None = None, body: bytes | None = None) -> bytes:
    """HTTPReqCall.Resp with a Rewrite action, framed (entry vectors from EntryCache.vector)."""
    if path is not None and headers is not None and resp_headers is not None and body:
        pb = _PATHS.get(path)
        if pb is None:
            if len(_PATHS) > 256:
                _PATHS.clear()
            pb = _PATHS[path] = _string(path.encode())
        if 68 + len(pb) + len(headers) + len(resp_headers) + 8 + len(body) <= MAX_PAYLOAD:
            return _full_rewrite(rid, pb, headers, resp_headers, body)
    refs = []
    if path is not None:
        refs.append((0, _string(path.encode()), 0))
    if headers is not None:
        refs.append((1, headers, 0))
    if resp_headers is not None:
        refs.append((3, resp_headers, 0))
    if body:
        refs.append((4, _vec(body), 0))
    return _req_call_resp(rid, ACTION_REWRITE, _table(5, (), tuple(refs)))


def stop_frame(rid: int, status: int, headers: bytes | None = None, body: bytes | None = None) -> bytes:
    """HTTPReqCall.Resp with a Stop action (APISIX answers the client), framed."""
    refs = []
    if headers is not None:
        refs.append((1, headers, 0))
    if body:
        refs.append((2, _vec(body), 0))
    return _req_call_resp(rid, ACTION_STOP, _table(3, ((0, _p16(status) + b"\0\0"),), tuple(refs)))


def pass_frame(rid: int) -> bytes:
    """HTTPReqCall.Resp without an action: the request continues unchanged."""
    return _msg(RPC_HTTP_REQ_CALL, _table(3, ((0, _p32(rid)),), ()))


def prepare_conf_frame(token: int) -> bytes:
    """PrepareConf.Resp carrying the conf token, framed."""
    return _msg(RPC_PREPARE_CONF, _table(1, ((0, _p32(token)),), ()))


def error_frame(code: int) -> bytes:
    """Err.Resp as an RPC type 0 frame."""
    return _msg(RPC_ERROR, _table(1, ((0, bytes((code, 0, 0, 0))),), ()))


def _extra_info_req(info_type: int, info: tuple[bytes, int]) -> bytes:
    blob, at = info
    return _msg(RPC_EXTRA_INFO, _table(2, ((0, bytes((info_type, 0, 0, 0))),), ((1, blob, at),)))


def extra_info_req_body_frame() -> bytes:
    """ExtraInfo.Req{info=ReqBody}, framed: ask APISIX for the request body."""
    return _extra_info_req(INFO_REQ_BODY, _table(0, (), ()))


def extra_info_resp_body_frame() -> bytes:
    """ExtraInfo.Req{info=RespBody}, framed: ask APISIX for the upstream response body."""
    return _extra_info_req(INFO_RESP_BODY, _table(0, (), ()))


def extra_info_var_frame(name: str) -> bytes:
    """ExtraInfo.Req{info=Var{name}}, framed: ask APISIX for a variable."""
    return _extra_info_req(INFO_VAR, _table(1, (), ((0, _string(name.encode()), 0),)))


def resp_call_frame(rid: int, status: int = 0, headers: bytes | None = None, body: bytes | None = None) -> bytes:
    """HTTPRespCall.Resp, framed (status 0 keeps the upstream status; no body streams it)."""
    refs = []
    if headers is not None:
        refs.append((2, headers, 0))
    if body:
        refs.append((3, _vec(body), 0))
    scalars = ((0, _p32(rid)), (1, _p16(status) + b"\0\0")) if status else ((0, _p32(rid)),)
    return _msg(RPC_HTTP_RESP_CALL, _table(4, scalars, tuple(refs)))


REQ_BODY_FRAME = extra_info_req_body_frame()
RESP_BODY_FRAME = extra_info_resp_body_frame()
TOKEN_NOT_FOUND_FRAME = error_frame(CONF_TOKEN_NOT_FOUND)
BAD_REQUEST_FRAME = error_frame(BAD_REQUEST)
SERVICE_UNAVAILABLE_FRAME = error_frame(SERVICE_UNAVAILABLE)
