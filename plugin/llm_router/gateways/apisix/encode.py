"""Writing ext-plugin replies: standard flatbuffers laid out front to back, header sets cached.

Root offset, vtable, table, then the table's children, every part 4-byte aligned, offsets only
pointing forward. Header entries are position-independent blobs, cached by value, so a reply
costs a few joins instead of a flatbuffers Builder run (the Builder was ~40% of a runner's time
in the measurements of the protocol notes). The tests decode every reply with the code
generated from ext_plugin.fbs.
"""
from __future__ import annotations

import struct
from urllib.parse import parse_qsl

from llm_router.gateways.apisix.framing import (
    MAX_PAYLOAD, RPC_ERROR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF, header,
)

_p32 = struct.Struct("<I").pack
_p16 = struct.Struct("<H").pack

# A6.Err.Code
BAD_REQUEST = 0
SERVICE_UNAVAILABLE = 1
CONF_TOKEN_NOT_FOUND = 2
# union type ids
ACTION_STOP = 1
ACTION_REWRITE = 2
INFO_VAR = 1
INFO_REQ_BODY = 2
INFO_RESP_BODY = 3

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
_QUERIES: dict[str, tuple[str, bytes]] = {}  # provider path with a query -> (path, encoded args)


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


def _path_and_args(path: str) -> tuple[str, bytes]:
    """A path with a query (an Azure api-version) as Rewrite wants it: APISIX escapes a '?' in
    Rewrite.path, so the query travels as Rewrite.args (set over the client's own args of that name)."""
    found = _QUERIES.get(path)
    if found is None:
        if len(_QUERIES) > 256:
            _QUERIES.clear()
        bare, _, query = path.partition("?")
        found = _QUERIES[path] = (bare, entry_vector([text_entry(k, v) for k, v in parse_qsl(query, keep_blank_values=True)]))
    return found


def rewrite_frame(rid: int, *, path: str | None = None, headers: bytes | None = None,
                  resp_headers: bytes | None = None, body: bytes | None = None) -> bytes:
    """HTTPReqCall.Resp with a Rewrite action, framed (entry vectors from EntryCache.vector)."""
    args = None
    if path is not None and "?" in path:
        path, args = _path_and_args(path)
    if path is not None and headers is not None and resp_headers is not None and body and args is None:
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
    if args is not None:
        refs.append((2, args, 0))
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
