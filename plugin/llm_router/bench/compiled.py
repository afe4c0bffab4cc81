"""`llm-router bench compiled`: the decision path compiled to C with mypyc, side by side with plain Python.

Copies the installed package to a temporary folder, compiles the modules every decision runs
(parsing, rules, the static embedding and the semantic vote, the router, the runtime and the
APISIX runner's protocol code) with mypyc, checks that the compiled copy routes the built-in
workload exactly as the plain one does, then runs `bench decision` and `bench apisix` in
alternating rounds (plain, compiled, plain, ...) so both see the same machine state.
Needs mypy (`pip install 'llm-router[compile]'`) and a C compiler. The temporary folder is removed.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

import llm_router
from llm_router import compiled_build
from llm_router.commands.common import at_least

MODULES = compiled_build.MODULES
MYPY_INI = "[mypy]\nfollow_imports = silent\nignore_missing_imports = True\n"

# Run in a child: which files the modules came from, then every workload decision as one JSON list.
_DECISIONS = """
import sys, orjson
import llm_router.request, llm_router.router, llm_router.classify.semantic as sem
from llm_router.config import load_config, parse_config
from llm_router.commands.demo import load_workload, request_for
from llm_router.router import Router
import llm_router.gateways.apisix.runner as runner
compiled = [m.__file__.endswith(".so") for m in (llm_router.request, llm_router.router, sem, runner)]
out = {"compiled": compiled, "decisions": {}}
for name in ("rules", "semantic"):
    cfg = parse_config({"seed": 1, "policies": {"default": {"classifier": name, "strategy": "ladder",
                        "ladder": dict(load_config().policies["default"].ladder)}}})
    router = Router(cfg)
    rows = []
    for path, body in map(request_for, load_workload(None)):
        _, d = router.route(body, path=path)
        c = d.classification
        rows.append([d.model.id, c.tier.name, c.category, c.score, c.confidence, list(c.evidence), d.reason])
    out["decisions"][name] = rows
sys.stdout.write(orjson.dumps(out).decode())
"""


def _stale(folder: str, names: list[str]) -> set[str]:
    """Caches and extensions of an earlier compile are left behind; the C kernels (classify/_vote) are kept."""
    return {n for n in names if n == "__pycache__" or (n.endswith(".so") and not n.startswith("_vote."))}


def compile_copy(workdir: Path) -> Path:
    """A copy of the package with MODULES compiled in place; returns the folder to put on PYTHONPATH."""
    src = Path(llm_router.__file__).resolve().parent
    root = workdir / "src"
    shutil.copytree(src, root / "llm_router", ignore=_stale)
    (root / "mypy.ini").write_text(MYPY_INI)
    cmd = [sys.executable, "-m", "mypyc", *(f"llm_router/{m}" for m in MODULES)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"mypyc failed (exit {done.returncode}):\n{tail}")
    return root


def _env(pythonpath: str | None) -> dict[str, str]:
    # the copy is chosen by PYTHONPATH alone: `serve` must not move onto a build of its own (compiled_build)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", compiled_build.ACTIVE_ENV)}
    env[compiled_build.OFF_ENV] = "0"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def decisions(pythonpath: str | None, cwd: Path) -> dict:
    """Every workload decision under rules and semantic, from a child using `pythonpath` (None: installed)."""
    done = subprocess.run([sys.executable, "-c", _DECISIONS], cwd=cwd, env=_env(pythonpath),
                          capture_output=True, check=True, timeout=600)
    return orjson.loads(done.stdout)


def timed_round(pythonpath: str | None, cwd: Path, requests: int) -> dict:
    """One `bench decision` run (rules, semantic) in a child; its JSON results."""
    cmd = [sys.executable, "-m", "llm_router.bench.decision", "-n", str(requests), "--classifiers", "rules,semantic", "--json"]
    done = subprocess.run(cmd, cwd=cwd, env=_env(pythonpath), capture_output=True, check=True, timeout=1200)
    return orjson.loads(done.stdout)["results"]


def apisix_round(pythonpath: str | None, cwd: Path, requests: int) -> dict:
    """One `bench apisix --classifier semantic` run (the runner is a child of the child, same PYTHONPATH)."""
    cmd = [sys.executable, "-m", "llm_router.cli", "bench", "apisix", "--classifier", "semantic", "--requests", str(requests),
           "--warmup", "500", "--json"]
    done = subprocess.run(cmd, cwd=cwd, env=_env(pythonpath), capture_output=True, check=True, timeout=1800)
    return orjson.loads(done.stdout)


def compare(plain: dict, compiled: dict) -> list[str]:
    """Differences between the two runs' decisions (empty when they route identically)."""
    problems = []
    for name, rows in plain["decisions"].items():
        other = compiled["decisions"][name]
        for i, (a, b) in enumerate(zip(rows, other)):
            if a != b:
                problems.append(f"{name} workload row {i}: plain {a[:4]} vs compiled {b[:4]}")
        if len(rows) != len(other):
            problems.append(f"{name}: {len(rows)} plain decisions vs {len(other)} compiled")
    return problems


