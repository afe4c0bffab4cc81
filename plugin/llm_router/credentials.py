"""Provider credentials resolved at load time: the hot path reads memory only."""
from __future__ import annotations

import itertools
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from llm_router.catalog import Catalog, Provider
from llm_router.secrets.base import SecretError, SecretStore, parse_ref

# Headers a client may use to send its own provider credential; all are replaced upstream.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


class Secret(str):
    """A string whose repr never shows the value (keeps keys out of tracebacks and logs)."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(slots=True)
class ProviderKeys:
    """The resolved keys of one provider and how to present them."""

    provider: Provider
    keys: tuple[Secret, ...]
    _cycle: itertools.cycle = field(init=False, repr=False)
    # per key index (one entry when there is no key): the headers sent and the client headers dropped
    _presented: tuple[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(range(len(self.keys))) if self.keys else itertools.cycle([None])
        sets = [self._credential(key) + self.provider.headers for key in self.keys] or [self.provider.headers]
        self._presented = tuple((cred, _dropped(cred)) for cred in sets)

    def _credential(self, key: Secret) -> tuple[tuple[str, str], ...]:
        auth = self.provider.auth
        if auth == "bearer":
            return (("authorization", f"Bearer {key}"),)
        if auth in ("x-api-key", "api-key", "x-goog-api-key"):
            return ((auth, str(key)),)
        return ()

    def headers(self, cooling: Container[int] = ()) -> tuple[tuple[tuple[str, str], ...], int]:
        """The credential header(s) for one upstream call and the key's index (-1: none), rotating keys when asked to;
        keys in `cooling` (rate-limited for the model) are passed over while another is free."""
        cred, _, idx = self.presented(cooling)
        return cred, idx

    def presented(self, cooling: Container[int] = ()) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], int]:
        """`headers`, with the client credential headers the call must drop (those it does not set itself)."""
        if not self.keys:
            cred, dropped = self._presented[0]
            return cred, dropped, -1
        n = len(self.keys)
        idx = next(self._cycle) if self.provider.key_rotation == "spread" else 0
        if cooling:
            free = [i for i in range(idx, idx + n) if i % n not in cooling]
            idx = free[0] % n if free else idx
        cred, dropped = self._presented[idx]
        return cred, dropped, idx


def _dropped(cred: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The client credential headers a call with these headers must drop (those it does not set)."""
    set_names = {name for name, _ in cred}
    return tuple(h for h in CLIENT_CREDENTIAL_HEADERS if h not in set_names)


_NOTHING_SET = ((), _dropped(()), -1)


class Credentials:
    """Keys per provider, resolved from secret stores when config loads (and on refresh)."""

    def __init__(self, keys: dict[str, ProviderKeys]):
        self._keys = keys

    @classmethod
    def resolve(cls, catalog: Catalog, stores: Iterable[SecretStore], *, providers: Iterable[str] | None = None,
                missing: str = "error") -> "Credentials":
        """Resolve every credential reference; missing="error" raises SecretError naming the reference."""
        by_scheme = {s.scheme: s for s in stores}
        wanted = set(providers) if providers is not None else set(catalog.providers)
        out: dict[str, ProviderKeys] = {}
        problems: list[str] = []
        for name, prov in catalog.providers.items():
            if name not in wanted:
                continue
            values: list[Secret] = []
            for raw in prov.credentials:
                try:
                    ref = parse_ref(raw)
                    store = by_scheme.get(ref.scheme)
                    if store is None:
                        raise SecretError(f"{raw}: no secret store for scheme {ref.scheme!r} (configured: {sorted(by_scheme)})")
                    values.append(Secret(store.get(ref)))
                except SecretError as exc:
                    problems.append(f"providers.{name}.credentials: {exc}")
            if prov.auth != "none" and not values and missing == "error" and not problems:
                problems.append(f"providers.{name}.credentials: provider needs a credential and none is configured")
            out[name] = ProviderKeys(prov, tuple(values))
        if problems and missing == "error":
            raise SecretError("; ".join(problems))
        return cls(out)

    def replace_with(self, other: "Credentials") -> None:
        """Take over freshly resolved keys (secret rotation); one assignment, so readers never see a mix."""
        self._keys = other._keys

    def headers(self, provider: str, cooling: Container[int] = ()) -> tuple[tuple[tuple[str, str], ...], int]:
        """Credential and fixed headers for one call to this provider, and the index of the key used (-1: none)."""
        keys = self._keys.get(provider)
        return keys.headers(cooling) if keys is not None else ((), -1)

    def presented(self, provider: str, cooling: Container[int] = ()) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], int]:
        """`headers`, with the client credential headers the call must drop (those it does not set itself)."""
        keys = self._keys.get(provider)
        return keys.presented(cooling) if keys is not None else _NOTHING_SET

    def count(self, provider: str) -> int:
        """How many keys the provider has."""
        keys = self._keys.get(provider)
        return len(keys.keys) if keys is not None else 0

    def has(self, provider: str) -> bool:
        """Whether at least one key is loaded for the provider."""
        keys = self._keys.get(provider)
        return bool(keys and keys.keys)

    def values(self) -> list[str]:
        """Every secret value (for the redaction filter only)."""
        return [str(k) for pk in self._keys.values() for k in pk.keys]
