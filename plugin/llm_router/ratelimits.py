"""Providers' rate-limit headers, read into one view: how much quota is left, and how long to wait.

OpenAI-style (OpenAI, Together, Mistral, DeepSeek, Azure): `x-ratelimit-{limit,remaining,reset}-<window>`
with resets as relative durations ("20ms", "1s", "6m0s"). Anthropic: `anthropic-ratelimit-<window>-
{limit,remaining,reset}` with resets as RFC 3339 times. Everyone: `retry-after` (seconds or an
HTTP date) and `retry-after-ms` on 429s; Gemini sends only that.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms"})
_FIELDS = ("limit", "remaining", "reset")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def is_rate_limit_header(name: str) -> bool:
    """Whether a lower-case header name is one of the rate-limit headers read here."""
    return name.startswith(PREFIXES) or name in RETRY_HEADERS


def collect(headers: Any) -> dict[str, str]:
    """The rate-limit headers of a response (lower-case names), from a mapping or (name, value) pairs."""
    if not headers:
        return {}
    out: dict[str, str] = {}
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        k = key.decode() if isinstance(key, bytes) else key
        if k[:1] in "xXaArR":
            low = k.lower()
            if is_rate_limit_header(low):
                out[low] = value.decode() if isinstance(value, bytes) else str(value)
    return out


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What a response says about the provider's limits."""

    remaining_share: float | None  # smallest remaining/limit over the windows it reports (0..1)
    wait_s: float | None  # how long until a retry can succeed (retry-after, else the reset of an exhausted window)


def number(text: str | None) -> float | None:
    """A plain non-negative number, or None."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def duration_s(text: str | None) -> float | None:
    """Seconds in a Go-style duration ("20ms", "6m0s", "1h2m3.5s") or a plain number of seconds."""
    if text is None:
        return None
    text = text.strip().lower()
    plain = number(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after_s(text: str | None, wall_now: float) -> float | None:
    """Retry-After: delay seconds or an HTTP date."""
    if text is None:
        return None
    seconds = number(text)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - wall_now)


def reset_in_s(text: str | None, wall_now: float) -> float | None:
    """A window's reset: a relative duration (OpenAI style), an RFC 3339 time (Anthropic) or epoch seconds."""
    if text is None:
        return None
    seconds = duration_s(text)
    if seconds is not None:
        return max(0.0, seconds - wall_now) if seconds > 1e9 else seconds  # epoch seconds are absolute
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - wall_now)


def _windows(found: dict[str, str]) -> dict[str, dict[str, str]]:
    """Window name -> {limit, remaining, reset} as sent, for both header families."""
    out: dict[str, dict[str, str]] = {}
    for name, value in found.items():
        if name.startswith("x-ratelimit-"):
            rest = name[len("x-ratelimit-"):]
            for f in _FIELDS:
                if rest == f or rest.startswith(f + "-"):
                    out.setdefault(rest[len(f) + 1:], {})[f] = value
                    break
        elif name.startswith("anthropic-ratelimit-"):
            window, _, f = name[len("anthropic-ratelimit-"):].rpartition("-")
            if f in _FIELDS:
                out.setdefault(window, {})[f] = value
    return out


def read(found: dict[str, str], wall_now: float) -> RateLimits:
    """The view of collected headers at wall-clock time wall_now (for absolute reset times)."""
    if not found:
        return RateLimits(None, None)
    shares: list[float] = []
    exhausted: list[float] = []
    for fields in _windows(found).values():
        remaining, limit = number(fields.get("remaining")), number(fields.get("limit"))
        if remaining is not None and limit:
            shares.append(max(0.0, min(1.0, remaining / limit)))
            if remaining == 0:
                reset = reset_in_s(fields.get("reset"), wall_now)
                if reset is not None:
                    exhausted.append(reset)
    wait = None
    ms = number(found.get("retry-after-ms"))
    if ms is not None:
        wait = ms / 1000.0
    if wait is None:
        wait = retry_after_s(found.get("retry-after"), wall_now)
    if wait is None and exhausted:
        wait = max(exhausted)  # every exhausted window must have reset
    return RateLimits(min(shares) if shares else None, wait)
