"""Secret stores from config `secrets`, and the background refresh of resolved values."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Callable

from llm_router.background import BackgroundTask
from llm_router.edge_sections import EDGE_FIELDS
from llm_router.secrets.base import SecretError, SecretStore, parse_ref
from llm_router.secrets.env import EnvStore
from llm_router.secrets.file import FileStore

log = logging.getLogger("llm_router.secrets")
KNOWN = EDGE_FIELDS["secrets"]


def _bootstrap(value: Any, where: str, base: list[SecretStore]) -> str | None:
    """A store's own credential (a Vault token, an AppRole secret id): a literal or an env/file reference."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SecretError(f"{where}: must be a string or an env:// / file:// reference")
    if "://" not in value:
        return value
    ref = parse_ref(value)
    for store in base:
        if store.scheme == ref.scheme:
            return store.get(ref)
    raise SecretError(f"{where}: {value} must be an env:// or file:// reference")


def build_stores(conf: Mapping[str, Any]) -> list[SecretStore]:
    """Stores for every scheme the config enables (env and file always)."""
    unknown = set(conf) - KNOWN
    if unknown:
        raise SecretError(f"secrets: unknown fields {sorted(unknown)} (known: {sorted(KNOWN)})")
    fconf = conf.get("file") or {}
    stores: list[SecretStore] = [EnvStore(), FileStore(root=fconf.get("root"))]
    if conf.get("vault"):
        from llm_router.secrets.vault import VaultStore

        v = dict(conf["vault"])
        if "url" not in v:
            raise SecretError("secrets.vault.url: required field is missing")
        stores.append(VaultStore(
            v["url"], auth=v.get("auth", "token"), token=_bootstrap(v.get("token"), "secrets.vault.token", stores),
            role_id=_bootstrap(v.get("role_id"), "secrets.vault.role_id", stores),
            secret_id=_bootstrap(v.get("secret_id"), "secrets.vault.secret_id", stores),
            namespace=v.get("namespace"), verify=v.get("verify", True), approle_mount=v.get("approle_mount", "approle")))
    if conf.get("aws"):
        from llm_router.secrets.aws import AwsStore

        a = dict(conf["aws"])
        stores.append(AwsStore(region=a.get("region"), endpoint_url=a.get("endpoint_url")))
    return stores


class SecretRefresher:
    """Re-resolves credentials in a thread every `refresh_s` (and sooner when a secret file changes).

    On failure the old values stay in use and the failure is logged without any value.
    """

    def __init__(self, resolve: Callable[[], Any], apply: Callable[[Any], None], stores: list[SecretStore],
                 refresh_s: float = 300.0, poll_s: float = 5.0):
        self.resolve, self.apply, self.stores = resolve, apply, stores
        self.refresh_s, self.poll_s = refresh_s, poll_s
        self.refreshes = self.failures = 0
        self._task = BackgroundTask(self.run, "llm-router-secrets")

    def _files_changed(self) -> bool:
        return any(isinstance(s, FileStore) and s.changed() for s in self.stores)

    async def refresh(self) -> bool:
        """Resolve again now; True when new values were applied."""
        try:
            creds = await asyncio.to_thread(self.resolve)
        except SecretError as exc:
            self.failures += 1
            log.warning("secret refresh failed, keeping the previous values: %s", exc)
            return False
        self.apply(creds)
        self.refreshes += 1
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.poll_s)
            if loop.time() - last >= self.refresh_s or self._files_changed():
                await self.refresh()
                last = loop.time()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
