"""Replay a data set through every strategy and the learned router; cost, quality and savings on held-out rows.

The data set's models become an eval catalog (price = mean measured cost per call on the
training part, quality = training-part mean score, tier by quality rank, ladder = cheapest
model per tier) and every policy runs through the real `Router`. A row's cost and quality are
those of the model chosen for it, as measured in the data set.

Held-out protocol: k-fold cross-validation with folds by prompt hash (duplicates share a
fold); each fold's router is trained, and its operating points picked, on the other folds
only. With a trained model file (`--router`) the rows it was trained on are left out instead.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm_router.catalog import Tier
from llm_router.classify.base import Classification, Classifier
from llm_router.classify.learned import LearnedClassifier
from llm_router.config import Config, default_data, parse_config
from llm_router.datasets import Dataset, list_literal
from llm_router.decision import RouteError
from llm_router.learn import operating
from llm_router.learn.features import Featurizer
from llm_router.learn.fit import fold_ids
from llm_router.learn.model import QualityModel
from llm_router.learn.train import keys_of, requests_of, train_model
from llm_router.request import LLMRequest
from llm_router.router import Router

# Config strategies replayed (classifier, strategy, params); "learned@x" are added per target.
STRATEGY_POLICIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ladder": ("rules", "ladder", {}),
    "cost_weighted": ("rules", "cost_weighted", {}),
    "capability": ("rules", "capability", {}),
    "round_robin": ("rules", "round_robin", {}),
    "least_used": ("rules", "least_used", {}),
    "semantic": ("semantic", "semantic", {}),
    "quality_gate": ("rules", "quality_gate", {}),
    "cascade": ("rules", "cascade", {}),  # scored on the cascade's first model
}
EVAL_PROVIDER = "eval"
# The cascade is replayed with the shipped verifier at these floors (the cascade params' default is 0.5).
CASCADE_FLOORS = (0.5, 0.8)


@dataclass
class StrategyResult:
    name: str
    quality: float
    cost_per_1k: float
    model_share: dict[str, float]
    note: str = ""


@dataclass
class EvalReport:
    """Everything `llm-router eval` prints, as plain data."""

    dataset: str
    split: str
    rows: int
    best_single: dict[str, Any]
    oracle: dict[str, Any]
    strategies: list[StrategyResult]
    at_quality: dict[str, dict[str, Any]]
    curve: list[operating.Point]
    pareto: list[operating.Point]
    at_quality_curve: dict[str, dict[str, Any]]
    routellm: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    at_quality_agree: dict[str, dict[str, Any]] | None = None  # agreement cascade, configurations chosen on training folds
    at_quality_agree_bound: dict[str, dict[str, Any]] | None = None  # same search on the scored rows: an upper bound only
    agree_policy: dict[str, dict[str, Any]] | None = None  # target -> deployable cascade params (fit on ALL rows)
    agree_policy_fit: dict[str, Any] | None = None  # how agree_policy was fit, and what it is not
    at_quality_task_mix: dict[str, dict[str, Any]] | None = None  # learned_mix@x: per-task mixes, solved on training folds

    def to_json(self) -> dict[str, Any]:
        """The JSON document of `llm-router eval --json`."""
        out = asdict(self)
        out["strategies"] = [asdict(s) for s in self.strategies]
        out["curve"] = [asdict(p) for p in self.curve]
        out["pareto"] = [asdict(p) for p in self.pareto]
        return out


# ---- the eval catalog -------------------------------------------------------------------

def tiers_by_rank(quality: np.ndarray) -> list[str]:
    """Tier per model from its quality rank: the top quarter CRITICAL ... the bottom LOW."""
    m = len(quality)
    rank = np.empty(m, int)
    rank[np.argsort(-quality, kind="stable")] = np.arange(m)
    return [Tier(int(Tier.CRITICAL) - min(3, (r * 4) // m)).name for r in rank]


def eval_config(models: tuple[str, ...], prices: np.ndarray, quality: np.ndarray, *, with_semantic: bool = False,
                learned: dict[str, dict[str, Any]] | None = None, classifiers: dict[str, Any] | None = None,
                extra: dict[str, dict[str, Any]] | None = None) -> Config:
    """A config whose catalog is the data set's models; one policy per strategy.

    Prices: input = output = mean cost per call x 1000 (USD per 1K calls, used as the price
    per 1M tokens), so the catalog orders models exactly by their measured mean cost.
    """
    tiers = tiers_by_rank(quality)
    model_conf = {
        m: {"provider": EVAL_PROVIDER, "name": m, "input_price": float(p * 1000), "output_price": float(p * 1000),
            "context_window": 10_000_000, "tier": t, "quality": float(np.clip(q, 0, 1))}
        for m, p, q, t in zip(models, prices, quality, tiers)
    }
    ladder = {}
    for tier in Tier:
        members = [i for i, t in enumerate(tiers) if t == tier.name]
        if members:
            ladder[tier.name] = models[min(members, key=lambda i: prices[i])]
    policies = {}
    for name, (classifier, strategy, params) in STRATEGY_POLICIES.items():
        if classifier == "semantic" and not with_semantic:
            classifier = "rules"
        policies[name] = {"classifier": classifier, "strategy": strategy, "ladder": ladder, "params": params, "fallbacks": 0}
    for label, params in (learned or {}).items():  # quality_gate params: tradeoff, optionally a blend
        policies[label] = {"classifier": "learned", "strategy": "quality_gate", "params": params, "fallbacks": 0}
    policies.update(extra or {})
    data = {
        "providers": {EVAL_PROVIDER: {"base_url": "http://127.0.0.1:9", "auth": "none", "paths": {"chat": "/v1/chat/completions"}}},
        "models": model_conf,
        "classifiers": {**(classifiers or default_data().get("classifiers", {})), "learned": {"model": "(in memory)"}},
        "policies": policies,
        "default_policy": "ladder",
        "seed": 0,
    }
    return parse_config(data, source="eval catalog", with_defaults=False)


class _Memo:
    """Wraps a classifier; a request with the same prompt is classified once (eval replays it per policy)."""

    def __init__(self, inner: Classifier):
        self.inner = inner
        self.name = inner.name
        self._seen: dict[tuple[str, int], Classification] = {}

    def classify(self, request: LLMRequest) -> Classification:
        key = (request.prompt, request.input_tokens)
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = self.inner.classify(request)
        return found


def _semantic_classifier(cfg: Config) -> Classifier | None:
    try:
        from llm_router.classify.semantic import SemanticClassifier

        return SemanticClassifier.from_config(cfg.classifiers.semantic)
    except Exception:  # not built or not shipped here: the semantic policy falls back to rules
        return None


# ---- evaluation -------------------------------------------------------------------------

def _share(choice: np.ndarray, models: tuple[str, ...]) -> dict[str, float]:
    counts = np.bincount(choice, minlength=len(models))
    return {m: float(c / len(choice)) for m, c in zip(models, counts) if c}


def _metrics(name: str, choice: np.ndarray, ds: Dataset, note: str = "") -> StrategyResult:
    q, c = operating.measure(choice, ds.scores, ds.costs)
    return StrategyResult(name, q, c, _share(choice, ds.models), note)


def oracle_choice(ds: Dataset) -> np.ndarray:
    """Per row the cheapest model among those with the best score."""
    best = ds.scores.max(1, keepdims=True)
    masked = np.where(ds.scores >= best - 1e-12, ds.costs, np.inf)
    return masked.argmin(1)


UNKNOWN_P = -1e9  # predicted quality of a model the router does not know: never chosen


def routellm_metrics(p: np.ndarray, ds: Dataset, strong: int) -> dict[str, Any]:
    """RouteLLM's metrics for a two-model data set: PGR by strong-call share, APGR, CPT(50%), CPT(80%).

    Calls go to the strong model in order of predicted gain p_strong - p_weak; shares 0..100% in
    1% steps (RouteLLM uses 10 quantile thresholds; the finer grid changes APGR slightly).
    """
    weak = 1 - strong
    n = len(ds)
    order = np.argsort(-(p[:, strong] - p[:, weak]), kind="stable")
    q_weak, q_strong = ds.scores[:, weak].mean(), ds.scores[:, strong].mean()
    shares = np.linspace(0, 1, 101)
    qual = []
    for s in shares:
        choice = np.full(n, weak)
        choice[order[: int(round(s * n))]] = strong
        qual.append(ds.scores[np.arange(n), choice].mean())
    qual = np.array(qual)
    span = q_strong - q_weak
    pgr = (qual - q_weak) / span if span else np.zeros_like(qual)
    apgr = float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(shares)))

    def cpt(x: float) -> float | None:
        hit = np.nonzero(pgr >= x)[0]
        return float(shares[hit[0]]) if len(hit) else None

    return {"strong": ds.models[strong], "weak": ds.models[weak], "apgr": apgr, "cpt50": cpt(0.5), "cpt80": cpt(0.8),
            "pgr_at": {f"{s:.2f}": float(v) for s, v in zip(shares[::10], pgr[::10])}}


def evaluate(ds: Dataset, featurizer: Featurizer, *, folds: int = 5, model: QualityModel | None = None,
             classifiers: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
             clusters: int | None = None, cluster_seed: int = 0, groups: bool = True, blend: bool = True) -> EvalReport:
    """Replay `ds` through every strategy and the learned router, on held-out rows only.

    `classifiers`: the classifiers section of a config (rules, semantic settings) for the replayed policies.
    `clusters`: topic clusters for the learned router trained per fold (None: automatic; 0: none), their
    k-means seeded with `cluster_seed`; `groups`: with a recogniser of the data's tasks (learn.groups).
    `blend`: run each target's blend of two operating points (False: the cheapest single point reaching it).
    """
    say = progress or (lambda _msg: None)
    notes = [f"costs: {ds.cost_note}"]
    if any(ds.skipped.values()):
        notes.append("skipped rows: " + ", ".join(f"{n} {why}" for why, n in ds.skipped.items() if n))
    if model is not None:
        ds, split = _held_out_for(model, ds, notes)
        fids = np.zeros(len(ds), int)
    else:
        if len(ds) < 4 * folds:
            raise ValueError(f"need at least {4 * folds} prompts for {folds}-fold evaluation, got {len(ds)}")
        fids = fold_ids(keys_of(ds), folds)
        split = f"{folds}-fold cross-validation (folds by prompt hash); every row scored by a router not trained on it"
    say(f"featurising {len(ds)} prompts")
    requests = requests_of(ds)
    x = featurizer.matrix(requests).astype(np.float64)
    n, m = ds.scores.shape
    p_all = np.zeros((n, m))
    picks = {frac: np.zeros(n) for frac in operating.TARGETS}
    blended: dict[float, set[tuple[float, float, float]]] = {frac: set() for frac in operating.TARGETS}
    margins: dict[float, list[float]] = {frac: [] for frac in operating.TARGETS}
    rules: dict[float, list[str]] = {frac: [] for frac in operating.TARGETS}
    prices_row = np.zeros((n, m))
    names = list(STRATEGY_POLICIES) + [f"learned@{frac:.2f}" for frac in operating.TARGETS]
    mix_names = [f"learned_mix@{frac:.2f}" for frac in operating.TARGETS]
    chosen = {name: np.full(n, -1) for name in names + mix_names}
    mix_margins: dict[str, list[float]] = {name: [] for name in mix_names}
    chains: list[list[int]] = [[] for _ in range(n)]
    semantic_ok = True
    checked = mix_checked = 0
    topic_clusters: list[int] = []
    task_groups: list[tuple[int, float | None]] = []
    for f in np.unique(fids):
        te = np.nonzero(fids == f)[0]
        if model is None:
            tr = np.nonzero(fids != f)[0]
            train = ds.subset(tr)
            say(f"fold {f + 1}/{folds}: training on {len(tr)} prompts, scoring {len(te)}")
            fold_model, _ = train_model(train, featurizer, x=x[tr], clusters=clusters, cluster_seed=cluster_seed,
                                        groups=groups)
            topic_clusters.append(int(fold_model.meta.get("clusters", 0)))
            task_groups.append((len(fold_model.meta.get("groups", [])), fold_model.meta.get("group_accuracy")))
            prices = train.costs.mean(0)
            quality = train.scores.mean(0)
        else:
            fold_model = model
            prices = np.array([model.meta.get("model_cost", {}).get(mm, c) for mm, c in zip(ds.models, ds.costs.mean(0))])
            quality = np.array([model.meta.get("model_quality", {}).get(mm, q) for mm, q in zip(ds.models, ds.scores.mean(0))])
        # A model the router does not know (trained on logs with too few of its answers) is never chosen.
        known = [mm in fold_model.models for mm in ds.models]
        pred = fold_model.predict(x[te])
        p_all[te] = np.column_stack([pred[:, fold_model.models.index(mm)] if k else np.full(len(te), UNKNOWN_P)
                                     for mm, k in zip(ds.models, known)])
        prices_row[te] = prices
        ops = {frac: _operating_params(fold_model.meta["operating_points"][f"{frac:.2f}"], blend) for frac in operating.TARGETS}
        for frac, params in ops.items():
            picks[frac][te] = params["tradeoff"]
            if "blend" in params:
                blended[frac].add((params["tradeoff"], params["blend"]["tradeoff"], params["blend"]["share"]))
            rule = "mix" if "mix" in params else "tradeoff"
            source = (fold_model.meta.get("task_mix") or {}) if rule == "mix" else fold_model.meta["operating_points"]
            margins[frac].append(float(source.get(f"{frac:.2f}", {}).get("margin", 0.0)))
            rules[frac].append(rule)
        learned_policies = {f"learned@{frac:.2f}": params for frac, params in ops.items()}
        for frac, params in ops.items():  # the per-task mixes, where the fold's model has them
            found = (fold_model.meta.get("task_mix") or {}).get(f"{frac:.2f}")
            if found:
                learned_policies[f"learned_mix@{frac:.2f}"] = {**params, "mix": found["mix"]}
                mix_margins[f"learned_mix@{frac:.2f}"].append(float(found["margin"]))
        cfg = eval_config(ds.models, prices, quality, with_semantic=True, classifiers=classifiers, learned=learned_policies)
        learned = _Memo(LearnedClassifier(fold_model, featurizer))
        instances: dict[str, Classifier] = {"learned": learned}
        semantic = _semantic_classifier(cfg)
        if semantic is None:
            semantic_ok = False
            cfg = eval_config(ds.models, prices, quality, classifiers=classifiers, learned=learned_policies)
        else:
            instances["semantic"] = semantic
        router = Router(cfg, classifiers=instances)
        index = {mm: j for j, mm in enumerate(ds.models)}
        fold_names = names + [name for name in mix_names if name in router.policies]
        for i in te:
            for name in fold_names:
                decision = router.decide(requests[i], router.policies[name])
                if isinstance(decision, RouteError):
                    raise RuntimeError(f"eval: policy {name} refused row {ds.ids[i]}: {decision.message}")
                chosen[name][i] = index[decision.model.id]
                if name == "cascade":
                    chains[i] = [index[m.id] for m in decision.chain]
        # The Router's learned choices must equal the vectorised rule the curve uses (up to exact
        # ties, which one-row and batched float32 products can break differently).
        draws = np.array([operating.blend_draw(requests[i].prompt) for i in te])
        for frac, params in ops.items():
            t = params["tradeoff"]
            other, share = (params["blend"]["tradeoff"], params["blend"]["share"]) if "blend" in params else (t, 0.0)
            vec = operating.choose_blend(p_all[te], prices, t, other, share, draws)
            got = chosen[f"learned@{frac:.2f}"][te]
            util = np.where((draws < share)[:, None], operating.utility(p_all[te], prices, other),
                            operating.utility(p_all[te], prices, t))
            rows = np.arange(len(te))
            differ = (vec != got) & (np.abs(util[rows, vec] - util[rows, got]) > 1e-5)
            if "mix" in params:  # training chose the per-task mix for this target: its tasks' rows go by their shares
                labels = [learned.classify(requests[i]).label for i in te]
                differ &= np.array([label not in params["mix"] for label in labels])
                mix_checked += check_mix(params["mix"], labels, [requests[i].prompt for i in te], ds.models, prices, got)
            if differ.any():
                raise AssertionError(f"learned router and vectorised rule disagree on {int(differ.sum())} rows")
            checked += len(te)
        for name in fold_names:
            if name.startswith("learned_mix@"):
                mix_checked += check_mix(learned_policies[name]["mix"], [learned.classify(requests[i]).label for i in te],
                                         [requests[i].prompt for i in te], ds.models, prices, chosen[name][te])
    if not semantic_ok:
        notes.append("semantic classifier unavailable here (no built embeddings/examples): the semantic policy ran on the rules classifier")
    notes.append("cascade (plain row) is scored on the first model of its chain; the cascade@F rows replay the later steps")
    best = int(ds.scores.mean(0).argmax())
    best_q, best_c = operating.measure(np.full(n, best), ds.scores, ds.costs)
    oq, oc = operating.measure(oracle_choice(ds), ds.scores, ds.costs)
    strategies = [_metrics(name, chosen[name], ds) for name in names]
    mixed = [name for name in mix_names if (chosen[name] >= 0).all()]  # every fold's model had the mix
    task_mix_at: dict[str, dict[str, Any]] | None = {} if mixed else None
    for name in mixed:
        r = _metrics(name, chosen[name], ds, "per-task mix solved on the training folds (margin "
                     + ", ".join(f"{v:g}" for v in mix_margins[name]) + " per fold); other tasks by the trade-off")
        strategies.append(r)
        key = name.split("@", 1)[1]
        task_mix_at[key] = {"quality": r.quality, "cost_per_1k": r.cost_per_1k, "saving_vs_best": 1 - r.cost_per_1k / best_c,
                            "relative_quality": r.quality / best_q, "reached": r.quality >= float(key) * best_q - 1e-12,
                            "margins": mix_margins[name]}
    if mixed:
        notes.append(TASK_MIX_NOTE)
        notes.append(f"learned_mix@x: the Router's choices checked against each recognised task's shares on {mix_checked} decisions")
    responses = load_responses(ds)
    agree_at = agree_bound = agree_policy = agree_fit = None
    if responses is None:
        notes.append("cascade (scored) rows: this data set holds no response texts to score")
        notes.append("agree@x rows: this data set holds no response texts, so answers cannot be compared for agreement")
    else:
        missing = sum(1 for row in responses for t in row if t is None)
        for floor in CASCADE_FLOORS:
            strategies.append(replay_cascade(f"cascade@{floor:g}", chains, responses, requests, ds, floor))
        if model is None:
            inner = fold_ids(keys_of(ds) // 7, folds)  # other hash bits than the outer folds
            say("agreement cascade: replaying configurations chosen on training folds")
            codes, kinds = agree_inputs(ds, responses)
            agree_rows, agree_at, agree_bound = replay_agreement(ds, responses, fids, best_c, inner, codes=codes, kinds=kinds)
            strategies += agree_rows
            say("agreement cascade: fitting the deployable policy on all rows")
            agree_policy, agree_fit = deployable_agreement(ds, codes, kinds, fids, best_c)
            agree_fit["router_check"] = check_agree_policy(ds, requests, agree_policy, agree_fit.pop("chosen"))
            notes.append(f"agree_policy: checked through the real Router (strategy cascade, params.kinds) on "
                         f"{agree_fit['router_check']} decisions: each row got the chain and quorum the replay chose for its kind")
        else:
            notes.append("agree@x rows need k-fold evaluation (their configuration is chosen on training folds): "
                         "not replayed with --router")
        notes.append(
            "cascade@F: the cascade's chain replayed on the recorded answers; each answer is scored by the shipped "
            "verifier (refusal/hedge phrases, one valid option letter for multiple-choice prompts, code present when "
            "code was asked for, JSON when JSON was asked for; no logprobs in the data, no judge) and escalates "
            "below F; quality = the returned answer's score, cost = every call made"
            + (f"; {missing} missing answers scored as empty" if missing else ""))
    at_quality = {}
    for frac in operating.TARGETS:
        r = next(s for s in strategies if s.name == f"learned@{frac:.2f}")
        at_quality[f"{frac:.2f}"] = {
            "quality": r.quality, "cost_per_1k": r.cost_per_1k, "saving_vs_best": 1 - r.cost_per_1k / best_c,
            "relative_quality": r.quality / best_q, "reached": r.quality >= frac * best_q - 1e-12,
            "tradeoff": sorted(set(np.round(picks[frac], 6).tolist())),
            "blends": [{"tradeoff": round(a, 6), "other": round(b, 6), "share": round(c, 4)} for a, b, c in sorted(blended[frac])],
            "margins": margins[frac],
            "rules": rules[frac],  # per fold: the trade-off blend, or the per-task mix training found cheaper (margins: its)
        }
    points = _curve_by_fold(p_all, prices_row, fids, ds)
    at_curve = {}
    for frac in operating.TARGETS:
        pt = operating.cheapest_reaching(points, frac * best_q)
        at_curve[f"{frac:.2f}"] = ({"quality": pt.quality, "cost_per_1k": pt.cost_per_1k, "saving_vs_best": 1 - pt.cost_per_1k / best_c,
                                    "tradeoff": pt.tradeoff} if pt else {"quality": None, "cost_per_1k": None, "saving_vs_best": None})
    if agree_at is not None:
        notes.append(AGREE_NOTE)
    rl = routellm_metrics(p_all, ds, best) if m == 2 else None
    notes.append(f"learned router checked against the vectorised rule on {checked} decisions")
    if topic_clusters:
        notes.append("learned router: topic clusters per fold (fitted on its training prompts): "
                     + ", ".join(map(str, topic_clusters)))
    if any(k for k, _ in task_groups):
        notes.append("learned router: tasks recognised per fold (a recogniser fitted on its training prompts' task labels; "
                     "its cross-fitted accuracy on them): " + ", ".join(f"{k} ({acc:.3f})" if k else "0" for k, acc in task_groups))
    return EvalReport(
        dataset=ds.describe(), split=split, rows=n,
        best_single={"model": ds.models[best], "quality": best_q, "cost_per_1k": best_c},
        oracle={"quality": oq, "cost_per_1k": oc, "model_share": _share(oracle_choice(ds), ds.models)},
        strategies=strategies, at_quality=at_quality, curve=points, pareto=operating.pareto(points),
        at_quality_curve=at_curve, routellm=rl, notes=notes, at_quality_agree=agree_at, at_quality_agree_bound=agree_bound,
        agree_policy=agree_policy, agree_policy_fit=agree_fit, at_quality_task_mix=task_mix_at,
    )


TASK_MIX_NOTE = (
    "learned_mix@x: the learned classifier's recognised task (its label) routed by quality_gate's `mix` param: per task, "
    "the share of its prompts each model gets, solved per fold on the training rows by their recognised task (a linear "
    "program over the tasks' mean quality and cost per model) for x of the best model's training quality plus a margin "
    "sized by inner cross-validation; each prompt drawn by a hash of it; decided by the real Router on held-out rows")


def check_mix(mix: dict[str, dict[str, float]], labels: list[str | None], prompts: list[str], models: tuple[str, ...],
              prices: np.ndarray, got: np.ndarray) -> int:
    """The Router's mix choices must be where each prompt's hash lands in its task's shares (cheapest first).

    Raises AssertionError on a row that differs (away from a share boundary); returns how many rows were checked.
    """
    from llm_router.learn import task_mix

    order = np.argsort(prices, kind="stable")  # quality_gate walks the candidates by price
    rows = [i for i, label in enumerate(labels) if label in mix]
    if not rows:
        return 0
    shares = np.array([[float(mix[labels[i]].get(models[j], 0.0)) for j in order] for i in rows])
    u = np.array([operating.blend_draw(prompts[i]) for i in rows])
    want = order[task_mix.draw(shares, u)]
    cum = np.cumsum(shares, 1) / shares.sum(1, keepdims=True)
    edge = (np.abs(cum - u[:, None]) < 1e-9).any(1)
    bad = (want != got[rows]) & ~edge
    if bad.any():
        raise AssertionError(f"learned_mix: the Router and the task shares disagree on {int(bad.sum())} rows")
    return len(rows)


def _operating_params(point: dict[str, Any], blend: bool) -> dict[str, Any]:
    """quality_gate params for a model file's operating point: its blend, or its single trade-off (older files have no blend)."""
    if blend and "params" in point:
        return dict(point["params"])
    return {"tradeoff": float(point["tradeoff"])}


