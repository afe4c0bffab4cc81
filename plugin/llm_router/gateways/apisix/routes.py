"""APISIX objects for llm-router: provider upstreams, and a route's plugins added or removed.

Pure functions over the Admin API's JSON: no I/O here (admin.py talks to APISIX).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llm_router.catalog import Catalog
from llm_router.gateways.apisix.runner import PLUGIN_NAME

PRE_REQ = "ext-plugin-pre-req"
POST_RESP = "ext-plugin-post-resp"
SPLIT = "traffic-split"
LOGGER = "http-logger"
USAGE_LOG_PATH = "/v1/usage-log"
UPSTREAM_PREFIX = "llm-"
# Plugins that cannot run with ext-plugin-post-resp (it makes the upstream call itself).
POST_RESP_CONFLICTS = ("proxy-control", "proxy-mirror", "proxy-cache")
# Timeouts (s): SSE answers of long generations may pause between events for a while.
TIMEOUTS = {"connect": 10, "send": 60, "read": 600}


class RouteRefused(Exception):
    """A route llm-router must not be enabled on as it is; the message says why and what to do."""


def header_var(header: str) -> str:
    """The nginx variable APISIX matches a request header with: http_x_llm_router_upstream."""
    return "http_" + header.lower().replace("-", "_")


def upstream_id(name: str, prefix: str = UPSTREAM_PREFIX) -> str:
    """The APISIX upstream id for a catalog upstream name."""
    return f"{prefix}{name}"


def provider_upstreams(catalog: Catalog, prefix: str = UPSTREAM_PREFIX) -> dict[str, dict[str, Any]]:
    """One APISIX upstream per catalog upstream name: TLS with SNI, Host rewritten, long read timeout."""
    out: dict[str, dict[str, Any]] = {}
    for model in catalog.models.values():
        name = model.upstream
        if upstream_id(name, prefix) in out:
            continue
        provider = catalog.providers[model.provider]
        url = urlsplit(provider.base_url)
        https = url.scheme == "https"
        port = url.port or (443 if https else 80)
        host = url.hostname or provider.host
        up: dict[str, Any] = {
            "name": upstream_id(name, prefix),
            "desc": f"llm-router: {provider.name} ({provider.base_url}); traffic-split sends requests routed to '{name}' here",
            "type": "roundrobin",
            "scheme": "https" if https else "http",
            "nodes": [{"host": host, "port": port, "weight": 1}],
            "pass_host": "rewrite",  # Host (and the TLS SNI) must be the provider's, not the gateway's
            "upstream_host": host,
            "timeout": dict(TIMEOUTS),
            "keepalive_pool": {"size": 64, "idle_timeout": 60, "requests": 1000},
        }
        if https:
            up["tls"] = {"verify": True}
        out[upstream_id(name, prefix)] = up
    return dict(sorted(out.items()))


def split_rules(catalog: Catalog, route_header: str, prefix: str = UPSTREAM_PREFIX) -> list[dict[str, Any]]:
    """traffic-split rules: the routing header's value picks the provider upstream."""
    var = header_var(route_header)
    names = sorted({m.upstream for m in catalog.models.values()})
    return [{"match": [{"vars": [[var, "==", name]]}],
             "weighted_upstreams": [{"upstream_id": upstream_id(name, prefix), "weight": 1}]} for name in names]


def _mentions(value: Any, needles: tuple[str, ...]) -> bool:
    text = json.dumps(value).lower() if not isinstance(value, str) else value.lower()
    return any(n in text for n in needles)


def _ours(rule: dict[str, Any], var: str) -> bool:
    """Whether a traffic-split rule is one llm-router added (it matches on the routing header)."""
    return _mentions(rule.get("match", []), (var,))


def check_route(route: dict[str, Any], route_header: str, *, post_resp: bool = False,
                stream_usage: str | None = None) -> list[str]:
    """Why llm-router must not be enabled on this route (empty: fine)."""
    var = header_var(route_header)
    needles = (var, route_header.lower())
    problems = []
    if _mentions(route.get("vars", []), needles) or _mentions(route.get("filter_func", ""), needles):
        problems.append(
            f"the route's vars/filter_func read the routing header {route_header!r} ({var}). APISIX caches that "
            f"variable before the runner overwrites the header, so traffic-split would then follow a value the "
            f"client chose (a spoofed header reaches the other provider). Remove {var} from the route's vars "
            f"(route on another header, or on the path) and run enable again.")
    for name, conf in (route.get("plugins") or {}).items():
        if name in (PRE_REQ, POST_RESP):
            continue
        checked = conf
        if name == SPLIT and isinstance(conf, dict):
            checked = [r for r in conf.get("rules", []) if not _ours(r, var)]
        if _mentions(checked, needles):
            problems.append(
                f"plugin {name!r} reads the routing header {route_header!r}; only llm-router may set and read it "
                f"(a value read before the runner runs can be the client's). Remove that reference first.")
    pre = (route.get("plugins") or {}).get(PRE_REQ)
    if isinstance(pre, dict):
        others = sorted({c.get("name") for c in pre.get("conf", []) if isinstance(c, dict) and c.get("name") != PLUGIN_NAME})
        if others:
            problems.append(f"{PRE_REQ} already runs other runner plugins {others}; the llm-router runner serves only "
                            f"{PLUGIN_NAME!r} (APISIX has one runner)")
    if not (route.get("upstream") or route.get("upstream_id") or route.get("service_id")):
        problems.append("the route has no upstream, upstream_id or service_id; traffic-split needs the route's "
                        "default upstream for requests the router passes through")
    if post_resp:
        clash = [p for p in POST_RESP_CONFLICTS if p in (route.get("plugins") or {})]
        if clash:
            problems.append(f"{POST_RESP} cannot run with {clash} (it makes the upstream call itself); "
                            f"enable without --post-resp")
    if stream_usage:
        if not post_resp:
            problems.append("--stream-usage needs --post-resp: the runner learns of each stream at its response call")
        logger = (route.get("plugins") or {}).get(LOGGER)
        if isinstance(logger, dict) and not _our_logger(logger):
            problems.append(f"the route already has its own {LOGGER} (APISIX runs one per route); streams' usage needs "
                            f"one that posts to the runner's {USAGE_LOG_PATH}: enable without --stream-usage")
    return problems


