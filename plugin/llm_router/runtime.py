"""What both adapters share: config loaded once, body -> decision -> upstream mutations, hooks."""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from pydantic import BaseModel

from llm_router import stored
from llm_router.accounting import Usage
from llm_router.catalog import Model, Tier, provider_path
from llm_router.affinity import response_key
from llm_router.config import Config, ConfigError, ModelConf, utc_now
from llm_router.credentials import Credentials
from llm_router.decision import Decision, RouteError
from llm_router.edge_sections import consumer_policy_problems, edge_section_problems, section_problems
from llm_router.forward import PRICED_APIS, forward_path, provider_root
from llm_router.models_endpoint import models_body, models_path
from llm_router.plan import REQUEST_ID_HEADER, ROUTE_HEADER, UpstreamCall, explanation_headers, plan_call, plan_stored
from llm_router.request import LLMRequest, RequestError, api_for_path, parse_request
from llm_router.router import NO_STATE, Policy, Router
from llm_router.strategies.base import StateView
from llm_router.token_count import counter_for, is_count_path

if TYPE_CHECKING:  # built on demand by _enable_telemetry
    from llm_router.limits import SpendLimits
    from llm_router.metrics import Metrics
    from llm_router.state import SharedState
    from llm_router.telemetry import Telemetry

log = logging.getLogger("llm_router")


@dataclass(slots=True, init=False)
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

    def __init__(self, request_id: str, route: str, started: float, request: LLMRequest | None = None,
                 decision: Decision | None = None, policy: Policy | None = None, call: UpstreamCall | None = None,
                 error: RouteError | None = None, attempt: int = 1, extra: dict[str, Any] | None = None) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.request_id = request_id
        self.route = route
        self.started = started
        self.request = request
        self.decision = decision
        self.policy = policy
        self.call = call
        self.error = error
        self.attempt = attempt
        self.extra = {} if extra is None else extra


@dataclass(slots=True)
class Refusal:
    """A local reply: status, headers and a JSON body (an OpenAI-format error, or the models list)."""

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


def _no_cooling(_model_id: str) -> frozenset[int]:
    return frozenset()


class NoHealth:
    def excluded(self) -> frozenset[str]:
        return frozenset()


class Exclusions:
    """Models out of selection: open circuit breakers plus spent model budgets."""

    def __init__(self, *views: Any):
        self.views = views

    def excluded(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for v in self.views:
            found = v.excluded()
            if found:
                out = out | found if out else found
        return out


def consumer_of(headers: Any, header: str | None) -> str | None:
    """Who is calling: a configured header, else a short hash of the client's credential."""
    if headers is None:
        return None
    from llm_router.health import header_value

    if header:
        value = header_value(headers, header.lower())
        if value:
            return value[:128]
    for name in ("authorization", "x-api-key", "api-key"):
        value = header_value(headers, name)
        if value:
            return "key:" + hashlib.sha256(value.encode()).hexdigest()[:12]
    return None


def _changed_fields(before: ModelConf, after: ModelConf) -> list[str]:
    """What differs between two versions of a model's config: 'name gpt-4o -> gpt-6.1-sol', 'input_price 0.15 -> 0.3', ..."""
    out = []
    for name in ModelConf.model_fields:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            nested = isinstance(old, BaseModel) or isinstance(new, BaseModel)  # body rules: too long for a log line
            out.append(f"{name} changed" if nested else f"{name} {old} -> {new}")
    return out


STALL_S = 10.0  # /healthz fails when the event loop has not run the heartbeat for this long
# Config sections a running process cannot take on reload (see Runtime.prepare_reload).
RESTART_SECTIONS = ("providers", "server", "secrets", "state", "accounting", "health", "metrics")
# ... except these server settings: how the APISIX runner treats each call, read again after a reload.
RELOADABLE_SERVER = frozenset({"apisix_stream_usage", "apisix_fallback", "apisix_answer_poll_us", "apisix_early_body"})


def _bound(config: Config, section: str) -> Any:
    """What of a config section a reload may not change."""
    value = getattr(config, section)
    if section == "server":
        return {k: v for k, v in value.items() if k not in RELOADABLE_SERVER}
    return value


async def reload_from_file(runtime: Runtime, path: str | None, adjust: Any = None) -> bool:
    """SIGHUP: read the config file again and route with it; on any problem keep the old one and log why.

    `adjust` maps the loaded config as the process's start did (an APISIX worker drops metrics.listen).
    """
    from llm_router.config import load_config

    try:
        config = await asyncio.to_thread(load_config, path)
        if adjust is not None:
            config = adjust(config)
        router = await asyncio.to_thread(runtime.prepare_reload, config)
    except ConfigError as exc:
        log.error("config reload refused, still routing with the previous config: %s", "; ".join(exc.problems))
        return False
    except Exception as exc:  # noqa: BLE001 -- a reload must never take the process down
        log.error("config reload failed (%s: %s), still routing with the previous config", type(exc).__name__, exc)
        return False
    runtime.apply_reload(config, router)
    log.info("config reloaded from %s", path or "the built-in defaults")
    return True


def defer_sighup() -> Any:
    """Until the event loop takes SIGHUP, remember one instead of dying of it (the default action).

    Returns a function telling whether one came; the loop's handler then runs once for it.
    """
    import signal

    hit: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: hit.append(signum))
    return lambda: bool(hit)


