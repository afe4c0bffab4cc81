"""The per-attempt rewrite: an upstream ext_proc filter that turns each fallback attempt into its provider's call.

Envoy runs it on the provider clusters for every retry of a routed request (attempt 1 skips it:
the routing filter already made that call). It is stateless: the attempt number comes from
`x-envoy-attempt-count`, the cluster of this attempt from the `xds.cluster_name` attribute, the
chain and the API from the routing filter's dynamic metadata, the request from the body.

It fails closed: when it cannot tell which model this attempt is for, or that model does not
live on this attempt's cluster, it answers 502 itself (an upstream filter's local reply, which
Envoy does not retry) and the request never reaches the provider with another provider's key.
On the chain's last attempt it also reads the response status: when that model failed too, the
client gets one clear 502/503 in OpenAI's error format instead of the last provider's own error.
"""
from __future__ import annotations

import logging

import orjson
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from llm_router.decision import RouteError
from llm_router.gateways.envoy import wire
from llm_router.gateways.envoy.fallback import (API_KEY, ATTEMPT_HEADER, CHAIN_KEY, CLUSTER_ATTR, MODEL_HEADER, RETRIABLE_STATUS,
                                                parse_chain, retriable)
from llm_router.gateways.envoy.route_conf import FILTER_ATTRS
from llm_router.plan import plan_call
from llm_router.request import RequestError, parse_request
from llm_router.runtime import Runtime

log = logging.getLogger("llm_router.envoy.attempt")

REQUEST_ID_KEY = "x-llm-router-request-id"
_CONTINUE = {
    "request_body": wire.REQUEST_BODY_CONTINUE,
    "request_trailers": wire.field(5, b""),
    "response_body": wire.RESPONSE_BODY_CONTINUE,
    "response_trailers": wire.field(6, b""),
}
RESPONSE_HEADERS_CONTINUE = wire.response_headers_reply()


class AttemptService:
    """What every attempt session shares: the runtime (catalog, credentials) and encoded constants."""

    def __init__(self, runtime: Runtime, namespace: str, local_reply_metadata: bytes):
        self.runtime = runtime
        self.namespace = namespace
        self.local_reply_metadata = local_reply_metadata
        self.route_header = runtime.route_header
        # Fixed headers any provider sets (e.g. anthropic-version): an earlier attempt's must not stay.
        self.fixed_headers = tuple(sorted({name for p in runtime.catalog.providers.values() for name, _ in p.headers}))

    @property
    def catalog(self):
        """The runtime's catalog now (a config reload may replace it)."""
        return self.runtime.catalog


