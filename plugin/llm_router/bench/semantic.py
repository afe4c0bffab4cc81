"""Semantic classifier benchmarks: speed and memory, embedding proxy, quality by cross-validation.

    python -m llm_router.bench.semantic                 # speed: embed and whole decision, p50/p99, RSS
    python -m llm_router.bench.semantic quality         # 5-fold CV on the examples + category agreement on real data
    python -m llm_router.bench.semantic tune            # pick k / temperature / length weight / cuts by CV
    python -m llm_router.bench.semantic proxy           # MMLU 57-subject accuracy of the embeddings (needs scikit-learn)

Real data is read from --data (default: ../shared/data next to the project, or $LLM_ROUTER_DATA).
"""
from __future__ import annotations

import argparse
import ast
import csv
import gc
import itertools
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import orjson

from llm_router.classify.base import Classification
from llm_router.classify.embeddings import StaticEmbedder, load_default
from llm_router.classify.semantic import TIERS, Example, SemanticClassifier, load_examples
from llm_router.request import estimate_tokens, parse_request

csv.field_size_limit(1 << 30)
PROJECT = Path(__file__).resolve().parents[3]


def rss_mb() -> float:
    """Current resident set size in MB (from /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(times_ns: list[int]) -> dict:
    """p50 / p99 / mean in microseconds."""
    t = sorted(times_ns)
    return {"p50_us": round(t[len(t) // 2] / 1000, 1), "p99_us": round(t[min(len(t) - 1, int(len(t) * 0.99))] / 1000, 1),
            "mean_us": round(sum(t) / len(t) / 1000, 1), "n": len(t)}


def timed(fn: Callable[[object], object], items: list, n: int, warm: int = 200) -> dict:
    """Time fn over n calls cycling items, after `warm` warm-up calls."""
    for i in range(warm):
        fn(items[i % len(items)])
    clock = time.perf_counter_ns
    times = []
    for i in range(n):
        x = items[i % len(items)]
        t0 = clock()
        fn(x)
        times.append(clock() - t0)
    return percentiles(times)


def chat_body(prompt: str, system: str | None = None) -> bytes:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return orjson.dumps({"model": "auto", "messages": msgs})


# ---- real data ------------------------------------------------------------------------------

def data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("LLM_ROUTER_DATA") or PROJECT.parent / "shared" / "data")


MATH_SUBJECTS = {"abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
                 "high_school_statistics", "econometrics"}
REASONING_SUBJECTS = {"formal_logic", "logical_fallacies"}
MT_BENCH = {"writing": "creative", "roleplay": "creative", "reasoning": "reasoning", "math": "math", "coding": "code",
            "extraction": "extraction", "stem": "knowledge", "humanities": "knowledge"}
LLMROUTER = {"math": "math", "gsm8k": "math", "agentverse-mgsm": "math", "mbpp": "code", "human_eval": "code",
             "natural_qa": "knowledge", "trivia_qa": "knowledge", "mmlu": "knowledge", "openbook_qa": "knowledge",
             "arc_challenge": "knowledge", "gpqa": "knowledge", "commonsense_qa": "reasoning",
             "agentverse-logicgrid": "reasoning", "commongen": "creative"}
ROUTERBENCH = {"arc_challenge_train.csv": "knowledge", "mbpp_train.csv": "code", "winograde_train.csv": "reasoning"}


@dataclass(frozen=True, slots=True)
class Sample:
    """A real prompt, where it came from, and the category it maps to."""

    prompt: str
    source: str
    category: str
    weak_wrong: bool | None = None  # RouteLLM: the weak model (Mixtral) answered wrongly


def _contaminated(folder: Path) -> set[str]:
    out = set()
    path = folder / "contaminated_prompts.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.update(str(v) for v in row.values())
    return out


def mmlu_rows(root: Path) -> list[tuple[str, str, bool | None]]:
    """(prompt, subject, mixtral wrong) from RouteLLM's MMLU files, contaminated prompts excluded."""
    folder = root / "routellm" / "mmlu"
    bad = _contaminated(folder)
    out = []
    for f in sorted(folder.glob("mmlu_*.csv")):
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if row["prompt"] not in bad:
                    weak = row.get("mistralai/Mixtral-8x7B-Instruct-v0.1")
                    out.append((row["prompt"], f.stem[5:], None if weak is None else weak != "True"))
    return out


