"""What both adapters share: config loaded once, body -> decision -> upstream mutations, hooks."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from llm_router.accounting import Usage
from llm_router.config import Config
from llm_router.credentials import Credentials
from llm_router.decision import Decision, RouteError
from llm_router.plan import ROUTE_HEADER, UpstreamCall, explanation_headers, plan_call
from llm_router.request import LLMRequest, api_for_path
from llm_router.router import NO_STATE, Policy, Router
from llm_router.secrets.env import EnvStore
from llm_router.strategies.base import StateView


@dataclass(slots=True)
class Exchange:
    """One client request as it moves through the gateway: decision, then response."""

    request_id: str
    route: str
    started: float  # monotonic seconds, from the adapter's clock
    request: LLMRequest | None = None
    decision: Decision | None = None
    policy: Policy | None = None
    call: UpstreamCall | None = None
    error: RouteError | None = None
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A local reply: status, headers and an OpenAI-format JSON body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Observer(Protocol):
    """Accounting, health, metrics and the decision log hook in here."""

    def on_decision(self, ex: Exchange) -> None: ...

    def on_response(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float,
                    headers: Any = None) -> None: ...


class NullObserver:
    """Does nothing (until the accounting and health work fills it in)."""

    def on_decision(self, ex: Exchange) -> None:
        pass

    def on_response(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float,
                    headers: Any = None) -> None:
        pass


class HealthView(Protocol):
    """Which models are out of selection right now (open breaker, spent budget)."""

    def excluded(self) -> frozenset[str]: ...


class NoHealth:
    def excluded(self) -> frozenset[str]:
        return frozenset()


class Runtime:
    """Router + credentials + hooks, built once per config; adapters call decide()."""

    def __init__(self, config: Config, *, credentials: Credentials | None = None, observer: Observer | None = None,
                 state: StateView = NO_STATE, health: HealthView | None = None, route_header: str | None = None):
        self.config = config
        self.router = Router(config)
        self.catalog = self.router.catalog
        self.credentials = credentials if credentials is not None else Credentials.resolve(
            self.catalog, [EnvStore()], missing="skip")
        self.observer: Observer = observer or NullObserver()
        self.state = state
        self.health: HealthView = health or NoHealth()
        self.route_header = route_header or config.server.get("route_header", ROUTE_HEADER)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def new_request_id(self) -> str:
        """A unique, cheap request id: random per process, counter per request."""
        return f"{self._id_prefix}-{next(self._ids):x}"

    def policy_for(self, route_conf: Any) -> Policy | RouteError:
        """The policy for a route's config, compiled once."""
        return self.router.policy_for(route_conf)

    def handles(self, path: str) -> bool:
        """Whether a path is an LLM API the router decides for (others pass through)."""
        return api_for_path(path) is not None

    def decide(self, body: bytes, *, path: str, ex: Exchange, route_conf: Any = None) -> UpstreamCall | Refusal:
        """Route one request: the upstream call to make, or a local reply."""
        policy = self.policy_for(route_conf)
        if isinstance(policy, RouteError):
            ex.error = policy
            return self.refusal(policy, ex)
        ex.policy = policy
        request, decision = self.router.route(body, path=path, policy=policy, state=self.state,
                                              excluded=self.health.excluded())
        ex.request = request
        if isinstance(decision, RouteError):
            ex.error = decision
            self.observer.on_decision(ex)
            return self.refusal(decision, ex)
        ex.decision = decision
        headers = explanation_headers(decision, request_id=ex.request_id, explain=policy.conf.explain)
        ex.call = plan_call(request, decision.model, self.catalog, self.credentials, route_header=self.route_header,
                            response_headers=headers)
        self.observer.on_decision(ex)
        return ex.call

    def attempt(self, ex: Exchange, model_id: str) -> UpstreamCall | None:
        """The call for another model of the exchange's chain (fallback attempts)."""
        if ex.request is None or ex.decision is None:
            return None
        model = next((m for m in ex.decision.chain if m.id == model_id), None) or self.catalog.models.get(model_id)
        if model is None:
            return None
        return plan_call(ex.request, model, self.catalog, self.credentials, route_header=self.route_header,
                         response_headers=ex.call.response_headers if ex.call else ())

    def refusal(self, error: RouteError, ex: Exchange) -> Refusal:
        """An OpenAI-format error reply that names the problem."""
        headers = (("content-type", "application/json"), ("x-llm-router-request-id", ex.request_id))
        return Refusal(error.status, headers, orjson.dumps(error.openai_body()))

    def on_response(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float,
                     headers: Any = None) -> None:
        """Adapters report each finished upstream response here (headers: the upstream response
        headers as (name, value) pairs or a mapping, for rate-limit signals; may be None)."""
        self.observer.on_response(ex, status, usage, latency_s, headers)

    async def start(self) -> None:
        """Start background work (state refresh, secret refresh); adapters call it once at startup."""

    async def stop(self) -> None:
        """Stop background work and flush; adapters call it on shutdown."""
