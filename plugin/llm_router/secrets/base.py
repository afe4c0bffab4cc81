"""The SecretStore protocol and secret references."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SecretError(Exception):
    """A secret that cannot be resolved; the message names the reference, never a value."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed reference such as env://OPENAI_API_KEY or vault://kv/llm/openai#api_key."""

    scheme: str
    path: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}" + (f"#{self.key}" if self.key else "")


def parse_ref(ref: str) -> SecretRef:
    """Parse a secret reference; raises SecretError when it is not one."""
    if "://" not in ref:
        raise SecretError(f"secret reference {ref!r} must look like scheme://path[#key] (env, file, vault, aws)")
    scheme, rest = ref.split("://", 1)
    path, _, key = rest.partition("#")
    if not scheme or not path:
        raise SecretError(f"secret reference {ref!r} has an empty scheme or path")
    return SecretRef(scheme=scheme.lower(), path=path, key=key or None)


def value_of(ref: SecretRef, text: str, where: str) -> str:
    """The secret a store read: the whole text, or one key of a JSON object when the ref names one."""
    import json

    if ref.key:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise SecretError(f"{ref}: {where} is not a JSON object, so key {ref.key!r} cannot be read") from None
        value = data.get(ref.key) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise SecretError(f"{ref}: key {ref.key!r} is missing or empty")
        return value.strip()
    if not text.strip():
        raise SecretError(f"{ref}: {where} is empty")
    return text.strip()


class SecretStore(Protocol):
    """Resolves references of one scheme. Called at config load and on refresh, never per request."""

    scheme: str

    def get(self, ref: SecretRef) -> str:
        """The secret value; raises SecretError naming the reference."""
