"""Spend limits per model, route, consumer or overall, over minute/hour/day/month windows."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llm_router.decision import RouteError
from llm_router.state import WINDOWS, Incr, SharedState

SCOPES = ("model", "route", "consumer", "global")
ACTIONS = ("exclude", "reject", "downgrade")


@dataclass(frozen=True, slots=True)
class LimitRule:
    """At `usd` spent in the current `window`, the matching model leaves selection, requests get 429, or
    (downgrade) only models within the rule's prices may serve the scope's requests."""

    scope: str  # model | route | consumer | global
    usd: float
    window: str = "day"  # minute | hour | day | month (calendar, UTC)
    match: str = "*"  # a model id, route name or consumer id; "*" = each one separately
    action: str = "reject"  # exclude (model scope only) | reject | downgrade (route, consumer, global)
    max_input_price: float | None = None  # downgrade: the dearest prices (USD per 1M tokens) still allowed
    max_output_price: float | None = None

    def label(self, ident: str) -> str:
        """Scope label for metrics and messages, e.g. model:gpt-4o/day."""
        return f"{self.scope}:{ident}/{self.window}"


def parse_limits(items: Iterable[Mapping[str, Any]]) -> list[LimitRule]:
    """Limit rules from config `accounting.limits`; errors name the item and field."""
    rules = []
    for i, item in enumerate(items):
        where = f"accounting.limits[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        unknown = set(item) - {"scope", "usd", "window", "match", "action", "max_input_price", "max_output_price"}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        scope, window, action = item.get("scope"), item.get("window", "day"), item.get("action", "reject")
        if scope not in SCOPES:
            raise ValueError(f"{where}.scope: must be one of {list(SCOPES)}, got {scope!r}")
        if window not in WINDOWS:
            raise ValueError(f"{where}.window: must be one of {list(WINDOWS)}, got {window!r}")
        if action not in ACTIONS:
            raise ValueError(f"{where}.action: must be one of {list(ACTIONS)}, got {action!r}")
        if action == "exclude" and scope != "model":
            raise ValueError(f"{where}.action: 'exclude' applies to model limits only; use 'reject' for {scope} limits")
        if action == "downgrade" and scope == "model":
            raise ValueError(f"{where}.action: 'downgrade' applies to route, consumer and global limits; use 'exclude' for "
                             "model limits")
        usd = item.get("usd")
        if not isinstance(usd, (int, float)) or isinstance(usd, bool) or usd < 0:
            raise ValueError(f"{where}.usd: must be a non-negative number, got {usd!r}")
        caps = {}
        for key in ("max_input_price", "max_output_price"):
            value = item.get(key)
            if value is None:
                continue
            if action != "downgrade":
                raise ValueError(f"{where}.{key}: only a 'downgrade' limit takes prices")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{key}: must be a non-negative number (USD per 1M tokens), got {value!r}")
            caps[key] = float(value)
        if action == "downgrade" and not caps:
            raise ValueError(f"{where}: a 'downgrade' limit needs max_input_price and/or max_output_price (USD per 1M "
                             "tokens): the dearest models still allowed once the budget is spent")
        rules.append(LimitRule(scope=scope, usd=float(usd), window=window, match=str(item.get("match", "*")), action=action,
                               **caps))
    return rules


class SpendLimits:
    """Counts spend in shared state and enforces the rules from the last snapshot (no I/O on the hot path)."""

    MAX_CONSUMERS = 10_000  # consumers watched at once (least recently seen are dropped)

    def __init__(self, state: SharedState, rules: list[LimitRule], models: Iterable[str], routes: Iterable[str] = ()):
        self.state = state
        self.rules = rules
        self.windows = sorted({r.window for r in rules}, key=lambda w: WINDOWS[w])
        self._consumers: OrderedDict[str, None] = OrderedDict()
        self._excluded: frozenset[str] = frozenset()
        self.models = list(models)
        self.routes = list(routes)
        self.downgrades = any(r.action == "downgrade" for r in rules)
        watch = [(self._key("model", m), w) for m in self.models for w in self.windows]
        watch += [(self._key("route", r), w) for r in routes for w in self.windows]
        watch += [(self._key("global", "*"), w) for w in self.windows]
        state.watch(counters=watch)
        state.on_refresh(self._recompute)

    @staticmethod
    def _key(scope: str, ident: str) -> str:
        return f"spend:{scope}:{ident}"

    def spent(self, scope: str, ident: str, window: str) -> float:
        """USD spent in the current window, as of the last snapshot."""
        return self.state.counters.get((self._key(scope, ident), window), 0.0)

    def record(self, *, model: str, route: str, consumer: str | None, usd: float, now: float) -> None:
        """Add one call's cost to every window that a rule uses."""
        if not self.rules or usd <= 0:
            return
        if route not in self.routes and len(self.routes) < 1000:
            self.routes.append(route)
            self.state.watch(counters=[(self._key("route", route), w) for w in self.windows])
        idents = [("model", model), ("route", route), ("global", "*")]
        if consumer:
            idents.append(("consumer", consumer))
        for scope, ident in idents:
            for w in self.windows:
                self.state.record(Incr(self._key(scope, ident), w, usd, now))
                key = (self._key(scope, ident), w)
                self.state.counters[key] = self.state.counters.get(key, 0.0) + usd  # visible before the next sync

    def seen_consumer(self, consumer: str) -> None:
        """Start watching a consumer's spend (bounded)."""
        if consumer in self._consumers:
            self._consumers.move_to_end(consumer)
            return
        self._consumers[consumer] = None
        if len(self._consumers) > self.MAX_CONSUMERS:
            self._consumers.popitem(last=False)
        self.state.watch(counters=[(self._key("consumer", consumer), w) for w in self.windows])

    def check(self, *, model: str, route: str, consumer: str | None, estimate_usd: float) -> RouteError | None:
        """A 429 when a reject rule's budget is (or with this request would be) spent."""
        for rule in self.rules:
            if rule.action != "reject":
                continue
            for ident in self._idents(rule, model, route, consumer):
                spent = self.spent(rule.scope, ident, rule.window)
                if spent + estimate_usd > rule.usd:
                    return RouteError(429, f"spend limit reached: ${rule.usd:g} per {rule.window} for {rule.scope} "
                                           f"{ident!r} (spent ${spent:.4f})", code="spend_limit_exceeded")
        return None

    def downgrade(self, *, route: str, consumer: str | None) -> tuple[float | None, float | None, str] | None:
        """For a request of this route and consumer: the prices (input, output; None: no cap) its models may
        not exceed because a downgrade budget is spent, and the first such budget's description; else None."""
        found: tuple[float | None, float | None, str] | None = None
        for rule in self.rules:
            if rule.action != "downgrade":
                continue
            for ident in self._idents(rule, "", route, consumer):
                spent = self.spent(rule.scope, ident, rule.window)
                if spent < rule.usd:
                    continue
                if found is None:
                    found = (rule.max_input_price, rule.max_output_price,
                             f"${rule.usd:g} per {rule.window} for {rule.scope} {ident!r} spent (${spent:.4f})")
                else:
                    found = (_least(found[0], rule.max_input_price), _least(found[1], rule.max_output_price), found[2])
        return found

    def excluded(self) -> frozenset[str]:
        """Models whose exclude budget is spent."""
        return self._excluded

    def remaining(self) -> dict[str, float]:
        """USD left per rule and scope, for the budget metric."""
        out: dict[str, float] = {}
        for rule in self.rules:
            every = {"model": self.models, "route": self.routes, "consumer": list(self._consumers)}
            idents = every.get(rule.scope, []) if rule.match == "*" else [rule.match]
            if rule.scope == "global":
                idents = ["*"]
            for ident in idents:
                out[rule.label(ident)] = max(0.0, rule.usd - self.spent(rule.scope, ident, rule.window))
        return out

    def _idents(self, rule: LimitRule, model: str, route: str, consumer: str | None) -> list[str]:
        if rule.scope == "global":
            return ["*"]
        ident = {"model": model, "route": route, "consumer": consumer}.get(rule.scope)
        if ident is None:
            return []
        return [ident] if rule.match in ("*", ident) else []

    def _recompute(self, state: SharedState, now: float) -> None:
        out = set()
        for rule in self.rules:
            if rule.action != "exclude":
                continue
            for m in (self.models if rule.match == "*" else [rule.match]):
                if self.spent("model", m, rule.window) >= rule.usd:
                    out.add(m)
        self._excluded = frozenset(out)


def _least(a: float | None, b: float | None) -> float | None:
    """The tighter of two price caps (None: no cap)."""
    return b if a is None else a if b is None else min(a, b)


def price_caps(max_input: float | None, max_output: float | None) -> str:
    """A downgrade's prices as words: "input $1 and output $3" (None: no cap)."""
    return " and ".join(f"{what} ${cap:g}" for what, cap in (("input", max_input), ("output", max_output)) if cap is not None)
