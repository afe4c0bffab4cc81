"""Train a QualityModel on a Dataset: features, fit, and operating points picked on the training rows."""
from __future__ import annotations

import numpy as np

from llm_router.datasets import Dataset, prompt_key
from llm_router.learn import operating
from llm_router.learn.features import Featurizer
from llm_router.learn.fit import fit
from llm_router.learn.model import QualityModel
from llm_router.request import LLMRequest, parse_request


def requests_of(ds: Dataset) -> list[LLMRequest]:
    """Each prompt parsed as the live router would parse the client's request."""
    return [parse_request(ds.row(i).body()) for i in range(len(ds))]


def keys_of(ds: Dataset) -> np.ndarray:
    return np.array([prompt_key(p) for p in ds.prompts], np.int64)


def model_prices(ds: Dataset) -> np.ndarray:
    """Price of each model for the trade-off: its mean cost per call on these rows (USD)."""
    return ds.costs.mean(0)


def train_model(ds: Dataset, featurizer: Featurizer, *, x: np.ndarray | None = None, l2: float | None = None,
                folds: int = 5) -> tuple[QualityModel, np.ndarray]:
    """Fit on every row of `ds`; returns the model and its inner out-of-fold probabilities."""
    if len(ds) < 2 * folds:
        raise ValueError(f"need at least {2 * folds} prompts to train with {folds}-fold validation, got {len(ds)}")
    x = featurizer.matrix(requests_of(ds)) if x is None else x
    keys = keys_of(ds)
    # Inner folds use other hash bits than the outer eval folds, so they are not aligned with them.
    fitted, oof = fit(x.astype(np.float64), ds.scores, keys // 7, l2=l2, folds=folds)
    prices = model_prices(ds)
    best = int(ds.scores.mean(0).argmax())
    points = operating.curve(oof, prices, ds.scores, ds.costs)
    picked = operating.pick(points, float(ds.scores[:, best].mean()))
    meta = {
        "embedder": featurizer.kind,
        "format": ds.format,
        "sources": ds.sources,
        "rows": len(ds),
        "skipped": ds.skipped,
        "cost_note": ds.cost_note,
        "l2": fitted.l2,
        "cv_logloss": {str(k): v for k, v in fitted.cv_logloss.items()},
        "model_quality": dict(zip(ds.models, ds.scores.mean(0).tolist())),
        "model_cost": dict(zip(ds.models, prices.tolist())),
        "best_single": ds.models[best],
        "operating_points": {f"{frac:.2f}": {"tradeoff": t} for frac, t in picked.items()},
    }
    model = QualityModel(ds.models, fitted.mean, fitted.scale, fitted.weights, fitted.bias, featurizer.fingerprint(),
                         meta, np.unique(keys))
    return model, oof