def load_responses(ds: Dataset) -> list[list[str | None]] | None:
    """Per row, every model's recorded answer text (RouterBench `<model>|model_response`), or None."""
    if ds.format != "routerbench":
        return None
    found: dict[str, list[str | None]] = {}
    for src in ds.sources:
        path = Path(src)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [f"{m}|model_response" for m in ds.models]
            if not all(c in (reader.fieldnames or []) for c in cols):
                return None
            for n, rec in enumerate(reader, 1):
                key = rec.get("sample_id") or f"{path.stem}:{n}"
                found[key] = [_response_text(rec.get(c)) for c in cols]
    out = [found.get(i) for i in ds.ids]
    if any(r is None for r in out):
        return None
    return out  # type: ignore[return-value]


def _response_text(raw: str | None) -> str | None:
    """RouterBench keeps each answer as a Python list literal of strings."""
    if raw is None or not raw.strip():
        return None
    value = list_literal(raw)
    return "".join(str(x) for x in value) if value is not None else raw


def replay_cascade(name: str, chains: list[list[int]], responses: list[list[str | None]], requests: list[LLMRequest],
                   ds: Dataset, floor: float) -> StrategyResult:
    """The cascade on recorded answers: score each step's answer, escalate below the floor, pay every call."""
    from llm_router.orchestrate.scorers import AnswerText, verify

    n = len(ds)
    choice = np.zeros(n, int)
    cost = np.zeros(n)
    calls = np.zeros(n)
    for i in range(n):
        chain = chains[i]
        for step, j in enumerate(chain):
            cost[i] += ds.costs[i, j]
            calls[i] += 1
            score = verify(AnswerText(responses[i][j] or ""), requests[i].body, requests[i].prompt)
            if score.value >= floor or step == len(chain) - 1:
                choice[i] = j
                break
    quality = float(ds.scores[np.arange(n), choice].mean())
    escalated = float((calls > 1).mean())
    note = (f"{calls.mean():.3f} calls per request; {escalated:.1%} escalated; {float((calls >= 3).mean()):.1%} reached step 3; "
            f"first row's chain {' -> '.join(_short(ds.models[j]) for j in chains[0])}" if n else "no rows")
    return StrategyResult(name, quality, float(cost.mean() * 1000), _share(choice, ds.models), note)


