"""Topic clusters of the training prompts, as extra features: soft membership in each cluster.

A linear model over an embedding can say "prompts leaning this way are harder", but not "this
topic is hard for model A and easy for model B" when topics are not linearly separable. Soft
membership in k-means clusters of the training prompts gives every topic its own weight per
model, so the fit learns each model's rate per topic. Two clusterings at different resolutions
(k and k/4) let small topics borrow strength from the broader topic around them. The centroids
are fitted on the training prompts only (no outcomes), stored in the model file, and applied to
new prompts with one small matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CLUSTERS = 120  # the finer clustering; the coarser one has a quarter as many
ROWS_PER_CLUSTER = 50  # fewer rows per cluster and a model's rate per topic is mostly noise
TEMPERATURE = 20.0  # softmax sharpness over cosines to the centroids
ITERATIONS = 25


@dataclass(frozen=True, slots=True)
class Clusters:
    """Centroids (sum of blocks, dim) over the first `dim` feature columns (the prompt embedding).

    `blocks`: the size of each clustering, in order; memberships are a softmax within each block of
    `temperature * x @ centroids.T + bias` (bias None: zero; learned task recognisers have one).
    """

    centroids: np.ndarray
    blocks: tuple[int, ...]
    temperature: float = TEMPERATURE
    bias: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def memberships(self, x: np.ndarray) -> np.ndarray:
        """Soft membership (k,) or (n, k) of feature rows whose first `dim` columns are the embedding."""
        s = (x[..., :self.dim] @ self.centroids.T) * self.temperature
        if self.bias is not None:
            s = s + self.bias
        out = []
        start = 0
        for size in self.blocks:
            b = s[..., start:start + size]
            z = np.exp(b - b.max(-1, keepdims=True))
            out.append(z / z.sum(-1, keepdims=True))
            start += size
        return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)

    def augment(self, x: np.ndarray) -> np.ndarray:
        """The feature rows with their memberships appended."""
        return np.concatenate([x, self.memberships(x).astype(x.dtype)], axis=-1)


def join(first: Clusters | None, second: Clusters | None) -> Clusters | None:
    """Both clusterings' blocks in one (same temperature), the first's blocks first."""
    if first is None or second is None:
        return first or second
    if first.temperature != second.temperature or first.dim != second.dim:
        raise ValueError("clusterings to join need the same temperature and width")
    bias = None
    if first.bias is not None or second.bias is not None:
        bias = np.concatenate([c.bias if c.bias is not None else np.zeros(c.k, np.float32) for c in (first, second)])
    return Clusters(np.concatenate([first.centroids, second.centroids]), first.blocks + second.blocks,
                    first.temperature, bias)


def describe(clusters: Clusters | None) -> str:
    """The clusterings' sizes for people ('120 + 30'), or 'none'."""
    return " + ".join(map(str, clusters.blocks)) if clusters is not None else "none"


def auto_k(rows: int, cap: int | None = None) -> int:
    """How many clusters (the finer clustering) `rows` training prompts support (0: too few for any)."""
    k = min(MAX_CLUSTERS if cap is None else cap, rows // ROWS_PER_CLUSTER)
    return k if k >= 2 else 0


def resolutions(k: int) -> tuple[int, ...]:
    """The clusterings for a finer k: k itself and, when it has 2 or more, a quarter as many."""
    return (k, k // 4) if k // 4 >= 2 else (k,)


def _kmeans(rows: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """Spherical k-means (cosine) with k-means++ seeding: (k, dim) unit centroids."""
    cents = [rows[rng.integers(len(rows))]]
    dist = 1.0 - rows @ cents[0]
    for _ in range(1, k):
        w = np.maximum(dist, 0.0) ** 2
        total = float(w.sum())
        i = int(rng.choice(len(rows), p=w / total)) if total > 0 else int(rng.integers(len(rows)))
        cents.append(rows[i])
        dist = np.minimum(dist, 1.0 - rows @ rows[i])
    c = np.array(cents, np.float32)
    for _ in range(iterations):
        label = (rows @ c.T).argmax(1)
        sums = np.zeros_like(c)
        np.add.at(sums, label, rows)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        # An emptied cluster keeps its centroid rather than collapsing to zero.
        c = np.where(norms > 1e-9, sums / np.maximum(norms, 1e-9), c).astype(np.float32)
    return c


def fit_clusters(emb: np.ndarray, k: int, *, seed: int = 0, iterations: int = ITERATIONS) -> Clusters | None:
    """Clusterings of unit embedding rows at `resolutions(k)`; None when k < 2 or the rows are too few."""
    rows = emb[np.linalg.norm(emb, axis=1) > 1e-9].astype(np.float32)
    if k < 2 or len(rows) < 2 * k:
        return None
    rng = np.random.default_rng(seed)
    blocks = resolutions(k)
    return Clusters(np.concatenate([_kmeans(rows, size, rng, iterations) for size in blocks]), blocks)
