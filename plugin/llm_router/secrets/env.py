"""Secrets from environment variables: env://NAME."""
from __future__ import annotations

import os
from collections.abc import Mapping

from llm_router.secrets.base import SecretError, SecretRef


class EnvStore:
    """Reads env://NAME from the process environment (or a given mapping)."""

    scheme = "env"

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = os.environ if environ is None else environ

    def get(self, ref: SecretRef) -> str:
        value = self._environ.get(ref.path)
        if value is None or not value.strip():
            raise SecretError(f"{ref}: environment variable {ref.path} is not set or empty")
        return value.strip()
