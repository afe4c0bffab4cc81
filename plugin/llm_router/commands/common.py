"""Helpers shared by CLI subcommands."""
from __future__ import annotations

import argparse
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


def open_or_exit(path: str, what: str):
    """A binary stream of a file (or stdin for '-'), or print why it cannot be read and exit with status 2."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        print(f"error: cannot read {what} {path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


def at_least(least: int):
    """An argparse type: a whole number >= least, else a usage error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


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


def add_cluster_args(parser) -> None:
    """--clusters, --cluster-seed and --no-groups: the learned router's topic features (train and eval)."""
    parser.add_argument("--clusters", type=int, default=None, metavar="K",
                        help="topic clusters of the prompts added as features (default: one per 50 prompts, at most 120; 0: none)")
    parser.add_argument("--cluster-seed", type=int, default=0, metavar="N", help="seed of the topic clusters' k-means (default 0)")
    parser.add_argument("--no-groups", dest="groups", action="store_false",
                        help="no task recogniser (by default, where the data names 2+ tasks, a recogniser of them is "
                             "trained and its posterior added as features)")


def cluster_args_problem(args) -> str | None:
    """What is wrong with --clusters / --cluster-seed, or None."""
    if args.clusters is not None and not 0 <= args.clusters <= 10000:
        return "--clusters must be from 0 (none) to 10000"
    if args.cluster_seed < 0:
        return "--cluster-seed must be 0 or more"
    return None
