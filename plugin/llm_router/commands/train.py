"""`llm-router train --data PATH... --out MODEL`: fit the learned router on labelled outcomes."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from llm_router.commands.common import add_cluster_args, cluster_args_problem
from llm_router.datasets import DatasetError, load
from llm_router.learn.clusters import describe
from llm_router.learn.features import EMBEDDERS, Featurizer, load_embedder
from llm_router.learn.fit import MIN_ROWS_PER_MODEL
from llm_router.learn.train import LOGGED_Z


def register(sub) -> None:
    p = sub.add_parser("train", help="train the learned router from labelled outcomes (RouterBench, RouteLLM, LLMRouter, or your decision log plus feedback)")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH", help="data files or folders; the format is detected")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--features", choices=EMBEDDERS, default="static",
                   help="prompt embedding: the shipped static MiniLM embeddings (default) or word hashing")
    p.add_argument("--embeddings", metavar="DIR", help="static embeddings folder (default: the built-in one)")
    add_cluster_args(p)
    p.add_argument("--l2", type=float, default=None, help="ridge strength (default: chosen by 5-fold CV)")
    p.add_argument("--caution", type=float, default=LOGGED_Z, metavar="Z",
                   help=f"own traffic: an operating point must reach its target Z standard errors below its estimate "
                        f"(default {LOGGED_Z}; 0 trusts the estimate itself)")
    p.add_argument("--min-answers", type=int, default=MIN_ROWS_PER_MODEL, metavar="N",
                   help=f"own traffic: route only to models with at least N rated answers (default {MIN_ROWS_PER_MODEL})")
    p.set_defaults(func=run)


def run(args) -> int:
    problem = cluster_args_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.min_answers < 1:
        print("error: --min-answers must be at least 1", file=sys.stderr)
        return 2
    if not 0.0 <= args.caution <= 10.0:
        print("error: --caution must be from 0 to 10 standard errors", file=sys.stderr)
        return 2
    folder = Path(args.out).absolute().parent
    if not folder.is_dir():  # found before training, not after it
        print(f"error: --out {args.out}: folder {folder} does not exist", file=sys.stderr)
        return 2
    try:
        ds = load(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        featurizer = Featurizer(args.features, load_embedder(args.features, args.embeddings))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ds.describe())
    t0 = time.perf_counter()
    from llm_router.learn.train import train_model

    try:
        model, _ = train_model(ds, featurizer, l2=args.l2, min_answers=args.min_answers, caution=args.caution,
                               clusters=args.clusters, cluster_seed=args.cluster_seed, groups=args.groups)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        path = model.save(args.out)
    except OSError as exc:
        print(f"error: cannot write --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    meta = model.meta
    cv = f"CV log-loss {min(meta['cv_logloss'].values()):.4f}" if meta["cv_logloss"] else "mean rates only"
    print(f"trained on {meta['rows']} prompts in {time.perf_counter() - t0:.1f} s; ridge l2={meta['l2']:g} "
          f"({cv}); features {model.features}; topic clusters: {describe(model.clusters)}"
          + (f" (the last {len(meta['groups'])}: a recogniser of the data's tasks, cross-fitted accuracy "
             f"{meta['group_accuracy']:.3f})" if meta.get("groups") else ""))
    ops = "; ".join(f"{float(k):.0%} of best -> params {_params_text(v['params'])} (margin {v['margin']:g}; "
                    f"cheapest single point: tradeoff {v['tradeoff']:.4g})" for k, v in meta["operating_points"].items())
    print(f"operating points (picked on out-of-fold predictions of the training rows): {ops}")
    if any(isinstance(v, dict) and "mix" in v for v in (meta.get("task_mix") or {}).values()):
        print("rule per target, by cost on inner held-out rows (trade-off blend vs per-task mix of the recognised tasks): "
              + "; ".join(_rule_text(k, op, meta["task_mix"].get(k)) for k, op in meta["operating_points"].items()))
    if "rows_per_model" in meta:
        rows = ", ".join(f"{m} {n}" for m, n in meta["rows_per_model"].items())
        print(f"own traffic: each model fitted on the requests it answered ({rows}); qualities and operating points "
              f"are doubly robust estimates weighted by the logged propensity ({meta['propensity_logged']} of "
              f"{meta['rows']} lines carry one: policy `explore`)")
        if meta["not_routed"]:
            print(f"not routed to (fewer than {meta['min_answers']} answered requests with feedback; keep exploring): "
                  + ", ".join(meta["not_routed"]))
    print(f"wrote {path}")
    print("use it: classifiers: {learned: {model: %s}}; a policy with classifier: learned, strategy: quality_gate, "
          "params: %s (or min_quality / relative)" % (path, _params_text(meta["operating_points"]["0.95"]["params"])))
    return 0


def _rule_text(frac: str, op: dict, mix: dict | None) -> str:
    """'95%: mix ($1.35/1K, reached; trade-off $1.42/1K, reached)' for one operating point."""
    def held(h: dict | None) -> str:
        return "n/a" if not h else f"${h['cost_per_1k']:.3f}/1K, {'reached' if h['reached'] else 'short'}"
    return (f"{float(frac):.0%}: {op.get('rule', 'tradeoff')} (mix {held((mix or {}).get('inner_held_out'))}; "
            f"trade-off {held(op.get('inner_held_out'))})")


def _params_text(params: dict) -> str:
    """quality_gate params as a YAML flow mapping, numbers to 4 significant digits."""
    def fmt(v) -> str:
        return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}" if isinstance(v, dict) else f"{v:.4g}"
    return fmt(params)
