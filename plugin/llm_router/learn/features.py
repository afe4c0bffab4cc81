"""Request -> feature vector for the learned router: a text embedding plus cheap structural cues.

The same function serves training and the live router, so both see exactly the same numbers.
Three embedders: "static" (the shipped MiniLM static embeddings, `classify.embeddings`), "onnx"
(MiniLM itself on onnxruntime, `classify.onnx_backend`: better topics, milliseconds per prompt) and
"hashing" (signed feature hashing of words, no data files; a fallback and for tests).
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from llm_router.request import LLMRequest

EMBEDDERS = ("static", "onnx", "hashing")
HASH_DIM = 256
_WORD = re.compile(r"[a-z0-9]+")
_CODE_MARKS = ("```", "def ", "class ", "return ", "=>", "#include", "{\n", ";\n")
_OPTION = re.compile(r"^\s*\(?[A-Ha-h][).:]\s", re.MULTILINE)
STRUCT_VERSION = "s1"  # bump when structure() changes: models trained before must be retrained
_NO_DIGITS = str.maketrans("", "", "0123456789")
STRUCT_NAMES = ("log_chars", "log_tokens", "digit_share", "code_marks", "options", "lines", "question", "blocks")


class Embedder(Protocol):
    dim: int

    def embed(self, text: str) -> np.ndarray: ...


class HashingEmbedder:
    """Signed hashing of lower-cased words and word pairs into `dim` buckets, L2-normalised."""

    name = "hashing"

    def __init__(self, dim: int = HASH_DIM):
        self.dim = dim
        self._cache: dict[str, tuple[int, float]] = {}

    def _slot(self, token: str) -> tuple[int, float]:
        found = self._cache.get(token)
        if found is None:
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            found = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
            if len(self._cache) < 200_000:
                self._cache[token] = found
        return found

    def embed(self, text: str) -> np.ndarray:
        """Unit vector (dim,) of a text; zeros when it has no words."""
        v = np.zeros(self.dim, np.float32)
        words = _WORD.findall(text[:8192].lower())
        for tok in [*words, *(a + " " + b for a, b in zip(words, words[1:]))]:
            i, s = self._slot(tok)
            v[i] += s
        norm = float(np.sqrt(v @ v))
        return v / norm if norm > 0 else v


def embedder_fingerprint(kind: str, embedder: Embedder) -> str:
    """Identifies the embedding a model was trained with, so a mismatch is caught at load."""
    if kind == "hashing":
        return f"hashing-{embedder.dim}-{STRUCT_VERSION}"
    if kind == "onnx":
        return f"onnx-{embedder.dim}-{getattr(embedder, 'fingerprint', 'unknown')[:16]}-{STRUCT_VERSION}"
    meta = getattr(embedder, "meta", {}) or {}
    return f"static-{embedder.dim}-{meta.get('vectors_sha256', 'unknown')[:16]}-{STRUCT_VERSION}"


def load_embedder(kind: str, folder: str | Path | None = None) -> Embedder:
    """The embedder by kind; `folder` overrides where the static vectors are read from."""
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "onnx":
        from llm_router.classify.onnx_backend import load_onnx
        from llm_router.config import ConfigError

        try:
            return load_onnx()
        except ConfigError as exc:
            raise FileNotFoundError("; ".join(exc.problems)) from None
    if kind == "static":
        from llm_router.classify import embeddings

        try:
            return embeddings.StaticEmbedder.load(folder) if folder else embeddings.load_default()
        except (OSError, KeyError, ValueError) as exc:
            where = folder or embeddings.DATA_DIR
            raise FileNotFoundError(f"static embeddings are not available in {where} ({exc}); build them with "
                                    "`python -m llm_router.classify.distill` or use the 'hashing' features") from None
    raise ValueError(f"unknown embedder {kind!r}; known: {', '.join(EMBEDDERS)}")


def structure(text: str, input_tokens: int) -> np.ndarray:
    """Cheap shape features of the prompt (counts squashed to similar ranges)."""
    n = len(text)
    head = text[:4000]
    digits = len(head) - len(head.translate(_NO_DIGITS))
    return np.array([
        math.log1p(n) / 8.0,
        math.log1p(input_tokens) / 8.0,
        digits / max(1, min(n, 4000)) * 5.0,
        min(sum(head[:2000].count(c) for c in _CODE_MARKS), 10) / 5.0,
        min(len(_OPTION.findall(text[-1000:])), 10) / 5.0,
        math.log1p(text.count("\n")) / 4.0,
        1.0 if "?" in text[-400:] else 0.0,
        math.log1p(text.count("\n\n")) / 3.0,
    ], np.float32)


@dataclass
class Featurizer:
    """Embedding of the prompt the router sees, then the structural features."""

    kind: str
    embedder: Embedder

    @property
    def dim(self) -> int:
        return self.embedder.dim + len(STRUCT_NAMES)

    def fingerprint(self) -> str:
        return embedder_fingerprint(self.kind, self.embedder)

    def features(self, request: LLMRequest) -> np.ndarray:
        """Feature vector (dim,) for one request.

        Length is the conversation's (system prompt and tool definitions left out): training rows are bare
        prompts, so a live request with an application's standing instructions gets the features its prompt was
        trained with.
        """
        shape = structure(request.prompt, request.conversation_tokens)
        return np.concatenate([self.embedder.embed(request.prompt), shape])

    def matrix(self, requests: list[LLMRequest]) -> np.ndarray:
        """(n, dim) features for many requests."""
        out = np.zeros((len(requests), self.dim), np.float32)
        many = getattr(self.embedder, "embed_many", None)
        if many is not None:  # batched transformer runs: same vectors, several times faster
            out[:, :self.embedder.dim] = many([req.prompt for req in requests])
            for i, req in enumerate(requests):
                out[i, self.embedder.dim:] = structure(req.prompt, req.conversation_tokens)
            return out
        for i, req in enumerate(requests):
            out[i] = self.features(req)
        return out
