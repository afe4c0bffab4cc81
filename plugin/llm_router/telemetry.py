"""The response-path observer: accounting, spend limits, health, Prometheus metrics and the decision log."""
from __future__ import annotations

import time
from typing import Any, Callable

from llm_router.accounting import Usage
from llm_router.catalog import TIER_NAMES, Catalog
from llm_router.decision_log import DecisionLog
from llm_router.health import Health
from llm_router.limits import SpendLimits
from llm_router.metrics import Metrics
from llm_router.runtime import Exchange


def status_class(status: int) -> str:
    """2xx/4xx/5xx, or 'none' when no response arrived."""
    return f"{status // 100}xx" if status else "none"


ANSWERED_KEPT = 100_000  # requests whose answering model feedback can still be matched to (~10 MB)


class Telemetry:
    """Implements the Runtime's Observer: everything that happens after a decision."""

    def __init__(self, catalog: Catalog, metrics: Metrics, health: Health, limits: SpendLimits, log: DecisionLog,
                 *, clock: Callable[[], float] = time.time):
        self.catalog = catalog
        self.metrics = metrics
        self.health = health
        self.limits = limits
        self.log = log
        self.clock = clock
        # With feedback collected: request id -> the model that answered it, for the latest requests,
        # so a rating posted by request id counts for its model. Written on the event loop only; the
        # feedback thread reads. None (no memory spent) when feedback is off.
        self.answered: dict[str, str] | None = None

    def on_decision(self, ex: Exchange) -> None:
        m = self.metrics
        decision_s = ex.extra.get("decision_s")
        if decision_s is not None:
            m.decision_seconds.observe((), decision_s)
        if ex.error is not None:
            m.errors.inc((ex.error.code,))
            self._log(ex, status=ex.error.status, usage=None, latency_s=0.0, cost=0.0)
            return
        d = ex.decision
        if d is None:
            return
        tier = TIER_NAMES[d.classification.tier]
        m.requests.inc((ex.route, d.model.id, tier, d.strategy))
        if d.shadow is not None:
            m.shadow_requests.inc((ex.route, d.shadow.id, tier))
        self.health.started(d.model.id)

    def on_fallback(self, ex: Exchange, from_model: str, to_model: str, reason: str) -> None:
        """An attempt moved to the next model of the chain."""
        self.metrics.fallbacks.inc((from_model, to_model, reason))
        self.health.started(to_model)

    def on_response(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float, headers: Any = None) -> None:
        call = ex.call
        if call is None or ex.decision is None:
            if call is not None and ex.extra.get("forward") is not None:
                self._forwarded(ex, status, usage, latency_s)
            return
        model = call.model
        now = self.clock()
        m = self.metrics
        m.responses.inc((model.id, status_class(status)))
        answered = self.answered
        if answered is not None and 200 <= status < 300:
            answered[ex.request_id] = model.id
            if len(answered) > ANSWERED_KEPT:
                del answered[next(iter(answered))]
        m.upstream_seconds.observe((model.id,), latency_s)
        if status == 0 or status >= 500:
            m.errors.inc(("upstream_5xx" if status else "upstream_unreachable",))
        elif status == 429:
            m.errors.inc(("upstream_429",))
        cost = 0.0
        if usage is not None:
            cost = usage.cost(model)
            m.tokens.inc((model.id, "input"), usage.input_tokens)
            m.tokens.inc((model.id, "output"), usage.output_tokens)
            if usage.cached_input_tokens:
                m.cache_tokens.inc((model.id, "read"), usage.cached_input_tokens)
            if usage.cache_write_tokens:
                m.cache_tokens.inc((model.id, "write"), usage.cache_write_tokens)
            m.cost.inc((ex.route, model.id), cost)
            ref = ex.policy.reference if ex.policy is not None else None
            if ref is not None:
                m.saving.inc((ex.route,), max(0.0, usage.cost(ref) - cost))
            shadow = ex.decision.shadow
            if shadow is not None:
                m.shadow_cost.inc((ex.route, shadow.id), usage.cost(shadow))
            if usage.input_tokens > 0 and ex.decision.input_tokens > 0:
                m.estimate_ratio.observe((), usage.input_tokens / ex.decision.input_tokens)
        elif 200 <= status < 300:
            cost = ex.decision.estimated_cost  # no usage reported: budget against the estimate
            m.errors.inc(("usage_missing",))
        self.limits.record(model=model.id, route=ex.route, consumer=ex.extra.get("consumer"), usd=cost, now=now)
        self.health.observe(model.id, status, latency_s, headers, now, call.key)
        self._log(ex, status=status, usage=usage, latency_s=latency_s, cost=cost)

    def _forwarded(self, ex: Exchange, status: int, usage: Usage | None, latency_s: float) -> None:
        """A forwarded embeddings call: its tokens and cost (at the provider's forward_prices) under
        "provider/model", counted against route, global and consumer spend limits."""
        assert ex.call is not None
        provider = ex.call.provider
        name = usage.model if usage is not None and usage.model else "unknown"
        price = provider.forward_prices.get(name)
        ex.extra["forward_model"] = f"{provider.name}/{name}"  # the decision log keeps the name the answer gave
        # Metric labels only for priced models: an answer's model name must not grow the series without bound.
        label = ex.extra["forward_model"] if price is not None else f"{provider.name}/unpriced"
        m = self.metrics
        m.responses.inc((label, status_class(status)))
        m.upstream_seconds.observe((label,), latency_s)
        cost = 0.0
        if usage is not None:
            m.tokens.inc((label, "input"), usage.input_tokens)
            if price is None:
                m.errors.inc(("forward_price_unknown",))
            else:
                cost = usage.input_tokens * price / 1e6
                m.cost.inc((ex.route, label), cost)
                self.limits.record(model=label, route=ex.route, consumer=ex.extra.get("consumer"), usd=cost, now=self.clock())
        self._log(ex, status=status, usage=usage, latency_s=latency_s, cost=cost)

    def refresh(self, state: Any, now: float) -> None:
        """After each state snapshot: gauges, and the decision log flush."""
        for model in self.health.models:
            self.metrics.breaker_open.set((model,), 1.0 if self.health.is_open(model) else 0.0)
            self.metrics.keys_cooling.set((model,), float(len(self.health.cooling_keys(model))))
        for scope, left in self.limits.remaining().items():
            self.metrics.budget_remaining.set((scope,), left)
        self.log.flush()

    def _log(self, ex: Exchange, *, status: int, usage: Usage | None, latency_s: float, cost: float) -> None:
        if not self.log.enabled:
            return
        d = ex.decision
        rec: dict[str, Any] = {"ts": round(self.clock(), 3), "request_id": ex.request_id, "route": ex.route, "status": status,
                               "latency_ms": round(latency_s * 1000, 2)}
        if d is not None:
            c = d.classification
            rec.update(policy=d.policy, strategy=d.strategy, model=ex.call.model.id if ex.call else d.model.id,
                       decided_model=d.model.id, fallbacks=[x.id for x in d.fallbacks], tier=c.tier.name, category=c.category,
                       confidence=c.confidence, score=c.score, reason=d.reason, estimated_input_tokens=d.input_tokens,
                       estimated_cost_usd=round(d.estimated_cost, 8), attempt=ex.attempt)
            if d.propensity is not None:
                rec["propensity"] = round(d.propensity, 6)
            if d.shadow is not None:
                rec["shadow_model"] = d.shadow.id
                if usage is not None:
                    rec["shadow_cost_usd"] = round(usage.cost(d.shadow), 8)
        elif ex.extra.get("forward") is not None:  # a forwarded call: no decision, the provider and model it reached
            rec.update(forward=ex.extra["forward"], model=ex.extra.get("forward_model"))
        if usage is not None:
            rec.update(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
            if usage.cached_input_tokens or usage.cache_write_tokens:
                rec.update(cached_input_tokens=usage.cached_input_tokens, cache_write_tokens=usage.cache_write_tokens)
            if usage.response_id is not None:
                rec["response_id"] = usage.response_id  # the provider's id of a Responses answer, to find it there
        rec["cost_usd"] = round(cost, 8)
        if ex.error is not None:
            rec["error"] = ex.error.message
        if ex.extra.get("consumer"):
            rec["consumer"] = ex.extra["consumer"]
        if ex.extra.get("downgraded"):
            rec["downgraded"] = ex.extra["downgraded"]
        self.log.write(rec, prompt=ex.request.prompt if ex.request is not None else None)
