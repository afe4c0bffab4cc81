"""Policy = classifier + strategy + constraints -> Decision. Pure: no I/O, no clocks, no globals."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson

from llm_router.affinity import AffinityTable, conversation_key, thinking_key
from llm_router.catalog import AUTO_MODELS, BodyDialect, Catalog, Model, Provider, Tier
from llm_router.classify.base import Classification, Classifier
from llm_router.config import Config, ConfigError, ModelBodyConf, PolicyConf, allowed_models, parse_policy
from llm_router.decision import Decision, RouteError
from llm_router.message_rules import (NOT_THINKING_HISTORY, NOT_THINKING_LOOP, NOT_THINKING_MODEL, thinking_left_out,
                                      without_foreign_thinking)
from llm_router.reasoning_memory import ReasoningMemory
from llm_router.request import LLMRequest, RequestError, api_for_path, fitted_thinking, parse_request
from llm_router.strategies import NoState, StateView, Strategy, make_strategy
from llm_router.strategies.base import Context, Selection, by_capability, by_price

NO_STATE = NoState()


def _lowered(request: LLMRequest, model: Model, thinking: bool) -> str:
    """The reason's note when the output limit sent to the model is lowered to what it writes (output_limit: clamp)."""
    asked = request.max_output_tokens
    if asked is None or model.max_output is None or asked <= model.max_output:
        return ""
    note = f"; output limit {asked} lowered to {model.max_output}, what {model.id} writes in one call"
    budget = request.body.get("thinking")
    if thinking and isinstance(budget, dict) and budget.get("budget_tokens") is not None:
        fitted = fitted_thinking(budget, asked, model.max_output)
        if fitted is None:
            note += ", without extended thinking (no budget of 1024 tokens fits)"
        elif fitted is not budget:
            note += f", thinking budget {budget['budget_tokens']} lowered to {fitted['budget_tokens']}"
    return note


def _thinking_dropped(request: LLMRequest, model: Model, dialect: BodyDialect | None,
                      origin: Callable[[str], str | None] | None) -> tuple[str, str]:
    """The reason's notes when an Anthropic turn goes out without other models' thinking blocks, and when it goes out
    without the extended thinking it asks for (each empty when not)."""
    if request.api != "messages":
        return "", ""
    body, foreign = request.body, ""
    unsigned = dialect is not None and dialect.signed_thinking_only
    if (origin is not None or unsigned) and request.thinking_blocks:
        messages = without_foreign_thinking(body.get("messages"), model.id, origin, unsigned)
        if messages is not body.get("messages"):
            body, foreign = {**body, "messages": messages}, "; without the thinking blocks of other models"
    why = thinking_left_out(body, dialect)
    if why == NOT_THINKING_MODEL:
        return foreign, f"; without extended thinking, which {model.id} does not take"
    if why == NOT_THINKING_LOOP:
        return foreign, "; without extended thinking: the tool call this turn answers was made without it"
    if why == NOT_THINKING_HISTORY:
        return foreign, f"; without extended thinking: an earlier tool call was made without it, which {model.id} does not take"
    return foreign, ""


