"""Secret stores behind one protocol; config refers to secrets by reference (env://NAME, ...)."""

from llm_router.secrets.base import SecretError, SecretRef, SecretStore, parse_ref

__all__ = ["SecretError", "SecretRef", "SecretStore", "parse_ref"]
