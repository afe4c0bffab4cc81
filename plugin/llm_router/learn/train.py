"""Train a QualityModel on a Dataset: features, fit, and operating points picked on the training rows."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llm_router.datasets import Dataset, prompt_key
from llm_router.learn import operating
from llm_router.learn.clusters import TEMPERATURE, auto_k, fit_clusters, join
from llm_router.learn.groups import group_accuracy, recogniser_features
from llm_router.learn.features import Featurizer
from llm_router.learn.fit import MIN_ROWS_PER_MODEL, Fitted, fit, fit_partial, fold_ids
from llm_router.learn.model import QualityModel
from llm_router.learn.traffic import partial as logged_traffic
from llm_router.request import LLMRequest, parse_request

LOGGED_Z = 1.64  # own traffic: operating points must reach their target this many standard errors below the estimate


def requests_of(ds: Dataset) -> list[LLMRequest]:
    """Each prompt parsed as the live router would parse the client's request."""
    return [parse_request(ds.row(i).body()) for i in range(len(ds))]


def keys_of(ds: Dataset) -> np.ndarray:
    return np.array([prompt_key(p) for p in ds.prompts], np.int64)


def model_prices(ds: Dataset) -> np.ndarray:
    """Price of each model for the trade-off: its mean cost per call on these rows (USD; the calls it made, for own traffic)."""
    return np.nanmean(ds.costs, 0) if np.isnan(ds.costs).any() else ds.costs.mean(0)


@dataclass(frozen=True, slots=True)
class _Fit:
    """What training settled on: the fitted weights, the models routed to, their qualities and points."""

    fitted: Fitted
    oof: np.ndarray
    models: tuple[str, ...]
    prices: np.ndarray
    quality: np.ndarray
    points: list[operating.Point]
    meta: dict


