"""`llm-router bench {decision,estimator,envoy,apisix}`: rerunnable benchmarks."""
from __future__ import annotations

import importlib

TARGETS = ("decision", "semantic", "estimator", "envoy", "apisix")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark: decision | semantic | estimator | envoy | apisix")
    bsub = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name in TARGETS:
        try:
            module = importlib.import_module(f"llm_router.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"llm_router.bench.{name}":
                continue
            raise
        module.register(bsub)
