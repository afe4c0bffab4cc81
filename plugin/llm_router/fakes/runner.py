"""Run a set of fake providers on 127.0.0.1: in the current event loop or in a background thread."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from llm_router.config import Config, ModelConf, load_config
from llm_router.fakes.http import serve_connection
from llm_router.fakes.providers import Behaviour, FakeProvider, Recorded, fake_key
from llm_router.loop_thread import LoopThread


class FakeProviders:
    """Fake providers, one port each, built from a catalog; records every request they receive.

    In tests: `with FakeProviders.from_config(cfg).start() as fakes: ...` runs them in a thread;
    `fakes.ports`, `fakes.env()` (provider keys as the config's env:// references expect),
    `fakes.requests("openai")`, `fakes.set_behaviour("anthropic", status=429)`.
    """

    def __init__(self, providers: Iterable[FakeProvider], *, host: str = "127.0.0.1",
                 ports: Mapping[str, int] | None = None, env_names: Mapping[str, str] | None = None,
                 tls: ssl.SSLContext | None = None):
        self.providers = {p.name: p for p in providers}
        self.host = host
        self.tls = tls  # a server context: every fake answers over TLS (HTTP/1.1)
        self._wanted_ports = dict(ports or {})
        self._env_names = dict(env_names or {})
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = LoopThread("fake-providers")

    @classmethod
    def from_config(cls, cfg: Config | None = None, *, behaviour: Behaviour | None = None, only_catalog_models: bool = True,
                    names: Iterable[str] | None = None, ports: Mapping[str, int] | None = None, seed: int = 0,
                    tls: ssl.SSLContext | None = None) -> "FakeProviders":
        """One fake per provider of the config (default: the built-in catalog), with its paths and auth."""
        cfg = cfg or load_config(None)
        wanted = set(names) if names is not None else set(cfg.providers)
        fakes = []
        env_names = {}
        for i, (name, p) in enumerate(sorted(cfg.providers.items())):
            if name not in wanted:
                continue
            # every model the catalog calls now or will call from a scheduled change's day on (a real provider serves both)
            versions = [(mid, v) for mid, m in cfg.models.items() for v in _versions(m) if v.provider == name]
            served = tuple(sorted({v.name or mid for mid, v in versions}))
            b = behaviour or Behaviour()
            if only_catalog_models:
                b = b.merged(models=served)
            limits = {v.name or mid: v.max_output_tokens for mid, v in versions if v.max_output_tokens is not None}
            fakes.append(FakeProvider(name, paths=dict(p.paths), auth=p.auth, behaviour=b, seed=seed + i, max_output=limits))
            for ref in p.credentials:
                if ref.startswith("env://"):
                    env_names[name] = ref[len("env://"):]
                    break
        return cls(fakes, ports=ports, env_names=env_names, tls=tls)

    # ---- lifecycle --------------------------------------------------------------------

    async def start_async(self) -> "FakeProviders":
        """Listen in the running loop (one server per provider)."""
        for name, fake in self.providers.items():
            server = await asyncio.start_server(
                lambda r, w, f=fake: serve_connection(f.handle, r, w), self.host, self._wanted_ports.get(name, 0), ssl=self.tls)
            fake.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
        return self

    async def stop_async(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()

    def start(self, timeout: float = 30.0) -> "FakeProviders":
        """Run in a background thread with its own event loop; returns once listening."""
        self._thread.start(self.start_async, self.stop_async, timeout)
        return self

    def stop(self) -> None:
        """Stop the background thread (if started with start())."""
        self._thread.stop()

    def __enter__(self) -> "FakeProviders":
        if not self._thread.running and not self._servers:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- inspection and control -------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        return {name: f.port for name, f in self.providers.items()}

    def url(self, name: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.providers[name].port}"

    def keys(self) -> dict[str, str]:
        """Provider -> the key its fake expects."""
        return {name: f.key for name, f in self.providers.items()}

    def env(self) -> dict[str, str]:
        """Environment variables that give the router each fake's key (per the config's env:// refs)."""
        return {var: self.providers[name].key for name, var in self._env_names.items() if name in self.providers}

    def requests(self, name: str | None = None) -> list[Recorded]:
        """What the fakes received (all of them, or one provider's), oldest first."""
        if name is not None:
            return list(self.providers[name].records)
        out = [r for f in self.providers.values() for r in list(f.records)]
        return sorted(out, key=lambda r: r.at)

    def clear(self) -> None:
        for f in self.providers.values():
            f.records.clear()

    def set_behaviour(self, name: str | None = None, **changes: Any) -> None:
        """Change how one fake (or all) answers from now on, e.g. status=429, first_byte_ms=50."""
        targets = [self.providers[name]] if name is not None else list(self.providers.values())
        for f in targets:
            f.set_behaviour(f.behaviour.merged(**changes))


__all__ = ["Behaviour", "FakeProvider", "FakeProviders", "Recorded", "fake_key"]


def _versions(model: ModelConf) -> list[ModelConf]:
    """A model as configured and as it is from each of its scheduled changes' days on."""
    days = [datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) for day in model.changes]
    return [model, *(model.as_of(moment) for moment in days)]
