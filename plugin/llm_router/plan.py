"""Decision -> what the gateway must change on the upstream request: gateway-neutral."""
from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from llm_router.catalog import Catalog, Model, Provider, fill_model
from llm_router.credentials import Credentials
from llm_router.decision import Decision
from llm_router.request import LLMRequest, render_body

ROUTE_HEADER = "x-llm-router-upstream"
REQUEST_ID_HEADER = "x-llm-router-request-id"  # on every reply, and on upstream requests the APISIX runner matches
MAX_REASON_CHARS = 240
# Upstream 4xx after which the next model of a chain is tried, on every adapter (besides no answer and 5xx): the ones
# about the model or the provider, not the request: a key refused (401, 403), a model the provider no longer knows
# (404: a retired name), a timeout, conflict or too-early (408, 409, 425), a rate limit (429). Other 4xx are the request's.
FALLBACK_4XX = frozenset({401, 403, 404, 408, 409, 425, 429})


def fallback_reason(status: int | None) -> str:
    """The `reason` label of llm_router_fallbacks_total for an abandoned attempt, the same on every adapter."""
    if not status:
        return "no_response"  # connect failure, reset, or no first byte before the per-try timeout
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "refused"  # the key, the model's existence (a retired name), a timeout or a conflict
    return "server_error"


@dataclass(slots=True, init=False)
class UpstreamCall:
    """The mutations both adapters apply for one upstream attempt."""

    model: Model
    provider: Provider
    path: str
    body: bytes
    set_headers: tuple[tuple[str, str], ...]  # routing header, credential, provider's fixed headers
    remove_headers: tuple[str, ...]  # client-sent credentials that must not reach the provider
    response_headers: tuple[tuple[str, str], ...]  # explanation headers for the client
    key: int = -1  # which of the provider's keys it carries (-1: none): a 429 cools that key down for the model

    def __init__(self, model: Model, provider: Provider, path: str, body: bytes, set_headers: tuple[tuple[str, str], ...],
                 remove_headers: tuple[str, ...], response_headers: tuple[tuple[str, str], ...], key: int = -1) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.model = model
        self.provider = provider
        self.path = path
        self.body = body
        self.set_headers = set_headers
        self.remove_headers = remove_headers
        self.response_headers = response_headers
        self.key = key


_CONTROLS_TO_Q = bytes.maketrans(bytes(range(32)) + b"\x7f", b"?" * 33)


def header_safe(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Printable ASCII on one line, bounded: safe as an HTTP header value."""
    return text[:limit].encode("ascii", "replace").translate(_CONTROLS_TO_Q).decode("ascii")


def explanation_headers(decision: Decision, *, request_id: str | None, explain: bool) -> tuple[tuple[str, str], ...]:
    """Response headers that show the decision (opt-in) and always the request id."""
    out: list[tuple[str, str]] = []
    if request_id:
        out.append((REQUEST_ID_HEADER, request_id))
    if explain:
        c = decision.classification
        out += [
            ("x-llm-router-model", decision.model.id),
            ("x-llm-router-tier", c.tier.name),
            ("x-llm-router-category", c.category),
            ("x-llm-router-reason", header_safe(decision.reason)),
        ]
        if decision.shadow is not None:
            out.append(("x-llm-router-shadow-model", decision.shadow.id))
    return out and tuple(out) or ()


def plan_call(request: LLMRequest, model: Model, catalog: Catalog, credentials: Credentials, *,
              route_header: str = ROUTE_HEADER, response_headers: tuple[tuple[str, str], ...] = (),
              thinking_origin: Callable[[str], str | None] | None = None,
              reasoning: Callable[[str], str | None] | None = None, cooling: Container[int] = ()) -> UpstreamCall:
    """The upstream call for one model of a decision's chain (`thinking_origin`: which model made a thinking block;
    `reasoning`: what an answer's reasoning was; `cooling`: the provider's keys rate-limited for this model)."""
    provider = catalog.providers[model.provider]
    cred, remove, key = _credential(provider, credentials, cooling)
    return UpstreamCall(
        model=model, provider=provider, path=fill_model(provider.paths[request.api], model.name),
        body=render_body(request, model.name, dialect=catalog.dialect_of(model), max_output=model.max_output,
                         model_id=model.id, thinking_origin=thinking_origin, reasoning=reasoning),
        set_headers=((route_header, model.upstream), *cred), remove_headers=remove, response_headers=response_headers, key=key,
    )


def plan_stored(model: Model, catalog: Catalog, credentials: Credentials, path: str, *, route_header: str = ROUTE_HEADER,
                response_headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> UpstreamCall:
    """A call that is not routed but must reach one provider with its key (a stored response, a token
    count): its path, and the body when it changes (empty: untouched)."""
    provider = catalog.providers[model.provider]
    cred, remove, key = _credential(provider, credentials)
    return UpstreamCall(model=model, provider=provider, path=path, body=body, set_headers=((route_header, model.upstream), *cred),
                        remove_headers=remove, response_headers=response_headers, key=key)


def _credential(provider: Provider, credentials: Credentials,
                cooling: Container[int] = ()) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], int]:
    """The provider's credential and fixed headers, the client-sent credentials to drop, and the key's index."""
    return credentials.presented(provider.name, cooling)
