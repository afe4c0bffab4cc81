"""`llm-router route`: show the decision and its reason for one prompt or body."""
from __future__ import annotations

import sys

import orjson

from llm_router.commands.common import add_config_arg, load_or_exit, open_or_exit
from llm_router.decision import RouteError
from llm_router.router import Router


def register(sub) -> None:
    p = sub.add_parser("route", help="decide for one prompt or request body and explain why")
    p.add_argument("prompt", nargs="?", help="a user prompt (wrapped in a chat request)")
    p.add_argument("--body", metavar="FILE", help="a full API request body (JSON); - for stdin")
    p.add_argument("--path", default="/v1/chat/completions", help="API path of the body (default %(default)s)")
    p.add_argument("--policy", help="policy name (default: the config's default policy)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if (args.prompt is None) == (args.body is None):
        print("error: give either a prompt or --body FILE", file=sys.stderr)
        return 2
    if args.body:
        with open_or_exit(args.body, "--body") as stream:
            body = stream.read()
    else:
        body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": args.prompt}]})
    router = Router(load_or_exit(args.config))
    policy = router.policies.get(args.policy) if args.policy else router.default
    if policy is None:
        print(f"error: unknown policy {args.policy!r} (known: {', '.join(sorted(router.policies))})", file=sys.stderr)
        return 2
    request, decision = router.route(body, path=args.path, policy=policy)
    if isinstance(decision, RouteError):
        if args.json:
            print(orjson.dumps({"status": decision.status, **decision.openai_body()}).decode())
        else:
            print(f"refused ({decision.status}): {decision.message}")
        return 1
    out = decision_summary(decision)
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        c = decision.classification
        print(f"model:     {decision.model.id} ({decision.model.provider}, upstream {decision.model.upstream})")
        print(f"fallbacks: {' -> '.join(m.id for m in decision.fallbacks) or '-'}")
        print(f"tier:      {c.tier.name}  category: {c.category}  score: {c.score:.2f}  confidence: {c.confidence:.2f}")
        standing = f", {request.standing_tokens} of them system prompt and tools" if request and request.standing_tokens else ""
        print(f"cost:      ${decision.estimated_cost:.6f} estimated ({decision.input_tokens} in{standing}, "
              f"{decision.expected_output_tokens} out)")
        print(f"policy:    {decision.policy} / {decision.strategy}")
        if decision.shadow is not None:
            print(f"shadow:    routing would choose {decision.shadow.id}; {decision.model.id} is served")
        print(f"reason:    {decision.reason}")
    return 0


def decision_summary(decision) -> dict:
    """A decision as plain JSON-able data."""
    c = decision.classification
    return {
        "model": decision.model.id, "provider": decision.model.provider, "upstream": decision.model.upstream,
        "fallbacks": [m.id for m in decision.fallbacks], "mode": decision.mode, "tier": c.tier.name,
        "category": c.category, **({"label": c.label} if c.label is not None else {}), "score": c.score,
        "confidence": c.confidence, "policy": decision.policy,
        "strategy": decision.strategy, "estimated_cost": decision.estimated_cost, "input_tokens": decision.input_tokens,
        "reason": decision.reason, **({"shadow_model": decision.shadow.id} if decision.shadow is not None else {}),
    }
