"""Content codings: which ones routed requests may ask for, and inflating whole and streamed answers."""
from __future__ import annotations

import gzip
import random
import zlib

import orjson
import pytest

from llm_router.encodings import StreamInflater, inflate, readable_accept_encoding


@pytest.mark.parametrize("sent, asked", [
    ("gzip", None),
    ("gzip, deflate", None),
    ("identity", None),
    ("GZIP;q=1.0, Deflate", None),
    ("gzip, deflate, br", "gzip, deflate"),
    ("br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip;q=0.8"),
    ("deflate, gzip, br, zstd", "deflate, gzip"),
    ("br", "identity"),
    ("zstd, br", "identity"),
    ("*", "identity"),
    (" , br ,", "identity"),
])
def test_accept_encoding_keeps_only_codings_whose_usage_can_be_read(sent, asked):
    assert readable_accept_encoding(sent) == asked
    assert readable_accept_encoding(sent) == asked  # the remembered answer is the same


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_json_answers_are_inflated_within_a_bound(encoding):
    body = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}, "pad": "x" * 5000})
    if encoding == "gzip":
        packed = gzip.compress(body)
    elif encoding == "deflate":
        packed = zlib.compress(body)
    else:
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = c.compress(body) + c.flush()
    name = "deflate" if encoding == "raw-deflate" else encoding
    assert inflate(packed, name, 1 << 20) == body
    assert len(inflate(packed, name, 100)) <= 100  # a zip bomb cannot blow up memory
    assert inflate(b"not compressed", "gzip", 100) == b""
    assert inflate(body, "br", 100) == body
    assert inflate(zlib.compress(body), "x-gzip", 1 << 20) == body  # a zlib header under a gzip label is read too


def _pack(data: bytes, encoding: str, pieces: int) -> bytes:
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}[encoding]
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    step = max(1, len(data) // pieces)
    return b"".join(z.compress(data[i:i + step]) + z.flush(zlib.Z_SYNC_FLUSH) for i in range(0, len(data), step)) + z.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_stream_is_inflated_piece_by_piece_however_it_is_cut(encoding):
    data = b"".join(b'data: {"n": %d, "text": "%s"}\n\n' % (i, b"y" * (i % 50)) for i in range(400))
    packed = _pack(data, encoding, 20)
    rng = random.Random(7)
    for _ in range(5):
        got: list[bytes] = []
        s = StreamInflater("deflate" if encoding == "raw-deflate" else encoding, got.append)
        pos = 0
        while pos < len(packed):
            step = 1 if pos == 0 else rng.randint(1, 300)  # a first piece too short to tell the framing
            s.feed(packed[pos:pos + step])
            pos += step
        assert b"".join(got) == data and not s.failed


def test_a_large_expansion_is_handed_on_in_bounded_steps():
    data = b"\0" * (5 * StreamInflater.STEP + 17)
    sizes: list[int] = []
    s = StreamInflater("gzip", lambda out: sizes.append(len(out)))
    s.feed(gzip.compress(data))
    assert sum(sizes) == len(data) and max(sizes) <= StreamInflater.STEP


def test_a_stream_that_is_not_compressed_stops_quietly():
    got: list[bytes] = []
    s = StreamInflater("gzip", got.append)
    s.feed(b"data: plain text, not gzip\n\n")
    s.feed(b"data: more\n\n")
    assert s.failed and got == []
    unknown = StreamInflater("br", got.append)
    unknown.feed(b"\x1b\x00")
    assert unknown.failed and got == []
