"""The `server.envoy` config section: how the ext_proc processor and its Envoy are set up."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llm_router.config import Config, ConfigError, format_validation

TRANSPORTS = ("h2", "grpclib", "grpcio")
ORCHESTRATE_GRACE_S = 5.0
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian/Ubuntu system CA bundle


class EnvoySettings(BaseModel):
    """server.envoy: processor transport and the limits the generated bootstrap shares with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["h2", "grpclib", "grpcio"] = "h2"
    observe_responses: bool = True  # usage and status from responses (accounting, health)
    max_body_bytes: int | None = Field(default=None, gt=0)  # None: each policy's max_body_bytes
    message_timeout_ms: int = Field(default=500, ge=1, le=60_000)  # Envoy's wait per ext_proc message
    failure_mode: Literal["open", "closed"] | None = None  # None: the default policy's failure_mode
    route_timeout_s: float = Field(default=600.0, gt=0)  # whole-request cap; long SSE answers need minutes
    fallback: bool = True  # Envoy retries a failed attempt on the next model of the decision's chain
    first_byte_timeout_s: float = Field(default=30.0, gt=0)  # streams: per attempt, until the response starts
    answer_timeout_s: float = Field(default=120.0, gt=0)  # non-streaming: per attempt, until the (whole) answer starts
    grace_s: float = Field(default=5.0, ge=0)  # shutdown: time for streams in flight
    # CA certificates Envoy trusts for providers (a private CA, or RHEL's /etc/pki/tls/certs/ca-bundle.crt).
    # The file is read on Envoy's host, which may not be the one generating the bootstrap: no existence check.
    ca_bundle: str = CA_BUNDLE

    @field_validator("ca_bundle")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path to a PEM file of CA certificates, got {value!r}")
        return value

    @classmethod
    def from_config(cls, cfg: Config) -> "EnvoySettings":
        """Validated settings; a ConfigError names the bad field under server.envoy."""
        data = cfg.server.get("envoy") or {}
        if not isinstance(data, dict):
            raise ConfigError(["server.envoy: must be a mapping"])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError([f"server.envoy.{line}" for line in format_validation(exc)]) from None

    def failure_allowed(self, cfg: Config) -> bool:
        """Whether Envoy passes requests through when the processor is down (fail-open)."""
        mode = self.failure_mode or cfg.policies[cfg.default_policy].failure_mode
        return mode == "open"

    def orchestrate_wait_s(self, cfg: Config) -> float:
        """How long Envoy waits for a cascade/hedge answered by the processor: its deadline plus a grace."""
        from llm_router.orchestrate.settings import OrchestrateSettings

        try:
            deadline = OrchestrateSettings.from_config(cfg.server).deadline_s
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        return deadline + ORCHESTRATE_GRACE_S

    def body_limit(self, cfg: Config) -> int:
        """The largest request body the processor accepts under any policy."""
        limits = [p.max_body_bytes for p in cfg.policies.values()]
        top = max(limits) if limits else 8 << 20
        return min(top, self.max_body_bytes) if self.max_body_bytes else top
