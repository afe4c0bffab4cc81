"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import importlib
import sys

from llm_router.config import Config, ConfigError, load_config


def load_or_exit(path: str | None) -> Config:
    """Load a config or print what is wrong with it and exit with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: invalid config {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def add_config_arg(parser) -> None:
    """The --config option every routing command takes."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: built-in defaults)")


def register_installed(sub, package: str, names: tuple[str, ...]) -> None:
    """Register each `package.name` module's subcommand; a module that is not installed is skipped."""
    for name in names:
        try:
            module = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{package}.{name}":
                continue
            raise
        module.register(sub)
