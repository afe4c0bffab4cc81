"""Secrets from files: file:///run/secrets/openai, or file:///etc/llm/keys.json#openai (JSON key).

A Kubernetes Secret mounted as files rotates by swapping a symlink; `changed()` notices that
(mtime/inode of the resolved path), so the refresh loop picks up new values without a restart.
"""
from __future__ import annotations

import os

from llm_router.secrets.base import SecretError, SecretRef, value_of


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
        return value_of(ref, text, f"file {path}")

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
