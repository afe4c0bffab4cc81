"""Static sentence embeddings: mean of per-token vectors distilled from MiniLM-L6 (numpy only).

The token vectors and MiniLM's tokenizer ship in `llm_router/data/embeddings/` (built by
`python -m llm_router.classify.distill`). Tokenisation is BERT-uncased WordPiece, done here in
Python with a per-word cache because HF `tokenizers` spends ~0.5 ms normalising a 1 KB prompt
on small CPUs; `tests/test_embeddings.py` checks the ids equal the `tokenizers` ones.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from llm_router.classify import native

# From the package, not __file__: the module also runs compiled (bench compiled), where __file__ is unset at import.
DATA_DIR = Path(str(importlib.resources.files("llm_router"))) / "data" / "embeddings"
MAX_TOKENS = 512  # like MiniLM's own limit; the rest of a long prompt adds little to its topic
MAX_CHARS = 8 * MAX_TOKENS  # cut before tokenising, so huge inputs cost no more than 512 tokens
MAX_WORD_CHARS = 100  # BERT's max_input_chars_per_word: longer words become [UNK]
_CACHE_CHUNKS = 65_536  # bound on the chunk -> ids cache
_SPLIT_CONTROLS = dict.fromkeys(map(ord, "\x0b\x0c\x85\x1c\x1d\x1e\x1f"))


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CharMap(dict):
    """str.translate table doing BERT's normaliser and punctuation split, filled lazily per character."""

    def __missing__(self, cp: int) -> str:
        ch = chr(cp)
        if ch in "\t\n\r":
            out = " "
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch).startswith("C"):
            out = ""  # control and other non-characters are dropped, as BERT's clean_text does
        elif ch.isspace() or unicodedata.category(ch) == "Zs":
            out = " "
        elif _is_cjk(cp):
            out = f" {ch} "
        else:
            base = "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn").lower()
            out = "".join(f" {c} " if _is_punct(c) else c for c in base)
        self[cp] = out
        return out