class AttemptSession:
    """One attempt: check it, rewrite model, path, credential and body for its provider; judge the last answer."""

    __slots__ = ("svc", "finished", "attempt", "cluster", "chain", "api", "request_id", "explain", "model", "body_expected")

    def __init__(self, svc: AttemptService):
        self.svc = svc
        self.finished = False
        self.attempt = 0
        self.cluster = ""
        self.chain: tuple[str, ...] = ()
        self.api = ""
        self.request_id = ""
        self.explain = False
        self.model = None
        self.body_expected = False

    def on_message(self, data: bytes) -> list[bytes]:
        req = ProcessingRequest.FromString(data)
        kind = req.WhichOneof("request")
        if kind == "request_headers":
            return self._request_headers(req)
        if kind == "request_body":
            body = req.request_body
            if not self.body_expected:
                return [wire.REQUEST_BODY_CONTINUE]
            if not body.end_of_stream:  # BUFFERED mode sends the whole body at once
                return self._refuse("the attempt's body did not arrive in one piece")
            return self._request_body(body.body)
        if kind == "response_headers":
            return self._response_headers(req)
        reply = _CONTINUE.get(kind)
        return [reply] if reply is not None else []

    # ---- request ----------------------------------------------------------------------

    def _request_headers(self, req: ProcessingRequest) -> list[bytes]:
        svc = self.svc
        for h in req.request_headers.headers.headers:
            if h.key == ATTEMPT_HEADER:
                try:
                    self.attempt = int(h.raw_value or h.value)
                except ValueError:
                    pass
                break
        attrs = req.attributes.get(FILTER_ATTRS)
        value = attrs.fields.get(CLUSTER_ATTR) if attrs is not None else None
        self.cluster = value.string_value if value is not None else ""
        ns = req.metadata_context.filter_metadata.get(svc.namespace)
        fields = ns.fields if ns is not None else {}
        chain = fields.get(CHAIN_KEY)
        self.chain = parse_chain(chain.string_value) if chain is not None else ()
        api = fields.get(API_KEY)
        self.api = api.string_value if api is not None else ""
        rid = fields.get(REQUEST_ID_KEY)
        self.request_id = rid.string_value if rid is not None else ""
        self.explain = MODEL_HEADER in fields
        problem = self._check()
        if problem is not None:
            return self._refuse(problem)
        if req.request_headers.end_of_stream:
            return self._refuse("the attempt has no body to rewrite")
        self.body_expected = True
        return [wire.REQUEST_HEADERS_CONTINUE]  # the rewrite comes with the body reply (BUFFERED mode)

    def _check(self) -> str | None:
        """Why this attempt cannot be rewritten safely, or None."""
        if not self.chain:
            return "the request carries no fallback chain (it was not routed by llm-router)"
        n = self.attempt
        if not 1 <= n <= len(self.chain):
            return f"attempt {n or '?'} is outside the fallback chain of {len(self.chain)} models"
        if not self.cluster:
            return f"attempt {n}: the upstream cluster is unknown"
        model = self.svc.catalog.models.get(self.chain[n - 1])
        if model is None:
            return f"attempt {n}: model {self.chain[n - 1]!r} is not in the catalog"
        if model.upstream != self.cluster:
            return f"attempt {n} goes to cluster {self.cluster!r}, but model {model.id!r} lives on {model.upstream!r}"
        provider = self.svc.catalog.providers[model.provider]
        if self.api not in provider.paths:
            return f"attempt {n}: provider {provider.name!r} does not serve the {self.api or '?'} API"
        self.model = model
        return None

    def _request_body(self, body: bytes) -> list[bytes]:
        svc = self.svc
        runtime = svc.runtime
        try:
            request = parse_request(body, self.api)
        except RequestError as exc:
            return self._refuse(f"attempt {self.attempt}: the body cannot be rewritten ({exc})")
        call = plan_call(request, self.model, svc.catalog, runtime.credentials, route_header=svc.route_header,
                         thinking_origin=runtime.router.thinking_origin, reasoning=runtime.router.recall_reasoning)
        sets = [(k, v) for k, v in call.set_headers if k != svc.route_header]
        names = {k for k, _ in sets}
        remove = [*call.remove_headers, *(h for h in svc.fixed_headers if h not in names)]
        headers = (wire.header_mutation((*sets, (":path", call.path)), remove)
                   + wire.content_length_option(len(call.body)))
        meta = wire.dynamic_metadata(svc.namespace, {MODEL_HEADER: self.model.id}) if self.explain else b""
        return [wire.request_body_reply(wire.common_response(headers=headers, body=call.body), meta)]

    # ---- response ---------------------------------------------------------------------

    def _response_headers(self, req: ProcessingRequest) -> list[bytes]:
        self.finished = True
        if self.model is None or self.attempt < len(self.chain):
            return [RESPONSE_HEADERS_CONTINUE]  # Envoy retries a failure on the next model by itself
        status = 0
        retry_after = None
        for h in req.response_headers.headers.headers:
            if h.key == ":status":
                status = int(h.raw_value or h.value or 0)
            elif h.key == "retry-after":
                retry_after = (h.raw_value or h.value.encode()).decode("latin-1")
        if not retriable(status):
            return [RESPONSE_HEADERS_CONTINUE]
        unavailable = status in (RETRIABLE_STATUS, 503)
        error = RouteError(503 if unavailable else 502,
                           f"no model of the fallback chain answered: tried {', '.join(self.chain)}; the last, "
                           f"{self.model.id}, answered {status}", code="all_models_failed")
        extra = [("retry-after", retry_after)] if retry_after and status == RETRIABLE_STATUS else []
        return [self._reply(error, "llm_router_chain_exhausted", extra)]

    def _refuse(self, why: str) -> list[bytes]:
        """Fail closed: answer 502 here; the provider never sees this attempt."""
        self.finished = True
        log.warning("refusing fallback attempt for request %s: %s", self.request_id or "?", why)
        error = RouteError(502, f"llm-router cannot make this fallback attempt safely: {why}", code="fallback_refused")
        return [self._reply(error, "llm_router_attempt_refused")]

    def _reply(self, error: RouteError, details: str, extra: list[tuple[str, str]] = ()) -> bytes:
        """An immediate response in OpenAI's error format (marked so local_reply_config leaves it alone)."""
        headers = [("content-type", "application/json"), *extra]
        if self.request_id:
            headers.append((REQUEST_ID_KEY, self.request_id))
        return wire.immediate_reply(error.status, orjson.dumps(error.openai_body()), headers, details=details,
                                    metadata=self.svc.local_reply_metadata)

    def on_close(self) -> None:
        pass
