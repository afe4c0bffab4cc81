"""The `llm-router` command: each subcommand lives in llm_router.commands.<name>."""
from __future__ import annotations

import argparse
import sys

from llm_router.commands.common import register_installed

COMMANDS = ("route", "classify", "check", "train", "eval", "report", "serve", "demo", "bench", "apisix", "fakes", "compile")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(prog="llm-router", description="Route LLM API requests to the cheapest model that serves them well.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_installed(sub, "llm_router.commands", COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
