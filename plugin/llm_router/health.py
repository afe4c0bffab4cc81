"""Per-model health: error rate, 429s, latency; circuit breaking with half-open probes; rate-limit cool-downs."""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llm_router import ratelimits
from llm_router.state import Flag, Incr, SharedState

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# An open flag's value is its deadline; the key itself lives longer so that clock skew between
# runner hosts never makes it vanish before the deadline every reader compares against.
FLAG_SLACK_S = 120.0


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Breaker thresholds (config section `health`)."""

    window_s: int = 30  # error rate over this sliding window
    bucket_s: int = 5
    min_requests: int = 5  # no verdict on fewer requests
    error_rate: float = 0.5  # open at or above this share of failures
    cooldown_s: float = 15.0  # first open period; doubles on each failed probe
    max_cooldown_s: float = 300.0
    slow_s: float | None = None  # a response slower than this counts as a failure
    probe_every: int = 5  # half-open: one decision in N may use the model
    max_retry_after_s: float = 300.0  # cap on a provider's retry-after

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HealthConfig":
        """From the config section; unknown keys and bad values are an error naming each of them."""
        problems = health_problems(data)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(**data)


def health_problems(data: Mapping[str, Any]) -> list[str]:
    """What is wrong with the config section `health`, one line per field."""
    from llm_router.edge_sections import section_problems

    problems = section_problems("health", data)
    if problems:
        return problems
    conf = HealthConfig(**data)
    if conf.bucket_s > conf.window_s:
        problems.append(f"health.bucket_s: must not exceed window_s ({conf.window_s}), got {conf.bucket_s}")
    if conf.max_cooldown_s < conf.cooldown_s:
        problems.append(f"health.max_cooldown_s: must be at least cooldown_s ({conf.cooldown_s}), got {conf.max_cooldown_s}")
    return problems


def header_value(headers: Any, name: str) -> str | None:
    """A response header from a mapping or (name, value) pairs, case-insensitively."""
    if headers is None:
        return None
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        k = key.decode() if isinstance(key, bytes) else key
        if k.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


# Statuses that say the model cannot answer at all, whatever the request: a timeout or rate limit (408, 429), and the
# provider refusing the key (401), the key's access to the model (403) or knowing the model (404: a retired name, such
# as claude-3-5-sonnet-20240620 since 2025-10-22). A 400 is about the request and does not count.
MODEL_FAILURES = frozenset({401, 403, 404, 408, 429})
_NO_KEYS: frozenset[int] = frozenset()


class Health:
    """Tracks every model; `excluded()` is what the router keeps out of selection."""

    def __init__(self, state: SharedState, models: Iterable[str], conf: HealthConfig = HealthConfig(),
                 keys: Mapping[str, int] | None = None):
        self.state = state
        self.conf = conf
        self.models = list(models)
        # Models whose provider has several keys: a 429 cools down the key that got it (for that model), and the model
        # only when every key is cooling. Their cooling keys, from the shared flags and this process's own 429s.
        self._keys: dict[str, int] = {}
        self._cooling: dict[str, frozenset[int]] = {}
        self._buckets = max(1, conf.window_s // conf.bucket_s)
        self.mode: dict[str, str] = {m: CLOSED for m in self.models}
        self._cooldown: dict[str, float] = {m: conf.cooldown_s for m in self.models}
        self._base: dict[str, tuple[float, float, float]] = {}  # (requests, failures) when a breaker closed; until when
        self._in_flight: dict[str, int] = {m: 0 for m in self.models}
        # This process's calls since the last snapshot: [requests, failures] per model (see `observe`).
        self._since: dict[str, list[float]] = {m: [0.0, 0.0] for m in self.models}
        self._excluded: frozenset[str] = frozenset()
        self._half: frozenset[str] = frozenset()
        self._probe_tick = 0
        self.opened_total: dict[str, int] = {m: 0 for m in self.models}
        state.watch(sliding=[(f"h:{m}:{kind}", conf.bucket_s, self._buckets) for m in self.models for kind in ("req", "err")],
                    flags=[f for m in self.models for f in (f"open:{m}", f"remaining:{m}")])
        self.set_keys(keys or {})
        state.on_refresh(self._recompute)

    def set_keys(self, keys: Mapping[str, int]) -> None:
        """How many keys each model's provider has now (at start-up, and after a secret refresh found more or fewer)."""
        self._keys = {m: n for m, n in keys.items() if n > 1 and m in self.mode}
        self.state.watch(flags=[f"open:{m}:key{i}" for m, n in self._keys.items() for i in range(n)])
        self._cooling = {m: kept for m, cooling in self._cooling.items()
                         if (kept := frozenset(i for i in cooling if i < self._keys.get(m, 0)))}

    # ---- what the router reads (memory only) --------------------------------------------

    def excluded(self) -> frozenset[str]:
        """Models out of selection: open breakers, and half-open ones between probes."""
        half = self._half
        if not half:
            return self._excluded
        self._probe_tick += 1
        if self._probe_tick % self.conf.probe_every == 0:
            return self._excluded
        return self._excluded | half

    def remaining(self, model_id: str) -> float | None:
        """Share of the provider's request/token quota left, from rate-limit headers."""
        return self.state.flags.get(f"remaining:{model_id}")

    def cooling_keys(self, model_id: str) -> frozenset[int]:
        """The provider keys a 429 cooled down for this model (indices into its provider's keys)."""
        return self._cooling.get(model_id, _NO_KEYS)

    def in_flight(self, model_id: str) -> int:
        return self._in_flight.get(model_id, 0)

    def is_open(self, model_id: str) -> bool:
        """Whether the model is out of selection (for the breaker metric)."""
        return self.mode.get(model_id) == OPEN

    # ---- what the response path feeds ---------------------------------------------------

    def started(self, model_id: str) -> None:
        """A request went to the model."""
        if model_id in self._in_flight:
            self._in_flight[model_id] += 1

    def observe(self, model_id: str, status: int, latency_s: float, headers: Any, now: float, key: int = -1) -> None:
        """One finished upstream call (`key`: the index of the provider key it carried, -1: none); status 0 means no
        response (connect error, reset, timeout)."""
        if model_id not in self.mode:
            return
        if self._in_flight[model_id] > 0:
            self._in_flight[model_id] -= 1
        slow = self.conf.slow_s is not None and latency_s > self.conf.slow_s
        failed = status == 0 or status >= 500 or status in MODEL_FAILURES or slow
        rec = self.state.record
        rec(Incr(f"h:{model_id}:req", self.conf.bucket_s, 1, now))
        since = self._since[model_id]
        since[0] += 1
        if failed:
            rec(Incr(f"h:{model_id}:err", self.conf.bucket_s, 1, now))
            since[1] += 1
        self._rate_limits(model_id, status, headers, now, key)
        mode = self.mode[model_id]
        if mode == HALF_OPEN:
            if failed:
                self._open(model_id, now, backoff=True)
            else:
                self._close(model_id, now)
        elif failed and mode == CLOSED and self._tripped(model_id, since[0], since[1]):
            # The snapshot lags by up to a refresh (250 ms: a hundred calls in an outage under load); with
            # this process's calls since then added, the breaker opens at the failure that crosses the threshold.
            self._open(model_id, now, backoff=False)

    def _rate_limits(self, model_id: str, status: int, headers: Any, now: float, key: int = -1) -> None:
        """Remaining-quota headers feed least-used pooling; 429 + retry-after (or the reset) cools the key down, or the
        model when it has one key or every key is cooling."""
        found = ratelimits.collect(headers)
        if not found and status != 429:
            return
        limits = ratelimits.read(found, time.time())
        if limits.remaining_share is not None:
            self.state.record(Flag(f"remaining:{model_id}", limits.remaining_share, 60.0, keep_max=False))
        if status == 429:
            wait = min(self.conf.max_retry_after_s, limits.wait_s if limits.wait_s is not None else self.conf.cooldown_s)
            keys = self._keys.get(model_id, 0)
            if wait > 0 and key >= keys > 0:
                return  # a key a secret refresh has removed since the call left: nothing in use to cool down
            if wait > 0 and 0 <= key < keys:
                self._hold_open(f"open:{model_id}:key{key}", now, wait)
                cooling = self._cooling[model_id] = self.cooling_keys(model_id) | {key}
                if len(cooling) < keys:
                    return  # another key still has quota for this model
            if wait > 0:
                self._hold_open(f"open:{model_id}", now, wait)
                self._set_mode(model_id, OPEN)

    def _hold_open(self, flag: str, now: float, wait: float) -> None:
        """A cool-down flag held until now + wait for every process, and here at once (never shortened)."""
        self.state.record(Flag(flag, now + wait, wait + FLAG_SLACK_S))
        self.state.flags[flag] = max(self.state.flags.get(flag, 0.0), now + wait)

    # ---- state machine (runs after each snapshot, off the hot path) ----------------------

    def _recompute(self, state: SharedState, now: float) -> None:
        self._cooling = {m: cooling for m, n in self._keys.items()
                         if (cooling := frozenset(i for i in range(n) if state.flags.get(f"open:{m}:key{i}", 0.0) > now))}
        for m in self.models:
            self._since[m] = [0.0, 0.0]  # in the snapshot now (a call finished while it was read is left out: opens later)
            until = state.flags.get(f"open:{m}")
            mode = self.mode[m]
            if until is not None and until > now:
                if mode != OPEN:
                    self._set_mode(m, OPEN)
                continue
            if mode == OPEN:
                self._set_mode(m, HALF_OPEN)  # cool-down over: let probes through
                continue
            if mode == HALF_OPEN:
                continue
            base = self._base.get(m)
            if base is not None and now >= base[2]:
                self._base.pop(m, None)  # the window has moved past the old failures
            if self._tripped(m, 0.0, 0.0):
                self._open(m, now, backoff=False)

    def _tripped(self, m: str, more_req: float, more_err: float) -> bool:
        """Whether the window's calls (plus these) fail at or above the error rate; failures before the last close do not count."""
        req = self.state.sliding.get(f"h:{m}:req", 0.0) + more_req
        err = self.state.sliding.get(f"h:{m}:err", 0.0) + more_err
        base = self._base.get(m)
        if base is not None:
            req, err = max(0.0, req - base[0]), max(0.0, err - base[1])
        return req > 0 and req >= self.conf.min_requests and err / req >= self.conf.error_rate

    def _open(self, m: str, now: float, *, backoff: bool) -> None:
        cool = self._cooldown[m]
        if backoff:
            cool = self._cooldown[m] = min(self.conf.max_cooldown_s, cool * 2)
        self.state.record(Flag(f"open:{m}", now + cool, cool + FLAG_SLACK_S))
        self.state.flags[f"open:{m}"] = now + cool
        self._set_mode(m, OPEN)

    def _close(self, m: str, now: float) -> None:
        self._cooldown[m] = self.conf.cooldown_s
        since = self._since[m]
        self._base[m] = (self.state.sliding.get(f"h:{m}:req", 0.0) + since[0],
                         self.state.sliding.get(f"h:{m}:err", 0.0) + since[1], now + self.conf.window_s)
        self._set_mode(m, CLOSED)

    def _set_mode(self, m: str, mode: str) -> None:
        if mode == OPEN and self.mode[m] != OPEN:
            self.opened_total[m] += 1
        self.mode[m] = mode
        self._excluded = frozenset(x for x, s in self.mode.items() if s == OPEN)
        self._half = frozenset(x for x, s in self.mode.items() if s == HALF_OPEN)
