"""The orchestrator: settings and one HTTP client per Runtime; dispatches cascade (scored or by agreement), hedge and fallback."""
from __future__ import annotations

import logging

import orjson

from llm_router.config import ConfigError
from llm_router.decision import Decision, RouteError
from llm_router.orchestrate.cascade import run_chain
from llm_router.orchestrate.client import UpstreamClient
from llm_router.orchestrate.consensus import run_agreement
from llm_router.orchestrate.hedge import run_hedge
from llm_router.orchestrate.params import CascadeParams, HedgeParams, parse_params
from llm_router.orchestrate.reply import OrchestratedReply
from llm_router.orchestrate.settings import OrchestrateSettings
from llm_router.request import LLMRequest
from llm_router.runtime import Exchange, Runtime

log = logging.getLogger("llm_router.orchestrate")


class Orchestrator:
    """Runs cascades, hedges and runner-side fallbacks for one Runtime."""

    def __init__(self, runtime: Runtime, settings: OrchestrateSettings, client: UpstreamClient | None = None):
        self.runtime = runtime
        self.settings = settings
        self.client = client or UpstreamClient(settings, route_header=runtime.route_header)

    async def run(self, ex: Exchange, request: LLMRequest, decision: Decision) -> OrchestratedReply:
        """Cascade or hedge per the decision's mode; plain chain fallback for any other mode."""
        ex.request, ex.decision = request, decision
        try:
            policy_params = ex.policy.conf.params if ex.policy is not None else {}
            if decision.mode == "hedge":
                params = parse_params("hedge", policy_params)
                assert isinstance(params, HedgeParams)
                return await run_hedge(self.client, self.runtime, ex, request, decision.chain, params,
                                       deadline_s=self.settings.deadline_s)
            scoring = None
            chain = decision.chain
            if decision.mode == "cascade":
                params = parse_params("cascade", policy_params)
                assert isinstance(params, CascadeParams)
                scoring = params.scoring
                if params.max_steps:
                    chain = chain[: params.max_steps]
                if scoring.scorer == "agree":
                    return await run_agreement(self.client, self.runtime, ex, request, chain, params,
                                               deadline_s=self.settings.deadline_s)
            return await run_chain(self.client, self.runtime, ex, request, chain, scoring=scoring,
                                   deadline_s=self.settings.deadline_s, fallback_timeout_s=self.settings.fallback_timeout_s)
        except Exception as exc:  # the runner never dies of a request
            log.exception("orchestration failed for %s", ex.request_id)
            return _internal_error(ex, exc)

    async def fallback(self, ex: Exchange, *, failed_status: int, failed_model: str) -> OrchestratedReply:
        """The models after `failed_model` in the decision's chain, tried by the runner itself."""
        d, request = ex.decision, ex.request
        try:
            if d is None or request is None or not request.body:
                return _internal_error(ex, None, "the request is no longer available for a fallback")
            chain = d.chain
            ids = [m.id for m in chain]
            rest = chain[ids.index(failed_model) + 1:] if failed_model in ids else chain[1:]
            prior = [f"{failed_model} {failed_status} (through the gateway)"]
            return await run_chain(self.client, self.runtime, ex, request, rest, scoring=None,
                                   deadline_s=self.settings.deadline_s, fallback_timeout_s=self.settings.fallback_timeout_s,
                                   first_attempt=ex.attempt + 1,
                                   previous=failed_model, prior=prior, previous_status=failed_status)
        except Exception as exc:
            log.exception("fallback failed for %s", ex.request_id)
            return _internal_error(ex, exc)

    async def aclose(self) -> None:
        await self.client.aclose()


def _internal_error(ex: Exchange, exc: BaseException | None, message: str | None = None) -> OrchestratedReply:
    err = RouteError(502, message or f"router error while calling the models ({type(exc).__name__})", code="router_error")
    headers = [("content-type", "application/json"), ("x-llm-router-request-id", ex.request_id)]
    return OrchestratedReply(err.status, headers, orjson.dumps(err.openai_body()))


def settings_of(runtime: Runtime) -> OrchestrateSettings:
    """server.orchestrate of the runtime's config; ConfigError naming the field."""
    try:
        return OrchestrateSettings.from_config(runtime.config.server)
    except ValueError as exc:
        raise ConfigError([str(exc)], "server.orchestrate") from None


def attach(runtime: Runtime) -> Orchestrator:
    """The runtime's orchestrator, created (and remembered on the runtime) on first use."""
    found = getattr(runtime, "orchestrator", None)
    if found is None:
        found = Orchestrator(runtime, settings_of(runtime))
        runtime.orchestrator = found
    return found
