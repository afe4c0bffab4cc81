"""Anthropic's `POST .../v1/messages/count_tokens` (Claude Code calls it every turn): counted by the provider.

It is not routed: the count goes to a provider of the route's policy that serves the Messages API
and counts tokens (`counts_tokens`, false for DeepSeek's Anthropic-compatible API), with that
provider's key, and the model named as that provider knows it. Without such a provider (or its
key) the router answers with its own estimate, marked as one.
"""
from __future__ import annotations

from dataclasses import dataclass

from llm_router.catalog import AUTO_MODELS, Catalog, Model
from llm_router.router import Policy

SUFFIX = "/messages/count_tokens"


def is_count_path(path: str) -> bool:
    """Whether a path (query allowed) is Anthropic's token-count endpoint."""
    return path.partition("?")[0].rstrip("/").endswith(SUFFIX)


@dataclass(frozen=True, slots=True)
class Counter:
    """Who counts: the model whose provider is asked, and the model name to send it."""

    model: Model
    name: str


def counter_for(asked: str | None, policy: Policy, catalog: Catalog, keyless: frozenset[str]) -> Counter | None:
    """The provider and model name for a count, or None when no provider of the policy can count it."""
    serving = [m for m in policy.models if catalog.serves(m, "messages") and catalog.providers[m.provider].counts_tokens
               and m.id not in keyless]
    if not serving:
        return None
    named = catalog.get(asked) if asked else None
    if named is not None and named in serving:
        return Counter(named, named.name)
    best = max(serving, key=lambda m: (m.tier, m.quality))
    if asked is None or asked.lower() in AUTO_MODELS or asked in policy.conf.client_policies or named is not None:
        return Counter(best, best.name)  # 'auto', a policy name, or a catalog model that cannot count: a model that can
    return Counter(best, asked)  # a name the catalog does not know (a newer model): the provider may well know it
