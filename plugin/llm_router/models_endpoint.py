"""`GET .../v1/models` answered by the router: the models a route's policy may choose, plus `auto`.

SDKs and tools list models before they call one; behind the router the provider's own list is
the wrong answer (and needs a key the client does not have). OpenAI's list format, or Anthropic's
when the request carries `anthropic-version`.
"""
from __future__ import annotations

from typing import Any

import orjson

from llm_router.catalog import Model
from llm_router.decision import RouteError

AUTO_ID = "auto"
CREATED = 1_700_000_000  # a fixed timestamp: clients parse it, and the list must not change between calls


def models_path(path: str) -> str | None:
    """'' for the list, the model id for one model, None for any other path."""
    bare = path.partition("?")[0].rstrip("/")
    if bare.endswith("/models"):
        return ""
    at = bare.find("/models/")
    return bare[at + len("/models/"):] if at >= 0 else None


def listed(models: tuple[Model, ...], aliases: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(id, owner) for `auto`, the policy names clients may send (client_policies), then each model, cheapest first."""
    return [(AUTO_ID, "llm-router"), *((a, "llm-router") for a in aliases), *((m.id, m.provider) for m in models)]


def models_body(models: tuple[Model, ...], wanted: str, anthropic: bool, aliases: tuple[str, ...] = ()) -> tuple[int, bytes]:
    """Status and JSON body: the list, one model, or a 404 naming the known ids."""
    rows = listed(models, aliases)
    if wanted:
        # by catalog id, or by the provider's own name for it (what a client may have sent as `model`)
        found = next((r for r in rows if r[0] == wanted), None) or next(
            ((m.id, m.provider) for m in models if m.name == wanted), None)
        if found is None:
            err = RouteError(404, f"model {wanted!r} is not served here; use 'auto' or one of: "
                                  f"{', '.join(r[0] for r in rows[1:])}", code="model_not_found", field="model")
            return 404, orjson.dumps(err.openai_body())
        return 200, orjson.dumps(_entry(*found, anthropic))
    data = [_entry(mid, owner, anthropic) for mid, owner in rows]
    if anthropic:
        return 200, orjson.dumps({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})
    return 200, orjson.dumps({"object": "list", "data": data})


def _entry(model_id: str, owner: str, anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2023-11-14T22:13:20Z"}
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": owner}
