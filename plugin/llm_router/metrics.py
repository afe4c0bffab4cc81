"""Prometheus metrics of every decision, token and dollar; served on loopback by default.

The hot path only bumps plain dict entries (a few hundred nanoseconds); a prometheus-client
collector turns them into metric families when /metrics is scraped. prometheus-client's own
labelled children cost several microseconds per update, which at 10k requests/s is a core's
worth of CPU spent on bookkeeping.
"""
from __future__ import annotations

import bisect
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

DECISION_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 0.01, 0.05)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
# actual / estimated input tokens: 1.0 is a perfect estimate (buckets stay positive, as Prometheus wants)
ESTIMATE_RATIO_BUCKETS = (0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0)


class CounterVec:
    """A counter family: label values tuple -> total."""

    __slots__ = ("name", "help", "labels", "values")

    def __init__(self, name: str, help: str, labels: tuple[str, ...]):
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for key, value in list(self.values.items()):
            fam.add_metric(key, value)
        return fam


class GaugeVec:
    """A gauge family: label values tuple -> current value."""

    __slots__ = ("name", "help", "labels", "values")

    def __init__(self, name: str, help: str, labels: tuple[str, ...]):
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def set(self, key: tuple[str, ...], value: float) -> None:
        self.values[key] = value

    def family(self) -> GaugeMetricFamily:
        fam = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        for key, value in list(self.values.items()):
            fam.add_metric(key, value)
        return fam


class HistogramVec:
    """A histogram family: per label tuple, bucket counts plus sum."""

    __slots__ = ("name", "help", "labels", "bounds", "data")

    def __init__(self, name: str, help: str, labels: tuple[str, ...], bounds: tuple[float, ...]):
        self.name, self.help, self.labels, self.bounds = name, help, labels, bounds
        self.data: dict[tuple[str, ...], list[float]] = {}  # key -> [per-bucket counts..., +Inf count, sum]

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.data.get(key)
        if row is None:
            row = self.data[key] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for key, row in list(self.data.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(repr, map(float, self.bounds)), "+Inf"), row[:-1]):
                cumulative += count
                buckets.append((bound, cumulative))
            fam.add_metric(key, buckets, row[-1])
        return fam


def build_labels() -> tuple[str, str]:
    """(code, kernels) of this process: compiled or plain, c or numpy."""
    from llm_router import compiled_build
    from llm_router.classify import native

    return ("compiled" if compiled_build.running_compiled() else "plain"), ("c" if native.KERNELS is not None else "numpy")


