"""Calls the router does not route but sends on with a provider's key: embeddings, moderations, audio, images,
and the Batch API (files, batches).

An application that points its OpenAI SDK at the gateway calls these too, and its clients hold no
provider key (the router injects keys). A policy's `forward: {embeddings: openai, ...}` sends each
such call to that provider's upstream, on the provider's API root (its chat path without
`/chat/completions`), with its key, the client's credentials and routing header dropped; the body
passes as it is (it may be a multipart upload) and is never read. Embeddings answers are priced from
their usage by the provider's `forward_prices` (telemetry); the other APIs are not priced.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from llm_router.catalog import MODEL_PLACEHOLDER, Provider

ForwardApi = Literal["embeddings", "moderations", "audio", "images", "files", "batches"]
# Forwarded APIs whose answers carry token usage: priced (forward_prices), observed and held to spend limits.
PRICED_APIS: frozenset[str] = frozenset({"embeddings"})
# Batch API: a JSONL file uploaded (files), a batch naming it (batches), its results fetched as a file.
_PATH = re.compile(r"/(?:(embeddings|moderations)|(audio|images)/[A-Za-z0-9_]+"
                   r"|(files|batches)(?:/[A-Za-z0-9_-]+(?:/(?:content|cancel))?)?)/?$")
# A provider's API root is what precedes these suffixes in the paths it serves.
_ROOT_SUFFIXES = (("chat", "/chat/completions"), ("completions", "/completions"), ("responses", "/responses"))


@dataclass(frozen=True, slots=True)
class ForwardPath:
    """A path one of the forwardable APIs serves: which API, and the part the provider's root precedes."""

    api: ForwardApi
    tail: str  # "/embeddings", "/audio/transcriptions", ...
    query: str  # without "?"


def forward_path(path: str) -> ForwardPath | None:
    """The forwardable API a path calls (`.../v1/embeddings`, `.../v1/audio/speech`, ...), or None."""
    bare, _, query = path.partition("?")
    m = _PATH.search(bare)
    if m is None or bare[: m.start()].endswith("/messages"):  # Anthropic's message batches are not OpenAI's
        return None
    return ForwardPath(cast(ForwardApi, m.group(1) or m.group(2) or m.group(3)), bare[m.start():].rstrip("/"), query)


def api_root(paths: Mapping[str, str]) -> str | None:
    """The OpenAI-style API root (`/v1`, `/v1beta/openai`) of a provider's paths (request API -> path), or
    None when it has none (Anthropic's Messages API, or paths that name the model, as Azure's deployments do)."""
    for api, suffix in _ROOT_SUFFIXES:
        path = paths.get(api, "").partition("?")[0]
        if path.endswith(suffix) and MODEL_PLACEHOLDER not in path:
            return path[: -len(suffix)]
    return None


def provider_root(provider: Provider) -> str | None:
    """The provider's OpenAI-style API root, or None (see api_root)."""
    return api_root(provider.paths)
