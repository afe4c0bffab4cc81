"""The config sections the runtime's edges own (state, accounting, metrics, server, secrets, health): fields and values, checked."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from llm_router.config import Config

_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP header name (RFC 9110 token)
_SECONDS = "must be a positive number of seconds"
_BOOL = "must be true or false"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _header(v: Any) -> bool:
    return isinstance(v, str) and _HEADER.fullmatch(v) is not None


def _listen(v: Any) -> bool:
    """'host:port', '[v6]:port' or a bare port, the port a number up to 65535."""
    port = str(v).rpartition(":")[2] if isinstance(v, str) else v
    if isinstance(port, str):
        port = int(port) if port.isdigit() else -1
    return isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _share(v: Any) -> bool:
    return _number(v) and 0 < v <= 1


def _mapping(v: Any) -> bool:
    return isinstance(v, Mapping)


def _own_parser(v: Any) -> bool:
    return True  # checked by edge_section_problems with the field's own parser


Check = tuple[Callable[[Any], bool], str, bool]  # (accepts the value, what it must be, null allowed: the feature is off)

# Every field of each section with what its value must be. Sections a parser of their own checks further: accounting.limits
# (limits.parse_limits), accounting.consumer_policies (below), server.envoy (the Envoy settings), server.orchestrate, health.
CHECKS: dict[str, dict[str, Check]] = {
    "state": {
        "backend": (lambda v: v in ("memory", "redis"), "must be 'memory' or 'redis'", False),
        "url": (lambda v: isinstance(v, str) and v.startswith(("redis://", "rediss://", "unix://")),
                "must be a Redis URL (redis://, rediss:// or unix://)", False),
        "prefix": (_text, "must be a non-empty string", False),
        "refresh_s": (_positive, _SECONDS, False),
        "affinity_keep_s": (_positive, _SECONDS, False),
        "reasoning_keep_s": (_positive, _SECONDS, False),
    },
    "accounting": {
        "limits": (_own_parser, "", False),
        "consumer_header": (_header, "must be an HTTP header name", True),
        "routes": (lambda v: isinstance(v, list) and all(_text(r) for r in v), "must be a list of route names", False),
        "consumer_policies": (_own_parser, "", False),
    },
    "metrics": {
        "listen": (_listen, "must be 'host:port' or a port number", True),
        "decision_log": (_text, "must be a file path", True),
        "feedback_log": (_text, "must be a file path", True),
        "log_prompts": (lambda v: isinstance(v, bool), _BOOL, False),
        "redact_pii": (lambda v: isinstance(v, bool), _BOOL, False),
    },
    "server": {
        "envoy": (_mapping, "must be a mapping", True),
        "orchestrate": (_mapping, "must be a mapping", True),
        "models_endpoint": (lambda v: isinstance(v, bool), _BOOL, False),
        "apisix_fallback": (lambda v: isinstance(v, bool), _BOOL, False),
        "apisix_plugin_name": (_text, "must be a non-empty string", False),
        "apisix_answer_poll_us": (lambda v: _number(v) and 0 <= v <= 10000, "must be a number of microseconds from 0 to 10000",
                                  False),
        "apisix_early_body": (lambda v: isinstance(v, bool), _BOOL, False),
        "apisix_stream_usage": (lambda v: isinstance(v, bool), _BOOL, False),
        "route_header": (_header, "must be an HTTP header name", False),
        "workers": (_count, "must be a whole number >= 1", False),
    },
    "secrets": {
        "missing": (lambda v: v in ("error", "skip"), "must be 'error' or 'skip'", False),
        "refresh_s": (_positive, _SECONDS, False),
        "file": (_mapping, "must be a mapping", True),
        "vault": (_mapping, "must be a mapping", True),
        "aws": (_mapping, "must be a mapping", True),
    },
    "health": {  # the fields of health.HealthConfig; health.health_problems adds the checks across fields
        "window_s": (_count, "must be a whole number >= 1", False),
        "bucket_s": (_count, "must be a whole number >= 1", False),
        "min_requests": (_count, "must be a whole number >= 1", False),
        "error_rate": (_share, "must be a share of failed requests in (0, 1]", False),
        "cooldown_s": (_positive, "must be a number of seconds > 0", False),
        "max_cooldown_s": (_positive, "must be a number of seconds > 0", False),
        "slow_s": (_positive, "must be a number of seconds > 0, or null for none", True),
        "probe_every": (_count, "must be a whole number >= 1", False),
        "max_retry_after_s": (_positive, "must be a number of seconds > 0", False),
    },
}
EDGE_FIELDS = {section: set(fields) for section, fields in CHECKS.items()}


def section_problems(section: str, data: Mapping[str, Any]) -> list[str]:
    """Unknown fields of one edge section and values of the wrong type or range, one line each."""
    checks = CHECKS[section]
    unknown = set(data) - set(checks)
    if unknown:
        return [f"{section}: unknown fields {sorted(unknown)} (known: {sorted(checks)})"]
    out = []
    for name, value in data.items():
        accepts, must, nullable = checks[name]
        if not (value is None and nullable) and not accepts(value):
            out.append(f"{section}.{name}: {must}, got {value!r}")
    return out


def edge_section_problems(cfg: Config) -> list[str]:
    """Everything wrong with the edge sections, named: unknown fields, bad values, limits, consumer policies, health,
    server.orchestrate (server.envoy is the Envoy adapter's: `check` and `serve --envoy` check it)."""
    from llm_router.health import health_problems
    from llm_router.limits import parse_limits
    from llm_router.orchestrate.settings import OrchestrateSettings

    out = [p for section in CHECKS if section != "health" for p in section_problems(section, getattr(cfg, section))]
    if isinstance(cfg.server.get("orchestrate") or {}, Mapping):
        try:
            OrchestrateSettings.from_config(cfg.server)
        except ValueError as exc:
            out.append(str(exc))
    out += consumer_policy_problems(cfg)
    out += health_problems(cfg.health)  # its fields (the table above) and the checks across them
    limits = cfg.accounting.get("limits", [])
    if not isinstance(limits, list):
        out.append(f"accounting.limits: must be a list of limit rules, got {type(limits).__name__}")
    else:
        try:
            parse_limits(limits)
        except ValueError as exc:
            out.append(str(exc))
    return out


def consumer_policy_problems(cfg: Config) -> list[str]:
    """What is wrong with accounting.consumer_policies (consumer id -> policy name), named."""
    mapping = cfg.accounting.get("consumer_policies", {})
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        return ["accounting.consumer_policies: must map consumer ids to policy names"]
    named = sorted({v for v in mapping.values() if v not in cfg.policies})
    return [f"accounting.consumer_policies: unknown policies {named} (known: {sorted(cfg.policies)})"] if named else []