class Metrics(Collector):
    """The runner's metric families, collected into their own registry at scrape time."""

    def __init__(self) -> None:
        self.requests = CounterVec("llm_router_requests", "Routed requests", ("route", "model", "tier", "strategy"))
        self.responses = CounterVec("llm_router_responses", "Upstream responses by status class", ("model", "status"))
        self.tokens = CounterVec("llm_router_tokens", "Tokens reported by providers", ("model", "direction"))
        self.cache_tokens = CounterVec("llm_router_cache_tokens", "Input tokens read from (kind=read) or written to "
                                       "(kind=write) the provider's prompt cache: part of direction=input", ("model", "kind"))
        self.cost = CounterVec("llm_router_cost_usd", "Spend in USD at catalog prices", ("route", "model"))
        self.saving = CounterVec("llm_router_saving_usd", "USD saved against the route's reference model", ("route",))
        self.fallbacks = CounterVec("llm_router_fallbacks", "Fallbacks taken", ("from_model", "to_model", "reason"))
        self.errors = CounterVec("llm_router_errors", "Errors by kind", ("kind",))
        self.decision_seconds = HistogramVec("llm_router_decision_seconds", "Time to parse, classify and decide", (), DECISION_BUCKETS)
        self.upstream_seconds = HistogramVec("llm_router_upstream_seconds", "Upstream response time", ("model",), LATENCY_BUCKETS)
        self.estimate_ratio = HistogramVec("llm_router_estimate_ratio", "Actual / estimated input tokens", (),
                                           ESTIMATE_RATIO_BUCKETS)
        self.budget_remaining = GaugeVec("llm_router_budget_remaining_usd", "USD left in a spend limit", ("scope",))
        self.downgraded = CounterVec("llm_router_downgraded", "Requests routed under a spent downgrade budget (only models "
                                     "within its prices allowed)", ("route",))
        self.breaker_open = GaugeVec("llm_router_breaker_open", "1 while a model's circuit breaker is open", ("model",))
        self.keys_cooling = GaugeVec("llm_router_keys_cooling", "How many of the provider's keys a 429 has cooled down for "
                                     "the model (it leaves selection when all of them are)", ("model",))
        self.feedback = CounterVec("llm_router_feedback", "Feedback lines posted to /v1/feedback", ("result",))
        for result in ("accepted", "rejected"):  # known label values start at 0, so rate() works from the first scrape
            self.feedback.inc((result,), 0.0)
        self.rated = CounterVec("llm_router_feedback_rated", "Answers rated through /v1/feedback, by the model that answered",
                                ("model",))
        self.rated_score = CounterVec("llm_router_feedback_score", "Sum of the 0..1 ratings, by the model that answered "
                                      "(divide by llm_router_feedback_rated_total for the mean)", ("model",))
        self.affinity_shared = CounterVec("llm_router_affinity_shared", "Conversation placements shared through Redis "
                                          "with the other processes (sent) or learned from them (received)", ("direction",))
        self.reasoning_shared = CounterVec("llm_router_reasoning_shared", "Reasoning of DeepSeek thinking answers shared "
                                           "through Redis with the other processes (sent) or learned from them (received)",
                                           ("direction",))
        for direction in ("sent", "received"):
            self.affinity_shared.inc((direction,), 0.0)
            self.reasoning_shared.inc((direction,), 0.0)
        self.reasoning_filled = CounterVec("llm_router_reasoning_filled", "Assistant messages sent to DeepSeek thinking "
                                           "models without their reasoning_content: given back the reasoning their answer "
                                           "held (kept), or a stand-in (stand_in)", ("source",))
        for source in ("kept", "stand_in"):
            self.reasoning_filled.inc((source,), 0.0)
        self.shadow_requests = CounterVec("llm_router_shadow_requests", "Requests of shadow policies, by the model routing "
                                          "would have chosen (llm_router_requests_total has the model served)",
                                          ("route", "model", "tier"))
        self.shadow_cost = CounterVec("llm_router_shadow_cost_usd", "Shadow policies: what routing's choice would have cost "
                                      "for the tokens reported (compare llm_router_cost_usd_total of the route)", ("route", "model"))
        self.token_counts = CounterVec("llm_router_token_counts", "Anthropic token counts (/v1/messages/count_tokens), by "
                                       "the provider that counted, or 'estimate' when the router answered itself", ("counted_by",))
        self.token_counts.inc(("estimate",), 0.0)
        self.stored = CounterVec("llm_router_stored_responses", "Calls on stored Responses (retrieve, delete, cancel, "
                                 "input items) sent to the provider holding them, by how it was found (remembered, "
                                 "only_provider), or refused", ("provider", "found"))
        self.stored.inc(("", "refused"), 0.0)
        self.forwarded = CounterVec("llm_router_forwarded", "Calls the router does not route (embeddings, moderations, "
                                    "audio, images, files, batches) sent on to the provider a policy's `forward` names, with its key",
                                    ("provider", "api"))
        self.price = GaugeVec("llm_router_price_usd_per_mtok", "What a model is billed at now, USD per 1M tokens, by kind "
                              "(input, output, cached_input, cache_write): it follows price changes and peak hours",
                              ("model", "kind"))
        self.build = GaugeVec("llm_router_build_info", "1, labelled with the code that serves: the request path compiled "
                              "(llm-router compile) or plain Python, and the semantic classifier's kernels in C or numpy",
                              ("code", "kernels"))
        self.build.set(build_labels(), 1.0)
        # Families an adapter keeps itself and hands over at scrape time (the APISIX runner's protocol counters).
        self.sources: list[Callable[[], Iterator]] = []
        # Set where several processes serve together: folds the others' families into this one's at scrape time.
        self.merge: Callable[[list], list] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    @classmethod
    def create(cls) -> "Metrics":
        """Fresh metric families (one registry per runtime, so tests stay independent)."""
        return cls()

    def _all(self):
        return (self.requests, self.responses, self.tokens, self.cache_tokens, self.cost, self.saving, self.decision_seconds,
                self.upstream_seconds, self.estimate_ratio, self.fallbacks, self.errors, self.budget_remaining,
                self.breaker_open, self.keys_cooling, self.feedback, self.rated, self.rated_score, self.affinity_shared, self.reasoning_shared,
                self.reasoning_filled, self.stored, self.shadow_requests, self.shadow_cost, self.token_counts, self.forwarded,
                self.downgraded, self.price, self.build)

    def collect(self) -> Iterator:
        if self.merge is not None:
            yield from self.merge(list(self.collect_own()))
        else:
            yield from self.collect_own()

    def collect_own(self) -> Iterator:
        """This process's families."""
        for vec in self._all():
            yield vec.family()
        for source in self.sources:
            yield from source()

    def describe(self) -> Iterator:
        return iter(())

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