def real_samples(root: Path, per_source: int = 300, seed: int = 0) -> list[Sample]:
    """A fixed random sample of real prompts per source, each mapped to one of our categories."""
    rng = random.Random(seed)
    groups: dict[str, list[Sample]] = {}
    if (root / "routellm" / "mmlu").is_dir():
        groups["mmlu"] = [Sample(p, f"mmlu/{s}", "math" if s in MATH_SUBJECTS else "reasoning" if s in REASONING_SUBJECTS else "knowledge", w)
                          for p, s, w in mmlu_rows(root)]
    gsm = root / "routellm" / "gsm8k" / "gsm8k_responses.csv"
    if gsm.exists():
        bad = _contaminated(gsm.parent)
        with gsm.open(newline="") as fh:
            groups["gsm8k"] = [Sample(r["prompt"], "gsm8k", "math", r.get("mistralai/Mixtral-8x7B-Instruct-v0.1") != "True")
                               for r in csv.DictReader(fh) if r["prompt"] not in bad]
    mt = root / "routellm" / "mt_bench" / "question.jsonl"
    if mt.exists():
        rows = [json.loads(x) for x in mt.read_text().splitlines() if x.strip()]
        groups["mt_bench"] = [Sample(r["turns"][0], f"mt_bench/{r['category']}", MT_BENCH[r["category"]]) for r in rows
                              if r["category"] in MT_BENCH]
    for name, cat in ROUTERBENCH.items():
        path = root / "routerbench" / name
        if path.exists():
            with path.open(newline="") as fh:
                groups[f"routerbench/{name[:-10]}"] = [Sample(_rb_prompt(r["prompt"]), f"routerbench/{r['eval_name']}", cat)
                                                      for r in csv.DictReader(fh) if r.get("prompt")]
    lr = root / "llmrouter" / "query_data__default_query_test.jsonl"
    if lr.exists():
        rows = [json.loads(x) for x in lr.read_text().splitlines() if x.strip()]
        groups["llmrouter"] = [Sample(r["query"], f"llmrouter/{r['task_name']}", LLMROUTER[r["task_name"]]) for r in rows
                               if r["task_name"] in LLMROUTER]
    out = []
    for name in sorted(groups):
        rows = groups[name]
        out += rng.sample(rows, min(per_source, len(rows))) if name != "mt_bench" else rows
    return out


def _rb_prompt(raw: str) -> str:
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return str(value[0]) if isinstance(value, list) and value else str(value)


# ---- speed ----------------------------------------------------------------------------------

