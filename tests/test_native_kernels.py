"""The semantic classifier's C kernels (classify/_vote.c) against the numpy arithmetic they replace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from llm_router.classify import native
from llm_router.classify.embeddings import MAX_CHARS, MAX_TOKENS, StaticEmbedder, WordPiece, load_default
from llm_router.classify.semantic import SemanticClassifier

ROOT = Path(__file__).resolve().parents[1]
HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc"))
kernels = native.KERNELS
needs_kernels = pytest.mark.skipif(kernels is None, reason="the C kernels are not built (no C compiler at install time)")


def test_the_kernels_are_built_wherever_a_c_compiler_is():
    if not HAVE_CC:
        pytest.skip("no C compiler here: the install leaves the optional extension out and numpy does the arithmetic")
    assert kernels is not None, "setup.py's optional extension llm_router.classify._vote failed to build; see pip's log"


def test_llm_router_native_0_turns_them_off():
    code = "from llm_router.classify import native; print(native.KERNELS is None)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, native.OFF_ENV: "0"}, capture_output=True,
                         text=True, timeout=60, cwd=str(ROOT))
    assert out.stdout.strip() == "True", out.stderr


@pytest.fixture(scope="module")
def embedder():
    return load_default()


def _semantic_router():
    from llm_router.config import load_config, parse_config
    from llm_router.router import Router

    cfg = parse_config({"seed": 1, "policies": {"default": {"classifier": "semantic", "strategy": "ladder",
                                                            "ladder": dict(load_config().policies["default"].ladder)}}})
    router = Router(cfg)
    router.route(b'{"messages": [{"role": "user", "content": "hi"}]}', path="/v1/chat/completions")  # builds the classifier
    return router, next(c for c in router.classifiers.values() if isinstance(c, SemanticClassifier))


@pytest.fixture(scope="module")
def classifier():
    sem = _semantic_router()[1]
    assert sem._soft  # the shipped settings vote with every example: the path the kernel takes
    return sem


@contextmanager
def numpy_only(*users):
    """Embedders and classifiers with their kernels off inside the block (numpy does the arithmetic)."""
    saved = [u.kernels for u in users]
    for u in users:
        u.kernels = None
    try:
        yield
    finally:
        for u, k in zip(users, saved):
            u.kernels = k


@needs_kernels
def test_embedding_matches_numpy(embedder):
    texts = ["", "   ", "hi", "Refactor this function to use async IO and add tests. " * 30,
             "Décris la mécanique quantique 量子力学 🙂 in one line", "x" * 5000, "def f(x):\n\treturn x ** 2\n" * 50]
    assert embedder.kernels is kernels
    for text in texts:
        got = embedder.embed(text)  # new chunks: tokenised in Python, then the C sum
        again = embedder.embed(text)  # every chunk known: the one-pass C path
        with numpy_only(embedder):
            want = embedder.embed(text)
        assert got.dtype == np.float32 and got.shape == (embedder.dim,)
        np.testing.assert_array_equal(again, got)
        np.testing.assert_allclose(got, want, atol=2e-6)
    assert not embedder.embed("").any()


def _fresh_tokenizer(embedder) -> WordPiece:
    return WordPiece(embedder.tokenizer.vocab, "[UNK]", "##")


@needs_kernels
def test_embed_text_sums_the_ids_the_python_tokenizer_finds(embedder):
    """One C pass over cached chunks gives the ids and the sum of the tokenizer's path, bit for bit."""
    texts = ["hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\nand\u3000ideographic\xa0spaces",
             "Décris la mécanique quantique", "量子力学 in one line", "emoji 🙂 wide 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 text", "x" * 5000,
             "word " * 700,  # over 512 tokens: cut there
             "y " * 5000,  # over MAX_CHARS characters: cut there first
             ("abc " * 2050)[:4097] + "more"]  # a chunk that crosses the character cut
    tok = _fresh_tokenizer(embedder)
    out = np.empty(embedder.dim, np.float32)
    want = np.empty(embedder.dim, np.float32)
    for text in texts:
        assert kernels.embed_text(text, tok.chunks, embedder.vectors, embedder.scale, out, MAX_CHARS, MAX_TOKENS) is None \
            or not text.split()  # nothing cached yet
        ids = tok.encode_array(text)  # fills the cache
        n = kernels.embed_text(text, tok.chunks, embedder.vectors, embedder.scale, out, MAX_CHARS, MAX_TOKENS)
        assert n == len(ids), text[:40]
        kernels.embed(ids, embedder.vectors, embedder.scale, want)
        np.testing.assert_array_equal(out, want)
    assert kernels.embed_text("   ", {}, embedder.vectors, embedder.scale, out, MAX_CHARS, MAX_TOKENS) == 0
    assert not out.any()


