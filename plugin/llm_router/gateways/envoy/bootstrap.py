"""Envoy bootstraps generated from the catalog: production (providers over TLS) and local (fakes).

Both variants come from `build()`, so routes, filters and limits cannot drift apart; only the
clusters differ. `python -m llm_router.gateways.envoy.bootstrap production > envoy/envoy.yaml`
regenerates the committed production file (a test checks it is current and that
`envoy --mode validate` accepts it).

Request flow: the listener's first route match (a user route, default `/`) carries the policy in
route metadata; ext_proc picks the model, sets the route header and `:path`, the credential, the
body and the fallback chain (slot headers and dynamic metadata, see fallback.py), and clears the
route cache. Envoy then re-matches on the route header: the routed route picks each attempt's
cluster from the slots (a matcher on x-envoy-attempt-count, re-evaluated on every retry) and
retries failures (5xx, 429, reset, connect failure, per-try timeout) on the next model. On the
provider clusters two upstream filters run per attempt: the per-attempt rewrite (skipped on
attempt 1) and the response observer. When the processor is down and the filter fails open, the
request stays on its first route and goes unchanged to the passthrough cluster (the default
upstream, without upstream filters).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from llm_router.config import Config, load_config
from llm_router.gateways.envoy.fallback import ATTEMPT_HEADER, CLUSTER_ATTR, MAX_CHAIN, RETRIABLE_4XX, SLOTS
from llm_router.gateways.envoy.service import LOCAL_REPLY_KEY, METADATA_NAMESPACE
from llm_router.gateways.envoy.settings import CA_BUNDLE, EnvoySettings
from llm_router.plan import ROUTE_HEADER
from llm_router.ratelimits import PREFIXES as RATE_LIMIT_PREFIXES
from llm_router.ratelimits import RETRY_HEADERS

EXT_PROC_CLUSTER = "llm_router_ext_proc"
EXPLAIN_HEADERS = ("x-llm-router-request-id", "x-llm-router-model", "x-llm-router-tier", "x-llm-router-category",
                   "x-llm-router-reason", "x-llm-router-shadow-model")
OBSERVE_FILTER = "llm_router.observe"
ATTEMPT_FILTER = "llm_router.attempt"
ROUTED_ROUTE = "llm-routed"
PASSTHROUGH_CLUSTER = "llm_router_passthrough"  # the default upstream without upstream filters: unrouted traffic
FEEDBACK_CLUSTER = "llm_router_feedback"  # the processor's metrics listener, for POST /v1/feedback
FEEDBACK_PATH = "/v1/feedback"
MAX_RETRIES_BREAKER = 10_000  # concurrent retries per cluster (Envoy's default of 3 would drop fallbacks under load)
BUFFER_SLACK = 1 << 20  # Envoy's buffers hold the body limit plus the rewrite's growth
PRODUCTION_PROCESSOR = "unix:/run/llm-router/ext_proc.sock"
_T = "type.googleapis.com/"


@dataclass(frozen=True, slots=True)
class Upstream:
    """One cluster: where a provider lives (or its local fake)."""

    name: str  # cluster name = Model.upstream
    host: str  # provider host name: TLS SNI, certificate check and Host header
    address: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A client-facing route: a path prefix and the policy its requests use."""

    prefix: str = "/"
    policy: str | Mapping[str, Any] | None = None  # policy name or inline policy fields
    failure_mode: str | None = None  # "open" | "closed"; None = the filter's default


@dataclass(frozen=True, slots=True)
class BootstrapSpec:
    """Everything the generated Envoy config depends on."""

    listen: tuple[str, int]
    processor: str  # ext_proc address: unix:PATH or HOST:PORT
    upstreams: tuple[Upstream, ...]
    default_upstream: str
    routes: tuple[RouteSpec, ...] = (RouteSpec(),)
    admin: tuple[str, int] | None = ("127.0.0.1", 9901)
    route_header: str = ROUTE_HEADER
    failure_allow: bool = False
    message_timeout_ms: int = 500
    body_limit: int = 8 << 20
    route_timeout_s: float = 600.0
    observe_responses: bool = True
    ca_bundle: str = CA_BUNDLE
    fallback: bool = True  # retry failed attempts on the next model of the chain
    answer_timeout_s: float = 120.0  # per attempt (default; the processor sets it per request)
    max_chain: int = MAX_CHAIN  # most models a chain may have
    max_message_timeout_s: float = 60.0  # how long the processor may ask Envoy to wait (a cascade or hedge answer)
    feedback: tuple[str, int] | None = None  # the processor's metrics listener, when it takes POST /v1/feedback