def run_speed(args) -> int:
    from llm_router.bench.decision import PROMPTS, bodies, measure
    from llm_router.config import load_config, parse_config
    from llm_router.router import Router

    out: dict = {"rss_start_mb": round(rss_mb(), 1)}
    t0 = time.perf_counter()
    emb = load_default()
    out["embedder_load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["rss_after_embedder_mb"] = round(rss_mb(), 1)
    one_kb = [p[:1024] for p in PROMPTS]
    out["embed_1kb_prompt"] = timed(emb.embed, one_kb, args.requests)
    root = data_dir(args.data)
    real = [s.prompt for s in real_samples(root, per_source=200)] if root.is_dir() else []
    if real:
        fresh = StaticEmbedder.load()  # empty chunk cache: first sight of every word
        clock = time.perf_counter_ns
        cold = []
        for text in real:
            t = clock()
            fresh.embed(text)
            cold.append(clock() - t)
        out["embed_real_prompts_cold_cache"] = percentiles(cold)
        out["embed_real_prompts_warm_cache"] = timed(fresh.embed, real, args.requests)
        out["real_prompt_chars_median"] = sorted(len(t) for t in real)[len(real) // 2]
    payloads = bodies()
    out["body_bytes"] = sorted(len(b) for b in payloads)
    ladder = dict(load_config().policies["default"].ladder)
    results = {}
    for name in ("rules", "semantic", "hybrid"):
        router = Router(parse_config({"seed": 1, "policies": {"default": {"classifier": name, "strategy": "ladder", "ladder": ladder}}}))
        gc.collect()
        results[name] = measure(router, payloads, args.requests)
        out[f"rss_after_{name}_router_mb"] = round(rss_mb(), 1)
    out["decision"] = results
    semantic = Router(parse_config({"policies": {"default": {"classifier": "semantic", "strategy": "ladder", "ladder": ladder}}})).default.classifier
    out["examples"] = len(semantic.examples)
    requests = [parse_request(b) for b in payloads]
    out["classify_only_semantic"] = timed(semantic.classify, requests, args.requests)
    if args.onnx:
        try:
            from llm_router.classify.onnx_backend import load_onnx

            onnx = load_onnx()
            out["onnx_embed_1kb_prompt"] = timed(onnx.embed, one_kb, max(200, args.requests // 20), warm=20)
            if real:
                out["onnx_embed_real_prompts"] = timed(onnx.embed, real, min(len(real), 1000), warm=20)
            out["rss_after_onnx_mb"] = round(rss_mb(), 1)
        except Exception as exc:  # onnxruntime not installed: say so, measure the rest
            out["onnx"] = f"unavailable: {type(exc).__name__}: {exc}"
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


# ---- quality --------------------------------------------------------------------------------

class CachedEmbedder:
    """Wraps an embedder with a text -> vector cache, so CV folds do not re-embed."""

    def __init__(self, inner):
        self.inner = inner
        self.dim = inner.dim
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, text: str) -> np.ndarray:
        v = self._cache.get(text)
        if v is None:
            v = self._cache[text] = self.inner.embed(text)
        return v

    def embed_many(self, texts: Iterable[str]) -> np.ndarray:
        return np.array([self.embed(t) for t in texts], np.float32).reshape(-1, self.dim)


@dataclass(frozen=True, slots=True)
class Params:
    """Semantic classifier settings under evaluation."""

    k: int = 7
    temperature: float = 0.05
    length_weight: float = 0.1
    mode: str = "knn"
    cuts: tuple[float, float, float] = (0.3, 0.55, 0.8)

    def build(self, examples: list[Example], emb) -> SemanticClassifier:
        return SemanticClassifier(examples, emb, k=self.k, temperature=self.temperature, length_weight=self.length_weight,
                                  mode=self.mode, cuts=self.cuts)


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint index sets covering range(n), stratification-free but shuffled with a fixed seed."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def request_for(text: str):
    return parse_request(chat_body(text))


def scores_for(params: Params, train: list[Example], test: list[Example], emb) -> tuple[np.ndarray, list[str]]:
    """Semantic scores and categories of test examples with a classifier built on train."""
    clf = params.build(train, emb)
    out_s, out_c = [], []
    for e in test:
        c = clf.classify_vector(emb.embed(e.text), max(1, estimate_tokens(e.text)))
        out_s.append(c.score)
        out_c.append(c.category)
    return np.array(out_s), out_c


CUT_GRID = np.round(np.arange(0.05, 0.96, 0.025), 3)


def best_cuts(scores: np.ndarray, tiers: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """Cuts maximising tier accuracy (ties: smaller mean absolute tier error, then the middle of the plateau)."""
    best, best_key = (0.3, 0.55, 0.8), (-1.0, 0.0)
    for c1, c2, c3 in itertools.combinations(CUT_GRID, 3):
        pred = (scores >= c1).astype(int) + (scores >= c2) + (scores >= c3)
        key = (float((pred == tiers).mean()), -float(np.abs(pred - tiers).mean()))
        if key > best_key:
            best, best_key = (float(c1), float(c2), float(c3)), key
    return best, best_key[0]


GRID = dict(k=(3, 5, 7, 10, 15), temperature=(0.02, 0.05, 0.1, 1.0), length_weight=(0.0, 0.1, 0.2), mode=("knn", "centroid"))


def tune(examples: list[Example], emb, inner_folds: int = 5, grid: dict = GRID, log=None) -> tuple[Params, float]:
    """Best Params (with cuts) by inner cross-validation on `examples` only."""
    tiers = np.array([TIERS.index(e.tier) for e in examples])
    parts = folds(len(examples), inner_folds, seed=1)
    best, best_acc = Params(), -1.0
    for k, temp, lw, mode in itertools.product(grid["k"], grid["temperature"], grid["length_weight"], grid["mode"]):
        if mode == "centroid" and k > 7:
            continue
        p = Params(k=k, temperature=temp, length_weight=lw, mode=mode)
        scores = np.zeros(len(examples))
        for idx in parts:
            held = set(idx.tolist())
            train = [e for i, e in enumerate(examples) if i not in held]
            s, _ = scores_for(p, train, [examples[i] for i in idx], emb)
            scores[idx] = s
        cuts, acc = best_cuts(scores, tiers)
        if log:
            log(f"  {mode:8s} k={k:2d} T={temp:<5} lw={lw:<4} cuts={cuts} acc={acc:.3f}")
        if acc > best_acc + 1e-9:
            best, best_acc = replace(p, cuts=cuts), acc
    return best, best_acc


def evaluate_fold(params: Params, train: list[Example], test: list[Example], emb, rules, hybrid_share: float,
                  with_rules: bool) -> dict[str, list[tuple[int, int, bool]]]:
    """(predicted tier, gold tier, category right) per test example, for semantic, hybrid and optionally rules."""
    from llm_router.classify.hybrid import HybridClassifier

    sem = params.build(train, emb)
    classifiers = {"semantic": sem, "hybrid": HybridClassifier(rules, sem, rules_share=hybrid_share)}
    if with_rules:
        classifiers["rules"] = rules
    rows: dict[str, list[tuple[int, int, bool]]] = {name: [] for name in classifiers}
    for e in test:
        req = request_for(e.text)
        for name, clf in classifiers.items():
            c = clf.classify(req)
            rows[name].append((TIERS.index(c.tier), TIERS.index(e.tier), c.category == e.category))
    return rows


def summarise(rows: list[tuple[int, int, bool]]) -> dict:
    pred = np.array([r[0] for r in rows])
    gold = np.array([r[1] for r in rows])
    return {"tier_acc": round(float((pred == gold).mean()), 3), "tier_within_1": round(float((np.abs(pred - gold) <= 1).mean()), 3),
            "under_tier": round(float((pred < gold).mean()), 3), "category_acc": round(float(np.mean([r[2] for r in rows])), 3)}


def run_quality(args) -> int:
    from llm_router.classify.factory import rules_classifier
    from llm_router.config import load_config

    cfg = load_config()
    examples = load_examples(args.examples)
    emb = CachedEmbedder(load_default())
    rules = rules_classifier(cfg)
    conf = cfg.classifiers.semantic
    defaults = Params(k=conf.k, temperature=conf.temperature, length_weight=conf.length_weight, mode=conf.mode, cuts=tuple(conf.cuts))
    out: dict = {"examples": len(examples), "folds": args.folds}
    variants = {"defaults": defaults, "centroid": replace(defaults, mode="centroid", k=min(defaults.k, 3))}
    all_rows: dict[str, list] = {}
    tuned_per_fold = []
    for fi, idx in enumerate(folds(len(examples), args.folds)):
        held = set(idx.tolist())
        train = [e for i, e in enumerate(examples) if i not in held]
        test = [examples[i] for i in idx]
        fold_variants = dict(variants)
        if args.tune:
            p, acc = tune(train, emb, grid=_small_grid() if args.quick else GRID)
            tuned_per_fold.append({"fold": fi, "params": _params_dict(p), "inner_acc": round(acc, 3)})
            fold_variants["tuned in fold"] = p
        for vi, (vname, p) in enumerate(fold_variants.items()):
            rows = evaluate_fold(p, train, test, emb, rules, args.hybrid_share, with_rules=vi == 0)
            for cname, r in rows.items():
                all_rows.setdefault(cname if cname == "rules" else f"{cname} ({vname})", []).extend(r)
    out["cross_validation"] = {name: summarise(rows) for name, rows in all_rows.items()}
    if tuned_per_fold:
        out["tuned_per_fold"] = tuned_per_fold
    root = data_dir(args.data)
    if root.is_dir():
        out["real_data"] = real_data_report(root, examples, cfg, rules, args)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def _params_dict(p: Params) -> dict:
    return {"k": p.k, "temperature": p.temperature, "length_weight": p.length_weight, "mode": p.mode, "cuts": list(p.cuts)}


def _small_grid() -> dict:
    return dict(k=(5, 7, 10), temperature=(0.05, 0.1), length_weight=(0.0, 0.1), mode=("knn",))


def real_data_report(root: Path, examples: list[Example], cfg, rules, args) -> dict:
    """Category agreement per source, and how well the score ranks the weak model's failures."""
    from llm_router.classify.hybrid import HybridClassifier

    samples = real_samples(root, per_source=args.per_source)
    sem = SemanticClassifier.from_config(cfg.classifiers.semantic)
    if args.examples:
        sem = Params(k=sem.k, temperature=sem.temperature, length_weight=sem.length_weight, mode=sem.mode, cuts=sem.cuts).build(
            examples, load_default())
    hyb = HybridClassifier(rules, sem, rules_share=args.hybrid_share)
    per: dict[str, dict[str, list]] = {}
    scores: dict[str, list[tuple[float, bool]]] = {"semantic": [], "rules": [], "hybrid": []}
    tiers_by_source: dict[str, dict[str, list[int]]] = {}
    for s in samples:
        req = parse_request(chat_body(s.prompt))
        src = s.source.split("/")[0] if s.source.startswith(("mmlu", "llmrouter", "mt_bench")) else s.source
        for name, clf in (("semantic", sem), ("rules", rules), ("hybrid", hyb)):
            c: Classification = clf.classify(req)
            per.setdefault(src, {}).setdefault(name, []).append(c.category == s.category)
            tiers_by_source.setdefault(src, {}).setdefault(name, []).append(TIERS.index(c.tier))
            if s.weak_wrong is not None:
                scores[name].append((c.score, s.weak_wrong))
    agreement = {src: {name: round(float(np.mean(v)), 3) for name, v in d.items()} | {"n": len(d["semantic"])} for src, d in sorted(per.items())}
    total = {name: round(float(np.mean([x for d in per.values() for x in d[name]])), 3) for name in ("semantic", "rules", "hybrid")}
    mean_tier = {src: {name: round(float(np.mean(v)), 2) for name, v in d.items()} for src, d in sorted(tiers_by_source.items())}
    auc = {name: round(_auc(v), 3) for name, v in scores.items() if v}
    return {"samples": len(samples), "category_agreement_all": total, "category_agreement": agreement,
            "mean_tier_index (LOW=0..CRITICAL=3)": mean_tier,
            "auc_score_vs_weak_model_wrong (RouteLLM mmlu+gsm8k)": auc}


def _auc(pairs: list[tuple[float, bool]]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    s = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs], bool)
    if y.all() or not y.any():
        return float("nan")
    order = s.argsort(kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def run_tune(args) -> int:
    examples = load_examples(args.examples)
    emb = CachedEmbedder(load_default())
    t0 = time.perf_counter()
    best, acc = tune(examples, emb, grid=_small_grid() if args.quick else GRID, log=print if args.verbose else None)
    print(orjson.dumps({"examples": len(examples), "best": _params_dict(best), "inner_cv_tier_acc": round(acc, 3),
                        "seconds": round(time.perf_counter() - t0, 1)}, option=orjson.OPT_INDENT_2).decode())
    return 0


# ---- embedding proxy ------------------------------------------------------------------------

def run_proxy(args) -> int:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("proxy needs scikit-learn (pip install scikit-learn)", file=sys.stderr)
        return 2
    rows = mmlu_rows(data_dir(args.data))
    if not rows:
        print(f"no MMLU files under {data_dir(args.data)}", file=sys.stderr)
        return 2
    random.Random(0).shuffle(rows)
    train, test = rows[:3000], rows[3000:4000]
    out = {"subjects": len({s for _, s, _ in rows}), "train": len(train), "test": len(test)}
    backends = {"static": load_default}
    if args.onnx:
        from llm_router.classify.onnx_backend import load_onnx

        backends["onnx"] = load_onnx
    for name, loader in backends.items():
        emb = loader()
        xtr = emb.embed_many(p for p, _, _ in train)
        xte = emb.embed_many(p for p, _, _ in test)
        clf = LogisticRegression(max_iter=3000, C=10).fit(xtr, [s for _, s, _ in train])
        out[f"{name}_subject_acc"] = round(float(clf.score(xte, [s for _, s, _ in test])), 3)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def _add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("mode", nargs="?", default="speed", choices=("speed", "quality", "tune", "proxy"))
    ap.add_argument("--data", help="folder of the shared evaluation data (routellm/, routerbench/, llmrouter/)")
    ap.add_argument("--examples", help="examples JSONL (default: the built-in set)")
    ap.add_argument("--requests", "-n", type=int, default=20000, help="speed: timed calls per measurement")
    ap.add_argument("--onnx", action="store_true", help="also measure the onnx backend (needs onnxruntime)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--tune", action="store_true", help="quality: also tune inside each fold (nested CV)")
    ap.add_argument("--quick", action="store_true", help="tune: a small grid")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--per-source", type=int, default=300, help="quality: real prompts sampled per source")
    ap.add_argument("--hybrid-share", type=float, default=0.1, help="quality: rules share of the hybrid score")


def run(args) -> int:
    return {"speed": run_speed, "quality": run_quality, "tune": run_tune, "proxy": run_proxy}[args.mode](args)


def register(sub) -> None:
    """`llm-router bench semantic [speed|quality|tune|proxy]`."""
    p = sub.add_parser("semantic", help="semantic classifier: speed, CV quality, tuning, embedding proxy")
    _add_args(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llm_router.bench.semantic", description=__doc__.split("\n")[0])
    _add_args(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
