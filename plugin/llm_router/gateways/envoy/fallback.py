"""What the routing filter, the per-attempt filter and the bootstrap agree on for fallback chains.

Envoy retries a routed request on the next model of its decision's chain. The route picks the
cluster of each attempt with a matcher on `x-envoy-attempt-count` and per-request slot headers
(`x-llm-router-try-1..N`, the clusters of the chain in order), re-evaluated on every retry
(`refresh_cluster_on_retry`). Envoy evaluates that matcher before it updates the attempt count
header, so the value it sees is the number of attempts already made: the routing filter sets it
to 0, and value k selects slot k + 1.

The per-attempt filter reads everything it needs from the request itself: the attempt number
(the header), the cluster of this attempt (an ext_proc attribute), the chain and the API (dynamic
metadata written by the routing filter, which clients cannot set) and the body.
"""
from __future__ import annotations

from llm_router.plan import FALLBACK_4XX

SLOT_PREFIX = "x-llm-router-try-"
MAX_CHAIN = 9  # primary + policies' `fallbacks` (at most 8)
SLOTS = tuple(f"{SLOT_PREFIX}{i}" for i in range(1, MAX_CHAIN + 1))

ATTEMPT_HEADER = "x-envoy-attempt-count"
MAX_RETRIES_HEADER = "x-envoy-max-retries"
PER_TRY_TIMEOUT_HEADER = "x-envoy-upstream-rq-per-try-timeout-ms"
# Retry and timeout controls Envoy reads from request headers: a client must not set them.
CLIENT_RETRY_HEADERS = ("x-envoy-retry-on", "x-envoy-retry-grpc-on", "x-envoy-retriable-status-codes",
                        "x-envoy-retriable-header-names", "x-envoy-upstream-rq-timeout-ms",
                        "x-envoy-hedge-on-per-try-timeout", "x-envoy-upstream-rq-timeout-alt-response",
                        "x-envoy-upstream-alt-stat-name")

# Dynamic metadata keys (namespace llm_router) the routing filter writes for the later filters.
CHAIN_KEY = "chain"  # model ids of the chain, comma-separated
API_KEY = "api"  # the request's API: chat | completions | messages
MODEL_HEADER = "x-llm-router-model"  # explanation header; the per-attempt filter names the model answering

CLUSTER_ATTR = "xds.cluster_name"

# Statuses Envoy retries (retry_on 5xx, reset, connect-failure, retriable-status-codes: the 4xx every adapter falls back on).
RETRIABLE_STATUS = 429  # the rate limit: its retry-after goes to the client when the chain is exhausted
RETRIABLE_4XX = tuple(sorted(FALLBACK_4XX))


def retriable(status: int) -> bool:
    """Whether Envoy moves on to the next model after this upstream status (0: no response)."""
    return status == 0 or status >= 500 or status in FALLBACK_4XX


def slot_headers(upstreams: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(slot headers to set, unused slot headers to remove) for a chain's clusters."""
    n = min(len(upstreams), MAX_CHAIN)
    return tuple(zip(SLOTS[:n], upstreams[:n])), SLOTS[n:]


def chain_text(model_ids: tuple[str, ...]) -> str:
    return ",".join(model_ids[:MAX_CHAIN])


def parse_chain(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part) if text else ()
