"""Stored OpenAI Responses (retrieve, delete, cancel, input items): which provider holds one.

A response lives with the provider that created it, under the key it was created with, which the
client never had. So these calls go where the response came from, with that provider's key: the
runtime remembers each answered response id (in the shared affinity table, so every process and,
with Redis state, every replica knows it); an id it does not know goes to the only provider of the
route's policy that serves the Responses API, and when several do, the client gets a 404 naming them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from llm_router.affinity import AffinityTable, response_key
from llm_router.catalog import Catalog, Model
from llm_router.catalog import provider_path as catalog_path
from llm_router.decision import RouteError
from llm_router.router import Policy

SCOPE = "stored"  # affinity-table scope of "response id -> model that answered it"
MARK = "/responses/"
SUBPATHS = ("", "cancel", "input_items")
_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")


@dataclass(frozen=True, slots=True)
class StoredPath:
    """A path under a Responses endpoint: `<base>/responses/<response_id>[/<more>][?query]`."""

    response_id: str
    rest: str  # everything after "/responses/", without the query
    query: str  # "?..." or ""


@dataclass(frozen=True, slots=True)
class Holder:
    """The model whose provider holds a stored response, and how it was found."""

    model: Model
    found: str  # "remembered" | "only_provider"


def stored_path(path: str) -> StoredPath | RouteError | None:
    """The stored-response path, an error naming a malformed id, or None for any other path."""
    bare, mark, query = path.partition("?")
    at = bare.rfind(MARK)
    if at < 0:
        return None
    rest = bare[at + len(MARK):].strip("/")
    if not rest or "/responses" in rest:
        return None
    response_id, _, sub = rest.partition("/")
    if sub not in SUBPATHS:
        return None  # not a call OpenAI defines: passed through untouched
    if not _ID.fullmatch(response_id):
        shown = response_id if len(response_id) <= 60 else response_id[:60] + "..."
        return RouteError(400, f"path: {shown!r} is not a response id (letters, digits, '_' and '-', at most 200)",
                          code="invalid_response_id", field="path")
    return StoredPath(response_id, rest, mark + query)


def remember(table: AffinityTable, response_id: str, model_id: str) -> None:
    """Record which model answered (so which provider stores) a response."""
    table.put(response_key(SCOPE, response_id), model_id)


def holder(table: AffinityTable, catalog: Catalog, policy: Policy, response_id: str) -> Holder | RouteError:
    """The model to send a stored-response call to, or a 404 that says why none can be chosen."""
    known = table.get(response_key(SCOPE, response_id))
    model = catalog.models.get(known) if known is not None else None
    if model is not None and catalog.keeps_responses(model):
        return Holder(model, "remembered")
    serving = [m for m in policy.models if catalog.keeps_responses(m)]  # a provider that stores nothing holds no response
    providers = list(dict.fromkeys(m.provider for m in serving))
    if len(providers) == 1:
        return Holder(serving[0], "only_provider")
    if not providers:
        return RouteError(404, f"response {response_id!r}: no model of policy '{policy.name}' is served by a provider that "
                               "stores Responses answers, so none holds it for this route", code="response_not_found",
                          field="path")
    return RouteError(404, f"response {response_id!r} was not answered through this router (or is older than what it "
                           f"remembers), and providers {', '.join(providers)} all serve the Responses API: cannot tell "
                           "which one holds it", code="response_not_found", field="path")


def provider_path(call_base: str, model_name: str, found: StoredPath) -> str:
    """The provider's path for the call: its Responses path, then the id and what follows, then the
    provider's query parameters and the client's."""
    return catalog_path(call_base, model_name, suffix="/" + found.rest, query=found.query)
