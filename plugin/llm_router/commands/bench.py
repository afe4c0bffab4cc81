"""`llm-router bench {decision,semantic,estimator,envoy,apisix,nginx,compiled}`: rerunnable benchmarks."""
from __future__ import annotations

from llm_router.commands.common import register_installed

TARGETS = ("decision", "semantic", "estimator", "envoy", "apisix", "nginx", "compiled")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark: decision | semantic | estimator | envoy | apisix | nginx | compiled")
    bsub = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    register_installed(bsub, "llm_router.bench", TARGETS)
