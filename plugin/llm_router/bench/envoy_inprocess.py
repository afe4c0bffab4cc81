"""The processor's Python work per request without sockets: the routing session and the observing session.

`bench envoy` compares this with the CPU the live processor burns per request: the difference is
what the transport, the event loop and a cache shared with Envoy and the load generator add.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from llm_router.config import Config

# Headers as Envoy forwards them to the routing filter for the benchmark's request.
_CLIENT_HEADERS = ((":authority", "127.0.0.1"), (":method", "POST"), (":scheme", "http"), ("content-type", "application/json"),
                   ("user-agent", "bench"), ("x-forwarded-proto", "http"), ("x-request-id", "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"))


@dataclass(frozen=True, slots=True)
class InProcess:
    """Microseconds of CPU per request in this process (best of the rounds)."""

    route_us: float  # routing session: request headers + body messages -> replies
    decide_us: float  # of which Runtime.decide (parse, classify, select, plan, telemetry)
    observe_us: float  # observing session: request headers, response headers, response body
    route_cold_us: float  # routing session after COLD_BYTES of other memory were touched (as Envoy does between requests at c1)
    observe_cold_us: float


COLD_BYTES = 16 << 20  # more than this VM's per-core L2, as another process running between two requests would leave it


def _headers_message(path: str, length: int) -> bytes:
    req = ProcessingRequest()
    for key, value in ((":path", path), *_CLIENT_HEADERS, ("content-length", str(length))):
        h = req.request_headers.headers.headers.add()
        h.key, h.raw_value = key, value.encode()
    return req.SerializeToString()


def _body_message(body: bytes) -> bytes:
    req = ProcessingRequest()
    req.request_body.body = body
    req.request_body.end_of_stream = True
    return req.SerializeToString()


def _observe_messages(request_id: str, answer: bytes) -> tuple[bytes, bytes, bytes]:
    from llm_router.gateways.envoy.fallback import ATTEMPT_HEADER
    from llm_router.gateways.envoy.service import METADATA_NAMESPACE, REQUEST_ID_KEY

    first = ProcessingRequest()
    h = first.request_headers.headers.headers.add()
    h.key, h.raw_value = ATTEMPT_HEADER, b"1"
    first.metadata_context.filter_metadata[METADATA_NAMESPACE].fields[REQUEST_ID_KEY].string_value = request_id
    head = ProcessingRequest()
    for key, value in ((":status", "200"), ("x-ratelimit-remaining-requests", "4999")):
        h = head.response_headers.headers.headers.add()
        h.key, h.raw_value = key, value.encode()
    tail = ProcessingRequest()
    tail.response_body.body = answer
    tail.response_body.end_of_stream = True
    return first.SerializeToString(), head.SerializeToString(), tail.SerializeToString()


def measure(cfg: Config, body: bytes, path: str, answer: bytes, keys: dict[str, str], n: int = 2000, rounds: int = 3) -> InProcess:
    """Route and observe `n` requests in process, `rounds` times; the fastest round per part (single thread,
    no I/O: elapsed time is CPU time)."""
    from llm_router.gateways.envoy.server import service_options
    from llm_router.gateways.envoy.service import RoutingService
    from llm_router.gateways.envoy.settings import EnvoySettings
    from llm_router.runtime import Exchange, Runtime

    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: os.environ.get(k) or v for k, v in keys.items()})
    try:
        runtime = Runtime(cfg)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    svc = RoutingService(runtime, service_options(EnvoySettings.from_config(cfg), cfg))
    services: Any = svc.services()
    headers, body_msg = _headers_message(path, len(body)), _body_message(body)

    def route_one() -> str:
        s = services.open({})
        s.on_message(headers)
        s.on_message(body_msg)
        return s.ex.request_id

    def observe_one(messages: tuple[bytes, ...]) -> None:
        o = svc.open_observer({})
        for m in messages:
            o.on_message(m)
        o.on_close()

    for _ in range(200):  # warm-up (caches, lazily compiled policies)
        observe_one(_observe_messages(route_one(), answer))
    gc.collect()
    gc.freeze()  # as the server does after start-up
    clock = time.perf_counter
    best = {"route": float("inf"), "decide": float("inf"), "observe": float("inf")}
    for _ in range(rounds):
        # Each request is observed right after it is routed, as live: the pending table stays small.
        route_s = observe_s = 0.0
        for _ in range(n):
            t0 = clock()
            rid = route_one()
            route_s += clock() - t0
            messages = _observe_messages(rid, answer)  # what Envoy would send; not the processor's work
            t0 = clock()
            observe_one(messages)
            observe_s += clock() - t0
        best["route"] = min(best["route"], route_s)
        best["observe"] = min(best["observe"], observe_s)
        t0 = clock()
        for i in range(n):
            runtime.decide(body, path=path, ex=Exchange(f"in-{i}", path, 0.0))
        best["decide"] = min(best["decide"], clock() - t0)
    # Cold: a buffer larger than the core's cache is written between the steps, so each session
    # starts with the processor's code and data evicted, as at concurrency 1 behind a busy Envoy.
    junk = np.zeros(COLD_BYTES // 8)
    cold_route, cold_observe = [], []
    for _ in range(min(n, 1000)):
        junk += 1.0
        t0 = clock()
        rid = route_one()
        cold_route.append(clock() - t0)
        messages = _observe_messages(rid, answer)
        junk += 1.0
        t0 = clock()
        observe_one(messages)
        cold_observe.append(clock() - t0)
    cold_route.sort()
    cold_observe.sort()
    return InProcess(*(round(best[k] / n * 1e6, 1) for k in ("route", "decide", "observe")),
                     round(cold_route[len(cold_route) // 2] * 1e6, 1), round(cold_observe[len(cold_observe) // 2] * 1e6, 1))