AGREE_NOTE = (
    "agree@x: the agreement cascade (policy strategy cascade, scorer agree) replayed on the recorded answers: the first "
    "`quorum` models of its chain answer at once, an answer they all share (same option letter, or option text; same final "
    "number) is returned, else the next models answer one by one until `quorum` agree, and the last model's answer stands; "
    "quality = the returned answer's recorded score, cost = every call made (the quorum's calls all paid, in parallel). "
    "One configuration per answer kind read from the prompt (options count, number, code, text; code and text get single "
    "models: their answers rarely agree), chosen per fold on the training folds only (their prices, their best single "
    "model) as the cheapest combination reaching x (plus a margin sized by inner cross-validation on the training rows, "
    "`margins`) of that model's training quality; no held-out row is looked at. "
    "at_quality_agree_bound is the same search run on all scored rows: an upper bound, not a held-out result")


def agree_inputs(ds: Dataset, responses: list[list[str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per row and model the final-answer code, and per row the answer kind (read from the prompt)."""
    from llm_router.learn import agreement as ag

    return ag.answer_codes(responses, ds.prompts), np.array([ag.row_kind(p) for p in ds.prompts])


def replay_agreement(ds: Dataset, responses: list[list[str | None]], fids: np.ndarray, best_cost: float,
                     inner: np.ndarray | None = None, *, codes: np.ndarray | None = None,
                     kinds: np.ndarray | None = None) -> tuple[list[StrategyResult], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows agree@x (held out, configurations chosen on training folds) and the in-sample upper bound per target.

    `inner`: inner fold ids for sizing each target's margin on the training rows (None: no margin).
    """
    from llm_router.learn import agreement as ag

    if codes is None or kinds is None:
        codes, kinds = agree_inputs(ds, responses)
    n = len(ds)
    rows = np.arange(n)
    best_q = float(ds.scores.mean(0).max())
    results: list[StrategyResult] = []
    held: dict[str, dict[str, Any]] = {}
    bound: dict[str, dict[str, Any]] = {}

    def summary(r: "ag.Replay") -> dict[str, Any]:
        q, c = float(ds.scores[rows, r.choice].mean()), float(r.cost.mean() * 1000)
        return {"quality": q, "cost_per_1k": c, "saving_vs_best": 1 - c / best_cost, "relative_quality": q / best_q,
                "reached": None, "calls_per_request": float(r.calls.mean()), "escalated": float(r.escalated.mean())}

    cv = ag.cross_validate(codes, ds.scores, ds.costs, kinds, fids, operating.TARGETS, ds.models, inner)
    whole = ag.Part.of(codes, ds.scores, ds.costs, kinds)
    for frac in operating.TARGETS:
        key = f"{frac:.2f}"
        h = cv[frac]
        held[key] = {**summary(h.replay), "configurations": h.chosen, "margins": h.margins}
        held[key]["reached"] = held[key]["quality"] >= frac * best_q - 1e-12
        note = (f"{held[key]['calls_per_request']:.2f} calls per request; fold 1: "
                + "; ".join(f"{k}: {v}" for k, v in h.chosen[0].items()))
        results.append(StrategyResult(f"agree@{key}", held[key]["quality"], held[key]["cost_per_1k"],
                                      _share(h.replay.choice, ds.models), note))
        picked = whole.pick(frac)
        b = ag.apply(picked, codes, ds.costs, kinds, ag.AgreeConfig((whole.best,), 1))
        bound[key] = {**summary(b), "configurations": {k: v.describe(ds.models) for k, v in sorted(picked.items())},
                      "note": "chosen on the scored rows themselves: an upper bound for this family, not a held-out result"}
        bound[key]["reached"] = bound[key]["quality"] >= frac * best_q - 1e-12
    return results, held, bound


AGREE_POLICY_NOTE = (
    "agree_policy: the agreement cascade's cascade-policy params (strategy cascade, params.kinds: answer kind -> chain "
    "and quorum, 'default' for kinds the data set lacks), fit on ALL rows of this data set for deployment, by the same "
    "procedure as each held-out fold (margin sized by cross-validation over the folds); its own quality on these rows "
    "is in-sample. The held-out numbers to quote are at_quality_agree (rows agree@x). Model ids are the data set's "
    "model names, not the default catalog's ids: map them in the config's `models` section (or rename them) before use")


def deployable_agreement(ds: Dataset, codes: np.ndarray, kinds: np.ndarray, fids: np.ndarray,
                         best_cost: float) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per target, cascade policy params running the configurations chosen on all rows; and how they were fit."""
    from llm_router.learn import agreement as ag

    whole = ag.Part.of(codes, ds.scores, ds.costs, kinds)
    margins = (ag.margins_by_inner_cv(codes, ds.scores, ds.costs, kinds, fids, operating.TARGETS)
               if len(np.unique(fids)) > 1 else {f: 0.0 for f in operating.TARGETS})
    fallback = ag.AgreeConfig((whole.best,), 1)
    rows = np.arange(len(ds))
    best_q = float(ds.scores.mean(0).max())
    policies: dict[str, dict[str, Any]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    in_sample: dict[str, dict[str, Any]] = {}
    for frac in operating.TARGETS:
        key = f"{frac:.2f}"
        picked = whole.pick(frac + margins[frac])
        policies[key] = ag.policy_params(picked, ds.models, fallback)
        chosen[key] = {"kinds": picked, "fallback": fallback}
        r = ag.apply(picked, codes, ds.costs, kinds, fallback)
        q, c = float(ds.scores[rows, r.choice].mean()), float(r.cost.mean() * 1000)
        in_sample[key] = {"quality": q, "relative_quality": q / best_q, "cost_per_1k": c, "saving_vs_best": 1 - c / best_cost,
                          "configurations": {k: v.describe(ds.models) for k, v in sorted(picked.items())}}
    fit = {"fit_on": f"all {len(ds)} rows of the data set (for deployment; not a held-out result)",
           "quote": "at_quality_agree (held out)", "margins": {f"{f:.2f}": m for f, m in margins.items()},
           "in_sample": in_sample, "models": sorted({m for p in policies.values() for k in p["kinds"].values() for m in k["chain"]}),
           "note": AGREE_POLICY_NOTE, "chosen": chosen}
    return policies, fit


def check_agree_policy(ds: Dataset, requests: list[LLMRequest], policies: dict[str, dict[str, Any]],
                       chosen: dict[str, dict[str, Any]]) -> int:
    """Route every row through the real Router under each deployable policy; each must get its kind's chain and quorum.

    Raises AssertionError on the first row that differs; returns how many decisions were checked.
    """
    from llm_router.learn import agreement as ag

    prices, quality = ds.costs.mean(0), ds.scores.mean(0)
    extra = {f"agree@{key}": {"classifier": "rules", "strategy": "cascade", "params": params, "fallbacks": 0}
             for key, params in policies.items()}
    router = Router(eval_config(ds.models, prices, quality, extra=extra))
    checked = 0
    for key in policies:
        policy = router.policies[f"agree@{key}"]
        picked, fallback = chosen[key]["kinds"], chosen[key]["fallback"]
        for i, request in enumerate(requests):
            cfg = picked.get(ag.row_kind(ds.prompts[i]), fallback)
            want = [ds.models[j] for j in cfg.chain]
            d = router.decide(request, policy)
            if isinstance(d, RouteError):
                raise AssertionError(f"agree_policy {key}: the Router refused row {ds.ids[i]}: {d.message}")
            got = [m.id for m in d.chain] if cfg.quorum > 1 else [d.model.id]
            mode_ok = (d.mode == "cascade") == (cfg.quorum > 1)
            if got != want or not mode_ok:
                raise AssertionError(f"agree_policy {key}: row {ds.ids[i]} ({ag.row_kind(ds.prompts[i])}) was routed "
                                     f"{got} mode {d.mode}; the replay ran {want} quorum {cfg.quorum} ({d.selection})")
            checked += 1
    return checked


def policy_fragment(policies: dict[str, dict[str, Any]], target: str, *, dataset: str, models: list[str]) -> str:
    """A ready config fragment (YAML) with the deployable agreement policy for `target`, and what to map first."""
    import yaml

    body = yaml.safe_dump({"policies": {"agree": {"classifier": "rules", "strategy": "cascade", "params": policies[target]}}},
                          sort_keys=False, default_flow_style=None, width=120)
    head = [
        f"# Agreement cascade policy from `llm-router eval` on {dataset}",
        f"# target: {float(target):.0%} of the best single model's quality. Fit on ALL rows of that data set, for deployment;",
        "# the held-out numbers to quote are the eval's agree@x rows (at_quality_agree), not this policy's in-sample figures.",
        "# Model ids are the data set's model names, which are not ids of the default catalog: add each to the config's",
        "# `models:` section (provider, upstream model name, prices, tier) or replace the ids with your catalog's:",
        *(f"#   {m}" for m in models),
    ]
    return "\n".join(head) + "\n" + body


def _curve_by_fold(p: np.ndarray, prices_row: np.ndarray, fids: np.ndarray, ds: Dataset) -> list[operating.Point]:
    """One point per trade-off over all held-out rows (each fold with its own prices)."""
    n = len(ds)
    out = []
    for t in operating.TRADEOFFS:
        choice = np.zeros(n, int)
        for f in np.unique(fids):
            te = fids == f
            choice[te] = operating.choose(p[te], prices_row[te][0], t)
        out.append(operating.Point(t, *operating.measure(choice, ds.scores, ds.costs)))
    return out


def _held_out_for(model: QualityModel, ds: Dataset, notes: list[str]) -> tuple[Dataset, str]:
    """Rows of `ds` the model was not trained on; every model it routes to must be in `ds` (it may know fewer)."""
    unknown = [mm for mm in model.models if mm not in ds.models]
    if unknown:
        raise ValueError(f"the router model routes to {unknown}, which this data set does not have (it has {list(ds.models)})")
    missing = [mm for mm in ds.models if mm not in model.models]
    if missing:
        notes.append(f"the router model does not route to {missing} (too few of their answers in its training logs)")
    trained = set(model.trained_keys.tolist())
    keep = [i for i, k in enumerate(keys_of(ds).tolist()) if k not in trained]
    dropped = len(ds) - len(keep)
    if not keep:
        raise ValueError("every prompt of this data set was used to train the router model; give held-out data or omit --router")
    if dropped:
        notes.append(f"{dropped} prompts the router model was trained on were left out")
    return ds.subset(keep), f"held out: {len(keep)} prompts the --router model was not trained on"


# ---- output -----------------------------------------------------------------------------

def format_table(rep: EvalReport) -> str:
    """A readable report."""
    b = rep.best_single
    lines = [f"data: {rep.dataset}", f"split: {rep.split}", ""]
    lines.append(f"{'strategy':20s} {'quality':>8s} {'$/1K':>9s} {'saving':>7s}  traffic")
    rows = [("best single", b["quality"], b["cost_per_1k"], {b["model"]: 1.0}),
            ("oracle", rep.oracle["quality"], rep.oracle["cost_per_1k"], rep.oracle["model_share"])]
    rows += [(s.name, s.quality, s.cost_per_1k, s.model_share) for s in rep.strategies]
    notes = {s.name: s.note for s in rep.strategies if s.note}
    for name, q, c, share in rows:
        top = ", ".join(f"{_short(mm)} {v:.0%}" for mm, v in sorted(share.items(), key=lambda kv: -kv[1])[:4])
        extra = f"  ({notes[name]})" if name in notes else ""
        lines.append(f"{name:20s} {q:8.3f} {c:9.3f} {1 - c / b['cost_per_1k']:7.1%}  {top}{extra}")
    lines.append("")
    lines.append(f"learned router vs best single ({_short(b['model'])}: quality {b['quality']:.3f}, ${b['cost_per_1k']:.3f}/1K):")
    for frac, r in rep.at_quality.items():
        cur = rep.at_quality_curve[frac]
        curve_txt = (f"cheapest point on the held-out curve: ${cur['cost_per_1k']:.3f}/1K, saving {cur['saving_vs_best']:.1%}"
                     if cur["cost_per_1k"] is not None else "no point on the held-out curve reaches it")
        rule = (f"blends of two operating points, {len(r['blends'])} distinct over the folds" if r.get("blends")
                else "single operating points")
        lo, hi = min(r.get("margins") or [0.0]), max(r.get("margins") or [0.0])
        lines.append(f"  target {float(frac):.0%}: picked on training rows ({rule}, margin "
                     f"{f'{lo:g}' if lo == hi else f'{lo:g}-{hi:g}'}) -> quality {r['quality']:.3f} "
                     f"({r['relative_quality']:.1%} of best{'' if r['reached'] else ', BELOW target'}), "
                     f"${r['cost_per_1k']:.3f}/1K, saving {r['saving_vs_best']:.1%}; {curve_txt}")
    if rep.at_quality_agree:
        lines.append("agreement cascade vs best single (configurations chosen on training folds; every call paid):")
        for frac, r in rep.at_quality_agree.items():
            ub = (rep.at_quality_agree_bound or {}).get(frac)
            bound_txt = (f"; upper bound (chosen on the scored rows, not held out): saving {ub['saving_vs_best']:.1%} at "
                         f"{ub['relative_quality']:.1%}" if ub else "")
            lines.append(f"  target {float(frac):.0%}: quality {r['quality']:.3f} ({r['relative_quality']:.1%} of best"
                         f"{'' if r['reached'] else ', BELOW target'}), ${r['cost_per_1k']:.3f}/1K, saving {r['saving_vs_best']:.1%}, "
                         f"{r['calls_per_request']:.2f} calls per request, {r['escalated']:.0%} escalated{bound_txt}")
            for k, (kind, conf) in enumerate(sorted((r["configurations"][0] if r["configurations"] else {}).items())):
                lines.append(f"    {'fold 1' if k == 0 else '      '} {kind}: {conf}")
    if rep.at_quality_task_mix:
        lines.append("per-task mix vs best single (learned_mix@x: shares per recognised task solved on training folds):")
        for frac, r in rep.at_quality_task_mix.items():
            lines.append(f"  target {float(frac):.0%}: quality {r['quality']:.3f} ({r['relative_quality']:.1%} of best"
                         f"{'' if r['reached'] else ', BELOW target'}), ${r['cost_per_1k']:.3f}/1K, saving {r['saving_vs_best']:.1%}")
    if rep.agree_policy:
        lines += agree_policy_lines(rep)
    if rep.routellm:
        rl = rep.routellm
        cpt = lambda v: f"{v:.0%}" if v is not None else "n/a"  # noqa: E731
        lines.append(f"RouteLLM metrics ({_short(rl['strong'])} vs {_short(rl['weak'])}): APGR {rl['apgr']:.3f}, "
                     f"CPT(50%) {cpt(rl['cpt50'])}, CPT(80%) {cpt(rl['cpt80'])}")
    lines.append("pareto curve (cost $/1K -> quality): " + ", ".join(f"{p.cost_per_1k:.2f}->{p.quality:.3f}" for p in rep.pareto[:14]))
    lines += ["", *("note: " + n for n in rep.notes)]
    return "\n".join(lines)


def agree_policy_lines(rep: EvalReport) -> list[str]:
    """The deployable agreement policy per target as YAML, labelled as fit on all rows."""
    import yaml

    fit = rep.agree_policy_fit or {}
    out = ["deployable agreement policy (params of a `strategy: cascade` policy; fit on ALL rows for deployment, "
           "so its in-sample figures are not results: quote the held-out agree@x rows above; write it with --policy-out):"]
    for target, params in (rep.agree_policy or {}).items():
        ins = fit.get("in_sample", {}).get(target, {})
        out.append(f"  target {float(target):.0%} (margin {fit.get('margins', {}).get(target, 0):g}; in sample: "
                   f"saving {ins.get('saving_vs_best', 0):.1%} at {ins.get('relative_quality', 0):.1%}):")
        text = yaml.safe_dump({"params": params}, sort_keys=False, default_flow_style=None, width=120)
        out += ["    " + line for line in text.splitlines()]
    out.append("  model ids are the data set's names, not the default catalog's: map them in `models:` before deploying")
    return out


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def plot(rep: EvalReport, path: str) -> None:
    """Cost vs quality: the learned router's Pareto curve, each strategy, best single and oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    par = rep.pareto
    ax.plot([p.cost_per_1k for p in par], [p.quality for p in par], "-o", ms=3, label="learned router (held-out curve)")
    for s in rep.strategies:
        marker = "*" if s.name.startswith("learned") else "s"
        ax.scatter([s.cost_per_1k], [s.quality], marker=marker, s=80 if marker == "*" else 30, label=s.name)
    b = rep.best_single
    ax.scatter([b["cost_per_1k"]], [b["quality"]], marker="D", color="black", s=50, label=f"best single ({_short(b['model'])})")
    ax.scatter([rep.oracle["cost_per_1k"]], [rep.oracle["quality"]], marker="P", color="green", s=70, label="oracle")
    for frac in operating.TARGETS:
        ax.axhline(frac * b["quality"], color="grey", lw=0.7, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("cost per 1K queries (USD)")
    ax.set_ylabel("quality (mean score)")
    ax.set_title(rep.dataset[:90], fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
