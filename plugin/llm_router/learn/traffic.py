"""Your own traffic as training data: the decision log (with prompts) joined with feedback by request id.

A logged request reveals one outcome: the score of the model that answered it. The loaded
`Dataset` therefore holds NaN for every other model's score and cost, and per row the logged
propensity (policy `explore`). Training fits each model on the requests it answered
(`learn.fit.fit_partial`) and estimates qualities doubly robustly with those propensities
(`learn.operating.logged_quality`).

`python -m llm_router.learn.traffic simulate --data PATH --out DIR [--explore E]` writes such a
log and its feedback from a data set with every model's outcome, for the prompts outside one
held-out fold, so `llm-router eval --data PATH --router MODEL` can score the result on prompts
the logs never held.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from llm_router.datasets import Dataset, DatasetError, json_lines, load, prompt_key

FORMAT = "traffic"
COST_NOTE = ("measured per request (decision log cost_usd); only the answering model's score and cost are known "
             "for each prompt, the others are missing")


def is_decision(rec: dict) -> bool:
    """A decision log line (`metrics.decision_log`): a routed request (with `decided_model`), or one without
    a routing decision (a refusal, a forwarded call), which every line carries ts, route and status for."""
    return "request_id" in rec and ("decided_model" in rec or {"ts", "route", "status"} <= rec.keys())


def is_feedback(rec: dict) -> bool:
    """A feedback line: {"request_id": ..., "score": 0..1} or {"request_id": ..., "good": true|false}."""
    return "request_id" in rec and ("score" in rec or "good" in rec) and "decided_model" not in rec


def feedback_value(rec: dict, where: str) -> float:
    """The 0..1 outcome of a feedback line; raises DatasetError naming the field."""
    if "score" in rec:
        v = rec["score"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise DatasetError(f"{where}: 'score' must be a number from 0 to 1, got {v!r}")
        return float(v)
    v = rec["good"]
    if not isinstance(v, bool):
        raise DatasetError(f"{where}: 'good' must be true or false, got {v!r}")
    return 1.0 if v else 0.0


def _text(rec: dict, key: str, where: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v:
        raise DatasetError(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    return v


def load_traffic(decision_files: list[Path], feedback_files: list[Path]) -> Dataset:
    """Answered requests that have a logged prompt and feedback, one row each (scores NaN but the answering model's)."""
    skipped = {"log lines without a routing decision (refusals, forwarded calls)": 0,
               "log lines without a prompt (log_prompts off)": 0, "log lines without a 2xx answer": 0,
               "answered by a fallback model": 0, "answered by several models (cascade, hedge)": 0,
               "answered requests without feedback": 0,
               "feedback without an answered request": 0}
    answered: dict[str, tuple[str, str, float, str, float]] = {}  # request id -> prompt, model, cost, route, propensity
    several: set[str] = set()  # requests with more than one answer: feedback rates the one returned, unknown here
    for path in decision_files:
        for n, rec in json_lines(path):
            where = f"{path}:{n}"
            if not is_decision(rec):
                raise DatasetError(f"{where}: not a decision log line (needs 'request_id' and 'decided_model')")
            if "decided_model" not in rec:
                skipped["log lines without a routing decision (refusals, forwarded calls)"] += 1
                continue
            status = rec.get("status")
            if not isinstance(status, int) or not 200 <= status < 300:
                skipped["log lines without a 2xx answer"] += 1
                continue
            prompt = rec.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                skipped["log lines without a prompt (log_prompts off)"] += 1
                continue
            rid = _text(rec, "request_id", where)
            model = _text(rec, "model", where)
            if rid in several:
                continue
            if rid in answered:
                several.add(rid)
                del answered[rid]
                skipped["answered by several models (cascade, hedge)"] += 1
                continue
            if model != rec.get("decided_model"):
                # The policy chose another model; this one answered because that one failed, so the
                # prompt says nothing about how often this model is picked for it.
                skipped["answered by a fallback model"] += 1
                continue
            cost = rec.get("cost_usd", 0.0)
            if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
                raise DatasetError(f"{where}: 'cost_usd' must be a number >= 0, got {cost!r}")
            prop = rec.get("propensity", math.nan)
            if isinstance(prop, bool) or not isinstance(prop, (int, float)) or not (math.isnan(prop) or 0.0 < prop <= 1.0):
                raise DatasetError(f"{where}: 'propensity' must be a number in (0, 1], got {prop!r}")
            answered[rid] = (prompt, model, float(cost), str(rec.get("route") or "default"), float(prop))
    feedback: dict[str, list[float]] = {}
    for path in feedback_files:
        for n, rec in json_lines(path):
            where = f"{path}:{n}"
            if not is_feedback(rec):
                raise DatasetError(f"{where}: not a feedback line (needs 'request_id' and 'score' or 'good')")
            feedback.setdefault(_text(rec, "request_id", where), []).append(feedback_value(rec, where))
    skipped["feedback without an answered request"] = sum(1 for rid in feedback if rid not in answered)
    rows = [rid for rid in answered if rid in feedback]
    skipped["answered requests without feedback"] = len(answered) - len(rows)
    if not rows:
        raise DatasetError(f"no answered request in {[str(p) for p in decision_files]} has both a logged prompt and "
                           f"feedback in {[str(p) for p in feedback_files]} ({', '.join(f'{v} {k}' for k, v in skipped.items() if v) or 'no lines'}); "
                           "turn on metrics.log_prompts and give feedback lines {\"request_id\", \"score\"}")
    models = tuple(sorted({answered[rid][1] for rid in rows}))
    index = {m: j for j, m in enumerate(models)}
    scores = np.full((len(rows), len(models)), np.nan)
    costs = np.full((len(rows), len(models)), np.nan)
    prompts, groups = [], []
    propensity = np.full(len(rows), np.nan)
    for i, rid in enumerate(rows):
        prompt, model, cost, route, propensity[i] = answered[rid]
        j = index[model]
        scores[i, j] = float(np.mean(feedback[rid]))
        costs[i, j] = cost
        prompts.append(prompt)
        groups.append(route)
    return Dataset(FORMAT, models, rows, prompts, groups, scores, costs, COST_NOTE, skipped,
                   [str(p) for p in [*decision_files, *feedback_files]], propensity)


def partial(ds: Dataset) -> bool:
    """True for own traffic, or whenever some model's outcome is missing for some prompt."""
    return ds.format == FORMAT or bool(np.isnan(ds.scores).any())


# ---- simulation from a full-outcome data set ----------------------------------------------

HOLDOUT_FOLDS = 5


def simulate(ds: Dataset, out: Path, *, explore: float = 1.0, seed: int = 1, holdout_fold: int = 0) -> dict:
    """Write decisions.jsonl and feedback.jsonl as a deployment would have logged the data set's prompts.

    Each prompt outside `holdout_fold` (of 5, by prompt hash, as eval folds) is answered by one
    model: with probability `explore` one drawn uniformly, else the data set's best single model
    (everything sent to one frontier model, the usual starting point). Its recorded score is the
    feedback and its recorded cost the logged cost.
    """
    from llm_router.decision_log import DecisionLog

    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore must be from 0 to 1, got {explore}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    best = int(ds.scores.mean(0).argmax())
    m = len(ds.models)
    log = DecisionLog(str(out / "decisions.jsonl"), log_prompts=True, redact=False)
    served = np.zeros(m, int)
    with (out / "feedback.jsonl").open("w", encoding="utf-8") as fb:
        for i, prompt in enumerate(ds.prompts):
            if prompt_key(prompt) % HOLDOUT_FOLDS == holdout_fold:
                continue
            explored = rng.random() < explore
            j = int(rng.integers(m)) if explored else best
            served[j] += 1
            rid = f"sim-{i}"
            model = ds.models[j]
            # As the router logs it with policy `explore`: the chance this model was picked.
            prop = explore / m + (1.0 - explore) * (j == best)
            log.write({"request_id": rid, "route": ds.groups[i], "status": 200, "policy": "simulated",
                       "strategy": "explore" if explored else "single", "model": model, "decided_model": model,
                       "cost_usd": round(float(ds.costs[i, j]), 10), "propensity": round(prop, 6)}, prompt=prompt)
            fb.write(json.dumps({"request_id": rid, "score": float(ds.scores[i, j])}) + "\n")
    log.close()
    return {"logged": int(served.sum()), "served": dict(zip(ds.models, served.tolist())), "best_single": ds.models[best],
            "explore": explore, "holdout_fold": holdout_fold, "out": str(out)}


def learning_curve(ds: Dataset, explores: list[float], *, seed: int = 1, holdout_fold: int = 0, work: Path,
                   progress=None, caution: float | None = None, blend: bool = True) -> dict:
    """Per exploration share: simulate the logs, train on them, score the held-out fold; plus full information.

    Every router is scored by `evaluate` on the same prompts: the fold no log and no training saw.
    "full_information" trains on the same logged prompts with every model's outcome: what the
    logs would give if each prompt had been sent to every model. `blend`: as `evaluate`.
    """
    from llm_router.evaluate import evaluate
    from llm_router.learn.features import Featurizer, load_embedder
    from llm_router.learn.train import keys_of, train_model

    say = progress or (lambda _msg: None)
    featurizer = Featurizer("static", load_embedder("static"))

    def scored(model) -> dict:
        rep = evaluate(ds, featurizer, model=model, blend=blend)
        out = {"held_out_rows": rep.rows, "best_single": rep.best_single["model"]}
        for frac in ("0.95", "1.00"):
            picked, curve = rep.at_quality[frac], rep.at_quality_curve[frac]
            out[frac] = {"saving_vs_best": picked["saving_vs_best"], "relative_quality": picked["relative_quality"],
                         "reached": picked["reached"], "curve_saving": curve["saving_vs_best"]}
        return out

    result: dict = {"data": ds.describe(), "holdout_fold": holdout_fold, "seed": seed, "caution": caution, "blend": blend,
                    "runs": {}}
    train_rows = np.nonzero(keys_of(ds) % HOLDOUT_FOLDS != holdout_fold)[0]
    say(f"full information: training on {len(train_rows)} prompts with every model's outcome")
    full, _ = train_model(ds.subset(train_rows), featurizer)
    result["full_information"] = scored(full)
    for e in explores:
        folder = work / f"explore-{e:g}"
        sim = simulate(ds, folder, explore=e, seed=seed, holdout_fold=holdout_fold)
        logged = load_traffic([folder / "decisions.jsonl"], [folder / "feedback.jsonl"])
        say(f"explore {e:g}: training on {len(logged)} logged requests ({sim['served']})")
        model, _ = train_model(logged, featurizer, **({} if caution is None else {"caution": caution}))
        result["runs"][f"{e:g}"] = {"served": sim["served"], **scored(model)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_router.learn.traffic")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("simulate", help="write a decision log and feedback from a full-outcome data set")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--explore", type=float, default=1.0, help="share of prompts sent to a random model (else the best single)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--holdout-fold", type=int, default=0, help=f"fold (0..{HOLDOUT_FOLDS - 1}) left out of the logs")
    b = sub.add_parser("bench", help="learning from logs: saving on held-out prompts per exploration share")
    b.add_argument("--data", nargs="+", required=True, metavar="PATH")
    b.add_argument("--explore", default="1,0.2,0.05", help="comma list of exploration shares (default 1,0.2,0.05)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--holdout-fold", type=int, default=0)
    b.add_argument("--caution", type=float, default=None, metavar="Z", help="as `llm-router train --caution`")
    b.add_argument("--no-blend", action="store_true", help="as `llm-router eval --no-blend`")
    args = parser.parse_args(argv)
    if not 0 <= args.holdout_fold < HOLDOUT_FOLDS:
        print(f"error: --holdout-fold must be from 0 to {HOLDOUT_FOLDS - 1}", file=sys.stderr)
        return 2
    try:
        ds = load(args.data)
        if args.cmd == "simulate":
            summary = simulate(ds, Path(args.out), explore=args.explore, seed=args.seed, holdout_fold=args.holdout_fold)
        else:
            import tempfile

            explores = [float(x) for x in args.explore.split(",") if x.strip()]
            with tempfile.TemporaryDirectory(prefix="llmr-traffic-") as work:
                summary = learning_curve(ds, explores, seed=args.seed, holdout_fold=args.holdout_fold, work=Path(work),
                                         progress=lambda msg: print(msg, file=sys.stderr, flush=True), caution=args.caution,
                                         blend=not args.no_blend)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
