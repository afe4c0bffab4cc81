"""`llm-router check CONFIG`: validate a config and explain what it will do."""
from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import orjson

from llm_router.commands.common import load_or_exit
from llm_router.catalog import APIS, Catalog
from llm_router.config import ModelChangeConf, ModelConf, allowed_models, utc_now

DEEPSEEK_THINKING = re.compile(r"deepseek-(?:reasoner|v4|flash)", re.IGNORECASE)  # deepseek-reasoner, deepseek-v4-pro, ...
REASONER = re.compile(r"deepseek-reasoner", re.IGNORECASE)
ONE_SAMPLER = re.compile(r"claude-(?:sonnet|opus|haiku)-4[-.][5-9]", re.IGNORECASE)  # claude-sonnet-4-5, claude-opus-4.6, ...
THINKING_CLAUDE = re.compile(r"claude-(?:3-7|(?:sonnet|opus|haiku)-[4-9])", re.IGNORECASE)  # Claude models with thinking
ADAPTIVE_ONLY = re.compile(r"claude-(?:opus-4[-.][7-9]|(?:sonnet|opus|fable|mythos)-[5-9])", re.IGNORECASE)  # claude-opus-4-7, ...
ENABLED_ONLY = re.compile(r"claude-(?:3-7|(?:sonnet|opus|haiku)-4[-.](?:[0-5](?![0-9])|[0-9]{8}))", re.IGNORECASE)  # sonnet 4.5, ...
NO_PREFILL = re.compile(r"claude-(?:sonnet|opus)-(?:4[-.][6-9]|[5-9])", re.IGNORECASE)  # claude-sonnet-4-6, claude-sonnet-5, ...
GEMINI_3 = re.compile(r"gemini-3", re.IGNORECASE)  # Gemini 3 models: tool calls need thought signatures
NO_MINIMAL_THINKING = re.compile(r"gemini-3\.(?:[7-9]-flash(?!-lite)|1-pro)", re.IGNORECASE)  # no minimal thinking level
# Provider-side model names their providers no longer serve (on the default endpoints), with what they answer instead.
RETIRED_NAMES = {
    "claude-3-5-sonnet-20240620": "Anthropic retired it on 2025-10-22 (404 not_found_error)",
    "claude-3-5-sonnet-20241022": "Anthropic retired it on 2025-10-22 (404 not_found_error)",
    **dict.fromkeys(("claude-3-5-sonnet-latest", "claude-3-haiku-20240307", "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest",
                     "claude-3-opus-20240229", "claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"),
                    "Anthropic retired it (404 not_found_error)"),
    **dict.fromkeys(("claude-sonnet-4-20250514", "claude-sonnet-4-0", "claude-opus-4-20250514", "claude-opus-4-0"),
                    "Anthropic retired it on 2026-06-15 (404 not_found_error; claude-sonnet-4-6 and claude-opus-4-7 replace it)"),
    **dict.fromkeys(("gpt-4o-2024-05-13", "gpt-4", "gpt-4-turbo", "gpt-4-0613", "gpt-4-1106-preview", "gpt-3.5-turbo", "gpt-3.5-turbo-0125",
                     "gpt-4.1-nano", "o1", "o1-2024-12-17", "o1-pro", "o3-mini", "o3-mini-2025-01-31", "o4-mini",
                     "o4-mini-2025-04-16"), "OpenAI shut it down on 2026-10-23"),
    **{name: f"Google removed Gemini 1.x from its API (404 NOT_FOUND: models/{name} is not found)"
       for name in ("gemini-pro", "gemini-1.0-pro", "gemini-1.5-pro", "gemini-1.5-pro-latest", "gemini-1.5-flash")},
    "gemini-3-pro-preview": "Google shut it down on 2026-03-09 (404 NOT_FOUND; gemini-3.1-pro-preview replaces it)",
    **dict.fromkeys(("meta-llama/Llama-3-70b-chat-hf", "meta-llama/Llama-3-8b-chat-hf"),
                    "Together serves it only on dedicated endpoints now (400 model_not_available: Unable to access "
                    "non-serverless model)"),
    "deepseek-chat": "DeepSeek retired the name on 2026-07-24 (400 Model Not Exist; deepseek-flash is its current model)",
    "deepseek-reasoner": "DeepSeek retired the name on 2026-07-24 (400 Model Not Exist; deepseek-flash thinks by default)",
}
# Provider-side names with an announced shutdown on their provider's default endpoint: name -> (day, who shuts it down and
# what replaces it). Before the day `check` warns of the date; from it on, as of a retired name.
SHUTDOWNS = {
    **dict.fromkeys(("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4.1",
                     "gpt-4.1-2025-04-14", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
                    (date(2027, 1, 14), "OpenAI shuts it down on 2027-01-14 (gpt-6-luna replaces it)")),
    **dict.fromkeys(("gpt-5", "gpt-5-2025-08-07", "gpt-5-mini", "gpt-5-mini-2025-08-07", "gpt-5-nano", "gpt-5-nano-2025-08-07",
                     "o3", "o3-pro"), (date(2026, 12, 11), "OpenAI shuts it down on 2026-12-11")),
    **{name: (date(2026, 12, 1), f"Google retires it on 2026-12-01: its calls then go to {then}, billed at that model's prices, "
                                 "not this one's")
       for name, then in (("gemini-2.5-pro", "gemini-3.8-flash"), ("gemini-2.5-flash", "gemini-3.5-flash-lite"))},
}
# Model body settings `check` describes: (setting, the value that turns it on, what it does; {kept}: where reasoning is kept).
MODEL_RULES = (
    ("tool_call_signatures", "fill", "unsigned tool calls get Gemini's stand-in thought signature"),
    ("reasoning_content", "fill", "assistant messages without reasoning_content get the reasoning their answer held ({kept}), "
                                  "else a stand-in"),
    ("top_p_with_temperature", "drop", "top_p left out when temperature is set"),
    ("successive_roles", "merge", "successive user (or assistant) messages sent as one"),
    ("named_tool_choice", "auto", "a tool_choice naming one tool sent as auto while it thinks"),
    ("forced_tool_choice", "auto", "a tool_choice forcing a tool (named, required, any) sent as auto while it thinks"),
    ("thinks", "when_enabled", "it thinks only when thinking is enabled or adaptive"),
    ("sampling_while_thinking", "fit", "while it thinks, a temperature other than 1, a top_p below 0.95 and top_k left out"),
    ("thinking_type", "adaptive", "thinking {type: enabled} sent as {type: adaptive}"),
    ("thinking_type", "enabled", "thinking {type: adaptive} sent as {type: enabled} with half the output limit as budget"),
)
NOT_REASONING = re.compile(r"gpt-(?:4|3\.5)", re.IGNORECASE)  # OpenAI models that do not reason: gpt-4o, gpt-4.1-mini, ...
REASONING_GPT = re.compile(r"gpt-[5-9]", re.IGNORECASE)  # OpenAI's GPT-5 and later: reasoning models
# OpenAI's GPT-5.4 and later: function tools on the chat completions API only with reasoning_effort none
TOOLS_ON_RESPONSES_GPT = re.compile(r"gpt-(?:5\.(?:[4-9]|\d\d)|[6-9])", re.IGNORECASE)

@dataclass(frozen=True)
class Wanted:
    """A setting a name note asks for where equality with one value does not say it: `ok` tells whether the current serves."""

    shown: str  # what the note says to add
    ok: Callable[[Any], bool]


# Models named like these answer 400 to what clients of other models send, unless the setting has the value:
# (name pattern, setting, value, what the name is like and what it refuses). A setting is the model's own where ModelConf
# has it (prefill), else one of its body rules.
NAME_NOTES = (
    (DEEPSEEK_THINKING, "reasoning_content", "fill", "a DeepSeek thinking model, which answers 400 to assistant messages "
     "without reasoning_content (those of other models)"),
    (DEEPSEEK_THINKING, "named_tool_choice", "auto", "a DeepSeek thinking model, which answers 400 to a tool_choice naming one "
     "tool (Claude Code's web search sends one)"),
    (REASONER, "successive_roles", "merge", "deepseek-reasoner, which answers 400 to two user (or assistant) messages in a "
     "row, as clients written for other models send them"),
    (ONE_SAMPLER, "top_p_with_temperature", "drop", "a Claude model that answers 400 to temperature and top_p together, which "
     "clients written for OpenAI's models send"),
    (THINKING_CLAUDE, "thinks", "when_enabled", "a Claude model that thinks only when asked to (its rules while thinking "
     "apply only then)"),
    (THINKING_CLAUDE, "sampling_while_thinking", "fit", "a Claude model that, while it thinks, answers 400 to a temperature "
     "other than 1, a top_p below 0.95 or a top_k"),
    (THINKING_CLAUDE, "forced_tool_choice", "auto", "a Claude model that answers 400 to a tool_choice forcing a tool while it "
     "thinks"),
    (ADAPTIVE_ONLY, "thinking_type", "adaptive", "a Claude model that answers 400 to thinking {type: enabled} (Claude Code and "
     "agent frameworks send it with a budget)"),
    (ENABLED_ONLY, "thinking_type", "enabled", "a Claude model that answers 400 to thinking {type: adaptive} (clients written "
     "for Claude 4.6 and later send it)"),
    (NO_PREFILL, "prefill", False, "a Claude model that answers 400 to a conversation ending with an assistant message (a "
     "prefill)"),
    (GEMINI_3, "tool_call_signatures", "fill", "a Gemini 3 model, which answers 400 to tool calls without its thought "
     "signature (those other models made)"),
    (GEMINI_3, "min_output_tokens", Wanted("4096", lambda v: v is not None), "a Gemini 3 model, which thinks before it "
     "answers within max_tokens (a small limit leaves no answer)"),
    (NO_MINIMAL_THINKING, "reasoning_efforts", Wanted("{minimal: low, none: low}", lambda v: {"minimal", "none"} <= set(v or {})),
     "a Gemini model without the minimal thinking level, which answers 400 to reasoning_effort minimal or none"),
    (REASONING_GPT, "rename", Wanted("{max_tokens: max_completion_tokens}",
                                     lambda v: (v or {}).get("max_tokens") == "max_completion_tokens"),
     "an OpenAI reasoning model (GPT-5 and later), which answers 400 to max_tokens (\"Use 'max_completion_tokens' instead\")"),
    (REASONING_GPT, "drop", Wanted("[temperature, top_p, presence_penalty, frequency_penalty, logit_bias]",
                                   lambda v: {"temperature", "top_p"} <= set(v or ())),
     "an OpenAI reasoning model (GPT-5 and later), which answers 400 to a temperature other than 1 and to top_p, the "
     "penalties and logit_bias while it reasons"),
    (TOOLS_ON_RESPONSES_GPT, "chat_tools", False, "an OpenAI GPT-5.4-or-later model, which answers 400 to function tools on "
     "the chat completions API unless reasoning_effort is none (\"To use function tools, use /v1/responses\")"),
    (NOT_REASONING, "drop", Wanted("[reasoning_effort, reasoning, verbosity]", lambda v: "reasoning" in (v or ())),
     "an OpenAI model that does not reason, which answers 400 to the reasoning fields clients written for reasoning models "
     "send"),
)

# A model's settings that, false, send some requests to other models: (setting, what `check` says of it).
REFUSALS_SHOWN = (("prefill", "requests that end with an assistant message go to other models"),
                  ("chat_tools", "chat completions requests with function tools go to other models (Responses requests with "
                                 "tools still come here)"),
                  ("stop_sequences", "requests that set stop sequences (stop) go to other models"))

# How `check` names each tool call id rule (config.BodyConf.tool_call_ids).
TOOL_ID_RULES_SHOWN = {"alnum9": "tool call ids rewritten to 9 letters or digits",
                       "max40": "tool call ids over 40 characters shortened",
                       "word": "tool call ids of letters, digits, _ and - only"}


def register(sub) -> None:
    p = sub.add_parser("check", help="validate a config file and explain it")
    p.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    p.add_argument("--at", type=moment, metavar="YYYY-MM-DD[THH:MM]",
                   help="explain the config as in effect at this moment (UTC): its scheduled changes and peak hours then")
    p.set_defaults(func=run)


def moment(value: str) -> datetime:
    """A day (its midnight) or a minute, UTC, as --at takes it."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{value!r} is neither a day (YYYY-MM-DD) nor a minute (YYYY-MM-DDTHH:MM), UTC")


@functools.lru_cache(maxsize=1)
def _default_base_urls() -> dict[str, str]:
    """Each built-in provider's base URL (where the retired names are known not to be served)."""
    from llm_router.config import default_data

    return {name: p.get("base_url", "") for name, p in (default_data().get("providers") or {}).items()}



def run(args) -> int:
    from llm_router.edge_sections import edge_section_problems

    cfg = load_or_exit(args.config)
    at = getattr(args, "at", None)
    now = at or utc_now()
    if at is not None:
        cfg = cfg.as_of(at)
    problems = edge_section_problems(cfg)
    if isinstance(cfg.server.get("envoy") or {}, dict):  # else named above
        from llm_router.config import ConfigError
        from llm_router.gateways.envoy.settings import EnvoySettings

        try:
            EnvoySettings.from_config(cfg)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        print(f"error: invalid config {args.config or '(built-in defaults)'}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    learned = None
    if any(p.classifier == "learned" for p in cfg.policies.values()):
        learned = _load_learned(cfg)
        if learned is None:
            return 2
    print(f"config {args.config or '(built-in defaults)'} is valid")
    if at is not None:
        print(f"as in effect at {at:%Y-%m-%d %H:%M} UTC (--at): names, prices and rules as its scheduled changes and peak "
              "hours make them then")
    print(f"providers: {', '.join(sorted(cfg.providers))}")
    for name, p in sorted(cfg.providers.items()):
        if p.body is not None:
            parts = [f"{api}: {len(fields)} fields accepted, others dropped" for api, fields in p.body.accept.items()]
            parts += [f"{old} as {new}" for old, new in p.body.rename.items()]
            if p.body.drop:
                parts.append(f"never sent: {', '.join(p.body.drop)}")
            if p.body.stream_usage == "always":
                parts.append("streams report usage unasked (no stream_options added)")
            if p.body.tool_call_ids in TOOL_ID_RULES_SHOWN:
                parts.append(TOOL_ID_RULES_SHOWN[p.body.tool_call_ids])
            if p.body.content == "text":
                parts.append("chat content arrays of text sent as one string")
            if p.body.assistant_after_tool:
                parts.append("an assistant message between tool results and a user message")
            if p.body.developer_role == "system":
                parts.append("developer messages as system")
            if p.body.message_fields:
                parts.append("message fields kept per role: " + ", ".join(
                    f"{role} {'/'.join(fields)}" for role, fields in p.body.message_fields.items()))
            if p.body.prefix_last_assistant:
                parts.append("a last assistant message sent as a prefix")
            if p.body.empty_tool_calls == "drop":
                parts.append("empty tool_calls arrays left out")
            if p.body.thinking_tool_turns == "every":
                parts.append("extended thinking only when every tool call turn holds thinking")
            if p.body.thinking_signatures == "required":
                parts.append("thinking blocks without a signature left out")
            if p.body.blank_text == "drop":
                parts.append("blank text blocks left out")
            if p.body.effort_without_thinking == "drop":
                parts.append("reasoning effort left out when thinking is disabled")
            print(f"  {name} body: {'; '.join(parts)}")
        if "messages" in p.paths and not p.counts_tokens:
            print(f"  {name} messages: {p.paths['messages']}, without count_tokens (token counts go to another provider "
                  "or are estimated)")
        if p.forward_prices:
            priced = ", ".join(f"{m} ${usd:g}" for m, usd in sorted(p.forward_prices.items()))
            print(f"  {name} forwarded embeddings priced per 1M input tokens: {priced}")
    print("models:")
    for mid, m in sorted(cfg.models.items(), key=lambda kv: (kv[1].input_price, kv[0])):
        cache = ""
        if m.cached_input_price is not None or m.cache_write_price is not None:
            read = f"${m.cached_input_price:g}" if m.cached_input_price is not None else "input price"
            write = f"${m.cache_write_price:g}" if m.cache_write_price is not None else "input price"
            cache = f"  cache read {read} / write {write}"
        out = f" out {m.max_output_tokens:>6}" if m.max_output_tokens else ""
        print(f"  {mid:20s} {m.provider:10s} ${m.input_price:g}/${m.output_price:g} per 1M  ctx {m.context_window:>8}{out}  "
              f"tier {m.tier:8s} quality {m.quality:.2f}  [{', '.join(m.capabilities)}]{cache}")
        if m.name and m.name != mid:
            print(f"  {'':20s} calls {m.name}")
        if m.body is not None:
            own = [f"{old} as {new}" for old, new in m.body.rename.items()]
            if m.body.drop:
                own.append(f"never sent: {', '.join(m.body.drop)}")
            kept = ("shared by every process through Redis" if cfg.state.get("backend") == "redis"
                    else "per process; state: {backend: redis} shares it")
            own += [text.replace("{kept}", kept) for setting, value, text in MODEL_RULES if getattr(m.body, setting) == value]
            for api, fields in m.body.defaults.items():
                own.append(f"{api} requests without {', '.join(fields)} get {orjson.dumps(fields).decode()}")
            if own:
                print(f"  {'':20s} body over {m.provider}'s: {'; '.join(own)}")
        if m.body is not None and m.body.reasoning_efforts:
            print(f"  {'':20s} reasoning effort sent as: "
                  f"{', '.join(f'{sent} as {taken}' for sent, taken in m.body.reasoning_efforts.items())}")
        if m.peak is not None:
            when = "now" if at is None else "then"
            state = f"peak {when}: the prices above are peak prices" if m.peak.covers(now) else f"off-peak {when}"
            off = f" except {', '.join(d.isoformat() for d in m.peak.off_days)}" if m.peak.off_days else ""
            print(f"  {'':20s} prices x{m.peak.factor:g} in {', '.join(m.peak.hours_utc)} UTC on {', '.join(m.peak.days)}{off} "
                  f"({state})")
        if m.long_context_prices is not None:
            lc = m.long_context_prices
            print(f"  {'':20s} a call with more than {lc.above_input_tokens} input tokens: input and cache prices "
                  f"x{lc.input_factor:g}, output x{lc.output_factor:g}")
        for day, change in sorted(m.changes.items()):
            print(f"  {'':20s} from {day.isoformat()}: {_change_shown(change)}")
        for setting, refused in REFUSALS_SHOWN:
            if not getattr(m, setting):
                print(f"  {'':20s} {setting}: false: {refused}")
        if m.min_output_tokens is not None:
            print(f"  {'':20s} min_output_tokens: {m.min_output_tokens}: requests limiting the answer to fewer tokens go to "
                  "other models (it thinks first, within the limit)")
        retired = RETIRED_NAMES.get(m.name or mid)
        shutdown = SHUTDOWNS.get(m.name or mid)
        on_default = cfg.providers[m.provider].base_url == _default_base_urls().get(m.provider)
        successor = min((day for day, c in m.changes.items() if c.name is not None), default=None)
        if shutdown is not None and on_default and successor is not None and successor <= shutdown[0]:
            print(f"  {'':20s} calls {m.name or mid} until {successor.isoformat()}, then {m.changes[successor].name}: "
                  f"{shutdown[1]}")
        elif shutdown is not None and on_default:
            if now.date() < shutdown[0]:
                print(f"  {'':20s} warning: calls {m.name or mid}: {shutdown[1]}. Set this model's name to a current model "
                      "before then")
            else:
                retired = shutdown[1]
        if retired is not None and on_default:
            print(f"  {'':20s} warning: calls {m.name or mid}, which its provider no longer serves: {retired}. The demo's "
                  "fake providers still answer it; against the real provider, set this model's name to a current model")
        for pattern, setting, value, named_like in NAME_NOTES:
            if not pattern.search(m.name or mid):
                continue
            own = setting in ModelConf.model_fields  # the model's own setting, else one of its body rules
            current = getattr(m, setting) if own else None if m.body is None else getattr(m.body, setting)
            provider_body = cfg.providers[m.provider].body
            if setting in ("drop", "rename") and provider_body is not None:  # the provider's apply to every model of it
                current = [*provider_body.drop, *(current or ())] if setting == "drop" else {**provider_body.rename,
                                                                                             **(current or {})}
            if value.ok(current) if isinstance(value, Wanted) else current == value:
                continue
            shown = value.shown if isinstance(value, Wanted) else orjson.dumps(value).decode() if isinstance(value, bool) else value
            fix = f"{setting}: {shown}" if own else f"body: {{{setting}: {shown}}}"
            print(f"  {'':20s} note: named like {named_like}: add {fix}")
    print(f"default policy: {cfg.default_policy}")
    from llm_router.router import build_catalog, policy_reference

    catalog = build_catalog(cfg)
    if learned is not None:
        _describe_learned(cfg.classifiers.learned.model, learned, catalog)
    for name, p in cfg.policies.items():
        allowed = allowed_models(p, cfg)
        print(f"policy {name}: classifier={p.classifier} strategy={p.strategy} fallbacks={p.fallbacks} "
              f"failure_mode={p.failure_mode} client_model={p.client_model} output_limit={p.output_limit}")
        if p.ladder:
            print("  ladder: " + ", ".join(f"{t} -> {m}" for t, m in p.ladder.items()))
        if p.affinity != "off":
            where = ("shared by every process through Redis" if cfg.state.get("backend") == "redis"
                     else "per process; state: {backend: redis} shares it between processes")
            print(f"  affinity: later turns of a conversation stay on its model unless they need a higher tier ({where})")
        if p.explore:
            print(f"  explore: {p.explore:.0%} of requests go to a random candidate (logged with their propensity)")
        if p.shadow:
            ref = getattr(policy_reference(p, [catalog.models[mid] for mid in allowed], catalog), "id", "?")
            share = "every request is" if p.shadow >= 1.0 else f"{p.shadow:.0%} of requests (drawn at random; the rest are routed) are"
            print(f"  shadow: {share} served by the model the client asks for (else {ref}); routing's choice and its cost "
                  "are only recorded (llm_router_shadow_*, decision log)")
        print(f"  may use: {', '.join(allowed)}")
        print("  per API: " + "; ".join(_per_api(catalog, allowed)))
        if p.forward:
            print("  forwards: " + ", ".join(f"{api} -> {prov}" for api, prov in p.forward.items()))
    limits = cfg.accounting.get("limits") or []
    if limits:
        from llm_router.limits import parse_limits, price_caps

        print("spend limits:")
        for rule in parse_limits(limits):
            scope = rule.scope + (f" {rule.match!r}" if rule.match != "*" else (" (each)" if rule.scope != "global" else ""))
            then = {"reject": "requests get 429", "exclude": "the model leaves selection"}.get(rule.action, "")
            if rule.action == "downgrade":
                then = f"only models up to {price_caps(rule.max_input_price, rule.max_output_price)} per 1M tokens serve it"
            print(f"  {scope}: ${rule.usd:g} per {rule.window}, then {then}")
    return 0


def _change_shown(change: ModelChangeConf) -> str:
    """One scheduled change, as `check` lists it: 'calls gpt-6.1-sol, input_price $2, ...'."""
    parts = []
    for field, value in change.given().items():
        if field == "name":
            parts.append(f"calls {value}")
        elif value is None:
            parts.append(f"{field} unset")
        elif field.endswith("_price"):
            parts.append(f"{field} ${value:g}")
        elif field == "long_context_prices":
            parts.append(f"above {value.above_input_tokens} input tokens x{value.input_factor:g} input, "
                         f"x{value.output_factor:g} output")
        elif field == "body":
            parts.append(f"body {orjson.dumps(value.model_dump(exclude_defaults=True)).decode()}")
        elif field == "capabilities":
            parts.append(f"capabilities [{', '.join(value)}]")
        else:
            parts.append(f"{field} {orjson.dumps(value).decode() if isinstance(value, bool) else value}")
    return ", ".join(parts)


def _load_learned(cfg):
    """classifiers.learned.model loaded as `serve` loads it, or None after printing why it cannot be."""
    from llm_router.classify.factory import make_classifier
    from llm_router.learn.model import ModelFileError

    try:
        return make_classifier("learned", cfg, {})
    except ModelFileError as exc:
        print(f"error: classifiers.learned.model: {exc}", file=sys.stderr)
        return None


def _describe_learned(path: str | None, clf, catalog: Catalog) -> None:
    """What the learned model file holds: training facts, the models it predicts for, its operating points."""
    from llm_router.commands.train import _params_text
    from llm_router.learn.clusters import describe

    model, meta = clf.model, clf.model.meta
    groups = meta.get("groups") or []
    topics = describe(model.clusters) + (f" (the last {len(groups)}: a recogniser of the training data's tasks, "
                                         f"cross-fitted accuracy {meta.get('group_accuracy', 0):.3f})" if groups else "")
    print(f"learned model {path}: format {meta.get('format_version')}, features {model.features}, "
          f"trained on {meta.get('rows', '?')} prompts ({meta.get('format', '?')}); topic clusters: {topics}")
    print(f"  predicts: {', '.join(clf.ids)}")
    unknown = [mid for mid in clf.ids if mid not in catalog.models]
    if unknown:
        print(f"  not in the catalog, so never routed to: {', '.join(unknown)} (map the file's names to catalog ids "
              "with classifiers.learned.aliases, or add the models)")
    names = dict(zip(model.models, clf.ids))

    def aliased(mix: dict) -> dict:  # the file's model names -> catalog ids, as the classifier maps its predictions
        return {task: {names.get(m, m): v for m, v in shares.items()} for task, shares in mix.items()}

    for frac, op in (meta.get("operating_points") or {}).items():
        params = dict(op["params"])
        if "mix" in params:
            params["mix"] = aliased(params["mix"])
        print(f"  for {float(frac):.0%} of its best model's quality (training data): quality_gate params "
              f"{_params_text(params)}")
    for frac, found in (meta.get("task_mix") or {}).items():
        op = (meta.get("operating_points") or {}).get(frac, {})
        if isinstance(found, dict) and "mix" in found and op.get("rule") != "mix":
            print(f"  or, per recognised task, for {float(frac):.0%} (the trade-off was cheaper on inner held-out rows): "
                  f"quality_gate params {_params_text({**op_params(meta, frac), 'mix': aliased(found['mix'])})}")


def op_params(meta: dict, frac: str) -> dict:
    """The trade-off params of a model file's operating point (what a mix falls back to for other prompts)."""
    return dict((meta.get("operating_points") or {}).get(frac, {}).get("params") or {})


def _per_api(catalog: Catalog, allowed: list[str]) -> list[str]:
    """Which of a policy's models serve each request API: one model leaves nothing to route between."""
    out = []
    for api in APIS:
        models = [mid for mid in allowed if catalog.serves(catalog.models[mid], api)]
        if not models:
            out.append(f"{api}: none (refused with 400)")
        elif len(models) == 1:
            out.append(f"{api}: only {models[0]} (no choice to make)")
        else:
            out.append(f"{api}: {len(models)} models")
        stateless = [mid for mid in models if api == "responses" and not catalog.keeps_responses(catalog.models[mid])]
        if stateless:
            out[-1] += (f" ({', '.join(stateless)} only for store: false without previous_response_id or conversation: "
                        "its provider keeps no responses)")
    return out