def sighup_reloader(runtime: Runtime, path: str | None, adjust: Any = None) -> Any:
    """A SIGHUP handler for the running event loop: one config reload at a time."""
    import asyncio

    lock = asyncio.Lock()

    async def reload() -> None:
        async with lock:
            await reload_from_file(runtime, path, adjust)

    return lambda: asyncio.ensure_future(reload())


class Runtime:
    """Router + credentials + hooks, built once per config; adapters call decide()."""

    def __init__(self, config: Config, *, credentials: Credentials | None = None, observer: Observer | None = None,
                 state: StateView = NO_STATE, health: HealthView | None = None, route_header: str | None = None,
                 telemetry: bool = True):
        self.config = config
        self.router = Router(config)
        self.catalog = self.router.catalog
        self.refresher = None
        if credentials is None:
            from llm_router.secrets.base import SecretError
            from llm_router.secrets.registry import SecretRefresher, build_stores

            bad = section_problems("secrets", config.secrets)
            if bad:
                raise ConfigError(bad, "secrets")
            missing = config.secrets.get("missing", "error")
            try:
                stores = build_stores(config.secrets)
                credentials = Credentials.resolve(self.catalog, stores, missing=missing)
            except SecretError as exc:
                raise ConfigError([str(exc)], "secrets") from None
            self.refresher = SecretRefresher(lambda: Credentials.resolve(self.catalog, stores, missing=missing),
                                             self._apply_credentials, stores,
                                             refresh_s=float(config.secrets.get("refresh_s", 300)))
        self.credentials = credentials
        self.keyless = self._keyless()
        self._carriers: dict[str, Model] = {}  # provider -> a stand-in model that carries its upstream (forwarded calls)
        self.observer: Observer = observer or NullObserver()
        self.state = state
        self.health: HealthView = health or NoHealth()
        self.cooling_keys: Callable[[str], frozenset[int]] = _no_cooling  # a model's rate-limited keys (health's, with telemetry)
        self.route_header = route_header or config.server.get("route_header", ROUTE_HEADER)
        self.consumer_header: str | None = config.accounting.get("consumer_header")
        # consumer id (the consumer_header's value, or "key:<hash>" of the client's credential) -> the policy it gets
        bad = consumer_policy_problems(config)
        if bad:
            raise ConfigError(bad)
        self.consumer_policies: dict[str, str] = dict(config.accounting.get("consumer_policies") or {})
        self.serve_models = config.server.get("models_endpoint", True) is not False
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._id_random = os.urandom(6 * 1024).hex()
        self.shared: SharedState | None = None
        self.affinity_sync: Any = None  # llm_router.affinity_sync.AffinitySync, with state in Redis
        self.reasoning_sync: Any = None  # llm_router.reasoning_sync.ReasoningSync, with state in Redis
        self.limits: SpendLimits | None = None
        self._dearer_cache: dict[tuple[float | None, float | None], frozenset[str]] = {}
        self.metrics: Metrics | None = None
        self.telemetry: Telemetry | None = None
        self.orchestrator: Any = None  # llm_router.orchestrate: the runner's own calls (cascade, hedge), made on first use
        self._metrics_address: tuple[str, int] | None = None
        self.feedback: Any = None  # llm_router.feedback.FeedbackLog, while /v1/feedback is served
        self.usage_log: Any = None  # POST /v1/usage-log's handler (the APISIX runner's, for streams' usage)
        self.serving = False  # the adapter is listening and not draining (what /readyz reports)
        self._beat = time.monotonic()  # the event loop's last heartbeat (what /healthz checks)
        self._heartbeat: Any = None
        self._catalog_clock_task: Any = None
        if observer is None and telemetry:
            self._build_telemetry(state_given=state is not NO_STATE, health_given=health is not None)

    def _build_telemetry(self, *, state_given: bool, health_given: bool) -> None:
        """Shared state, health, spend limits, metrics and the decision log, from the config sections."""
        from llm_router.decision_log import DecisionLog, SecretMask
        from llm_router.health import Health, HealthConfig
        from llm_router.limits import SpendLimits, parse_limits
        from llm_router.metrics import Metrics
        from llm_router.state import SharedState, make_store
        from llm_router.telemetry import Telemetry

        cfg = self.config
        try:
            problems = edge_section_problems(cfg)
            if problems:
                raise ValueError("; ".join(problems))
            shared = SharedState(make_store(cfg.state), refresh_s=float(cfg.state.get("refresh_s", 0.25)))
            health = Health(shared, list(self.catalog.models), HealthConfig.from_dict(cfg.health),
                            keys=self._key_counts())
            limits = SpendLimits(shared, parse_limits(cfg.accounting.get("limits", [])), list(self.catalog.models),
                                 routes=cfg.accounting.get("routes", []))
        except (ValueError, TypeError) as exc:
            raise ConfigError([str(exc)]) from None
        log = DecisionLog(cfg.metrics.get("decision_log"), log_prompts=bool(cfg.metrics.get("log_prompts", False)),
                          redact=bool(cfg.metrics.get("redact_pii", True)), mask=SecretMask(self.credentials.values()))
        metrics = Metrics.create()
        telemetry = Telemetry(self.catalog, metrics, health, limits, log)
        self.shared, self.limits, self.metrics, self.telemetry = shared, limits, metrics, telemetry
        self.cooling_keys = health.cooling_keys
        self._show_prices()
        filled = metrics.reasoning_filled
        self.router.reasoning.on_recall = lambda found: filled.inc(("kept" if found else "stand_in",))
        if cfg.state.get("backend") == "redis":
            from llm_router.affinity_sync import AffinitySync
            from llm_router.reasoning_sync import ReasoningSync

            def counter(kind: str, shared: Any) -> Callable[[str, float], None]:
                def count(what: str, n: float) -> None:
                    if what == "error":
                        metrics.errors.inc((kind,), n)
                    else:
                        shared.inc((what,), n)
                return count

            url, prefix = cfg.state.get("url", "redis://127.0.0.1:6379/0"), cfg.state.get("prefix", "llmr")
            self.affinity_sync = AffinitySync(self.router.affinity, url, prefix=prefix,
                                              count=counter("affinity_sync", metrics.affinity_shared),
                                              keep_s=float(cfg.state.get("affinity_keep_s", 3600)))
            self.reasoning_sync = ReasoningSync(self.router.reasoning, url, prefix=prefix,
                                                count=counter("reasoning_sync", metrics.reasoning_shared),
                                                keep_s=float(cfg.state.get("reasoning_keep_s", 3600)))
        shared.on_refresh(telemetry.refresh)
        self.observer = telemetry
        if not state_given:
            self.state = health
        if not health_given:
            self.health = Exclusions(health, limits)

    def _apply_credentials(self, fresh: Credentials) -> None:
        """Rotated secrets take effect for the next request; the log mask learns the new values. With secrets.missing:
        skip a refresh may find a key that was missing or miss one that was there: which models have a key, and how
        many keys each has (for per-key cool-downs), follow."""
        before = self.keyless
        self.credentials.replace_with(fresh)
        self.keyless = self._keyless()
        if self.keyless != before:
            for mid in sorted(before - self.keyless):
                log.info("secret refresh: %s has a credential again and is back in selection", mid)
            for mid in sorted(self.keyless - before):
                log.warning("secret refresh: %s has no credential now and is out of selection", mid)
        if self.telemetry is not None:
            self.telemetry.log.mask.set(self.credentials.values())
            self.telemetry.health.set_keys(self._key_counts())

    def _key_counts(self) -> dict[str, int]:
        """How many keys each model's provider has (for per-key cool-downs)."""
        return {m.id: self.credentials.count(m.provider) for m in self.catalog.models.values()}

    def _keyless(self) -> frozenset[str]:
        # Models whose provider has no credential never leave the gateway without one: they are
        # out of selection (with secrets.missing: skip; with 'error' loading has already failed).
        return frozenset(m.id for m in self.catalog.models.values()
                         if self.catalog.providers[m.provider].auth != "none" and not self.credentials.has(m.provider))

    def prepare_reload(self, config: Config) -> Router:
        """A router for `config`, when it changes only what a running process can take; else ConfigError.

        Policies, classifiers (a retrained learned model file is read again) and the fields of
        existing models (prices, tiers, quality, capabilities, tags) are taken. Providers, which
        models exist and where they go, secrets, state, accounting, health, metrics and server
        settings are bound to the gateway's clusters and to running background work: changing
        them needs a restart, and the whole reload is refused naming them.
        """
        problems = [f"{name}: changed; restart the process to apply it" for name in RESTART_SECTIONS
                    if _bound(config, name) != _bound(self.config, name)]
        gone = sorted({p for p in self.consumer_policies.values() if p not in config.policies})
        if gone:
            problems.append(f"policies: {gone} removed, which accounting.consumer_policies names; restart with a config "
                            "that maps those consumers elsewhere")
        router = Router(config)
        old, new = self.catalog.models, router.catalog.models
        if set(old) != set(new):
            added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
            problems.append(f"models: {'added ' + ', '.join(added) if added else ''}{'; ' if added and removed else ''}"
                            f"{'removed ' + ', '.join(removed) if removed else ''}; restart the process to apply it")
        for mid in sorted(set(old) & set(new)):
            if (old[mid].provider, old[mid].upstream) != (new[mid].provider, new[mid].upstream):
                problems.append(f"models.{mid}: provider or upstream changed; restart the process to apply it")
        if problems:
            raise ConfigError(problems, "reload")
        return router

    def apply_reload(self, config: Config, router: Router) -> None:
        """Route the next request with `router` (from prepare_reload); requests under way keep their decision."""
        router.keep_conversations(self.router)
        self.config, self.router, self.catalog = config, router, router.catalog
        self.keyless = self._keyless()
        self._carriers = {}
        self._show_prices()

    def _show_prices(self) -> None:
        """The price gauges: what each model is billed at now (unset cache prices: its input price)."""
        if self.metrics is None:
            return
        gauge = self.metrics.price
        for m in self.catalog.models.values():
            gauge.set((m.id, "input"), m.input_price)
            gauge.set((m.id, "output"), m.output_price)
            gauge.set((m.id, "cached_input"), m.input_price if m.cached_input_price is None else m.cached_input_price)
            gauge.set((m.id, "cache_write"), m.input_price if m.cache_write_price is None else m.cache_write_price)

    def new_request_id(self) -> str:
        """A unique, unguessable, cheap request id: random per process, counter and 48 random bits per request.

        Unguessable because `POST /v1/feedback` rates a request by its id: a client must not be able
        to rate other clients' requests by counting. Random bytes are drawn in bulk (one os.urandom
        per 1,024 ids).
        """
        n = next(self._ids)
        at = (n % 1024) * 12  # each id takes 12 hex digits (6 bytes) of the block
        if at == 0:
            self._id_random = os.urandom(6 * 1024).hex()
        return f"{self._id_prefix}-{n:x}-{self._id_random[at:at + 12]}"

    @property
    def wants_headers(self) -> bool:
        """Whether decisions read the client's headers (spend limits, consumer policies): adapters pass them then."""
        return bool(self.consumer_policies) or bool(self.limits is not None and self.limits.rules)

    def policy_for(self, route_conf: Any) -> Policy | RouteError:
        """The policy for a route's config, compiled once."""
        return self.router.policy_for(route_conf)

    def handles(self, path: str) -> bool:
        """Whether a path is an LLM API the router decides for, or a token count (others pass through)."""
        return api_for_path(path) is not None or is_count_path(path)

    def decide(self, body: bytes, *, path: str, ex: Exchange, route_conf: Any = None, headers: Any = None) -> UpstreamCall | Refusal:
        """Route one request: the upstream call to make, or a local reply.

        headers (optional): the client's request headers, as a mapping or (name, value) pairs, to
        identify the consumer for spend limits and consumer policies.
        """
        t0 = time.perf_counter()
        limits = self.limits
        downgrade = None
        consumer = self._consumer(ex, headers) if self.wants_headers else None
        policy = self._policy(route_conf, consumer)
        if isinstance(policy, RouteError):
            ex.error = policy
            return self.refusal(policy, ex)
        ex.policy = policy
        if "count_tokens" in path and is_count_path(path):
            return self._count_tokens(body, path, ex, policy)
        excluded = self.health.excluded()
        if self.keyless:
            excluded = excluded | self.keyless
        if limits is not None and limits.rules:
            if limits.downgrades:
                downgrade = limits.downgrade(route=ex.route, consumer=consumer)
                if downgrade is not None:
                    excluded = excluded | self._dearer(downgrade[0], downgrade[1])
        request, decision = self.router.route(body, path=path, policy=policy, state=self.state, excluded=excluded)
        ex.request = request
        if not isinstance(decision, RouteError) and decision.policy != policy.name:
            policy = ex.policy = self.router.policies[decision.policy]  # the client chose it (client_policies)
        if limits is not None and limits.rules and not isinstance(decision, RouteError):
            over = limits.check(model=decision.model.id, route=ex.route, consumer=consumer, estimate_usd=decision.estimated_cost)
            if over is not None:
                decision = over
        if downgrade is not None:
            decision = self._downgraded(decision, downgrade, ex)
        ex.extra["decision_s"] = time.perf_counter() - t0
        if isinstance(decision, RouteError):
            ex.error = decision
            self.observer.on_decision(ex)
            return self.refusal(decision, ex)
        assert request is not None  # parsed, since a decision was made
        ex.decision = decision
        headers = explanation_headers(decision, request_id=ex.request_id, explain=policy.conf.explain)
        ex.call = plan_call(request, decision.model, self.catalog, self.credentials, route_header=self.route_header,
                            response_headers=headers, thinking_origin=self.router.thinking_origin,
                            reasoning=self.router.recall_reasoning, cooling=self.cooling_keys(decision.model.id))
        self.observer.on_decision(ex)
        return ex.call

    def _policy(self, route_conf: Any, consumer: str | None) -> Policy | RouteError:
        """The route's policy, or the consumer's where accounting.consumer_policies maps it (it wins)."""
        policy = self.policy_for(route_conf)
        if consumer and not isinstance(policy, RouteError):
            chosen = self.router.policies.get(self.consumer_policies.get(consumer, ""))
            if chosen is not None:
                return chosen
        return policy

    def _mapped_consumer(self, ex: Exchange, headers: Any) -> str | None:
        """The consumer, identified only when consumer policies are configured (else None)."""
        return self._consumer(ex, headers) if self.consumer_policies else None

    def _consumer(self, ex: Exchange, headers: Any) -> str | None:
        """Who is calling (kept on the exchange for the log); spend limits start watching a new one."""
        consumer = ex.extra["consumer"] = consumer_of(headers, self.consumer_header)
        if consumer and self.limits is not None and self.limits.rules:
            self.limits.seen_consumer(consumer)
        return consumer

    def _dearer(self, max_input: float | None, max_output: float | None) -> frozenset[str]:
        """Catalog models priced above these caps (USD per 1M tokens; None: no cap), memoised per cap pair."""
        key = (max_input, max_output)
        found = self._dearer_cache.get(key)
        if found is None:
            found = self._dearer_cache[key] = frozenset(
                m.id for m in self.catalog.models.values()
                if (max_input is not None and m.input_price > max_input) or (max_output is not None and m.output_price > max_output))
        return found

    def _downgraded(self, decision: Decision | RouteError, downgrade: tuple[float | None, float | None, str],
                    ex: Exchange) -> Decision | RouteError:
        """A decision made under a spent downgrade budget: its reason says so; with no model left, a 429 that names the budget."""
        from llm_router.limits import price_caps

        max_input, max_output, spent = downgrade
        caps = price_caps(max_input, max_output)
        if isinstance(decision, RouteError):
            if decision.code != "no_model_available":
                return decision
            return RouteError(429, f"spend limit reached: {spent}; only models up to {caps} per 1M tokens may serve this "
                                   "request now, and none of them can", code="spend_limit_exceeded")
        decision.selection = f"{decision.selection}; downgraded: {spent}, models up to {caps} per 1M tokens"
        ex.extra["downgraded"] = spent
        if self.metrics is not None:
            self.metrics.downgraded.inc((ex.route,))
        return decision

    def attempt(self, ex: Exchange, model_id: str) -> UpstreamCall | None:
        """The call for another model of the exchange's chain (fallback attempts)."""
        if ex.request is None or ex.decision is None:
            return None
        model = next((m for m in ex.decision.chain if m.id == model_id), None) or self.catalog.models.get(model_id)
        if model is None:
            return None
        return plan_call(ex.request, model, self.catalog, self.credentials, route_header=self.route_header,
                         response_headers=ex.call.response_headers if ex.call else (), thinking_origin=self.router.thinking_origin,
                         reasoning=self.router.recall_reasoning, cooling=self.cooling_keys(model.id))

    def refusal(self, error: RouteError, ex: Exchange) -> Refusal:
        """An OpenAI-format error reply that names the problem."""
        return self.local_reply(error.status, orjson.dumps(error.openai_body()), ex)

    @staticmethod
    def local_reply(status: int, body: bytes, ex: Exchange, *extra: tuple[str, str]) -> Refusal:
        """A JSON reply the router gives itself, with the request id (and any extra headers)."""
        return Refusal(status, (("content-type", "application/json"), (REQUEST_ID_HEADER, ex.request_id), *extra), body)

    def on_response(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float,
                     headers: Any = None) -> None:
        """Adapters report each finished upstream response here (headers: the upstream response
        headers as (name, value) pairs or a mapping, for rate-limit signals; may be None)."""
        if usage is not None and usage.response_id is not None and 200 <= status < 300:
            self._remember_response(ex, usage.response_id)
        if usage is not None and usage.thinking and ex.call is not None and 200 <= status < 300:
            self.router.remember_thinking(usage.thinking, ex.call.model.id)
        if usage is not None and usage.reasoning is not None and 200 <= status < 300:
            self.router.reasoning.remember(*usage.reasoning)
        self.observer.on_response(ex, status, usage, latency_s, headers)

    def _remember_response(self, ex: Exchange, response_id: str) -> None:
        """A Responses answer's id -> the model that gave it: where it is stored, and (with affinity)
        where a request continuing from it stays."""
        policy, call = ex.policy, ex.call
        if call is None:
            return
        table = self.router.affinity
        if ex.request is None or ex.request.body.get("store") is not False:
            stored.remember(table, response_id, call.model.id)
        if policy is not None and policy.affinity is not None:
            # a shadow policy keeps simulating routing: the conversation continues from routing's choice
            placed = ex.decision.shadow if ex.decision is not None and ex.decision.shadow is not None else call.model
            table.put(response_key(policy.affinity, response_id), placed.id)

    def stored_response(self, path: str, *, ex: Exchange, route_conf: Any = None,
                        headers: Any = None) -> UpstreamCall | Refusal | None:
        """A call on a stored response (retrieve, delete, cancel, input items): sent to the provider
        that holds it, with that provider's key; a Refusal naming the problem; None for other paths.
        `headers` identify the consumer, whose policy (accounting.consumer_policies) wins over the route's."""
        found = stored.stored_path(path)
        if found is None:
            return None
        if isinstance(found, RouteError):
            return self._stored_refused(found, ex)
        policy = self._policy(route_conf, self._mapped_consumer(ex, headers))
        if isinstance(policy, RouteError):
            return self._stored_refused(policy, ex)
        ex.policy = policy
        held = stored.holder(self.router.affinity, self.catalog, policy, found.response_id)
        if isinstance(held, RouteError):
            return self._stored_refused(held, ex)
        model = held.model
        base = self.catalog.providers[model.provider].paths["responses"]
        ex.call = plan_stored(model, self.catalog, self.credentials, stored.provider_path(base, model.name, found),
                              route_header=self.route_header, response_headers=((REQUEST_ID_HEADER, ex.request_id),))
        if self.metrics is not None:
            self.metrics.stored.inc((model.provider, held.found))
        return ex.call

    def forwarded(self, path: str, *, ex: Exchange, route_conf: Any = None, headers: Any = None) -> UpstreamCall | Refusal | None:
        """An API the router does not route (embeddings, moderations, audio, images, files, batches) that the route's policy
        forwards to a provider: its root and key, body untouched; None when the policy forwards no such call.
        Embeddings, which are priced, are refused (429) once a route, global or consumer budget is spent.
        A consumer's policy (accounting.consumer_policies) wins over the route's, its forwards with it."""
        found = forward_path(path)
        if found is None:
            return None
        limited = found.api in PRICED_APIS and self.limits is not None and self.limits.rules
        consumer = self._consumer(ex, headers) if limited else self._mapped_consumer(ex, headers)
        policy = self._policy(route_conf, consumer)
        if isinstance(policy, RouteError):
            return self.refusal(policy, ex)
        name = policy.conf.forward.get(found.api)
        if name is None:
            return None
        if limited:
            assert self.limits is not None
            over = self.limits.check(model="", route=ex.route, consumer=consumer, estimate_usd=0.0)  # no catalog model
            if over is not None:
                ex.error = over
                self.observer.on_decision(ex)  # counted and logged as routed refusals are
                return self.refusal(over, ex)
        provider = self.catalog.providers[name]
        carrier = self._carriers.get(name)
        if carrier is None:  # the provider's upstream, for a call no catalog model makes
            carrier = self._carriers[name] = Model(
                id=name, provider=name, name="", input_price=0.0, output_price=0.0, context_window=1,
                capabilities=frozenset(), tier=Tier.LOW, quality=0.0, upstream=provider.upstream)
        target = provider_path(provider_root(provider) or "", "", suffix=found.tail, query=found.query)  # a root names no model
        ex.policy = policy
        ex.extra["forward"] = found.api
        ex.call = plan_stored(carrier, self.catalog, self.credentials, target, route_header=self.route_header,
                              response_headers=((REQUEST_ID_HEADER, ex.request_id),))
        if self.metrics is not None:
            self.metrics.forwarded.inc((name, found.api))
        return ex.call

    def models_reply(self, method: str, path: str, *, ex: Exchange, route_conf: Any = None,
                     anthropic: bool = False, headers: Any = None) -> Refusal | None:
        """`GET .../models[/{id}]` answered here: `auto` and the models the route's policy may choose
        (Anthropic's format when `anthropic`); None for other requests or with server.models_endpoint off.
        `headers` identify the consumer: a consumer with its own policy sees that policy's models."""
        if method != "GET" or not self.serve_models:
            return None
        wanted = models_path(path)
        if wanted is None:
            return None
        policy = self._policy(route_conf, self._mapped_consumer(ex, headers))
        if isinstance(policy, RouteError):
            return self.refusal(policy, ex)
        status, body = models_body(policy.models, wanted, anthropic, aliases=tuple(policy.conf.client_policies))
        return self.local_reply(status, body, ex)

    def _count_tokens(self, body: bytes, path: str, ex: Exchange, policy: Policy) -> UpstreamCall | Refusal:
        """A token count: sent to a provider that serves the Messages API, with its key (`ex.decision` stays
        None: nothing is routed or billed); the router's own estimate when the policy has no such provider."""
        try:
            request = parse_request(body, "count_tokens")
        except RequestError as exc:
            ex.error = RouteError(exc.status, exc.message, code=exc.code, field=exc.field)
            return self.refusal(ex.error, ex)
        ex.request = request
        counter = counter_for(request.model, policy, self.catalog, self.keyless)
        if counter is None:
            if self.metrics is not None:
                self.metrics.token_counts.inc(("estimate",))
            return self.local_reply(200, orjson.dumps({"input_tokens": request.input_tokens}), ex,
                                    ("x-llm-router-token-count", "estimated"))
        model = counter.model
        target = provider_path(self.catalog.providers[model.provider].paths["messages"], model.name, suffix="/count_tokens",
                               query=path.partition("?")[2])
        rewritten = orjson.dumps({**request.body, "model": counter.name}) if counter.name != request.model else body
        ex.call = plan_stored(model, self.catalog, self.credentials, target, route_header=self.route_header,
                              response_headers=((REQUEST_ID_HEADER, ex.request_id),), body=rewritten)
        if self.metrics is not None:
            self.metrics.token_counts.inc((model.provider,))
        return ex.call

    def _stored_refused(self, error: RouteError, ex: Exchange) -> Refusal:
        ex.error = error
        if self.metrics is not None:
            self.metrics.stored.inc(("", "refused"))
        return self.refusal(error, ex)

    async def start(self, *, metrics_listen: str | None = None) -> None:
        """Start background work (state sync, metrics endpoint); adapters call it once at startup."""
        if self.shared is not None:
            await self.shared.sync()
            self.shared.start()
        syncs = [sync for sync in (self.affinity_sync, self.reasoning_sync) if sync is not None]
        await asyncio.gather(*(sync.load() for sync in syncs))  # side by side: at most one load timeout at startup
        for sync in syncs:
            sync.start()
        if self.refresher is not None:
            self.refresher.start()
        if self._catalog_clock_task is None:
            from llm_router.background import BackgroundTask

            self._catalog_clock_task = BackgroundTask(self._catalog_clock, "llm-router-catalog-clock")
            self._catalog_clock_task.start()
        listen = metrics_listen or self.config.metrics.get("listen")
        if self.metrics is not None and listen and self._metrics_address is None:
            from llm_router.metrics import serve_metrics

            feedback_log = self.config.metrics.get("feedback_log")
            if feedback_log and self.feedback is None:
                from llm_router.feedback import FeedbackLog

                self.feedback = FeedbackLog(str(feedback_log))
            model_of = None
            if self.feedback is not None and self.telemetry is not None:
                if self.telemetry.answered is None:  # an APISIX runner of several processes sets its own
                    self.telemetry.answered = {}
                model_of = self.telemetry.answered.get
            from llm_router.background import BackgroundTask

            self._heartbeat = BackgroundTask(self._beating, "llm-router-heartbeat")
            self._heartbeat.start()
            self._metrics_address = serve_metrics(self.metrics, listen, self.feedback, model_of, probe=self.probe,
                                                  usage_log=self.usage_log)

    async def _catalog_clock(self) -> None:
        """Take each scheduled change at its moment (a price change, a peak span, a successor's day), looking again at least
        every ten minutes (past clock jumps, and for a reloaded config's changes)."""
        while True:
            upcoming = self.config.next_change(utc_now())
            wait = 600.0 if upcoming is None else (upcoming - utc_now()).total_seconds() + 0.001
            await asyncio.sleep(min(max(wait, 0.0), 600.0))
            await self.take_changes(utc_now())

    async def take_changes(self, when: datetime) -> list[str]:
        """Route and bill with the models as in effect at `when` (UTC); returns the ids of the models that changed."""
        import logging

        before = self.config
        config = before.as_of(when)
        changed = sorted(mid for mid, m in config.models.items() if m is not before.models.get(mid))
        if changed:
            # the catalog is all that changed: the classifiers are kept (they read no prices, names or limits), the router
            # is new
            router = await asyncio.to_thread(Router, config, classifiers=self.router.classifiers)
            self.apply_reload(config, router)
            shown = "; ".join(f"{mid}: {', '.join(_changed_fields(before.models[mid], config.models[mid]))}" for mid in changed)
            logging.getLogger("llm_router").info("scheduled model changes taken at %s: %s", when.isoformat(), shown)
        return changed

    async def _beating(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(1.0)

    def probe(self, kind: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for /healthz ("live": the event loop runs) and /readyz ("ready": and it serves)."""
        silent = time.monotonic() - self._beat
        if silent > STALL_S:
            return 503, {"status": "stalled", "event_loop_silent_s": round(silent, 1)}
        if kind == "ready" and not self.serving:
            return 503, {"status": "not serving", "why": "starting, or draining before a stop"}
        return 200, {"status": "ok"}

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where /metrics is served, once started."""
        return self._metrics_address

    async def stop(self) -> None:
        """Stop background work and flush; adapters call it on shutdown."""
        self.serving = False
        if self._heartbeat is not None:
            await self._heartbeat.stop()
            self._heartbeat = None
        if self._catalog_clock_task is not None:
            await self._catalog_clock_task.stop()
            self._catalog_clock_task = None
        if self.refresher is not None:
            await self.refresher.stop()
        if self.orchestrator is not None:
            await self.orchestrator.aclose()
            self.orchestrator = None
        if self.shared is not None:
            await self.shared.stop()
        for sync in (self.affinity_sync, self.reasoning_sync):
            if sync is not None:
                await sync.stop()
        if self.telemetry is not None:
            self.telemetry.log.close()
        if self._metrics_address is not None:
            from llm_router.metrics import stop_metrics

            stop_metrics(self._metrics_address)
            self._metrics_address = None
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None