# ---- from config ------------------------------------------------------------------------

def provider_upstreams(cfg: Config, local_ports: Mapping[str, int] | None = None) -> tuple[Upstream, ...]:
    """One Upstream per distinct Model.upstream; local_ports (provider -> port) points them at fakes."""
    from llm_router.router import build_catalog

    catalog = build_catalog(cfg)
    seen: dict[str, Upstream] = {}
    for model in catalog.models.values():
        if model.upstream in seen:
            continue
        provider = catalog.providers[model.provider]
        url = urlsplit(provider.base_url)
        host = url.hostname or provider.host
        if local_ports is not None:
            if provider.name not in local_ports:
                raise ValueError(f"no local port for provider {provider.name!r}")
            seen[model.upstream] = Upstream(model.upstream, host, "127.0.0.1", local_ports[provider.name], tls=False)
        else:
            tls = url.scheme == "https"
            seen[model.upstream] = Upstream(model.upstream, host, host, url.port or (443 if tls else 80), tls=tls)
    return tuple(sorted(seen.values(), key=lambda u: u.name))


def spec_from_config(cfg: Config, *, listen: tuple[str, int], processor: str, local_ports: Mapping[str, int] | None = None,
                     admin: tuple[str, int] | None = ("127.0.0.1", 9901), routes: tuple[RouteSpec, ...] | None = None,
                     settings: EnvoySettings | None = None) -> BootstrapSpec:
    """A bootstrap spec from a config: production clusters, or fakes when local_ports is given."""
    from llm_router.router import build_catalog

    settings = settings or EnvoySettings.from_config(cfg)
    upstreams = provider_upstreams(cfg, local_ports)
    catalog = build_catalog(cfg)
    policy = cfg.policies[cfg.default_policy]
    ref = catalog.models.get(policy.reference_model or "") or max(catalog.models.values(), key=lambda m: m.blended_price)
    return BootstrapSpec(
        listen=listen, processor=processor, upstreams=upstreams, default_upstream=ref.upstream,
        routes=routes or (RouteSpec(),), admin=admin, route_header=cfg.server.get("route_header", ROUTE_HEADER),
        failure_allow=settings.failure_allowed(cfg), message_timeout_ms=settings.message_timeout_ms,
        body_limit=settings.body_limit(cfg), route_timeout_s=settings.route_timeout_s,
        observe_responses=settings.observe_responses, fallback=settings.fallback,
        answer_timeout_s=min(settings.answer_timeout_s, settings.route_timeout_s),
        max_chain=min(MAX_CHAIN, 1 + max((p.fallbacks for p in cfg.policies.values()), default=0)),
        max_message_timeout_s=settings.orchestrate_wait_s(cfg),
        feedback=feedback_address(cfg), ca_bundle=settings.ca_bundle,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def feedback_address(cfg: Config) -> tuple[str, int] | None:
    """Where the processor takes feedback (metrics.listen, with metrics.feedback_log set), if at a fixed port."""
    listen = cfg.metrics.get("listen")
    if not cfg.metrics.get("feedback_log") or not listen:
        return None
    from llm_router.metrics import split_listen

    host, port = split_listen(listen)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return (host, int(port)) if port.isdigit() and int(port) > 0 else None


# ---- the config tree --------------------------------------------------------------------

def _address(addr: str) -> dict[str, Any]:
    if addr.startswith("unix:"):
        return {"pipe": {"path": addr[5:]}}
    host, _, port = addr.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def ext_proc_filter(spec: BootstrapSpec) -> dict[str, Any]:
    """The routing ext_proc filter: one round trip per request; responses are not its business."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER}},
            "failure_mode_allow": spec.failure_allow,
            "message_timeout": _duration(spec.message_timeout_ms / 1000),
            # A cascade or hedge is answered by the processor itself: it asks for this much time.
            "max_message_timeout": _duration(spec.max_message_timeout_s),
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "STREAMED",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            # The header reply is held until the body has arrived: one round trip per request.
            "send_body_without_waiting_for_header_response": True,
            "request_attributes": ["xds.route_metadata"],
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            # The processor overwrites Envoy's retry controls (x-envoy-attempt-count, -max-retries, ...).
            "mutation_rules": {"allow_envoy": True},
        },
    }


def observe_filter(spec: BootstrapSpec) -> dict[str, Any]:
    """The observing ext_proc filter, an upstream filter on the provider clusters: one stream per attempt.

    Observability mode: Envoy sends the request headers (which attempt this is), the response
    headers and every body chunk without waiting for replies, so no chunk of an SSE answer is ever
    delayed. It reads the request id the routing filter left in dynamic metadata, and never blocks
    or fails a request.
    """
    return {
        "name": OBSERVE_FILTER,
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER},
                             "initial_metadata": [{"key": "x-llm-router-service", "value": "observe"}]},
            "observability_mode": True,
            "deferred_close_timeout": "2s",
            "failure_mode_allow": True,
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "NONE",
                "response_body_mode": "STREAMED",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            "metadata_options": {"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            # Only what the observer reads: smaller messages on every attempt.
            "forward_rules": {"allowed_headers": {"patterns": [
                *({"exact": h} for h in (ATTEMPT_HEADER, ":status", "content-encoding", *sorted(RETRY_HEADERS))),
                *({"prefix": p} for p in RATE_LIMIT_PREFIXES)]}},
        },
    }


def attempt_filter(spec: BootstrapSpec) -> dict[str, Any]:
    """The per-attempt rewrite, an upstream filter on the provider clusters, skipped on attempt 1.

    It fails closed (failure_mode_allow false): an attempt it cannot rewrite gets a local 502 (or a
    500 when the processor is unreachable), which Envoy does not retry, so a fallback never leaves
    with the previous provider's key or model.
    """
    ext_proc = {
        "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": EXT_PROC_CLUSTER},
                         "initial_metadata": [{"key": "x-llm-router-service", "value": "attempt"}]},
        "failure_mode_allow": False,
        "message_timeout": _duration(spec.message_timeout_ms / 1000),
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_header_mode": "SEND",
            "response_body_mode": "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
        "request_attributes": [CLUSTER_ATTR],
        "metadata_options": {"forwarding_namespaces": {"untyped": [METADATA_NAMESPACE]},
                             "receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
        "forward_rules": {"allowed_headers": {"patterns": [{"exact": h} for h in (ATTEMPT_HEADER, ":status", "retry-after")]}},
    }
    return {
        "name": ATTEMPT_FILTER,
        "typed_config": {
            "@type": _T + "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {"name": ATTEMPT_FILTER, "typed_config": ext_proc},
            # The first attempt is the routing filter's own call: no second round trip for it.
            "xds_matcher": {"matcher_tree": {
                "input": _header_input(ATTEMPT_HEADER),
                "exact_match_map": {"map": {"1": {"action": {"name": "skip", "typed_config": {
                    "@type": _T + "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}}}},
            }},
        },
    }


def _header_input(name: str) -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": _T + "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                                           "header_name": name}}


def cluster_matcher(spec: BootstrapSpec) -> dict[str, Any]:
    """Each attempt's cluster: attempts made so far (k) -> slot header k+1 -> that cluster.

    Envoy evaluates this before it updates x-envoy-attempt-count for the new attempt; the routing
    filter sets the header to 0 for the first.
    """
    def action(cluster: str) -> dict[str, Any]:
        return {"action": {"name": cluster, "typed_config": {
            "@type": _T + "envoy.extensions.router.cluster_specifiers.matcher.v3.ClusterAction", "cluster": cluster}}}

    names = sorted(u.name for u in spec.upstreams)
    by_attempt = {str(k): {"matcher": {"matcher_tree": {
        "input": _header_input(SLOTS[k]),
        "exact_match_map": {"map": {name: action(name) for name in names}},
    }}} for k in range(spec.max_chain if spec.fallback else 1)}
    return {"matcher_tree": {"input": _header_input(ATTEMPT_HEADER), "exact_match_map": {"map": by_attempt}}}


def retry_policy(spec: BootstrapSpec) -> dict[str, Any]:
    """Envoy's retries walk the chain: the processor sets x-envoy-max-retries to its length - 1."""
    return {
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": list(RETRIABLE_4XX),
        "num_retries": spec.max_chain - 1,
        "per_try_timeout": _duration(spec.answer_timeout_s),
        "refresh_cluster_on_retry": True,
        # The next attempt goes to another provider: no reason to wait.
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.005s"},
    }


def _route_action(spec: BootstrapSpec, upstream: Upstream) -> dict[str, Any]:
    action: dict[str, Any] = {"cluster": PASSTHROUGH_CLUSTER, "timeout": _duration(spec.route_timeout_s),
                              "idle_timeout": _duration(min(spec.route_timeout_s, 300.0))}
    if upstream.tls or upstream.address != "127.0.0.1":
        action["host_rewrite_literal"] = upstream.host
    return action


def routed_route(spec: BootstrapSpec) -> dict[str, Any]:
    """Requests the processor routed (it set the route header): each attempt to its slot's cluster."""
    action: dict[str, Any] = {
        "inline_cluster_specifier_plugin": {"extension": {"name": "llm_router.chain", "typed_config": {
            "@type": _T + "envoy.extensions.router.cluster_specifiers.matcher.v3.MatcherClusterSpecifier",
            "cluster_matcher": cluster_matcher(spec)}}},
        "auto_host_rewrite": True,  # each cluster's endpoint carries its provider's host name
        "timeout": _duration(spec.route_timeout_s),
        "idle_timeout": _duration(min(spec.route_timeout_s, 300.0)),
    }
    if spec.fallback:
        action["retry_policy"] = retry_policy(spec)
    return {
        "name": ROUTED_ROUTE,
        "match": {"prefix": "/", "headers": [{"name": spec.route_header, "present_match": True}]},
        "route": action,
        "request_headers_to_remove": [spec.route_header],
        # Retries replay the body from this buffer (the rewritten body is at most the limit + slack).
        "request_body_buffer_limit": spec.body_limit + BUFFER_SLACK,
    }


def routes(spec: BootstrapSpec) -> list[dict[str, Any]]:
    """The routed route (selected by the route header) first, then the client-facing routes."""
    by_name = {u.name: u for u in spec.upstreams}
    if spec.default_upstream not in by_name:
        raise ValueError(f"default upstream {spec.default_upstream!r} is not a cluster ({sorted(by_name)})")
    out: list[dict[str, Any]] = [routed_route(spec)]
    if spec.feedback is not None:
        out.insert(0, feedback_route())  # first: feedback never goes through the routing filter
    for i, rs in enumerate(spec.routes):
        route: dict[str, Any] = {
            "name": f"llm-{i}",
            "match": {"prefix": rs.prefix},
            "route": _route_action(spec, by_name[spec.default_upstream]),
        }
        if rs.policy is not None:
            policy = {"policy": rs.policy} if isinstance(rs.policy, str) else dict(rs.policy)
            route["metadata"] = {"filter_metadata": {METADATA_NAMESPACE: policy}}
        if rs.failure_mode is not None and (rs.failure_mode == "open") != spec.failure_allow:
            route["typed_per_filter_config"] = {"envoy.filters.http.ext_proc": {
                "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "overrides": {"failure_mode_allow": rs.failure_mode == "open"},
            }}
        out.append(route)
    return out


def feedback_route() -> dict[str, Any]:
    """POST /v1/feedback to the processor's metrics listener, with the routing filter off."""
    return {
        "name": "llm-router-feedback",
        "match": {"path": FEEDBACK_PATH},
        "route": {"cluster": FEEDBACK_CLUSTER, "timeout": "10s"},
        "typed_per_filter_config": {"envoy.filters.http.ext_proc": {
            "@type": _T + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True}},
    }


def http_connection_manager(spec: BootstrapSpec) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "llm",
            "codec_type": "AUTO",
            "stream_idle_timeout": "300s",
            "route_config": {
                "name": "llm",
                "virtual_hosts": [{
                    "name": "llm",
                    "domains": ["*"],
                    "routes": routes(spec),
                    "include_request_attempt_count": True,  # the cluster matcher and the upstream filters read it
                    "include_attempt_count_in_response": True,  # clients see when a fallback answered
                    # Explanation headers come from the processor's dynamic metadata: no response round trip.
                    "response_headers_to_add": [
                        {"header": {"key": h, "value": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{h})%"}, "keep_empty_value": False}
                        for h in EXPLAIN_HEADERS
                    ],
                }],
            },
            "local_reply_config": local_reply_config(),
            "http_filters": [
                ext_proc_filter(spec),
                # After a body rewrite in STREAMED mode Envoy drops content-length; buffering the
                # rewritten body restores the right one (and bounds it).
                {"name": "envoy.filters.http.buffer", "typed_config": {
                    "@type": _T + "envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": spec.body_limit + BUFFER_SLACK}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": _T + "envoy.extensions.filters.http.router.v3.Router"}},
            ],
        },
    }


def local_reply_config() -> dict[str, Any]:
    """Envoy's own error replies (processor down, upstream unreachable, timeouts) in OpenAI's error format.

    The processor's replies already are: they carry dynamic metadata llm_router.local_reply, and a
    key that is present never equals the sentinel below, so the mappers skip them.
    """
    def mapper(low: int, high: int, kind: str) -> dict[str, Any]:
        return {
            "filter": {"and_filter": {"filters": [
                {"status_code_filter": {"comparison": {"op": "GE", "value": {"default_value": low, "runtime_key": "llm_router.na"}}}},
                {"status_code_filter": {"comparison": {"op": "LE", "value": {"default_value": high, "runtime_key": "llm_router.na"}}}},
                {"metadata_filter": {"matcher": {"filter": METADATA_NAMESPACE, "path": [{"key": LOCAL_REPLY_KEY}],
                                                 "value": {"string_match": {"exact": "\u0000never"}}},
                                     "match_if_key_not_found": True}},
            ]}},
            "body_format_override": {"json_format": {"error": {
                "message": "Envoy: %RESPONSE_CODE_DETAILS% %LOCAL_REPLY_BODY%", "type": kind, "param": None,
                "code": "%RESPONSE_CODE%"}}},
        }

    return {"mappers": [mapper(400, 499, "invalid_request_error"), mapper(500, 599, "server_error")]}


def _http2_options() -> dict[str, Any]:
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }}


