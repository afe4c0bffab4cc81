"""ext_proc ProcessingResponse messages, encoded by hand: the few shapes the processor sends.

Building nested protobuf objects costs more than the routing itself on the hot path, so the
replies are assembled from bytes. Field numbers follow envoy/service/ext_proc/v3 and
envoy/config/core/v3; tests decode every shape with the real protobuf classes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

# HeaderValueOption.append_action: replace what the client sent instead of appending to it.
OVERWRITE_IF_EXISTS_OR_ADD = 2


def varint(n: int) -> bytes:
    """Protobuf base-128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    if number < 16:
        if n < 0x80:
            return bytes(((number << 3) | 2, n)) + payload
        if n < 0x4000:
            return bytes(((number << 3) | 2, (n & 0x7F) | 0x80, n >> 7)) + payload
    return varint((number << 3) | 2) + varint(n) + payload


def _prefix(number: int, n: int) -> bytes:
    """Tag and length of a length-delimited field whose payload has n bytes."""
    if number < 16 and n < 0x80:
        return bytes(((number << 3) | 2, n))
    return varint((number << 3) | 2) + varint(n)


def header_option(key: str, value: str | bytes) -> bytes:
    """HeaderValueOption{header{key, raw_value}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}."""
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    return field(1, field(1, key.encode()) + field(3, raw)) + b"\x18\x02"


def header_mutation(set_headers: Iterable[tuple[str, str | bytes]] = (), remove: Iterable[str] = ()) -> bytes:
    """HeaderMutation{set_headers, remove_headers}."""
    parts = [field(1, header_option(k, v)) for k, v in set_headers]
    parts += [field(2, name.encode()) for name in remove]
    return b"".join(parts)


def content_length_option(n: int) -> bytes:
    """HeaderMutation.set_headers entry for content-length (built without generic encoding: hot path)."""
    v = b"%d" % n
    hv = b"\x0a\x0econtent-length\x1a" + bytes((len(v),)) + v
    opt = b"\x0a" + bytes((len(hv),)) + hv + b"\x18\x02"
    return b"\x0a" + bytes((len(opt),)) + opt


class MutationCache:
    """Encoded HeaderMutation parts for header sets that repeat (route, credential, path, removals).

    Per provider these are the same on every request, so they are encoded once; the cache is
    bounded and holds only what the secret store already holds in memory.
    """

    def __init__(self, limit: int = 4096):
        self._parts: dict[tuple, bytes] = {}
        self._limit = limit

    def encode(self, set_headers: tuple[tuple[str, str], ...], remove: tuple[str, ...] = ()) -> bytes:
        key = (set_headers, remove)
        found = self._parts.get(key)
        if found is None:
            found = header_mutation(set_headers, remove)
            if len(self._parts) >= self._limit:
                self._parts.clear()
            self._parts[key] = found
        return found


def common_response(*, headers: bytes = b"", body: bytes | None = None, clear_body: bool = False,
                    clear_route_cache: bool = False) -> bytes:
    """CommonResponse{header_mutation, body_mutation, clear_route_cache}."""
    out = field(2, headers) if headers else b""
    if body is not None:
        out += field(3, field(1, body))
    elif clear_body:
        out += field(3, b"\x10\x01")
    if clear_route_cache:
        out += b"\x28\x01"
    return out


def string_struct(values: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """google.protobuf.Struct with string values."""
    items = values.items() if isinstance(values, Mapping) else values
    return b"".join(field(1, field(1, k.encode()) + field(2, field(3, v.encode()))) for k, v in items)


def dynamic_metadata(namespace: str, values: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """Struct{namespace: Struct{values}}: what Envoy stores as the stream's dynamic metadata."""
    return field(1, field(1, namespace.encode()) + field(2, field(5, string_struct(values))))


class MetadataEncoder:
    """dynamic_metadata() for one namespace, with the constant parts (namespace, keys) encoded once."""

    def __init__(self, namespace: str):
        self._ns = field(1, namespace.encode())
        self._keys: dict[str, bytes] = {}

    def encode(self, values: Iterable[tuple[str, str]]) -> bytes:
        keys = self._keys
        parts = []
        for k, v in values:
            kb = keys.get(k)
            if kb is None:
                kb = keys[k] = field(1, k.encode())
            parts.append(field(1, kb + field(2, field(3, v.encode()))))
        return field(1, self._ns + field(2, field(5, b"".join(parts))))


def request_headers_reply(common: bytes = b"", metadata: bytes = b"") -> bytes:
    """ProcessingResponse{request_headers: HeadersResponse{response}, dynamic_metadata}."""
    return field(1, field(1, common) if common else b"") + (field(8, metadata) if metadata else b"")


def request_body_reply(common: bytes = b"", metadata: bytes = b"") -> bytes:
    """ProcessingResponse{request_body: BodyResponse{response}, dynamic_metadata}."""
    return field(3, field(1, common) if common else b"") + (field(8, metadata) if metadata else b"")


def response_headers_reply(common: bytes = b"") -> bytes:
    """ProcessingResponse{response_headers: HeadersResponse{response}}."""
    return field(2, field(1, common) if common else b"")


def request_body_replacement(body: bytes) -> bytes:
    """ProcessingResponse{request_body{response{body_mutation{body}}}}, copying the body once."""
    n3 = len(body)
    p3 = _prefix(1, n3)  # BodyMutation.body
    n2 = len(p3) + n3
    p2 = _prefix(3, n2)  # CommonResponse.body_mutation
    n1 = len(p2) + n2
    p1 = _prefix(1, n1)  # BodyResponse.response
    n0 = len(p1) + n1
    return b"".join((_prefix(3, n0), p1, p2, p3, body))  # ProcessingResponse.request_body


def immediate_reply(status: int, body: bytes, headers: Iterable[tuple[str, str]] = (), details: str = "",
                    metadata: bytes = b"") -> bytes:
    """ProcessingResponse{immediate_response{status, headers, body, details}, dynamic_metadata}."""
    inner = field(1, b"\x08" + varint(status)) + field(2, header_mutation(headers)) + field(3, body)
    if details:
        inner += field(5, details.encode())
    return field(7, inner) + (field(8, metadata) if metadata else b"")


def override_message_timeout(seconds: float) -> bytes:
    """ProcessingResponse{override_message_timeout: Duration}: the processor needs longer for this message.

    Envoy honours it up to the filter's max_message_timeout; the message carries nothing else."""
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    duration = (b"\x08" + varint(whole) if whole else b"") + (b"\x10" + varint(nanos) if nanos else b"")
    return field(10, duration)


REQUEST_HEADERS_CONTINUE = request_headers_reply()
REQUEST_BODY_CONTINUE = request_body_reply()
REQUEST_BODY_CLEAR = request_body_reply(common_response(clear_body=True))
RESPONSE_BODY_CONTINUE = field(4, b"")
