"""The Grafana dashboard only queries metrics the runner exports; the scrape config parses."""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx

import orjson
import promql_parser
import yaml

from llm_router.accounting import Usage
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.gateways.apisix.runner import Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Runtime
from llm_router.secrets.env import EnvStore

ROOT = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"\bllm_router_[a-z_]+\b")


def exported_names(keys: dict[str, str], tmp_path: Path) -> set[str]:
    """Series names in a runner's exposition after some traffic and a rating (so labelled families appear)."""
    cfg = parse_config({"accounting": {"limits": [{"scope": "route", "usd": 5},
                                                  {"scope": "route", "match": "dg", "usd": 0, "action": "downgrade", "max_output_price": 3}]},
                        "policies": {"default": {"classifier": "rules", "strategy": "cost_weighted", "forward": {"embeddings": "openai"}},
                                     "shadow": {"classifier": "rules", "strategy": "cost_weighted", "shadow": True}},
                        "metrics": {"listen": "127.0.0.1:0", "feedback_log": str(tmp_path / "feedback.jsonl")}})
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)]))
    Runner(rt, TokenStore(ttl=100))  # an APISIX runner on the runtime adds its protocol counters

    async def traffic() -> str:
        await rt.start()
        try:
            ex = Exchange(request_id="1", route="r", started=0.0)
            rt.decide(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}), path="/v1/chat/completions", ex=ex)
            rt.on_response(ex, 200, Usage(10, 10, cached_input_tokens=4), 0.1, None)
            rt.telemetry.on_fallback(ex, "a", "b", "5xx")
            shadowed = Exchange(request_id="3", route="r", started=0.0)
            rt.decide(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}), path="/v1/chat/completions", ex=shadowed,
                      route_conf=orjson.dumps({"policy": "shadow"}))
            rt.on_response(shadowed, 200, Usage(10, 10), 0.1, None)
            rt.decide(b"{", path="/v1/chat/completions", ex=Exchange(request_id="2", route="r", started=0.0))
            rt.forwarded("/v1/embeddings", ex=Exchange(request_id="4", route="r", started=0.0))
            rt.decide(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}), path="/v1/chat/completions",
                      ex=Exchange(request_id="5", route="dg", started=0.0))  # a spent downgrade budget
            host, port = rt.metrics_address
            rated = await asyncio.to_thread(httpx.post, f"http://{host}:{port}/v1/feedback", json={"request_id": "1", "score": 1})
            assert rated.status_code == 200
            rt.telemetry.refresh(rt.shared, 0.0)
            return rt.metrics.exposition().decode()
        finally:
            await rt.stop()

    text = asyncio.run(traffic())
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_dashboard_query_names_an_exported_metric(provider_keys, tmp_path):
    dash = json.loads((ROOT / "deploy" / "grafana" / "llm-router.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for e in exprs:  # valid PromQL once Grafana has put in its variables
        promql_parser.parse(e.replace("$__range", "1h").replace("$__rate_interval", "5m").replace("$route", "x"))
    exprs += [v["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), str) and "llm_router" in v["query"]]
    assert len(exprs) >= 16
    exported = exported_names(provider_keys, tmp_path)
    used = {name for e in exprs for name in METRIC.findall(e)}
    missing = sorted(used - exported)
    assert not missing, f"dashboard queries metrics the runner does not export: {missing}"
    for must in ("llm_router_cost_usd_total", "llm_router_saving_usd_total", "llm_router_requests_total", "llm_router_tokens_total",
                 "llm_router_breaker_open", "llm_router_budget_remaining_usd", "llm_router_errors_total"):
        assert must in used, f"dashboard lacks {must}"


def test_prometheus_scrape_config_parses():
    conf = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert jobs["llm-router"]["metrics_path"] == "/metrics"


def test_alert_rules_load_and_name_exported_metrics(provider_keys, tmp_path):
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert "alerts.yml" in prom["rule_files"]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) >= 6 and len({a["alert"] for a in alerts}) == len(alerts)
    for a in alerts:
        assert a["expr"].strip() and a["for"] and a["labels"]["severity"] in ("critical", "warning", "info")
        assert a["annotations"]["summary"], a["alert"]
        promql_parser.parse(a["expr"])  # raises naming the problem on invalid PromQL
    used = {name for a in alerts for name in METRIC.findall(a["expr"])}
    missing = sorted(used - exported_names(provider_keys, tmp_path))
    assert not missing, f"alerts query metrics the runner does not export: {missing}"
    for must in ("llm_router_breaker_open", "llm_router_budget_remaining_usd", "llm_router_downgraded_total"):
        assert must in used