def processor_cluster(spec: BootstrapSpec) -> dict[str, Any]:
    return {
        "name": EXT_PROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http2_options(),
        "load_assignment": {"cluster_name": EXT_PROC_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(spec.processor)}}]}]},
    }


def provider_cluster(spec: BootstrapSpec, up: Upstream, *, name: str | None = None, filters: bool = True) -> dict[str, Any]:
    """A provider's cluster; with filters, the per-attempt rewrite and the observer run on each attempt."""
    name = name or up.name
    cluster: dict[str, Any] = {
        "name": name,
        "connect_timeout": "5s",
        "per_connection_buffer_limit_bytes": spec.body_limit + BUFFER_SLACK,
        "circuit_breakers": {"thresholds": [{"max_connections": 10_000, "max_pending_requests": 10_000,
                                             "max_requests": 10_000, "max_retries": MAX_RETRIES_BREAKER}]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "hostname": up.host,  # auto_host_rewrite sends it as Host
            "address": {"socket_address": {"address": up.address, "port_value": up.port}}}}]}]},
    }
    options: dict[str, Any] = {"@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"}
    if up.tls:
        cluster["type"] = "LOGICAL_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": _T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": up.host,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "validation_context": {
                    "trusted_ca": {"filename": spec.ca_bundle},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": up.host}}],
                },
            },
        }}
        options["auto_config"] = {"http2_protocol_options": {}, "http_protocol_options": {}}
        options["common_http_protocol_options"] = {"idle_timeout": "300s"}
    else:
        cluster["type"] = "STATIC"
        options["explicit_http_config"] = {"http_protocol_options": {}}
    upstream_filters = []
    if filters and spec.fallback:
        upstream_filters.append(attempt_filter(spec))
    if filters and spec.observe_responses:
        # After the rewrite: it sees the provider's own response, even when the rewrite replaces it.
        upstream_filters.append(observe_filter(spec))
    if upstream_filters:
        options["http_filters"] = [*upstream_filters, {"name": "envoy.filters.http.upstream_codec", "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]
    if up.tls or upstream_filters:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}
    return cluster


def build(spec: BootstrapSpec) -> dict[str, Any]:
    """The Envoy bootstrap as plain data."""
    boot: dict[str, Any] = {
        "static_resources": {
            "listeners": [{
                "name": "llm",
                "address": {"socket_address": {"address": spec.listen[0], "port_value": spec.listen[1]}},
                "per_connection_buffer_limit_bytes": spec.body_limit + BUFFER_SLACK,
                "filter_chains": [{"filters": [http_connection_manager(spec)]}],
            }],
            "clusters": [processor_cluster(spec), *[provider_cluster(spec, u) for u in spec.upstreams],
                         provider_cluster(spec, {u.name: u for u in spec.upstreams}[spec.default_upstream],
                                          name=PASSTHROUGH_CLUSTER, filters=False)],
        },
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {"@type": _T + "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                             "max_active_downstream_connections": 50_000}}]},
    }
    if spec.feedback is not None:
        host, port = spec.feedback
        boot["static_resources"]["clusters"].append({
            "name": FEEDBACK_CLUSTER, "type": "STATIC" if _is_ip(host) else "STRICT_DNS", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": FEEDBACK_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}})
    if spec.admin is not None:
        boot["admin"] = {"address": {"socket_address": {"address": spec.admin[0], "port_value": spec.admin[1]}}}
    return boot


def render(boot: Mapping[str, Any], header: str = "") -> str:
    """YAML text Envoy accepts (no anchors or merge keys)."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(dict(boot), Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=120)
    return header + body


PRODUCTION_HEADER = """\
# Envoy bootstrap for llm-router in production. GENERATED: do not edit by hand; regenerate with
#   python -m llm_router.gateways.envoy.bootstrap production > envoy/envoy.yaml
# (or pass --config your.yaml for your own catalog). Run the processor next to it:
#   llm-router serve --envoy unix:/run/llm-router/ext_proc.sock
# and Envoy: envoy -c envoy/envoy.yaml
"""


def production(cfg: Config | None = None, *, listen: tuple[str, int] = ("0.0.0.0", 10000),
               processor: str = PRODUCTION_PROCESSOR) -> str:
    """The production bootstrap text for a config (default: the built-in catalog)."""
    cfg = cfg or load_config(None)
    return render(build(spec_from_config(cfg, listen=listen, processor=processor)), PRODUCTION_HEADER)


LOCAL_PROCESSOR = "unix:/tmp/llm-router-ext-proc.sock"
LOCAL_FAKE_PORT = 18100
LOCAL_HEADER = """\
# Local llm-router bootstrap: the same routes and filters as envoy.yaml, providers replaced by the
# fake providers on 127.0.0.1. GENERATED: regenerate with
#   python -m llm_router.gateways.envoy.bootstrap local > envoy/envoy-local.yaml
# Run (three terminals, or see `llm-router demo`, which does all of this with free ports):
#   llm-router fakes --port 18100
#   OPENAI_API_KEY=fake-openai-key ANTHROPIC_API_KEY=fake-anthropic-key GEMINI_API_KEY=fake-google-key \\
#   MISTRAL_API_KEY=fake-mistral-key TOGETHER_API_KEY=fake-together-key DEEPSEEK_API_KEY=fake-deepseek-key \\
#     llm-router serve --envoy unix:/tmp/llm-router-ext-proc.sock
#   envoy -c envoy/envoy-local.yaml
"""


def local(cfg: Config | None = None, *, listen: tuple[str, int] = ("127.0.0.1", 10000), processor: str = LOCAL_PROCESSOR,
          first_fake_port: int = LOCAL_FAKE_PORT, admin: tuple[str, int] | None = ("127.0.0.1", 9901)) -> str:
    """The local bootstrap text: providers are fakes on consecutive ports (the order `llm-router fakes --port` uses)."""
    cfg = cfg or load_config(None)
    ports = {name: first_fake_port + i for i, name in enumerate(sorted(cfg.providers))}
    spec = spec_from_config(cfg, listen=listen, processor=processor, local_ports=ports, admin=admin)
    return render(build(spec), LOCAL_HEADER)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llm_router.gateways.envoy.bootstrap",
                                description="print an Envoy bootstrap for llm-router")
    p.add_argument("variant", choices=("production", "local"))
    p.add_argument("--config", "-c", metavar="FILE")
    p.add_argument("--listen", default=None, help="HOST:PORT (default 0.0.0.0:10000, local 127.0.0.1:10000)")
    p.add_argument("--processor", default=None, help=f"ext_proc address (default {PRODUCTION_PROCESSOR})")
    p.add_argument("--fake-port", type=int, default=LOCAL_FAKE_PORT, help="local: first fake provider port (one per provider)")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    if args.variant == "production":
        host, _, port = (args.listen or "0.0.0.0:10000").rpartition(":")
        sys.stdout.write(production(cfg, listen=(host, int(port)), processor=args.processor or PRODUCTION_PROCESSOR))
        return 0
    host, _, port = (args.listen or "127.0.0.1:10000").rpartition(":")
    sys.stdout.write(local(cfg, listen=(host, int(port)), processor=args.processor or LOCAL_PROCESSOR,
                           first_fake_port=args.fake_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
