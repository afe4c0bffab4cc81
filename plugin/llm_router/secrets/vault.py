"""Secrets from HashiCorp Vault KV v2: vault://MOUNT/PATH#KEY (e.g. vault://kv/llm/openai#api_key)."""
from __future__ import annotations

from typing import Any

from llm_router.secrets.base import SecretError, SecretRef


class VaultStore:
    """KV v2 reads through hvac, with token or AppRole auth (config `secrets.vault`)."""

    scheme = "vault"

    def __init__(self, url: str, *, auth: str = "token", token: str | None = None, role_id: str | None = None,
                 secret_id: str | None = None, namespace: str | None = None, verify: bool | str = True,
                 approle_mount: str = "approle", timeout: float = 5.0):
        try:
            import hvac
        except ImportError:
            raise SecretError("vault:// references need the 'hvac' package (pip install 'llm-router[vault]')") from None
        self.url = url
        self._client = hvac.Client(url=url, namespace=namespace, verify=verify, timeout=timeout)
        self._auth = auth
        self._creds = {"token": token, "role_id": role_id, "secret_id": secret_id, "mount": approle_mount}
        self._logged_in = False

    def _login(self) -> None:
        import hvac.exceptions as hx
        import requests

        try:
            if self._auth == "token":
                if not self._creds["token"]:
                    raise SecretError("secrets.vault.token: no Vault token configured")
                self._client.token = self._creds["token"]
            elif self._auth == "approle":
                if not (self._creds["role_id"] and self._creds["secret_id"]):
                    raise SecretError("secrets.vault: AppRole auth needs role_id and secret_id")
                self._client.auth.approle.login(role_id=self._creds["role_id"], secret_id=self._creds["secret_id"],
                                                mount_point=self._creds["mount"])
            else:
                raise SecretError(f"secrets.vault.auth: unknown auth method {self._auth!r} (token or approle)")
        except (hx.VaultError, requests.RequestException) as exc:
            raise SecretError(f"vault login ({self._auth}) at {self.url} failed: {type(exc).__name__}") from None
        self._logged_in = True

    def get(self, ref: SecretRef) -> str:
        import hvac.exceptions as hx
        import requests

        if "/" not in ref.path:
            raise SecretError(f"{ref}: expected vault://MOUNT/PATH#KEY")
        mount, path = ref.path.split("/", 1)
        for attempt in (1, 2):
            if not self._logged_in:
                self._login()
            try:
                resp: Any = self._client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
                break
            except hx.Forbidden:
                if attempt == 2 or self._auth != "approle":
                    raise SecretError(f"{ref}: permission denied by Vault") from None
                self._logged_in = False  # the AppRole token expired: log in again once
            except hx.InvalidPath:
                raise SecretError(f"{ref}: no secret at {mount}/{path}") from None
            except (hx.VaultError, requests.RequestException) as exc:
                raise SecretError(f"{ref}: Vault read failed: {type(exc).__name__}") from None
        data = (resp or {}).get("data", {}).get("data", {})
        key = ref.key or "value"
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise SecretError(f"{ref}: key {key!r} is missing or empty")
        return value.strip()