_servers: dict[tuple[str, int], object] = {}
_lock = threading.Lock()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no access log on stderr
        pass


PROBES = {"/healthz": "live", "/readyz": "ready"}


def _app(metrics: Metrics, feedback: object | None, model_of: Callable[[str], str | None] | None = None,
         probe: Callable[[str], tuple[int, dict]] | None = None, usage_log: Callable[..., tuple[int, bytes]] | None = None):
    """/metrics (and every other path) from prometheus-client; POST /v1/feedback into the feedback log;
    /healthz and /readyz from `probe`; POST /v1/usage-log into `usage_log` (APISIX's stream usage)."""
    from llm_router.feedback import MAX_BODY_BYTES, FeedbackError, parse

    prometheus = make_wsgi_app(metrics.registry)
    counting = threading.Lock()  # the server's threads post at once; counters are plain dicts

    def reply(start_response, status: str, body: bytes) -> list[bytes]:
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ, start_response):
        path = environ.get("PATH_INFO")
        if probe is not None and path in PROBES:
            status, answer = probe(PROBES[path])
            return reply(start_response, "200 OK" if status == 200 else f"{status} Service Unavailable", orjson.dumps(answer))
        if path == "/v1/usage-log" and usage_log is not None:
            return _usage_log(environ, start_response, usage_log, reply)
        if path != "/v1/feedback":
            return prometheus(environ, start_response)
        if feedback is None:
            err = FeedbackError(404, "feedback is off: set metrics.feedback_log to a file to collect it")
            return reply(start_response, "404 Not Found", err.body())
        if environ.get("REQUEST_METHOD") != "POST":
            return reply(start_response, "405 Method Not Allowed", FeedbackError(405, "POST feedback as JSON").body())
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = -1
        try:
            if size < 0 or size > MAX_BODY_BYTES:
                raise FeedbackError(413, f"feedback body needs a Content-Length of at most {MAX_BODY_BYTES} bytes")
            lines = parse(environ["wsgi.input"].read(size))
        except FeedbackError as exc:
            with counting:
                metrics.feedback.inc(("rejected",))
            return reply(start_response, f"{exc.status} {'Payload Too Large' if exc.status == 413 else 'Bad Request'}", exc.body())
        for line in lines:
            model = model_of(line["request_id"]) if model_of is not None else None
            if model is not None:
                line["model"] = model
        feedback.write(lines)  # type: ignore[attr-defined]
        with counting:
            for line in lines:
                metrics.rated.inc((line.get("model", "unknown"),))
                metrics.rated_score.inc((line.get("model", "unknown"),), line["score"])
            metrics.feedback.inc(("accepted",), len(lines))
        return reply(start_response, "200 OK", orjson.dumps({"accepted": len(lines)}))

    return app


def _usage_log(environ, start_response, usage_log: Callable[..., tuple[int, bytes]], reply) -> list[bytes]:
    """POST /v1/usage-log, relayed: the handler checks key, method and size, reads the body, answers (status, JSON)."""
    from http import HTTPStatus

    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = -1
    status, body = usage_log(environ.get("REQUEST_METHOD", ""), size, environ["wsgi.input"].read,
                             environ.get("HTTP_AUTHORIZATION"))
    return reply(start_response, f"{status} {HTTPStatus(status).phrase}", body)


def split_listen(listen: str) -> tuple[str, str]:
    """metrics.listen as (host, port text): '[::1]:9464' -> ('::1', '9464'); no host -> 127.0.0.1."""
    host, _, port = str(listen).rpartition(":")
    return host.strip("[]") or "127.0.0.1", port


def serve_metrics(metrics: Metrics, listen: str, feedback: object | None = None,
                  model_of: Callable[[str], str | None] | None = None,
                  probe: Callable[[str], tuple[int, dict]] | None = None,
                  usage_log: Callable[..., tuple[int, bytes]] | None = None) -> tuple[str, int]:
    """Serve /metrics (and POST /v1/feedback into `feedback`, a FeedbackLog) on HOST:PORT in a daemon thread.

    `model_of` maps a request id to the model that answered it, to count ratings per model;
    `probe("live" | "ready")` answers /healthz and /readyz; `usage_log` takes POST /v1/usage-log.
    Port 0 picks a free one; returns the bound address.
    """
    host, port = split_listen(listen)
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    with _lock:
        server = make_server(host, int(port), _app(metrics, feedback, model_of, probe, usage_log), server_class,
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="llm-router-metrics", daemon=True).start()
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