def build_catalog(cfg: Config) -> Catalog:
    """Catalog objects from a validated config."""
    providers = {
        name: Provider(
            name=name, base_url=p.base_url, upstream=p.upstream or name, auth=p.auth, paths={str(k): v for k, v in p.paths.items()},
            credentials=tuple(p.credentials), headers=tuple(p.headers.items()), key_rotation=p.key_rotation,
            forward_prices=dict(p.forward_prices), counts_tokens=p.counts_tokens, stateless_responses=p.stateless_responses,
            body=None if p.body is None else BodyDialect(
                accept={str(api): frozenset(["model", *fields]) for api, fields in p.body.accept.items()},
                rename=tuple(p.body.rename.items()), usage_unasked=p.body.stream_usage == "always", drop=frozenset(p.body.drop),
                tool_call_ids=p.body.tool_call_ids, text_content=p.body.content == "text",
                assistant_after_tool=p.body.assistant_after_tool, developer_as_system=p.body.developer_role == "system",
                message_fields={str(role): frozenset(fields if role == "tool_call" else ["role", *fields])
                                for role, fields in p.body.message_fields.items()},
                prefix_last_assistant=p.body.prefix_last_assistant,
                thinking_every_tool_turn=p.body.thinking_tool_turns == "every",
                drop_empty_tool_calls=p.body.empty_tool_calls == "drop",
                signed_thinking_only=p.body.thinking_signatures == "required", drop_blank_text=p.body.blank_text == "drop",
                effortless_unthinking=p.body.effort_without_thinking == "drop"),
        )
        for name, p in cfg.providers.items()
    }
    models = {
        mid: Model(
            id=mid, provider=m.provider, name=m.name or mid, input_price=m.input_price, output_price=m.output_price,
            context_window=m.context_window, capabilities=frozenset(m.capabilities), tier=Tier[m.tier],
            quality=m.quality, upstream=m.upstream or providers[m.provider].upstream, rpm=m.rpm, tpm=m.tpm,
            tags=frozenset(m.tags), cached_input_price=m.cached_input_price, cache_write_price=m.cache_write_price,
            max_output=m.max_output_tokens, body=_model_body(providers[m.provider].body, m.body), prefill=m.prefill,
            chat_tools=m.chat_tools, stop_sequences=m.stop_sequences, min_output=m.min_output_tokens,
            long_context=None if m.long_context_prices is None else (
                m.long_context_prices.above_input_tokens, m.long_context_prices.input_factor,
                m.long_context_prices.output_factor),
        )
        for mid, m in cfg.models.items()
    }
    return Catalog(providers=providers, models=models)


