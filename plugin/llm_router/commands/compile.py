"""`llm-router compile [--out DIR]`: a copy of the package with its request path compiled by mypyc, checked; by default
kept where `serve` finds it (compiled_build), else in DIR, ready for PYTHONPATH."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from llm_router import compiled_build


def register(sub) -> None:
    p = sub.add_parser("compile", help="build a copy of llm-router with the request path compiled to C (mypyc)",
                       description="Compiles the modules every routed request runs (parsing, classifiers, router, runtime, "
                                   "APISIX protocol) with mypyc into DIR/llm_router, checks that the copy routes the built-in "
                                   "workload exactly as the installed package does. Without --out the build is kept "
                                   "under a digest of the installed files (in the Python environment, or "
                                   "$LLM_ROUTER_COMPILED_DIR), and `llm-router serve` runs on it from then on, until "
                                   "those files change (LLM_ROUTER_COMPILED=0 turns that off). Needs "
                                   "pip install 'llm-router[compile]' and a C compiler.")
    p.add_argument("--out", metavar="DIR", help="empty or new folder to write llm_router/ into, for PYTHONPATH=DIR")
    p.add_argument("--no-check", action="store_true", help="skip the routing comparison with the installed package")
    p.set_defaults(func=run)


def _problem(out: Path) -> str | None:
    """Why the compiled package cannot be written to out, or None."""
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return "compile needs mypy's mypyc: pip install 'llm-router[compile]' (and a C compiler such as gcc)"
    if not (shutil.which("gcc") or shutil.which("cc")):
        return "compile needs a C compiler (gcc or cc) on PATH"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return f"--out {out} must be a new or empty folder"
    return None


def build(out: Path, *, check: bool = True) -> list[str]:
    """Compile into out/llm_router; with check, the differences from the installed package's decisions (empty: none).
    A build without differences is marked finished with the installed package's digest."""
    from llm_router.bench.compiled import compare, compile_copy, decisions

    digest = compiled_build.source_digest()
    with tempfile.TemporaryDirectory(prefix="lr-compile-") as tmp:
        root = compile_copy(Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root / "llm_router", out / "llm_router", ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.o"))
        for lib in root.glob("*.so"):  # mypyc's shared runtime module sits beside the package
            shutil.copy2(lib, out / lib.name)
    if not check:
        compiled_build.mark_done(out, digest)
        return []
    with tempfile.TemporaryDirectory(prefix="lr-compile-check-") as cwd:  # not out: `python -c` imports from its cwd
        plain, fast = decisions(None, Path(cwd)), decisions(str(out), Path(cwd))
    problems = compare(plain, fast)
    if any(plain["compiled"]) or not all(fast["compiled"]):
        problems.insert(0, f"wrong modules loaded (installed {plain['compiled']}, compiled {fast['compiled']})")
    if not problems:
        compiled_build.mark_done(out, digest)
    return problems


def run(args) -> int:
    if args.out:
        out = Path(args.out).resolve()
    else:
        found = compiled_build.current()
        if found is not None:
            print(f"the compiled build of the installed files is up to date: {found}", file=sys.stderr)
            return 0
        out = compiled_build.build_dir()
        if out.exists():  # an unfinished build (interrupted, or its check failed): start over
            shutil.rmtree(out)
    problem = _problem(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"compiling the request path with mypyc into {out} ...", file=sys.stderr)
    try:
        problems = build(out, check=not args.no_check)
    except (RuntimeError, OSError) as exc:  # mypyc failed; a folder that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if problems:
        print("error: the compiled copy routes differently from the installed package:", file=sys.stderr)
        for p in problems[:10]:
            print(f"  {p}", file=sys.stderr)
        return 1
    if not args.no_check:
        print("checked: the compiled copy routes the built-in workload exactly as the installed package", file=sys.stderr)
    if args.out:
        print(f"run it with:  PYTHONPATH={out} llm-router serve ...")
    else:
        print(f"built {out}: `llm-router serve` runs on it (LLM_ROUTER_COMPILED=0 turns that off)")
        for old in compiled_build.builds_dir().iterdir():  # builds of earlier files: never served again
            if old != out and (old / compiled_build.MARK).exists():
                shutil.rmtree(old, ignore_errors=True)
    return 0
