"""Reading ext-plugin requests from APISIX: struct-based, only the fields the runner needs.

Offsets are bounds-checked by struct itself; any defect surfaces as DecodeError (the runner
answers BAD_REQUEST). The tests check these readers against the code generated from
ext_plugin.fbs.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_p32 = struct.Struct("<I").pack

# A6.Method
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "MKCOL", "COPY", "MOVE", "OPTIONS", "PROPFIND",
           "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE")
METHOD_GET = 0
METHOD_POST = 2


class DecodeError(Exception):
    """A payload that is not the flatbuffer it claims to be."""


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


@dataclass(slots=True, init=False)
class ReqCall:
    """HTTPReqCall.Req without the headers and args (read lazily: the router needs neither)."""

    id: int
    conf_token: int
    method: int
    path: str
    payload: bytes

    def __init__(self, id: int, conf_token: int, method: int, path: str, payload: bytes) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.id = id
        self.conf_token = conf_token
        self.method = method
        self.path = path
        self.payload = payload

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


def _slots(buf: bytes, want: int, start: int = 0) -> tuple[int, tuple[int, ...]]:
    """(table position, field offsets of the first `want` slots, 0 when absent) of the root table of the flatbuffer
    that starts at `start` in buf."""
    tpos = start + _u32(buf, start)[0]
    vt = tpos - _i32(buf, tpos)[0]
    if vt < start:
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


def req_target(buf: bytes, start: int = 0) -> tuple[int, str] | None:
    """(method, path) of the HTTPReqCall.Req at `start` in buf, nothing else read; None when malformed."""
    try:
        tpos, (_, _, o_method, o_path) = _slots(buf, 4, start)
        return (buf[tpos + o_method] if o_method else METHOD_GET), (_str_at(buf, tpos + o_path) if o_path else "")
    except (struct.error, IndexError, DecodeError):
        return None


# A string of 7-19 digits (the high bytes of its length prefix, the digits, the NUL): a number that
# long is a content-length of 1 MB or more. The regex engine scans for the literal prefix in C.
_LONG_NUMBER = re.compile(rb"\x00\x00\x00[0-9]{7,19}\x00")


# Digits as b"d", every other byte as b".": seven digits in a row show in the translation as b"ddddddd".
_DIGIT_RUNS = bytes(ord("d") if 48 <= c <= 57 else ord(".") for c in range(256))


def may_be_large(buf: bytes) -> bool:
    """Whether an HTTPReqCall payload may carry a content-length of 1 MB or more (no parsing)."""
    # Most payloads hold no run of seven digits at all: that check is a translation and a find, both in C,
    # where the regex stops at every run of three NUL bytes (flatbuffers is full of them).
    return b"ddddddd" in buf.translate(_DIGIT_RUNS) and _LONG_NUMBER.search(buf) is not None


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