def _model_body(provider: BodyDialect | None, own: ModelBodyConf | None) -> BodyDialect | None:
    """A model's body rules: its provider's, then its own renames, drops, tool call signatures, reasoning stand-ins,
    sampling settings, message order, tool choice, when it thinks, reasoning efforts and field defaults."""
    if own is None or own == ModelBodyConf():  # every setting at its default: the provider's rules alone
        return provider
    base = provider or BodyDialect()
    return replace(base, rename=base.rename + tuple(own.rename.items()), drop=base.drop | frozenset(own.drop),
                   fill_tool_signatures=base.fill_tool_signatures or own.tool_call_signatures == "fill",
                   fill_reasoning=base.fill_reasoning or own.reasoning_content == "fill",
                   one_sampler=base.one_sampler or own.top_p_with_temperature == "drop",
                   merge_successive=base.merge_successive or own.successive_roles == "merge",
                   unforced_tools=base.unforced_tools or own.named_tool_choice == "auto",
                   unforced_any_tool=base.unforced_any_tool or own.forced_tool_choice == "auto",
                   thinks_when_enabled=base.thinks_when_enabled or own.thinks == "when_enabled",
                   thinking_sampling=base.thinking_sampling or own.sampling_while_thinking == "fit",
                   thinking_type=own.thinking_type if own.thinking_type != "any" else base.thinking_type,
                   efforts={**base.efforts, **own.reasoning_efforts},
                   defaults={api: {**base.defaults.get(api, {}), **own.defaults.get(api, {})}
                             for api in {*base.defaults, *own.defaults}})


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled policy: ready-made classifier, strategy and allowed models."""

    name: str
    conf: PolicyConf
    classifier: Classifier
    strategy: Strategy
    models: tuple[Model, ...]  # allowed by the constraints, cheapest first
    reference: Model | None  # what "no router" would have used, for savings
    affinity: str | None = None  # when the policy keeps conversations together: the scope their keys are made in

    @property
    def ladder(self) -> dict[str, str]:
        return {str(k): v for k, v in self.conf.ladder.items()}


class Router:
    """Classifies requests and selects models, per policy."""

    def __init__(self, config: Config, *, classifiers: dict[str, Classifier] | None = None):
        self.config = config
        self.catalog = build_catalog(config)
        self._classifiers: dict[str, Classifier] = dict(classifiers or {})
        self._rng = random.Random(config.seed)
        self._counters: dict[str, int] = {}
        self._inline_policies: dict[bytes, Policy | RouteError] = {}
        self._chains: dict[tuple, tuple[Model, ...]] = {}
        self._serving: dict[tuple[str, str], tuple[tuple[Model, ...], int, int, int]] = {}
        self.affinity = AffinityTable()  # every policy's conversations, keyed within the policy's scope
        self.reasoning = ReasoningMemory()  # what DeepSeek's thinking answers reasoned, for clients that drop it
        self.policies = {name: self._compile(name, conf) for name, conf in config.policies.items()}
        self.default = self.policies[config.default_policy]

    @property
    def classifiers(self) -> dict[str, Classifier]:
        """The classifier instances built so far, by name (a router for the same classifier settings may share them)."""
        return dict(self._classifiers)

    # ---- compiling --------------------------------------------------------------------

    def classifier(self, name: str) -> Classifier:
        """A classifier instance, built once and shared by every policy that names it."""
        found = self._classifiers.get(name)
        if found is None:
            from llm_router.classify.factory import make_classifier

            found = self._classifiers[name] = make_classifier(name, self.config, self._classifiers)
        return found

    def _compile(self, name: str, conf: PolicyConf, scope: str | None = None) -> Policy:
        allowed = set(allowed_models(conf, self.config))
        models = tuple(by_price([m for m in self.catalog.models.values() if m.id in allowed]))
        reference = policy_reference(conf, models, self.catalog)
        return Policy(name=name, conf=conf, classifier=self.classifier(conf.classifier),
                      strategy=make_strategy(conf.strategy), models=models, reference=reference,
                      affinity=(scope or f"policy:{name}") if conf.affinity == "conversation" else None)

    def keep_conversations(self, previous: "Router") -> None:
        """After a config reload: policies that still keep conversations carry on with the previous table."""
        self.affinity = previous.affinity
        self.reasoning = previous.reasoning

    def remember_thinking(self, signatures: tuple[str, ...], model_id: str) -> None:
        """The thinking blocks of an answer (their signatures or redacted data) were made by this model."""
        table = self.affinity
        for sig in signatures:
            table.put(thinking_key(sig), model_id)

    def recall_reasoning(self, key: str) -> str | None:
        """The reasoning an answer (message_rules.answer_key) held, when it passed through here."""
        return self.reasoning.recall(key)

    def thinking_origin(self, signature: str) -> str | None:
        """The catalog model that made a thinking block, when an answer that passed through here held it."""
        return self.affinity.get(thinking_key(signature))

    def policy_for(self, route_conf: Any) -> Policy | RouteError:
        """The policy for a route's config (APISIX conf JSON, Envoy metadata), compiled once."""
        if route_conf is None or route_conf == "" or route_conf == {}:
            return self.default
        key = route_conf if isinstance(route_conf, bytes) else (
            route_conf.encode() if isinstance(route_conf, str) else orjson.dumps(route_conf, option=orjson.OPT_SORT_KEYS))
        found = self._inline_policies.get(key)
        if found is None:
            try:
                name, conf = parse_policy(route_conf, self.config)
            except ConfigError as exc:
                found = RouteError(500, f"route policy is invalid: {'; '.join(exc.problems)}", code="bad_route_config")
            else:
                # An inline policy's scope comes from the route's config, so every process keys it alike.
                found = self.policies[name] if name != "inline" else self._compile(
                    "inline", conf, scope="route:" + hashlib.blake2b(key, digest_size=8).hexdigest())
            if len(self._inline_policies) > 4096:  # bounded: configs churn with route edits
                self._inline_policies.clear()
            self._inline_policies[key] = found
        return found

    # ---- deciding ---------------------------------------------------------------------

    def route(self, body: bytes, *, path: str = "/v1/chat/completions", policy: Policy | None = None,
              state: StateView = NO_STATE, excluded: frozenset[str] = frozenset()) -> tuple[LLMRequest | None, Decision | RouteError]:
        """Parse a raw body and decide; never raises."""
        policy = policy or self.default
        api = api_for_path(path)
        if api is None:
            return None, RouteError(404, f"path {path!r} is not an LLM API the router handles", code="not_found", field="path")
        if len(body) > policy.conf.max_body_bytes:
            return None, RouteError(413, f"request body of {len(body)} bytes exceeds the limit of {policy.conf.max_body_bytes} bytes",
                                    code="request_too_large", field="body")
        try:
            request = parse_request(body, api)
        except RequestError as exc:
            return None, RouteError(exc.status, exc.message, code=exc.code, field=exc.field)
        except Exception as exc:  # a parser bug must not take the gateway down
            return None, RouteError(400, f"request body could not be parsed ({type(exc).__name__})", field="body")
        if policy.conf.client_policies and request.model is not None:
            chosen = policy.conf.client_policies.get(request.model)
            if chosen is not None:  # the client named a policy its route allows: that policy picks the model
                policy = self.policies[chosen]
                request.model = None
        return request, self.decide(request, policy, state=state, excluded=excluded)

    def decide(self, request: LLMRequest, policy: Policy | None = None, *, state: StateView = NO_STATE,
               excluded: frozenset[str] = frozenset()) -> Decision | RouteError:
        """Classify the request and select a model under the policy; never raises."""
        policy = policy or self.default
        try:
            return self._decide(request, policy, state, excluded)
        except Exception as exc:  # keep the promise: a bug becomes an error reply, not a crash
            return RouteError(500, f"router error while deciding ({type(exc).__name__})", code="router_error")

    def _decide(self, request: LLMRequest, policy: Policy, state: StateView, excluded: frozenset[str]) -> Decision | RouteError:
        conf = policy.conf
        capable, why_none = self._capable(request, policy)
        if not capable:
            return RouteError(400, why_none, code="no_capable_model")
        pinned = self._client_choice(request, policy, capable)
        if isinstance(pinned, RouteError):
            return pinned
        pool = pinned or capable
        candidates = tuple(m for m in pool if m.id not in excluded) if excluded else pool
        if not candidates:
            names = ", ".join(m.id for m in (pinned or capable))
            return RouteError(503, f"no model available: {names} are all unavailable (circuit open or over budget)",
                              code="no_model_available")
        try:
            classification = policy.classifier.classify(request)
        except Exception as exc:
            classification = Classification(Tier.MEDIUM, "chat", 0.0, 0.5, (f"classifier error {type(exc).__name__}",), "fallback")
        counter = self._counters.get(policy.name, 0)
        self._counters[policy.name] = counter + 1
        ctx = Context(request=request, classification=classification, candidates=candidates, params=conf.params,
                      state=state, rng=self._rng, counter=counter, ladder=cast("dict[str, str]", conf.ladder))
        scope, key, kept = policy.affinity, None, None
        table = self.affinity
        if scope is not None and not pinned:
            found = conversation_key(request, scope)
            if found is not None:
                key, continues = found
                if continues:
                    kept = self._kept(table.get(key), candidates, classification.tier)
        if kept is not None:
            sel = Selection(kept, f"affinity: the conversation stays on {kept.id} (its prompt cache and context); "
                                  f"this turn needs {classification.tier.name}")
        elif len(candidates) == 1:
            sel = Selection(candidates[0], f"only {candidates[0].id} is {'requested' if pinned else 'available'}")
        else:
            sel = policy.strategy.select(ctx)
        strategy, propensity = ("affinity" if kept is not None else policy.strategy.name), None
        share = conf.explore
        if share > 0.0 and not pinned and kept is None and len(candidates) > 1:
            k = len(candidates)
            picked = sel
            if self._rng.random() < share:
                sel = Selection(candidates[self._rng.randrange(k)], f"explore: drawn from {k} models ({share:g} of requests explore)")
                strategy = "explore"
            # The chance this model was sent: drawn by exploration, or picked by the strategy.
            by_strategy = picked.chance(sel.model.id) if picked.chance is not None else float(sel.model is picked.model)
            propensity = share / k + (1.0 - share) * by_strategy
        if key is not None:
            table.put(key, sel.model.id)
        expected_out = min(request.max_output_tokens, conf.expected_output_tokens) if request.max_output_tokens else conf.expected_output_tokens
        expected_out *= request.choices  # every one of n answers is billed
        if conf.shadow and (conf.shadow >= 1.0 or self._rng.random() < conf.shadow):
            return self._shadowed(request, policy, capable, candidates, classification, sel, expected_out)
        fallbacks = sel.fallbacks if sel.fallbacks is not None else self._fallbacks(sel.model, candidates, conf.fallbacks)
        cost = sel.model.cost(request.input_tokens, expected_out)
        return Decision(
            model=sel.model, fallbacks=fallbacks, classification=classification, policy=policy.name,
            strategy=strategy, estimated_cost=cost, input_tokens=request.input_tokens,
            expected_output_tokens=expected_out, selection=sel.reason + self._notes(request, sel.model), mode=sel.mode,
            propensity=propensity,
        )

    def _notes(self, request: LLMRequest, model: Model) -> str:
        """What the call sent to the model changes of the request: a lowered output limit, thinking left out."""
        foreign, dropped = _thinking_dropped(request, model, self.catalog.dialect_of(model), self.thinking_origin)
        return foreign + _lowered(request, model, not dropped) + dropped

    def _shadowed(self, request: LLMRequest, policy: Policy, capable: tuple[Model, ...], candidates: tuple[Model, ...],
                  classification: Classification, sel: Selection, expected_out: int) -> Decision | RouteError:
        """A shadow policy's decision: the client's model (else the reference) is served, routing's choice recorded."""
        asked = request.model
        if asked is not None and asked.lower() not in AUTO_MODELS:
            wanted = self.catalog.get(asked)
            if wanted is None:
                return _unknown_model(asked, policy)
            honoured = _honoured(wanted, policy, capable)
            if isinstance(honoured, RouteError):
                return honoured
            served, why = honoured, "the model asked for"
        else:
            ref = policy.reference
            found = next((m for m in capable if ref is not None and m.id == ref.id), None)
            served, why = ((found, "the reference model") if found is not None
                           else (by_capability(capable)[-1], "the most capable model (the reference cannot serve it)"))
        return Decision(
            model=served, fallbacks=self._fallbacks(served, candidates, policy.conf.fallbacks), classification=classification,
            policy=policy.name, strategy="shadow", estimated_cost=served.cost(request.input_tokens, expected_out),
            input_tokens=request.input_tokens, expected_output_tokens=expected_out,
            selection=f"shadow: served {served.id}, {why}; routing would choose {sel.model.id}: {sel.reason}", shadow=sel.model,
        )

    @staticmethod
    def _kept(model_id: str | None, candidates: tuple[Model, ...], tier: Tier) -> Model | None:
        """The conversation's model if it is still a candidate and this turn needs no higher tier than it has."""
        if model_id is None:
            return None
        for m in candidates:
            if m.id == model_id:
                return m if tier <= m.tier else None
        return None

    def _capable(self, request: LLMRequest, policy: Policy) -> tuple[tuple[Model, ...], str]:
        """Allowed models that serve the API, the needs and the context length."""
        needs = request.needs
        need_ctx = request.input_tokens + (request.max_output_tokens or 0)
        stored = needs.stored
        key = (policy.name if policy.name != "inline" else str(id(policy)), request.api if not stored else "responses+stored")
        found = self._serving.get(key)
        if found is None:
            catalog = self.catalog
            serving = tuple(m for m in policy.models if catalog.keeps_responses(m)) if stored else tuple(
                m for m in policy.models if catalog.serves(m, request.api))
            found = self._serving[key] = (serving, min((m.context_window for m in serving), default=0),
                                          min((m.max_output or m.context_window for m in serving), default=0),
                                          max((m.min_output or 0 for m in serving), default=0))
        serving, min_ctx, min_out, floor = found
        out_tokens = request.max_output_tokens or 0
        clamp = policy.conf.output_limit == "clamp"
        if not needs.any_capability and need_ctx <= min_ctx and (clamp or out_tokens <= min_out) \
                and (not out_tokens or out_tokens >= floor):
            return serving, ""
        caps = needs.as_capabilities()
        chat_tools = needs.tools and request.api == "chat"
        out = []
        by_api = by_caps = by_ctx = by_out = elsewhere = unstoppable = 0
        most = 0  # the largest output limit among the models refused for their output limit alone
        floors: list[int] = []
        for m in serving:
            by_api += 1
            if not caps <= m.capabilities:
                continue
            if needs.prefill and not m.prefill:
                continue
            if chat_tools and not m.chat_tools:
                elsewhere += 1  # it takes the tools on its other APIs
                continue
            if needs.stop and not m.stop_sequences:
                unstoppable += 1
                continue
            by_caps += 1
            need = need_ctx
            if clamp and m.max_output is not None and m.max_output < out_tokens:
                need = request.input_tokens + m.max_output  # the limit it will be sent
            if m.context_window < need:
                continue
            by_ctx += 1
            if not clamp and m.max_output is not None and m.max_output < out_tokens:
                most = max(most, m.max_output)
                continue
            by_out += 1
            if out_tokens and m.min_output is not None and out_tokens < m.min_output:
                floors.append(m.min_output)  # its thoughts would use up the limit: no answer left
                continue
            out.append(m)
        if out:
            return tuple(out), ""
        if not by_api:
            if stored and any(self.catalog.serves(m, "responses") for m in policy.models):
                return (), (f"no model in policy '{policy.name}' keeps Responses state, which this request needs (store is not "
                            "false, or it is a background response, or it names previous_response_id or a conversation); "
                            "its Responses providers store nothing: send store: false with the whole conversation")
            return (), f"no model in policy '{policy.name}' serves the {request.api} API"
        if not by_caps and elsewhere:
            return (), (f"no model in policy '{policy.name}' takes function tools on the chat completions API; its models "
                        "with tools take them on the Responses API only: send the request to /v1/responses")
        if not by_caps and unstoppable:
            return (), (f"no model in policy '{policy.name}' takes stop sequences ('stop'); its models with the other needs of "
                        "this request refuse them: leave 'stop' out")
        if not by_caps:
            wanted = sorted(caps) + (["a last assistant message (a prefill)"] if needs.prefill else [])
            return (), f"no model in policy '{policy.name}' supports {', '.join(wanted)}"
        if not by_ctx:
            return (), f"request needs ~{need_ctx} tokens of context; no model in policy '{policy.name}' has that much"
        if by_out:
            return (), (f"request limits the answer to {out_tokens} output tokens (max_tokens); the models of policy "
                        f"'{policy.name}' that serve it think before they answer and need a limit of at least {min(floors)}")
        return (), (f"request asks for up to {out_tokens} output tokens (max_tokens); no model in policy '{policy.name}' "
                    f"can write that many in one call (at most {most})")

    def _client_choice(self, request: LLMRequest, policy: Policy, capable: tuple[Model, ...]) -> tuple[Model, ...] | RouteError | None:
        """Honour the client's model per the policy's client_model setting."""
        mode = policy.conf.client_model
        if mode == "route" or request.model is None or request.model.lower() in AUTO_MODELS:
            return None
        wanted = self.catalog.get(request.model)
        if wanted is None:
            return _unknown_model(request.model, policy)
        if mode == "honor":
            honoured = _honoured(wanted, policy, capable)
            return honoured if isinstance(honoured, RouteError) else (honoured,)
        cheaper = tuple(m for m in capable if m.blended_price <= wanted.blended_price)
        return cheaper or None

    def _fallbacks(self, primary: Model, candidates: tuple[Model, ...], count: int) -> tuple[Model, ...]:
        """Next models of rising capability, other providers first (memoised: few distinct inputs)."""
        if count <= 0:
            return ()
        key = (primary, candidates, count)
        found = self._chains.get(key)
        if found is None:
            if len(self._chains) > 4096:
                self._chains.clear()
            found = self._chains[key] = self._chain(primary, candidates, count)
        return found

    @staticmethod
    def _chain(primary: Model, candidates: tuple[Model, ...], count: int) -> tuple[Model, ...]:
        rest = [m for m in by_capability(candidates) if m.id != primary.id]
        stronger = [m for m in rest if (m.tier, m.quality) >= (primary.tier, primary.quality)]
        weaker = [m for m in reversed(rest) if m not in stronger]
        ordered = [m for m in stronger if m.provider != primary.provider] + [m for m in stronger if m.provider == primary.provider]
        return tuple((ordered + weaker)[:count])


def policy_reference(conf: PolicyConf, models: Sequence[Model], catalog: Catalog) -> Model | None:
    """What "no router" would use for a policy: its reference_model, else its most expensive allowed model."""
    return catalog.models.get(conf.reference_model) if conf.reference_model else max(models, key=lambda m: m.blended_price)


def _honoured(wanted: Model, policy: Policy, capable: tuple[Model, ...]) -> Model | RouteError:
    """The model the client named, if the policy allows it for this request; else a 400 saying so."""
    for m in capable:
        if m.id == wanted.id:
            return m
    return RouteError(400, f"model {wanted.id!r} is not allowed by policy '{policy.name}' or cannot serve this request",
                      code="model_not_allowed", field="model")


def _unknown_model(asked: str, policy: Policy) -> RouteError:
    """A 400 naming what the client may send instead: auto, the policy names its route allows, the models."""
    names = [*policy.conf.client_policies, *(m.id for m in policy.models)]
    return RouteError(400, f"unknown model {asked!r}; use 'auto' or one of: {', '.join(names)}", code="model_not_found", field="model")
