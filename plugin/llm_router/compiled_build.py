"""The compiled request path: where `llm-router compile` keeps its build, and `serve` moving onto it.

A build is a copy of the installed package with the request path compiled by mypyc (commands/compile.py). It
is kept under a digest of the installed package's files, so any change to them (an upgrade, an edit) leaves
the old build unused: a stale build can never be served. `serve` re-executes itself on the build that matches,
keeping its PID (APISIX tracks the runner by it), unless LLM_ROUTER_COMPILED=0.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import llm_router

OFF_ENV = "LLM_ROUTER_COMPILED"  # "0": serve plain Python even where a build exists
DIR_ENV = "LLM_ROUTER_COMPILED_DIR"  # where builds are kept (default: llm-router-compiled in the Python environment)
ACTIVE_ENV = "LLM_ROUTER_COMPILED_ACTIVE"  # set in the re-executed process: the build it runs
MARK = "BUILD"  # written last into a finished build: the digest it was built from
# The modules every routed request runs, compiled by mypyc (paths inside the package).
MODULES = ("request.py", "message_rules.py", "decision.py", "router.py", "classify/base.py", "classify/rules.py",
           "classify/embeddings.py", "classify/semantic.py", "plan.py", "runtime.py", "gateways/apisix/runner.py",
           "gateways/apisix/decode.py", "gateways/apisix/encode.py", "gateways/apisix/framing.py")
MODULE_PREFIX = "llm_router."


def package_dir() -> Path:
    """The installed package's folder."""
    return Path(llm_router.__file__).resolve().parent


def source_digest(root: Path | None = None) -> str:
    """A digest of every file of the package (code, data, the C extension) and of this Python's version."""
    root = root or package_dir()
    h = hashlib.sha256(sys.version.encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def builds_dir() -> Path:
    """Where builds are kept, one folder per digest."""
    return Path(os.environ.get(DIR_ENV) or Path(sys.prefix) / "llm-router-compiled")


def build_dir(digest: str | None = None) -> Path:
    """Where the build for the installed package (or for `digest`) lives, finished or not."""
    return builds_dir() / (digest or source_digest())


def mark_done(out: Path, digest: str) -> None:
    """Mark a build finished (and checked) as made from the files of `digest`."""
    (out / MARK).write_text(digest + "\n")


def current() -> Path | None:
    """The finished build of the installed package, or None."""
    digest = source_digest()
    out = build_dir(digest)
    try:
        return out if (out / MARK).read_text().strip() == digest else None
    except OSError:
        return None


def active() -> str | None:
    """The build this process runs (None: plain Python)."""
    return os.environ.get(ACTIVE_ENV) or None


def switch() -> None:
    """Re-execute this process on the matching build, if there is one, it loads here, and it is allowed; returns
    when not (a build that fails to load is reported on stderr)."""
    if os.environ.get(OFF_ENV, "1") == "0" or active():
        return
    build = current()
    if build is None:
        return
    paths = [str(build), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, ACTIVE_ENV: str(build), "PYTHONPATH": os.pathsep.join(paths)}
    problem = _load_problem(env)
    if problem:
        print(f"llm-router: the compiled build {build} does not load ({problem}); serving plain Python", file=sys.stderr)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _load_problem(env: dict[str, str]) -> str | None:
    """Why the build in env's PYTHONPATH cannot be imported here (another CPU, a missing library), or None."""
    names = ["llm_router.cli", *(MODULE_PREFIX + m[:-3].replace("/", ".") for m in MODULES)]
    code = f"import {', '.join(names)}"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=env[ACTIVE_ENV], capture_output=True, text=True,
                              timeout=120)  # cwd: `-c` imports from it first
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def running_compiled() -> bool:
    """Whether this process runs a build's code (not a folder earlier on sys.path that shadows it, such as the
    working directory)."""
    build = active()
    return build is not None and package_dir().is_relative_to(Path(build).resolve())


def describe() -> str:
    """For the serving log: which code runs."""
    build = active()
    if not build:
        return "plain Python"
    if not running_compiled():
        return f"plain Python from {package_dir()}: it shadows the compiled build {build}"
    return f"compiled request path from {build}"