class WordPiece:
    """BERT-uncased tokenizer (normalise, split on whitespace and punctuation, greedy WordPiece)."""

    def __init__(self, vocab: dict[str, int], unk: str = "[UNK]", prefix: str = "##"):
        self.vocab = vocab
        self.unk_id = vocab[unk]
        self.prefix = prefix
        self._map = _CharMap()
        # raw chunk -> its ids as int32 bytes. Only grows, and a chunk's ids never change: the C embedding
        # remembers recent entries in slots of its own.
        self.chunks: dict[str, bytes] = {}

    @classmethod
    def from_file(cls, path: Path) -> "WordPiece":
        """From a HF tokenizer.json with a WordPiece model."""
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        if model.get("type") != "WordPiece":
            raise ValueError(f"{path}: expected a WordPiece tokenizer, got {model.get('type')!r}")
        return cls(model["vocab"], model.get("unk_token", "[UNK]"), model.get("continuing_subword_prefix", "##"))

    def word_ids(self, word: str) -> tuple[int, ...]:
        """Greedy longest-match-first WordPiece of one normalised word."""
        if len(word) > MAX_WORD_CHARS:
            return (self.unk_id,)
        vocab, out, start, n = self.vocab, [], 0, len(word)
        while start < n:
            end = n
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    out.append(found)
                    break
                end -= 1
            else:
                return (self.unk_id,)
            start = end
        return tuple(out)

    def chunk_ids(self, chunk: str) -> tuple[int, ...]:
        """Ids of one whitespace-free chunk of raw text (normalised, split at punctuation)."""
        ids: list[int] = []
        for word in chunk.translate(self._map).split():
            ids += self.word_ids(word)
        return tuple(ids)

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        """Token ids of a text without [CLS]/[SEP], at most max_tokens."""
        return self.encode_array(text, max_tokens).tolist()

    def encode_array(self, text: str, max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """`encode` as an int32 array: cached chunks are joined as bytes, with no Python int per token."""
        text = text[:MAX_CHARS]
        # Python's split() breaks at a few control characters that BERT deletes instead.
        if "\x0b" in text or "\x0c" in text or "\x85" in text or "\x1c" in text or "\x1d" in text \
                or "\x1e" in text or "\x1f" in text:
            text = text.translate(_SPLIT_CONTROLS)
        cache = self.chunks
        # Whole whitespace-separated chunks are cached as their ids' int32 bytes ("function?" is one
        # dict lookup the next time); map and join keep the per-chunk work in C.
        chunks = text.split()
        found: list[Any] = list(map(cache.get, chunks))  # bytes, or None for a chunk not seen before
        try:
            data = b"".join(found)
        except TypeError:  # a chunk not seen before
            for i, ids in enumerate(found):
                if ids is None:
                    ids = found[i] = np.array(self.chunk_ids(chunks[i]), np.int32).tobytes()
                    if len(cache) < _CACHE_CHUNKS:
                        cache[chunks[i]] = ids
            data = b"".join(found)
        out = np.frombuffer(data, np.int32)
        return out[:max_tokens] if len(out) > max_tokens else out


class StaticEmbedder:
    """Text -> L2-normalised float32 vector: the mean of its tokens' static vectors."""

    def __init__(self, vectors: np.ndarray, tokenizer: WordPiece, meta: dict | None = None,
                 scale: np.ndarray | None = None):
        # int8 rows with a float scale each (as shipped) or float32 rows (scale None). Kept int8: 7.8 MB
        # instead of 31 MB in every runner process, at no speed cost measurable here.
        self.vectors = np.ascontiguousarray(vectors, dtype=np.int8 if scale is not None else np.float32)
        self.scale = None if scale is None else np.ascontiguousarray(scale, dtype=np.float32)
        self.tokenizer = tokenizer
        self.dim = int(self.vectors.shape[1])
        self.meta = meta or {}
        self._ones = np.ones(MAX_TOKENS, np.float32)  # summing weights, sliced per text (no allocation)
        # the C gather-and-sum takes int8 rows
        self.kernels: Any = native.KERNELS if scale is not None and self.dim <= native.MAX_DIM else None

    @classmethod
    def load(cls, folder: Path | str = DATA_DIR) -> "StaticEmbedder":
        """From a folder written by the distill step (vectors.npz, tokenizer.json, meta.json)."""
        folder = Path(folder)
        with np.load(folder / "vectors.npz") as npz:
            vectors, scale = npz["q"], npz["scale"]
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return cls(vectors, WordPiece.from_file(folder / "tokenizer.json"), meta, scale=scale)

    def embed(self, text: str) -> np.ndarray:
        """Unit vector (dim,) for a text; all zeros when it has no tokens."""
        kernels = self.kernels
        if kernels is not None:
            out = np.empty(self.dim, np.float32)
            # Every chunk seen before: split, look up and sum in one C pass (None: tokenise here first).
            if kernels.embed_text(text, self.tokenizer.chunks, self.vectors, self.scale, out, MAX_CHARS, MAX_TOKENS) \
                    is not None:
                return out
        ids = self.tokenizer.encode_array(text)
        n = len(ids)
        if not n:
            return np.zeros(self.dim, np.float32)
        if kernels is not None:
            kernels.embed(ids, self.vectors, self.scale, out)
            return out
        weights: np.ndarray = self._ones[:n] if self.scale is None else self.scale.take(ids)
        rows: np.ndarray = self.vectors.take(ids, axis=0)
        v: np.ndarray = weights @ rows
        norm = float(np.sqrt(v @ v))
        return v / norm if norm > 0 else v

    def embed_many(self, texts) -> np.ndarray:
        """(n, dim) unit vectors for a sequence of texts."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            out[i] = self.embed(text)
        return out


@functools.lru_cache(maxsize=1)
def load_default() -> StaticEmbedder:
    """The built-in embedder (loaded once per process)."""
    return StaticEmbedder.load(DATA_DIR)