def usage_logger(url: str, key: str | None = None) -> dict[str, Any]:
    """http-logger posting each streamed exchange (request headers, the body it copied as it streamed) to the runner;
    with the usage log's key as its Authorization."""
    return {**({"auth_header": f"Bearer {key}"} if key else {}),
        "uri": url,
        "include_resp_body": True,
        # only event streams: JSON answers are read at post-resp already
        "include_resp_body_expr": [["sent_http_content_type", "~~", "text/event-stream"]],
        "max_resp_body_bytes": 16 << 20,  # the usage block ends the stream: keep all of it
        "batch_max_size": 100,
        "inactive_timeout": 1,
        "timeout": 10,
        "concat_method": "json",
    }


def _our_logger(conf: dict[str, Any]) -> bool:
    return str(conf.get("uri", "")).endswith(USAGE_LOG_PATH)


@dataclass(frozen=True)
class EnableOptions:
    """What `llm-router apisix enable` adds to a route."""

    conf_value: str = "{}"  # the runner conf JSON (a policy name or inline policy)
    route_header: str = "x-llm-router-upstream"
    prefix: str = UPSTREAM_PREFIX
    post_resp: bool = False
    allow_degradation: bool = False
    stream_usage: str | None = None  # the runner's /v1/usage-log URL: http-logger posts streams' bodies there
    stream_usage_key: str | None = None  # $LLM_ROUTER_USAGE_LOG_KEY: the runner refuses posts without it


def enable(route: dict[str, Any], catalog: Catalog, opts: EnableOptions) -> dict[str, Any]:
    """The route with ext-plugin-pre-req and traffic-split rules added (other plugins kept)."""
    problems = check_route(route, opts.route_header, post_resp=opts.post_resp, stream_usage=opts.stream_usage)
    if problems:
        raise RouteRefused("; ".join(problems))
    out = copy.deepcopy(route)
    plugins = out.setdefault("plugins", {})
    entry = {"name": PLUGIN_NAME, "value": opts.conf_value}
    plugins[PRE_REQ] = {"conf": [entry], "allow_degradation": opts.allow_degradation}
    if opts.post_resp:
        # accounting only: if the runner is down the answer still reaches the client
        plugins[POST_RESP] = {"conf": [dict(entry)], "allow_degradation": True}
    if opts.stream_usage:
        plugins[LOGGER] = usage_logger(opts.stream_usage, opts.stream_usage_key)
    var = header_var(opts.route_header)
    split = plugins.get(SPLIT) if isinstance(plugins.get(SPLIT), dict) else {}
    theirs = [r for r in split.get("rules", []) if not _ours(r, var)]
    plugins[SPLIT] = {**split, "rules": split_rules(catalog, opts.route_header, opts.prefix) + theirs}
    return out


def disable(route: dict[str, Any], route_header: str) -> dict[str, Any]:
    """The route without llm-router's plugins and split rules (everything else kept)."""
    out = copy.deepcopy(route)
    plugins = out.get("plugins") or {}
    for name in (PRE_REQ, POST_RESP):
        conf = plugins.get(name)
        if isinstance(conf, dict):
            rest = [c for c in conf.get("conf", []) if not (isinstance(c, dict) and c.get("name") == PLUGIN_NAME)]
            if rest:
                plugins[name] = {**conf, "conf": rest}
            else:
                del plugins[name]
    logger = plugins.get(LOGGER)
    if isinstance(logger, dict) and _our_logger(logger):
        del plugins[LOGGER]
    split = plugins.get(SPLIT)
    if isinstance(split, dict):
        var = header_var(route_header)
        rest = [r for r in split.get("rules", []) if not _ours(r, var)]
        if rest:
            plugins[SPLIT] = {**split, "rules": rest}
        else:
            del plugins[SPLIT]
    if "plugins" in out and not plugins:
        del out["plugins"]
    return out


def upstream_ids(route: dict[str, Any]) -> list[str]:
    """Every upstream id a route's traffic-split rules point to."""
    split = (route.get("plugins") or {}).get(SPLIT) or {}
    ids = {w.get("upstream_id") for r in split.get("rules", []) for w in r.get("weighted_upstreams", [])}
    return sorted(i for i in ids if i)


def validate_plugin_conf(route: dict[str, Any]) -> list[str]:
    """The checks APISIX's schema makes on the ext-plugin confs we write (so a PUT cannot fail on them)."""
    problems = []
    for name in (PRE_REQ, POST_RESP):
        conf = (route.get("plugins") or {}).get(name)
        if conf is None:
            continue
        items = conf.get("conf")
        if not isinstance(items, list) or not items:
            problems.append(f"plugins.{name}.conf: needs at least one item")
            continue
        for i, item in enumerate(items):
            n, v = item.get("name"), item.get("value")
            if not isinstance(n, str) or not 1 <= len(n) <= 128:
                problems.append(f"plugins.{name}.conf[{i}].name: must be a string of 1-128 characters")
            if not isinstance(v, str):
                problems.append(f"plugins.{name}.conf[{i}].value: must be a string (JSON encoded)")
    return problems
