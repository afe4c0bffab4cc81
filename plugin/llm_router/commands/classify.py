"""`llm-router classify --input FILE.jsonl`: one JSON line per input with tier, score, category, model, reason."""
from __future__ import annotations

import sys

import orjson

from llm_router.commands.common import add_config_arg, load_or_exit, open_or_exit
from llm_router.config import parse_config
from llm_router.decision import RouteError
from llm_router.router import Router


def register(sub) -> None:
    p = sub.add_parser("classify", help="classify each line of a JSONL file ({\"prompt\": ...} or a full API body)")
    p.add_argument("--input", "-i", required=True, metavar="FILE.jsonl", help="input lines; - for stdin")
    p.add_argument("--classifier", help="override the policy's classifier: rules | semantic | hybrid | learned | none")
    p.add_argument("--policy", help="policy name (default: the config's default policy)")
    p.add_argument("--path", default="/v1/chat/completions", help="API path for full bodies (default %(default)s)")
    p.add_argument("--json", action="store_true", help="JSON lines (the default output; kept for symmetry)")
    add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = load_or_exit(args.config)
    if args.classifier:
        data = cfg.model_dump()
        name = args.policy or cfg.default_policy
        data["policies"][name] = {**data["policies"][name], "classifier": args.classifier}
        cfg = parse_config(data, with_defaults=False)
    router = Router(cfg)
    policy = router.policies.get(args.policy) if args.policy else router.default
    if policy is None:
        print(f"error: unknown policy {args.policy!r}", file=sys.stderr)
        return 2
    stream = open_or_exit(args.input, "--input")
    failed = 0
    with stream:
        for lineno, line in enumerate(stream, 1):
            line = line.strip()
            if not line:
                continue
            out = classify_line(router, policy, line, args.path)
            out["line"] = lineno
            failed += "error" in out
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 1 if failed else 0


def classify_line(router: Router, policy, line: bytes, path: str) -> dict:
    """One output record for one input line."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return {"error": f"line is not valid JSON: {exc}"}
    shorthand = isinstance(item, dict) and "prompt" in item and "messages" not in item and path.endswith("/chat/completions")
    if shorthand and not isinstance(item["prompt"], str):
        return {"error": f"'prompt' must be a string, got {type(item['prompt']).__name__}"}
    if shorthand:
        body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": item["prompt"]}]})
    else:
        body = line
    _, d = router.route(body, path=path, policy=policy)
    if isinstance(d, RouteError):
        return {"error": d.message, "status": d.status}
    c = d.classification
    return {"tier": c.tier.name, "score": c.score, "category": c.category, "confidence": c.confidence,
            "label": c.label, "model": d.model.id, "reason": d.reason}
