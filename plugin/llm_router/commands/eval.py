"""`llm-router eval --data PATH...`: replay a data set through every strategy and the learned router (held-out rows)."""
from __future__ import annotations

import os
import sys

import orjson

from llm_router.commands.common import add_cluster_args, cluster_args_problem
from llm_router.datasets import DatasetError, load
from llm_router.learn.features import EMBEDDERS, Featurizer, load_embedder
from llm_router.learn.model import ModelFileError, QualityModel


def register(sub) -> None:
    p = sub.add_parser("eval", help="replay a data set through every strategy: cost per 1K queries, quality, savings")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH", help="data files or folders; the format is detected")
    p.add_argument("--router", metavar="MODEL", help="a model from `llm-router train` (default: train per fold)")
    p.add_argument("--config", "-c", metavar="FILE", help="take the classifier settings (rules, semantic) from this config; the catalog comes from the data set")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds when --router is not given (default 5)")
    p.add_argument("--features", choices=EMBEDDERS, default="static", help="prompt embedding when training per fold")
    p.add_argument("--embeddings", metavar="DIR", help="static embeddings folder (default: the built-in one)")
    add_cluster_args(p)
    p.add_argument("--no-blend", action="store_true",
                   help="run each target's cheapest single operating point instead of its blend of two")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw cost vs quality (needs matplotlib: pip install 'llm-router[plot]')")
    p.add_argument("--policy-out", metavar="FILE.yaml",
                   help="write the deployable agreement-cascade policy (fit on all rows) as a config fragment")
    p.add_argument("--policy-target", choices=("0.95", "1.00"), default="0.95",
                   help="quality target of the policy --policy-out writes (default 0.95)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    problem = cluster_args_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib, which is not installed: pip install 'llm-router[plot]'", file=sys.stderr)
            return 2
    if args.policy_out and not os.path.isdir(os.path.dirname(os.path.abspath(args.policy_out))):
        print(f"error: --policy-out: the folder of {args.policy_out} does not exist", file=sys.stderr)
        return 2
    if args.folds < 2:
        print("error: --folds must be at least 2", file=sys.stderr)
        return 2
    try:
        ds = load(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from llm_router.learn.traffic import partial

    if partial(ds):
        print("error: this data (a decision log with feedback) holds only the answering model's outcome per prompt; "
              "eval compares every model on every prompt, so it needs a data set with all models' outcomes "
              "(train on the log with `llm-router train`, then `llm-router eval --data FULL --router MODEL`)", file=sys.stderr)
        return 2
    model = None
    kind = args.features
    if args.router:
        try:
            model = QualityModel.load(args.router)
        except ModelFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        kind = str(model.meta.get("embedder", "static"))
    try:
        featurizer = Featurizer(kind, load_embedder(kind, args.embeddings))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model is not None and featurizer.fingerprint() != model.features:
        print(f"error: {args.router} was trained with features {model.features!r}, these embeddings give "
              f"{featurizer.fingerprint()!r}", file=sys.stderr)
        return 2
    from llm_router.evaluate import evaluate, format_table, plot

    classifiers = None
    if args.config:
        from llm_router.commands.common import load_or_exit

        classifiers = load_or_exit(args.config).classifiers.model_dump()
        classifiers.pop("learned", None)

    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        report = evaluate(ds, featurizer, folds=args.folds, model=model, classifiers=classifiers, progress=say,
                          clusters=args.clusters, cluster_seed=args.cluster_seed, groups=args.groups,
                          blend=not args.no_blend)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    else:
        print(format_table(report))
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.policy_out:
        return write_policy(report, args.policy_out, args.policy_target)
    return 0


def write_policy(report, path: str, target: str) -> int:
    """Write the deployable agreement policy as a config fragment; 2 when the eval could not fit one."""
    from llm_router.evaluate import policy_fragment

    if not report.agree_policy:
        print("error: --policy-out: no agreement policy was fit (it needs recorded answer texts, as RouterBench has, "
              "and k-fold evaluation without --router)", file=sys.stderr)
        return 2
    models = (report.agree_policy_fit or {}).get("models", [])
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(policy_fragment(report.agree_policy, target, dataset=report.dataset, models=models))
    except OSError as exc:
        print(f"error: --policy-out: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {path}: policy 'agree' (target {float(target):.0%}); its model ids are the data set's names "
          f"({', '.join(models)}): map them in the config's models section", file=sys.stderr)
    return 0
