"""`llm-router report --log FILE...`: what the decision log says about traffic, spend and savings, per route."""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llm_router.commands.common import load_or_exit


def register(sub) -> None:
    p = sub.add_parser("report", help="summarise decision logs: requests, spend, savings, shadow savings, per route")
    p.add_argument("--log", nargs="+", required=True, metavar="FILE", help="decision log file(s) (metrics.decision_log)")
    p.add_argument("--config", help="the config the logs were written under, for reference-model savings (default: built-in)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


@dataclass
class RouteTotals:
    """One route's totals over the log."""

    requests: set[str] = field(default_factory=set)
    refused: int = 0  # the router answered with an error (bad body, limits, no model)
    failed_attempts: int = 0  # upstream attempts without a 2xx answer (including those a fallback then answered)
    answered: int = 0
    cost: float = 0.0
    reference_cost: float = 0.0  # the same tokens at the policy's reference model
    priced: int = 0  # answers with reported tokens (the reference cost covers these)
    shadow_served: float = 0.0  # shadow policies: spend on the models served ...
    shadow_routed: float = 0.0  # ... and what routing's choice would have cost
    shadow_answers: int = 0
    models: Counter = field(default_factory=Counter)
    tiers: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for printing and JSON."""
        lat = sorted(self.latencies)
        out: dict[str, Any] = {
            "requests": len(self.requests), "answered": self.answered, "refused": self.refused,
            "failed_attempts": self.failed_attempts, "cost_usd": round(self.cost, 6),
            "model_share": {m: round(n / self.answered, 4) for m, n in self.models.most_common()} if self.answered else {},
            "tier_share": {t: round(n / self.answered, 4) for t, n in self.tiers.most_common()} if self.answered else {},
            "latency_p50_ms": round(lat[len(lat) // 2], 2) if lat else None,
            "latency_p95_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 2) if lat else None,
        }
        if self.priced and self.reference_cost > 0:
            out["reference_cost_usd"] = round(self.reference_cost, 6)
            out["saving_vs_reference"] = round(1.0 - self.cost / self.reference_cost, 4)
        if self.shadow_answers:
            out["shadow"] = {"answers": self.shadow_answers, "served_cost_usd": round(self.shadow_served, 6),
                             "routed_cost_usd": round(self.shadow_routed, 6),
                             "saving": round(1.0 - self.shadow_routed / self.shadow_served, 4) if self.shadow_served else None}
        return out


class Reporter:
    """Folds decision-log lines into per-route totals."""

    def __init__(self, config: Any):
        from llm_router.config import allowed_models
        from llm_router.router import build_catalog, policy_reference

        catalog = build_catalog(config)
        # per named policy, the model "no router" would have used (an inline route policy's is unknown here)
        self.references = {name: policy_reference(conf, [catalog.models[m] for m in allowed_models(conf, config)], catalog)
                           for name, conf in config.policies.items()}
        self.routes: dict[str, RouteTotals] = {}
        self.lines = self.bad_lines = 0

    def add(self, rec: Any) -> None:
        if not isinstance(rec, dict) or not isinstance(rec.get("request_id"), str):
            self.bad_lines += 1
            return
        self.lines += 1
        t = self.routes.setdefault(str(rec.get("route", "")), RouteTotals())
        t.requests.add(rec["request_id"])
        status = rec.get("status")
        status = status if isinstance(status, int) else 0
        if "model" not in rec:  # refused before any upstream call
            t.refused += 1
            return
        cost = _num(rec.get("cost_usd"))
        t.cost += cost
        if not 200 <= status < 300:
            t.failed_attempts += 1
            return
        t.answered += 1
        t.models[str(rec["model"])] += 1
        t.tiers[str(rec.get("tier", "?"))] += 1
        t.latencies.append(_num(rec.get("latency_ms")))
        tokens_in, tokens_out = rec.get("input_tokens"), rec.get("output_tokens")
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            policy = rec.get("policy")
            ref = self.references.get(policy) if isinstance(policy, str) else None
            if ref is not None:
                t.priced += 1
                t.reference_cost += ref.cost(tokens_in, tokens_out, cached=int(rec.get("cached_input_tokens") or 0),
                                             written=int(rec.get("cache_write_tokens") or 0))
        if "shadow_cost_usd" in rec:
            t.shadow_answers += 1
            t.shadow_served += cost
            t.shadow_routed += _num(rec.get("shadow_cost_usd"))

    def result(self) -> dict[str, Any]:
        total = RouteTotals()
        for t in self.routes.values():
            total.requests |= t.requests
            for name in ("refused", "failed_attempts", "answered", "cost", "reference_cost", "priced", "shadow_served",
                         "shadow_routed", "shadow_answers"):
                setattr(total, name, getattr(total, name) + getattr(t, name))
            total.models.update(t.models)
            total.tiers.update(t.tiers)
            total.latencies += t.latencies
        return {"lines": self.lines, "bad_lines": self.bad_lines, "total": total.summary(),
                "routes": {route: t.summary() for route, t in sorted(self.routes.items())}}


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def run(args) -> int:
    reporter = Reporter(load_or_exit(args.config))
    for name in args.log:
        try:
            with Path(name).open("rb") as f:
                for line in f:
                    if line.strip():
                        try:
                            reporter.add(orjson.loads(line))
                        except orjson.JSONDecodeError:
                            reporter.bad_lines += 1
        except OSError as exc:
            print(f"error: cannot read decision log {name}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    out = reporter.result()
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{out['lines']} log lines" + (f" ({out['bad_lines']} unreadable, skipped)" if out["bad_lines"] else ""))
    for route, s in [("all routes", out["total"]), *out["routes"].items()]:
        print(f"\n{route}: {s['requests']} requests, {s['answered']} answered, {s['refused']} refused by the router, "
              f"{s['failed_attempts']} failed upstream attempts")
        spend = f"  spend ${s['cost_usd']:.4f}"
        if "saving_vs_reference" in s:
            spend += f" vs ${s['reference_cost_usd']:.4f} at the reference model: saving {s['saving_vs_reference']:.1%}"
        print(spend)
        if "shadow" in s:
            sh = s["shadow"]
            saving = f"{sh['saving']:.1%}" if sh["saving"] is not None else "-"
            print(f"  shadow: {sh['answers']} answers served for ${sh['served_cost_usd']:.4f}; routing would have spent "
                  f"${sh['routed_cost_usd']:.4f} (saving {saving})")
        if s["model_share"]:
            print("  models: " + ", ".join(f"{m} {v:.1%}" for m, v in s["model_share"].items()))
            print("  tiers:  " + ", ".join(f"{t} {v:.1%}" for t, v in s["tier_share"].items()))
            print(f"  latency p50 {s['latency_p50_ms']} ms, p95 {s['latency_p95_ms']} ms")
    return 0
