"""A small client of the APISIX Admin API (v3): get and put routes and upstreams."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

# Fields APISIX manages itself; a PUT carries the rest of the object back.
READ_ONLY = ("create_time", "update_time")


class AdminError(Exception):
    """The Admin API refused or could not be reached; the message says which and why."""


@dataclass
class Stored:
    """An object as the Admin API returns it."""

    key: str
    value: dict[str, Any]
    modified_index: int | None


class Admin:
    """Routes and upstreams through the Admin API (X-API-KEY authentication)."""

    def __init__(self, base_url: str, key: str | None, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        headers = {"X-API-KEY": key} if key else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            return self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the APISIX Admin API at {self.base_url}: {exc}") from None

    @staticmethod
    def _why(resp: httpx.Response) -> str:
        try:
            data = resp.json()
        except ValueError:
            return resp.text[:300]
        if isinstance(data, dict):
            return str(data.get("error_msg") or data.get("message") or data)[:500]
        return str(data)[:300]

    def get(self, kind: str, obj_id: str) -> Stored | None:
        """GET /apisix/admin/{kind}/{id}; None when it does not exist."""
        resp = self._call("GET", f"/apisix/admin/{kind}/{obj_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code == 401:
            raise AdminError("the Admin API rejected the key (401): pass --key or set APISIX_ADMIN_KEY")
        if resp.status_code != 200:
            raise AdminError(f"GET {kind}/{obj_id} failed ({resp.status_code}): {self._why(resp)}")
        data = resp.json()
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, dict):
            raise AdminError(f"GET {kind}/{obj_id}: unexpected answer (no 'value' object)")
        return Stored(str(data.get("key", "")), value, data.get("modifiedIndex"))

    def put(self, kind: str, obj_id: str, value: dict[str, Any]) -> Stored:
        """PUT /apisix/admin/{kind}/{id} (APISIX validates it against its schemas)."""
        body = {k: v for k, v in value.items() if k not in READ_ONLY}
        resp = self._call("PUT", f"/apisix/admin/{kind}/{obj_id}", body)
        if resp.status_code == 401:
            raise AdminError("the Admin API rejected the key (401): pass --key or set APISIX_ADMIN_KEY")
        if resp.status_code not in (200, 201):
            raise AdminError(f"APISIX refused {kind}/{obj_id} ({resp.status_code}): {self._why(resp)}")
        data = resp.json()
        return Stored(str(data.get("key", "")), data.get("value") or body, data.get("modifiedIndex"))