def register(sub) -> None:
    p = sub.add_parser("compiled", help="decision time with the decision path compiled by mypyc, vs plain Python")
    p.add_argument("--rounds", type=at_least(1), default=3, help="alternating plain/compiled rounds (default 3)")
    p.add_argument("--requests", "-n", type=at_least(1), default=10000, help="decisions per classifier per round (default 10000)")
    p.add_argument("--apisix-requests", type=at_least(0), default=5000,
                   help="requests per concurrency level in each APISIX runner round (default 5000; 0: skip the runner)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("error: bench compiled needs mypy's mypyc: pip install 'llm-router[compile]' (and a C compiler such as gcc)",
              file=sys.stderr)
        return 2
    if args.rounds < 1 or args.requests < 100:
        print("error: --rounds must be >= 1 and --requests >= 100", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lr-bench-compiled-") as tmp:
        workdir = Path(tmp)
        print("compiling the decision path with mypyc ...", file=sys.stderr)
        try:
            root = compile_copy(workdir)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        plain, compiled = decisions(None, workdir), decisions(str(root), workdir)
        if any(plain["compiled"]) or not all(compiled["compiled"]):
            print(f"error: wrong modules loaded (plain {plain['compiled']}, compiled {compiled['compiled']})", file=sys.stderr)
            return 1
        diffs = compare(plain, compiled)
        rounds: dict[str, list[dict]] = {"plain": [], "compiled": []}
        runner: dict[str, list[dict]] = {"plain": [], "compiled": []}
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
            rounds["plain"].append(timed_round(None, workdir, args.requests))
            rounds["compiled"].append(timed_round(str(root), workdir, args.requests))
            if args.apisix_requests > 0:
                runner["plain"].append(apisix_round(None, workdir, args.apisix_requests))
                runner["compiled"].append(apisix_round(str(root), workdir, args.apisix_requests))
    out: dict = {"modules": list(MODULES), "same_decisions": not diffs, "decisions_compared": sum(
        len(r) for r in plain["decisions"].values()), "differences": diffs[:10], "rounds": args.rounds,
        "requests": args.requests, "results": {}}
    for name in ("rules", "semantic"):
        res: dict = {}
        for kind in ("plain", "compiled"):
            for stat in ("p50_us", "p99_us"):
                res[f"{kind}_{stat}"] = [r[name][stat] for r in rounds[kind]]
        pairs = [c / p for p, c in zip(res["plain_p50_us"], res["compiled_p50_us"])]
        res["p50_ratio_median"] = round(statistics.median(pairs), 3)
        out["results"][name] = res
    if runner["plain"]:
        res = {}
        for kind in ("plain", "compiled"):
            res[f"{kind}_decide_us"] = [r["decide_us"] for r in runner[kind]]
            res[f"{kind}_inprocess_us"] = [r["runner_inprocess_us"] for r in runner[kind]]
            for level in ("c1", "c32"):
                res[f"{kind}_{level}_p50_us"] = [r["results"][level]["p50_us"] for r in runner[kind]]
                res[f"{kind}_{level}_cpu_us_per_req"] = [r["results"][level]["cpu_us_per_req"] for r in runner[kind]]
        res["c32_cpu_ratio_median"] = round(statistics.median(
            c / p for p, c in zip(res["plain_c32_cpu_us_per_req"], res["compiled_c32_cpu_us_per_req"])), 3)
        res["c1_p50_ratio_median"] = round(statistics.median(
            c / p for p, c in zip(res["plain_c1_p50_us"], res["compiled_c1_p50_us"])), 3)
        out["apisix_semantic"] = res
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"mypyc-compiled: {', '.join(MODULES)}")
        print(f"same decisions on {out['decisions_compared']} workload requests: {'yes' if not diffs else 'NO'}")
        for d in diffs[:10]:
            print(f"  {d}")
        print(f"{'classifier':10s} {'plain p50 us (per round)':>34s} {'compiled p50 us':>30s} {'compiled/plain':>15s}")
        def fmt(xs: list[float]) -> str:
            return " ".join(f"{x:.1f}" for x in xs)

        for name, r in out["results"].items():
            print(f"{name:10s} {fmt(r['plain_p50_us']):>34s} {fmt(r['compiled_p50_us']):>30s} {r['p50_ratio_median']:>15.3f}")
        if "apisix_semantic" in out:
            a = out["apisix_semantic"]
            print("APISIX runner, semantic (bench apisix), per round:")
            for label, key in (("sequential p50 us", "c1_p50_us"), ("runner CPU us/req at 32", "c32_cpu_us_per_req"),
                               ("in process us/req", "inprocess_us")):
                print(f"  {label:24s} plain {fmt(a['plain_' + key]):>24s}   compiled {fmt(a['compiled_' + key]):>24s}")
            print(f"  compiled/plain: sequential p50 {a['c1_p50_ratio_median']:.3f}, CPU at 32 {a['c32_cpu_ratio_median']:.3f}")
    return 0 if not diffs else 1