def _fit_outcomes(ds: Dataset, x: np.ndarray, keys: np.ndarray, l2: float | None, folds: int) -> _Fit:
    """Every model's outcome known for every prompt: qualities and operating points measured on the rows."""
    # Inner folds use other hash bits than the outer eval folds, so they are not aligned with them.
    fitted, oof = fit(x, ds.scores, keys // 7, l2=l2, folds=folds)
    prices = model_prices(ds)
    return _Fit(fitted, oof, ds.models, prices, ds.scores.mean(0), operating.curve(oof, prices, ds.scores, ds.costs), {})


def _fit_logged(ds: Dataset, x: np.ndarray, keys: np.ndarray, l2: float | None, folds: int, min_answers: int,
                caution: float) -> _Fit:
    """Own traffic, one observed outcome per prompt: doubly robust qualities and cautious operating points.

    Predictions are cross-fitted and corrected where the logged model is the chosen one, weighted
    by the logged propensity (or by the model's share of rows where none was logged, right only if
    it was picked independently of the prompt). Only models with `min_answers` answered requests
    are routed to: on a few dozen outcomes a model's estimate is luck, and the router would chase it.
    """
    fitted, oof, info = fit_partial(x, ds.scores, keys // 7, l2=l2, folds=folds, min_rows=min_answers)
    seen = ~np.isnan(ds.scores)
    served = seen.argmax(1)
    outcome = ds.scores[np.arange(len(ds)), served]
    share = np.maximum(seen.mean(0), 1.0 / len(ds))[served]
    logged = ds.propensity if ds.propensity is not None else np.full(len(ds), np.nan)
    propensity = np.where(np.isnan(logged), share, logged)
    keep = [j for j, i in enumerate(info) if i["rows"] >= min_answers]
    if not keep:
        counts = ", ".join(f"{mm} {i['rows']}" for mm, i in zip(ds.models, info))
        raise ValueError(f"no model answered {min_answers} or more logged requests with feedback ({counts}); "
                         "log more traffic")
    served_k = np.array([keep.index(j) if j in keep else -1 for j in served])
    oof, prices = oof[:, keep], model_prices(ds)[keep]
    quality = np.array([operating.logged_quality(oof, np.full(len(ds), k), served_k, outcome, propensity)[0]
                        for k in range(len(keep))])
    meta = {"rows_per_model": {mm: i["rows"] for mm, i in zip(ds.models, info)},
            "l2_per_model": {mm: i["l2"] for mm, i in zip(ds.models, info) if i["l2"] is not None},
            "not_routed": sorted(mm for j, mm in enumerate(ds.models) if j not in keep),
            "min_answers": min_answers,
            "propensity_logged": int((~np.isnan(logged)).sum()),
            "caution": caution,
            "quality_estimate": f"doubly robust from the logs; operating points reach their target at "
                                f"{caution:g} standard errors below the estimate"}
    return _Fit(replace(fitted, weights=fitted.weights[:, keep], bias=fitted.bias[keep]), oof,
                tuple(ds.models[j] for j in keep), prices, quality,
                operating.logged_curve(oof, prices, served_k, outcome, propensity, z=caution), meta)


def train_model(ds: Dataset, featurizer: Featurizer, *, x: np.ndarray | None = None, l2: float | None = None,
                folds: int = 5, min_answers: int = MIN_ROWS_PER_MODEL, caution: float = LOGGED_Z,
                clusters: int | None = None, cluster_seed: int = 0, groups: bool = True) -> tuple[QualityModel, np.ndarray]:
    """Fit on every row of `ds`; returns the model and its inner out-of-fold probabilities.

    `clusters`: how many topic clusters of the prompts to add as features (None: as many as the
    rows support, up to learn.clusters.MAX_CLUSTERS; 0: none); `cluster_seed` seeds their k-means.
    `groups`: where the rows name their task (2+ tasks with enough rows; not own traffic, whose group
    is the route), add a recogniser of it.
    """
    if len(ds) < 2 * folds:
        raise ValueError(f"need at least {2 * folds} prompts to train with {folds}-fold validation, got {len(ds)}")
    x = (featurizer.matrix(requests_of(ds)) if x is None else x).astype(np.float64)
    emb = x[:, :featurizer.embedder.dim]
    topics = fit_clusters(emb, auto_k(len(x)) if clusters is None else clusters, seed=cluster_seed)
    keys = keys_of(ds)
    partial = logged_traffic(ds)
    task_meta: dict = {"groups": []}
    # Own traffic's group is its route, which the router knows without recognising it.
    tasks = recogniser_features(emb, ds.groups, keys, temperature=TEMPERATURE) if groups and not partial else None
    if topics is not None:
        x = topics.augment(x)
    if tasks is not None:
        block, names, posterior = tasks
        topics = join(topics, block)
        x = np.hstack([x, posterior])
        task_meta = {"groups": names, "group_accuracy": group_accuracy(posterior, ds.groups, names)}
    got = _fit_logged(ds, x, keys, l2, folds, min_answers, caution) if partial else _fit_outcomes(ds, x, keys, l2, folds)
    best = int(got.quality.argmax())
    picked = operating.pick(got.points, float(got.quality[best]))
    margins = {frac: 0.0 for frac in operating.TARGETS}
    held: dict[float, operating.HeldOut] = {}
    if not partial:  # own traffic has its own caution (standard errors below the estimate)
        # Hashes of the raw prompts, not of the parsed ones the live rule draws from: sizing the
        # margin needs only some fixed uniform split of the rows, and x may come without requests.
        draws = np.array([operating.blend_draw(p) for p in ds.prompts])
        held = operating.blends_held_out(got.oof, got.prices, ds.scores, ds.costs, fold_ids(keys // 7, folds), draws, best)
        margins = {f: h.margin for f, h in held.items()}
    blends = operating.pick_blends(got.points, float(got.quality[best]), margins=margins)
    if partial:
        # A target the logs cannot vouch for gets the most quality-seeking rule (trade-off 0), not
        # the point whose noisy estimate happens to be highest.
        for frac in picked:
            if operating.cheapest_reaching(got.points, frac * float(got.quality[best])) is None:
                picked[frac] = 0.0
                blends[frac] = operating.Blend(0.0, 0.0, 0.0, blends[frac].quality, blends[frac].cost_per_1k)
    fitted, oof, models = got.fitted, got.oof, got.models
    params = {frac: blends[frac].params() for frac in operating.TARGETS}
    rules = {frac: "tradeoff" for frac in operating.TARGETS}
    if tasks is not None and not partial:
        task_meta["task_mix"], mixes = _task_mixes(ds, tasks[2].argmax(1), task_meta["groups"], keys, folds)
        for frac, mix in mixes.items():
            # The mix where it reached the target on inner held-out rows for less than the trade-off did.
            b = held.get(frac)
            if mix is not None and mix.held_out.reached and (b is None or not b.reached or mix.held_out.cost < b.cost):
                params[frac] = {**params[frac], "mix": mix.params(task_meta["groups"], ds.models)}
                rules[frac] = "mix"
    meta = {
        "embedder": featurizer.kind,
        "format": ds.format,
        "sources": ds.sources,
        "rows": len(ds),
        "skipped": ds.skipped,
        "cost_note": ds.cost_note,
        "l2": fitted.l2,
        "clusters": (topics.k if topics is not None else 0) - len(task_meta["groups"]),
        **task_meta,
        "cluster_seed": cluster_seed,
        "cv_logloss": {str(k): v for k, v in fitted.cv_logloss.items()},
        "model_quality": dict(zip(models, got.quality.tolist())),
        "model_cost": dict(zip(models, got.prices.tolist())),
        "best_single": models[best],
        # "tradeoff": the cheapest single point reaching the target; "params": the cheapest blend (quality_gate params).
        # "rule": "mix" where the per-task mix beat the trade-off on inner held-out rows ("params" then carry it).
        "operating_points": {f"{frac:.2f}": {"tradeoff": t, "params": params[frac], "margin": margins[frac], "rule": rules[frac],
                                             **({"inner_held_out": _held(held[frac])} if frac in held else {})}
                             for frac, t in picked.items()},
        **got.meta,
    }
    model = QualityModel(models, fitted.mean, fitted.scale, fitted.weights, fitted.bias, featurizer.fingerprint(),
                         meta, np.unique(keys), topics)
    return model, oof


def _held(h: operating.HeldOut) -> dict:
    """A rule's inner held-out result as the model file keeps it."""
    return {"quality": h.quality, "cost_per_1k": h.cost * 1000, "reached": h.reached}


def _task_mixes(ds: Dataset, task: np.ndarray, names: list[str], keys: np.ndarray, folds: int) -> tuple[dict, dict]:
    """Per target, the per-task mix (quality_gate `mix` params) solved on the rows by their recognised task; meta and mixes.

    The tasks are the recogniser's cross-fitted guesses, as a live prompt's would be, not the labels.
    """
    from llm_router.learn import task_mix

    try:
        mixes = task_mix.fit(ds.scores, ds.costs, task, len(names), fold_ids(keys // 7, folds))
    except ImportError:
        return {"note": "no per-task mixes: they need scipy (pip install 'llm-router[train]')"}, {}
    meta = {f"{frac:.2f}": {"mix": m.params(names, ds.models), "margin": m.margin, "inner_held_out": _held(m.held_out)}
            for frac, m in mixes.items() if m is not None}
    return meta, mixes
