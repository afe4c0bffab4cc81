"""Prometheus metrics of every decision, token and dollar; served on loopback by default."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest, start_http_server

disable_created_metrics()  # the *_created series only add noise to every scrape

DECISION_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 0.01, 0.05)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
ERROR_RATIO_BUCKETS = (-0.5, -0.25, -0.1, -0.05, 0.0, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(slots=True)
class Metrics:
    """The runner's metric families, in their own registry."""

    registry: CollectorRegistry
    requests: Counter
    responses: Counter
    tokens: Counter
    cost: Counter
    saving: Counter
    decision_seconds: Histogram
    upstream_seconds: Histogram
    estimate_error: Histogram
    fallbacks: Counter
    errors: Counter
    budget_remaining: Gauge
    breaker_open: Gauge

    @classmethod
    def create(cls) -> "Metrics":
        """Fresh metric families (one registry per runtime, so tests stay independent)."""
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            requests=Counter("llm_router_requests", "Routed requests", ["route", "model", "tier", "strategy"], registry=r),
            responses=Counter("llm_router_responses", "Upstream responses by status class", ["model", "status"], registry=r),
            tokens=Counter("llm_router_tokens", "Tokens reported by providers", ["model", "direction"], registry=r),
            cost=Counter("llm_router_cost_usd", "Spend in USD at catalog prices", ["route", "model"], registry=r),
            saving=Counter("llm_router_saving_usd", "USD saved against the route's reference model", ["route"], registry=r),
            decision_seconds=Histogram("llm_router_decision_seconds", "Time to parse, classify and decide", buckets=DECISION_BUCKETS, registry=r),
            upstream_seconds=Histogram("llm_router_upstream_seconds", "Upstream response time", ["model"], buckets=LATENCY_BUCKETS, registry=r),
            estimate_error=Histogram("llm_router_estimate_error_ratio", "(estimated - actual) / actual input tokens",
                                     buckets=ERROR_RATIO_BUCKETS, registry=r),
            fallbacks=Counter("llm_router_fallbacks", "Fallbacks taken", ["from_model", "to_model", "reason"], registry=r),
            errors=Counter("llm_router_errors", "Errors by kind", ["kind"], registry=r),
            budget_remaining=Gauge("llm_router_budget_remaining_usd", "USD left in a spend limit", ["scope"], registry=r),
            breaker_open=Gauge("llm_router_breaker_open", "1 while a model's circuit breaker is open", ["model"], registry=r),
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


_servers: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


def serve_metrics(metrics: Metrics, listen: str) -> tuple[str, int]:
    """Serve /metrics on HOST:PORT (port 0 picks a free one) in a daemon thread; returns the bound address."""
    host, _, port = listen.rpartition(":")
    host = host or "127.0.0.1"
    with _lock:
        server, _thread = start_http_server(int(port), addr=host, registry=metrics.registry)
        bound = server.server_address[:2]
        _servers[bound] = server
    return bound[0], bound[1]


def stop_metrics(address: tuple[str, int]) -> None:
    """Stop a metrics server started by serve_metrics."""
    with _lock:
        server = _servers.pop(address, None)
    if server is not None:
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


def scrape_totals(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: sum over labels} (for summaries such as the demo's)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out
