"""Secrets from files: file:///run/secrets/openai, or file:///etc/llm/keys.json#openai (JSON key).

A Kubernetes Secret mounted as files rotates by swapping a symlink; `changed()` notices that
(mtime/inode of the resolved path), so the refresh loop picks up new values without a restart.
"""
from __future__ import annotations

import json
import os

from llm_router.secrets.base import SecretError, SecretRef


class FileStore:
    """Reads the whole file (stripped), or one key of a JSON object file."""

    scheme = "file"

    def __init__(self, root: str | None = None):
        self.root = root
        self._stamps: dict[str, tuple[float, int]] = {}

    def _path(self, ref: SecretRef) -> str:
        path = ref.path if ref.path.startswith("/") else os.path.join(self.root or os.getcwd(), ref.path)
        return path

    def get(self, ref: SecretRef) -> str:
        path = self._path(ref)
        try:
            text = open(path, encoding="utf-8").read()
            st = os.stat(path)
        except FileNotFoundError:
            raise SecretError(f"{ref}: file {path} does not exist") from None
        except OSError as exc:
            raise SecretError(f"{ref}: cannot read {path}: {exc.strerror}") from None
        self._stamps[path] = (st.st_mtime, st.st_ino)
        if ref.key:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise SecretError(f"{ref}: {path} is not a JSON object, so key {ref.key!r} cannot be read") from None
            value = data.get(ref.key) if isinstance(data, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise SecretError(f"{ref}: key {ref.key!r} is missing or empty in {path}")
            return value.strip()
        if not text.strip():
            raise SecretError(f"{ref}: file {path} is empty")
        return text.strip()

    def changed(self) -> bool:
        """Whether any file read so far has changed since it was read."""
        for path, stamp in self._stamps.items():
            try:
                st = os.stat(path)
            except OSError:
                return True
            if (st.st_mtime, st.st_ino) != stamp:
                return True
        return False
