"""The optional C kernels of the semantic classifier (`_vote.c`), or None where they were not built or are turned off."""
from __future__ import annotations

import os
from typing import Any

# The C kernels' limits (MAX_DIM and MAX_COLS in _vote.c): the embedding's width and the vote's columns; beyond them
# numpy does the work.
MAX_DIM = 4096
MAX_VOTE_COLUMNS = 64
OFF_ENV = "LLM_ROUTER_NATIVE"  # "0": use numpy even where the kernels are built (for side-by-side benchmarks)


def load() -> Any:
    """The `_vote` extension module, or None (not built: no C compiler at install time; or LLM_ROUTER_NATIVE=0)."""
    if os.environ.get(OFF_ENV, "1").strip() == "0":
        return None
    try:
        from llm_router.classify import _vote  # type: ignore[attr-defined]  # a C extension without stubs
    except ImportError:
        return None
    return _vote


KERNELS: Any = load()