@needs_kernels
def test_embed_text_leaves_controls_bert_deletes_and_unknown_chunks_to_python(embedder):
    tok = _fresh_tokenizer(embedder)
    out = np.empty(embedder.dim, np.float32)
    args = (embedder.vectors, embedder.scale, out, MAX_CHARS, MAX_TOKENS)
    for text in ("ab\x0bcd", "ab\x1fcd", "x \x85 y", "word " * 511 + "ab\x0ccd"):
        tok.encode_array(text)
        tok.encode_array(text.replace("\x0b", " ").replace("\x1f", " ").replace("\x85", " ").replace("\x0c", " "))
        assert kernels.embed_text(text, tok.chunks, *args) is None, repr(text[-8:])
        got = StaticEmbedder(embedder.vectors, tok, scale=embedder.scale).embed(text)  # the Python path takes it
        with numpy_only(embedder):
            np.testing.assert_allclose(got, embedder.embed(text), atol=2e-6)
    tok.encode_array("known words only")
    assert kernels.embed_text("known words only", tok.chunks, *args) == 3
    assert kernels.embed_text("known words unseen", tok.chunks, *args) is None


@needs_kernels
def test_embed_text_errors_name_the_bad_argument(embedder):
    out = np.empty(embedder.dim, np.float32)
    v, sc = embedder.vectors, embedder.scale
    with pytest.raises(TypeError, match="takes a str and a dict"):
        kernels.embed_text(b"bytes", {}, v, sc, out, 10, 10)
    with pytest.raises(TypeError, match="takes 7 arguments"):
        kernels.embed_text("x", {}, v, sc, out, 10)
    with pytest.raises(ValueError, match="max_tokens: 5000 outside"):
        kernels.embed_text("x", {}, v, sc, out, 10, 5000)
    with pytest.raises(TypeError, match="chunks: values must be int32 ids as bytes"):
        kernels.embed_text("x", {"x": "not bytes"}, v, sc, out, 10, 10)
    with pytest.raises(IndexError, match="token id 99999999 outside the vocabulary"):
        kernels.embed_text("x", {"x": np.array([99999999], np.int32).tobytes()}, v, sc, out, 10, 10)
    with pytest.raises(TypeError, match="out: expected a C-contiguous writable array"):
        kernels.embed_text("x", {}, v, sc, b"\0" * 1024, 10, 10)
    assert kernels.embed_text("x", {"x": np.array([5, 6], np.int32).tobytes()}, v, sc, out, 10, 10) == 2  # still works


@needs_kernels
def test_vote_matches_numpy_on_random_and_real_vectors(classifier, embedder):
    rng = np.random.default_rng(7)
    vectors = [embedder.embed(t) for t in ("Prove that there are infinitely many primes.", "thanks!",
                                            "Write a SQL query for the top 5 customers by revenue.")]
    vectors += [rng.standard_normal(embedder.dim).astype(np.float32) * scale for scale in (1e-3, 0.3, 1.0, 50.0)]
    for v in vectors:
        got = classifier._vote(v)
        with numpy_only(classifier):
            want = classifier._vote(v)
        assert got.best_i == want.best_i
        assert got.best_raw == pytest.approx(want.best_raw, rel=1e-5, abs=1e-6)
        assert got.inv == pytest.approx(want.inv, rel=1e-5)
        np.testing.assert_allclose(got.s, want.s, atol=1e-5)
        np.testing.assert_allclose(got.votes, want.votes, rtol=5e-6, atol=1e-9)  # float32 sums in another order: ~1e-6


@needs_kernels
def test_vote_of_nothing_is_none(classifier, embedder):
    assert classifier._vote(np.zeros(embedder.dim, np.float32)) is None
    assert classifier._vote(classifier._mean.astype(np.float32)) is None  # the examples' mean: nothing left once centred
    assert classifier._vote(np.zeros(embedder.dim, np.float64)) is None  # other embedders' float64 is converted
    assert classifier._vote(embedder.embed("hello").astype(np.float64)) is not None
    strided = np.repeat(embedder.embed("hello"), 2)[::2]
    assert not strided.flags.c_contiguous and classifier._vote(strided) is not None


@needs_kernels
def test_softmax_weights_hold_over_the_whole_range(classifier, embedder):
    """A very sharp temperature pushes every exponent far below -87, where the kernel clamps: the vote stays the nearest's."""
    v = embedder.embed("Prove that there are infinitely many primes.")
    s = np.empty(len(classifier._vec_mean), np.float32)
    sums, best, _, _ = kernels.vote(v, classifier._with_mean, classifier._vec_mean, classifier._mean_sq,
                                    classifier._votes_t, 1e6, s)
    np.testing.assert_allclose(sums, classifier._votes[best], rtol=1e-6, atol=1e-30)
    flat = kernels.vote(v, classifier._with_mean, classifier._vec_mean, classifier._mean_sq, classifier._votes_t, 0.0, s)
    np.testing.assert_allclose(flat[0], classifier._votes.sum(0), rtol=1e-5)  # factor 0: every example weighs 1


