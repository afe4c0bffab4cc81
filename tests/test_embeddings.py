"""Static embeddings: shape, normalisation, determinism, similarity, odd input, tokenizer parity."""
from __future__ import annotations

import numpy as np
import pytest

from llm_router.classify.embeddings import DATA_DIR, MAX_TOKENS, StaticEmbedder, WordPiece, load_default


@pytest.fixture(scope="module")
def emb() -> StaticEmbedder:
    return load_default()


def test_shape_dtype_and_unit_norm(emb):
    v = emb.embed("How do I reverse a linked list in Python?")
    assert v.shape == (emb.dim,) and v.dtype == np.float32
    assert emb.dim >= 64
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4


def test_load_default_is_cached_and_deterministic(emb):
    assert load_default() is emb
    fresh = StaticEmbedder.load(DATA_DIR)
    text = "Summarise this quarterly report for the board."
    assert np.array_equal(fresh.embed(text), emb.embed(text))
    assert np.array_equal(emb.embed(text), emb.embed(text))  # second call goes through the chunk cache


def test_embed_many_matches_embed(emb):
    texts = ["hello there", "Prove that sqrt(2) is irrational.", ""]
    m = emb.embed_many(texts)
    assert m.shape == (3, emb.dim)
    for row, text in zip(m, texts):
        assert np.array_equal(row, emb.embed(text))
    assert emb.embed_many([]).shape == (0, emb.dim)


def cos(a, b) -> float:
    return float(a @ b)


def test_similar_texts_are_closer_than_unrelated(emb):
    sql1 = emb.embed("Write a SQL query that counts orders per customer.")
    sql2 = emb.embed("How do I count rows per user with GROUP BY in Postgres?")
    poem = emb.embed("Write a poem about the autumn moon over the sea.")
    greet = emb.embed("hi, how are you today?")
    greet2 = emb.embed("Hello! Hope you're doing well.")
    assert cos(sql1, sql2) > cos(sql1, poem) + 0.1
    assert cos(greet, greet2) > cos(greet, sql1) + 0.1
    med1 = emb.embed("What dose of ibuprofen is safe for a child with a fever?")
    med2 = emb.embed("How much paracetamol can a toddler take?")
    assert cos(med1, med2) > cos(med1, sql2)


@pytest.mark.parametrize("text", [
    "", "   \n\t ", "\x00\x01\x02", "😀😀😀", "日本語のテキストです", "Ünïcödé café naïve — “quotes”",
    "a" * 5000, "word " * 100_000, "\ud800 lone surrogate", "x\x0by\x0cz\x85", "[CLS] [SEP] [MASK] [PAD]",
])
def test_odd_input_never_raises(emb, text):
    v = emb.embed(text)
    assert v.shape == (emb.dim,) and np.all(np.isfinite(v))
    n = float(np.linalg.norm(v))
    assert n == 0.0 or abs(n - 1.0) < 1e-4


def test_empty_text_is_zero_vector(emb):
    assert not emb.embed("").any()
    assert not emb.embed(" \n ").any()


def test_long_input_is_truncated(emb):
    ids = emb.tokenizer.encode("token " * 10_000)
    assert len(ids) == MAX_TOKENS
    # What lies past the cut does not change the vector.
    head = "Explain the CAP theorem. " * 200
    assert np.array_equal(emb.embed(head), emb.embed(head + " poem about flowers" * 500))


def test_wordpiece_matches_hf_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(DATA_DIR / "tokenizer.json"))
    hf.no_truncation()
    hf.no_padding()
    wp = WordPiece.from_file(DATA_DIR / "tokenizer.json")
    texts = [
        "Hello, World! It's 3:45pm -- isn't it?", "naïve café résumé coöperate", "İstanbul ß Ǆ ℌ ① ﬁne",
        "def f(x):\n\treturn x**2  # square", "日本語のテキスト 中文 한국어", "emoji 😀 and ZWSP\u200bhere",
        "a\x00b\ufffdc", "x" * 150 + " y", "a\x0cb\x1fc d\x1c e\x85f", "\xa0nbsp\u3000ideographic\u2028sep",
        "SELECT * FROM users WHERE id=42;", "unaffable supercalifragilisticexpialidocious",
    ]
    for text in texts:
        assert wp.encode(text, max_tokens=10**9) == hf.encode(text, add_special_tokens=False).ids, text
