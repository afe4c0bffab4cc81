"""The trained quality model: per-model probability of a good answer, one matrix multiply (numpy only).

Saved as a `.npz` of plain arrays plus a JSON metadata string; loading never unpickles.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llm_router.learn.clusters import Clusters

# Version 2 adds topic clusters (the `centroids` array), version 3 a learned task recogniser among
# them (the `cluster_bias` array). A file is written with the lowest version that holds it, so older
# releases keep reading what they can use and refuse the rest by its version.
FORMAT_VERSION = 3
FORMAT_VERSIONS = (1, 2, 3)


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""


@dataclass
class QualityModel:
    """p(model answers well | features) = sigmoid((x' - mean) / scale @ weights + bias).

    x' is the feature vector, followed by its topic-cluster memberships when the model has clusters.
    """

    models: tuple[str, ...]
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,)
    weights: np.ndarray  # (features, models)
    bias: np.ndarray  # (models,)
    features: str  # featurizer fingerprint, e.g. "static-256-<sha>"
    meta: dict[str, Any] = field(default_factory=dict)  # training facts, operating points, prices
    trained_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # prompt hashes trained on
    clusters: Clusters | None = None  # topic clusters of the training prompts (learn.clusters)

    def __post_init__(self) -> None:
        # Fold the standardisation into the weights: one multiply-add at run time.
        w = (self.weights / self.scale[:, None]).astype(np.float32)
        self._b = (self.bias - (self.mean / self.scale) @ self.weights).astype(np.float32)
        c = self.clusters
        if c is None:
            self._w = w
            return
        # Memberships are a softmax per block; instead of building them, one product with a
        # block-diagonal matrix gives per block both sum(e * weights) and sum(e), and their ratio
        # is the block's contribution (cosines are within [-1, 1], so exp needs no shift).
        base, m = w.shape[0] - c.k, w.shape[1]
        self._w, self._c = w[:base], np.ascontiguousarray(c.centroids.T * c.temperature)
        self._cb = c.bias
        self._g = np.zeros((c.k, len(c.blocks) * (m + 1)), np.float32)
        start = 0
        for i, size in enumerate(c.blocks):
            self._g[start:start + size, i * (m + 1):i * (m + 1) + m] = w[base + start:base + start + size]
            self._g[start:start + size, i * (m + 1) + m] = 1.0
            start += size

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (models,) for one feature vector, or (n, models) for a matrix."""
        z = x @ self._w + self._b
        c = self.clusters
        if c is not None:
            if self._cb is None:
                e = np.exp(x[..., :c.dim] @ self._c)
            else:  # a task recogniser's logits are unbounded: clip so exp stays finite and nonzero in float32
                e = np.exp(np.clip(x[..., :c.dim] @ self._c + self._cb, -80.0, 80.0))
            r = (e @ self._g).reshape(*e.shape[:-1], len(c.blocks), -1)
            z = z + (r[..., :-1] / r[..., -1:]).sum(-2)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    @property
    def tasks(self) -> list[str]:
        """The tasks its recogniser tells apart (empty: it has none)."""
        return list(self.meta.get("groups") or ())

    def task_of(self, x: np.ndarray) -> np.ndarray | int:
        """Index into `tasks` of the most likely task of a feature vector (or of each row); -1 without a recogniser."""
        c, k = self.clusters, len(self.tasks)
        if c is None or c.bias is None or not k:
            return -1 if x.ndim == 1 else np.full(len(x), -1)
        lo = c.k - k  # the recogniser is the last block (train joins it after the topic clusters)
        s = (x[..., :c.dim] @ c.centroids[lo:].T) * c.temperature + c.bias[lo:]
        found = s.argmax(-1)
        return int(found) if x.ndim == 1 else found

    def save(self, path: str | Path) -> Path:
        """Write the model as .npz (the suffix is added when missing)."""
        p = Path(path)
        version = 1 if self.clusters is None else 2 if self.clusters.bias is None else 3
        meta = {**self.meta, "format_version": version,
                "models": list(self.models), "features": self.features}
        extra: dict[str, Any] = {}
        if self.clusters is not None:
            meta["cluster_temperature"] = self.clusters.temperature
            meta["cluster_blocks"] = list(self.clusters.blocks)
            extra["centroids"] = self.clusters.centroids.astype(np.float32)
            if self.clusters.bias is not None:
                extra["cluster_bias"] = self.clusters.bias.astype(np.float32)
        with p.open("wb") as fh:
            np.savez_compressed(fh, mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                                weights=self.weights.astype(np.float32), bias=self.bias.astype(np.float32),
                                trained_keys=self.trained_keys.astype(np.int64),
                                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **extra)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "QualityModel":
        """Read a model written by save(); raises ModelFileError naming the problem."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise ModelFileError(f"{p}: no such model file (make one with `llm-router train`)") from None
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{p}: not a model file from `llm-router train` ({exc})") from None
        missing = [k for k in ("mean", "scale", "weights", "bias", "meta") if k not in arrays]
        if missing:
            raise ModelFileError(f"{p}: model file lacks {missing}")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{p}: metadata is not valid JSON ({exc})") from None
        if meta.get("format_version") not in FORMAT_VERSIONS:
            raise ModelFileError(f"{p}: format_version {meta.get('format_version')!r} is not one of {FORMAT_VERSIONS} "
                                 "(made by another release of llm-router? retrain with `llm-router train`)")
        models = tuple(meta.get("models") or ())
        w = arrays["weights"]
        if w.ndim != 2 or w.shape[1] != len(models) or arrays["bias"].shape != (len(models),) \
                or arrays["mean"].shape != (w.shape[0],) or arrays["scale"].shape != (w.shape[0],):
            raise ModelFileError(f"{p}: array shapes do not agree with {len(models)} models")
        clusters = None
        if "centroids" in arrays:
            c = arrays["centroids"]
            temperature = meta.get("cluster_temperature")
            blocks = meta.get("cluster_blocks")
            if c.ndim != 2 or c.shape[0] < 2 or c.shape[0] + c.shape[1] > w.shape[0]:
                raise ModelFileError(f"{p}: centroids of shape {c.shape} do not fit {w.shape[0]} weight rows")
            if not isinstance(temperature, (int, float)) or not temperature > 0:
                raise ModelFileError(f"{p}: cluster_temperature must be a positive number, got {temperature!r}")
            if not (isinstance(blocks, list) and blocks and all(isinstance(b, int) and b >= 1 for b in blocks)
                    and sum(blocks) == c.shape[0]):
                raise ModelFileError(f"{p}: cluster_blocks {blocks!r} must be positive sizes adding up to {c.shape[0]} centroids")
            bias = arrays.get("cluster_bias")
            if bias is not None and bias.shape != (c.shape[0],):
                raise ModelFileError(f"{p}: cluster_bias of shape {bias.shape} does not match {c.shape[0]} centroids")
            clusters = Clusters(c.astype(np.float32), tuple(blocks), float(temperature),
                                None if bias is None else bias.astype(np.float32))
        return cls(models, arrays["mean"].astype(np.float64), arrays["scale"].astype(np.float64), w.astype(np.float64),
                   arrays["bias"].astype(np.float64), str(meta.get("features", "")), meta,
                   arrays.get("trained_keys", np.zeros(0, np.int64)), clusters)
