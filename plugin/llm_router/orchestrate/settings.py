"""The runner's own upstream calls (cascade, hedge, runner-side fallback): config section `server.orchestrate`."""
from __future__ import annotations

import ssl
from dataclasses import dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class OrchestrateSettings:
    """How the runner calls providers itself: directly, or through the gateway's egress route."""

    egress: str | None = None  # e.g. http://127.0.0.1:9080/llm-egress: send there with the route header
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 120.0  # between bytes; the per-call budget is the policy's timeout_s
    deadline_s: float = 55.0  # whole orchestration (APISIX waits 60 s for the runner's reply)
    fallback_timeout_s: float = 30.0  # per model when a plain fallback chain (no scorer) is walked
    http2: bool = True  # negotiated by ALPN on https; cleartext stays HTTP/1.1
    max_connections: int = 200
    max_keepalive: int = 50
    max_response_bytes: int = 16 << 20
    verify_tls: bool = True
    ca_bundle: str | None = None  # PEM file of CA certificates to trust instead of the system's (a private CA)

    @classmethod
    def from_config(cls, server: Mapping[str, Any] | None) -> "OrchestrateSettings":
        """From `server.orchestrate`; raises ValueError naming the field."""
        data = (server or {}).get("orchestrate") or {}
        where = "server.orchestrate"
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown} (known: {sorted(known)})")
        out: dict[str, Any] = {}
        for name, value in data.items():
            default = known[name].default
            if name == "egress":
                if value is not None and (not isinstance(value, str) or not value.startswith(("http://", "https://"))):
                    raise ValueError(f"{where}.egress: must be an http:// or https:// URL, got {value!r}")
                out[name] = value.rstrip("/") if value else None
            elif name == "ca_bundle":
                if value is not None:
                    tls_context(value, f"{where}.ca_bundle")
                out[name] = value
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{where}.{name}: must be true or false, got {value!r}")
                out[name] = value
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise ValueError(f"{where}.{name}: must be a positive number, got {value!r}")
                out[name] = type(default)(value)
        return cls(**out)


def tls_context(ca_bundle: str, where: str = "ca_bundle") -> ssl.SSLContext:
    """A verifying client context that trusts the CAs in a PEM file; raises ValueError naming the problem."""
    if not isinstance(ca_bundle, str) or not ca_bundle:
        raise ValueError(f"{where}: must be the path of a PEM file of CA certificates, got {ca_bundle!r}")
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file: {ca_bundle}") from None
    except ssl.SSLError:
        raise ValueError(f"{where}: {ca_bundle} holds no PEM CA certificate that can be loaded") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read {ca_bundle}: {exc.strerror or exc}") from None
