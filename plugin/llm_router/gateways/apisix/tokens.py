"""Conf tokens: what PrepareConf stored, found again by the token every call carries.

Tokens start from a random value (a restarted runner must not hand out a token that another
APISIX worker still holds for a different route) and live longer than APISIX's own cache
(APISIX_CONF_EXPIRE_TIME x 1.2), so APISIX re-sends PrepareConf before the runner forgets.
With several runner processes on one socket, each process allocates from its own residue class
(no locking) and publishes each token as a file in a private directory, so a process that did
not see the PrepareConf still finds the token on its first use.
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

DEFAULT_CONF_EXPIRE_S = 3600.0
TTL_FACTOR = 1.2
MAX_TOKENS = 100_000
SWEEP_EVERY_S = 60.0
TOKEN_SPACE = 1 << 32


def ttl_from_env(environ: dict[str, str] | None = None) -> float:
    """Token lifetime from APISIX_CONF_EXPIRE_TIME (seconds), with a safety margin."""
    env = os.environ if environ is None else environ
    raw = env.get("APISIX_CONF_EXPIRE_TIME", "")
    try:
        expire = float(raw) if raw else DEFAULT_CONF_EXPIRE_S
    except ValueError:
        expire = DEFAULT_CONF_EXPIRE_S
    return max(expire, 0.001) * TTL_FACTOR


@dataclass(slots=True)
class Entry:
    """One PrepareConf: its key, the runner plugin configs and what was compiled from them."""

    token: int
    key: str
    conf: tuple[tuple[str, str | None], ...]
    expires: float  # monotonic seconds
    route: str = ""  # "route:1" from the key, for logs and accounting
    compiled: Any = None  # set by the runner (the route's policy conf, or an error)


def route_of(key: str) -> str:
    """'route#1#ext-plugin-pre-req#42' -> 'route:1' (the conf type and id)."""
    parts = key.split("#")
    return f"{parts[0]}:{parts[1]}" if len(parts) >= 2 and parts[0] and parts[1] else (key or "unknown")


class TokenStore:
    """Token -> Entry with expiry; optionally shared with sibling processes through a directory."""

    def __init__(self, *, ttl: float, base: int | None = None, index: int = 0, stride: int = 1,
                 shared_dir: str | Path | None = None, clock: Callable[[], float] = time.monotonic,
                 max_tokens: int = MAX_TOKENS):
        self.ttl = ttl
        self.clock = clock
        self.stride = max(1, stride)
        self.index = index % self.stride
        base = random.SystemRandom().randrange(1, TOKEN_SPACE) if base is None else base
        # first token of this process: base rounded to this process's residue class
        self._next = base - base % self.stride + self.index
        self.shared_dir = Path(shared_dir) if shared_dir else None
        self.max_tokens = max_tokens
        self._entries: dict[int, Entry] = {}
        self._by_key: dict[str, int] = {}
        self._swept = clock()

    def _allocate(self) -> int:
        while True:
            token = self._next % TOKEN_SPACE
            self._next = token + self.stride
            if token != 0 and token not in self._entries:
                return token

    def put(self, key: str, conf: tuple[tuple[str, str | None], ...]) -> Entry:
        """Store a PrepareConf; the same key with the same conf gets its token back (refreshed)."""
        now = self.clock()
        self._maybe_sweep(now)
        known = self._by_key.get(key) if key else None
        if known is not None:
            entry = self._entries.get(known)
            if entry is not None and entry.conf == conf and entry.expires > now:
                entry.expires = now + self.ttl
                self._publish(entry)
                return entry
        if len(self._entries) >= self.max_tokens:
            self._evict_oldest()
        entry = Entry(self._allocate(), key, conf, now + self.ttl, route_of(key))
        self._entries[entry.token] = entry
        if key:
            self._by_key[key] = entry.token
        self._publish(entry)
        return entry

    def get(self, token: int) -> Entry | None:
        """The live entry for a token, or None (unknown or expired: APISIX must PrepareConf again)."""
        entry = self._entries.get(token)
        if entry is not None:
            if entry.expires > self.clock():
                return entry
            self._drop(entry)
        # unknown here, or expired here but perhaps refreshed by a sibling process
        return self._load_shared(token)

    def __len__(self) -> int:
        return len(self._entries)

    # ---- expiry and sharing ---------------------------------------------------------------

    def _drop(self, entry: Entry) -> None:
        self._entries.pop(entry.token, None)
        if self._by_key.get(entry.key) == entry.token:
            del self._by_key[entry.key]

    def _evict_oldest(self) -> None:
        oldest = min(self._entries.values(), key=lambda e: e.expires)
        self._drop(oldest)

    def _maybe_sweep(self, now: float) -> None:
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        for entry in [e for e in self._entries.values() if e.expires <= now]:
            self._drop(entry)
            if self.shared_dir is not None:
                try:
                    (self.shared_dir / str(entry.token)).unlink()
                except OSError:
                    pass

    def _publish(self, entry: Entry) -> None:
        if self.shared_dir is None:
            return
        data = orjson.dumps({"key": entry.key, "conf": entry.conf, "expires": entry.expires})
        tmp = self.shared_dir / f".{entry.token}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, self.shared_dir / str(entry.token))

    def _load_shared(self, token: int) -> Entry | None:
        if self.shared_dir is None:
            return None
        try:
            data = orjson.loads((self.shared_dir / str(token)).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        conf = tuple((str(n), v if v is None else str(v)) for n, v in data.get("conf", ()))
        entry = Entry(token, str(data.get("key", "")), conf, float(data.get("expires", 0.0)), route_of(str(data.get("key", ""))))
        if entry.expires <= self.clock():
            return None
        if len(self._entries) >= self.max_tokens:
            self._evict_oldest()
        self._entries[token] = entry
        if entry.key:
            self._by_key.setdefault(entry.key, token)
        return entry
