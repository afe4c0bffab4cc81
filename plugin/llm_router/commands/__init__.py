"""Subcommands of the `llm-router` CLI; each module has register(subparsers)."""