@needs_kernels
def test_bad_arrays_get_errors_that_name_them(classifier, embedder):
    ids = np.array([1, 2, 3], np.int32)
    out = np.empty(embedder.dim, np.float32)
    with pytest.raises(IndexError, match="token id 99999999 outside the vocabulary"):
        kernels.embed(np.array([5, 99999999], np.int32), embedder.vectors, embedder.scale, out)
    with pytest.raises(IndexError, match="token id -1"):
        kernels.embed(np.array([-1], np.int32), embedder.vectors, embedder.scale, out)
    with pytest.raises(ValueError, match="table: expected"):
        kernels.embed(ids, embedder.vectors[:10], embedder.scale, out)
    with pytest.raises(TypeError, match="out: expected a C-contiguous writable array"):
        kernels.embed(ids, embedder.vectors, embedder.scale, b"\0" * 1024)
    with pytest.raises(TypeError, match="ids: expected a C-contiguous"):
        kernels.embed(np.arange(10, dtype=np.int32)[::2], embedder.vectors, embedder.scale, out)
    with pytest.raises(TypeError, match="takes 4 arguments"):
        kernels.embed(ids, embedder.vectors)
    v = embedder.embed("hello there")
    s = np.empty(len(classifier._vec_mean), np.float32)
    args = [v, classifier._with_mean, classifier._vec_mean, classifier._mean_sq, classifier._votes_t, 20.0, s]
    with pytest.raises(ValueError, match="matrix: expected"):
        kernels.vote(v.astype(np.float64), *args[1:])
    with pytest.raises(ValueError, match="s: expected"):
        kernels.vote(*args[:6], s[:-1])
    with pytest.raises(ValueError, match="votes_t: 0 columns"):
        kernels.vote(*args[:4], np.empty(0, np.float32), *args[5:])
    with pytest.raises(TypeError, match="takes 7 arguments"):
        kernels.vote(*args[:6])
    assert kernels.vote(*args) is not None  # and the next call works


@needs_kernels
def test_the_workload_routes_exactly_as_with_numpy():
    from llm_router.commands.demo import load_workload, request_for

    router, sem = _semantic_router()

    def decisions() -> list[tuple]:
        rows = []
        for path, body in map(request_for, load_workload(None)):
            _, d = router.route(body, path=path)
            c = d.classification
            rows.append((d.model.id, c.tier.name, c.category, c.score, c.confidence, c.label, tuple(c.evidence)))
        return rows

    assert sem.kernels is kernels and sem.embedder.kernels is kernels
    with_kernels = decisions()
    with numpy_only(sem, sem.embedder):
        with_numpy = decisions()
    assert len(with_kernels) == 232
    assert with_kernels == with_numpy


@needs_kernels
def test_estimate_counts_match_the_python_counts():
    from llm_router import request

    assert request._estimate_counts is kernels.estimate_counts
    rng = np.random.default_rng(3)
    alphabet = list(b"  \n\t,.;:!?()[]{}0123456789abcXYZ_-\x01\x02") + [0xC3, 0xA9, 0xF0, 0x9F]
    samples = [b"", b" ", b"  ", b"   ", b"a    b", b"\n\n", "Décris 量子 🙂 1,2.3".encode(), b"x" * 10_000]
    samples += [bytes(rng.choice(alphabet, size=int(rng.integers(1, 400)))) for _ in range(300)]
    for raw in samples:
        assert kernels.estimate_counts(raw, request._MARKS) == request._counts(raw, request._MARKS), raw[:30]
    with pytest.raises(TypeError, match="256-byte translation table"):
        kernels.estimate_counts(b"x", b"short")
    with pytest.raises(TypeError, match="takes 2 arguments"):
        kernels.estimate_counts(b"x")
    assert request.estimate_tokens("one more estimate works") > 0


@needs_kernels
def test_embed_text_remembers_chunks_per_dict_and_across_string_widths(embedder):
    """The C slots in front of the dict: another tokenizer's dict never sees them, and a chunk remembered from a
    narrow (Latin-1) text is found again inside a wide one (an emoji makes its characters 4 bytes each)."""
    out = np.empty(embedder.dim, np.float32)
    want = np.empty(embedder.dim, np.float32)
    args = (embedder.vectors, embedder.scale, out, MAX_CHARS, MAX_TOKENS)
    a = {"same": np.array([10, 11], np.int32).tobytes()}
    b = {"same": np.array([2000], np.int32).tobytes()}
    for _ in range(3):  # alternating owners: each call sums its own dict's ids
        assert kernels.embed_text("same", a, *args) == 2
        kernels.embed(np.array([10, 11], np.int32), embedder.vectors, embedder.scale, want)
        np.testing.assert_array_equal(out, want)
        assert kernels.embed_text("same same", b, *args) == 2
        kernels.embed(np.array([2000, 2000], np.int32), embedder.vectors, embedder.scale, want)
        np.testing.assert_array_equal(out, want)
    tok = _fresh_tokenizer(embedder)
    narrow, wide = "hello world café", "hello 🙂 world café"
    for text in (narrow, wide):
        tok.encode_array(text)
    for text in (narrow, wide, narrow, wide):
        n = kernels.embed_text(text, tok.chunks, *args)
        ids = tok.encode_array(text)
        assert n == len(ids)
        kernels.embed(ids, embedder.vectors, embedder.scale, want)
        np.testing.assert_array_equal(out, want)
    assert kernels.embed_text("hello world unseenword", tok.chunks, *args) is None
