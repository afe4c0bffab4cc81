"""`llm-router report`: per-route totals from decision logs agree with the metrics written alongside them."""
from __future__ import annotations

import asyncio

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llm_router.accounting import Usage
from llm_router.cli import main
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Runtime
from llm_router.secrets.env import EnvStore

KEYS = {"OPENAI_API_KEY": "sk-o", "DEEPSEEK_API_KEY": "sk-d", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g",
        "TOGETHER_API_KEY": "t", "MISTRAL_API_KEY": "m"}
LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
POLICIES = {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "reference_model": "gpt-4o"},
            "shadow": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "reference_model": "gpt-4o", "shadow": True}}
EASY = "hi there, thanks!"
HARD = "Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works."


def totals(rt: Runtime, name: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(rt.metrics.exposition().decode())
               for s in f.samples if s.name == name)


@pytest.fixture
def logged(tmp_path):
    """A decision log written by a real Runtime: routed, shadowed, refused and failed requests."""
    log = tmp_path / "decisions.jsonl"
    (tmp_path / "router.yaml").write_text(yaml.safe_dump({"policies": POLICIES}))
    cfg = parse_config({"policies": POLICIES, "metrics": {"decision_log": str(log)}})
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)]))

    def one(route: str, text: str, usage: Usage | None, status: int = 200, conf: bytes | None = None) -> None:
        ex = Exchange(rt.new_request_id(), route, 0.0)
        body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}) if text else b"{"
        rt.decide(body, path="/v1/chat/completions", ex=ex, route_conf=conf)
        if ex.call is not None:
            rt.on_response(ex, status, usage, 0.25, None)

    async def go() -> None:
        await rt.start()
        for i in range(3):
            one("/chat", EASY, Usage(400 + i, 120))
        one("/chat", HARD, Usage(900, 600))
        one("/chat", HARD, None, status=503)
        one("/chat", "", None)  # malformed body: refused
        for _ in range(2):
            one("/shadow", EASY, Usage(500, 200), conf=orjson.dumps({"policy": "shadow"}))
        await rt.stop()
    asyncio.run(go())
    return log, rt


def test_report_totals_match_the_metrics(logged, capsys):
    log, rt = logged
    assert main(["report", "--log", str(log), "--config", str(log.parent / "router.yaml"), "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    total, chat, shadow = out["total"], out["routes"]["/chat"], out["routes"]["/shadow"]
    assert (out["lines"], out["bad_lines"]) == (8, 0)
    assert (total["requests"], total["answered"], total["refused"], total["failed_attempts"]) == (8, 6, 1, 1)
    assert total["cost_usd"] == pytest.approx(totals(rt, "llm_router_cost_usd_total"), abs=1e-6)
    assert chat["reference_cost_usd"] - chat["cost_usd"] == pytest.approx(
        totals(rt, "llm_router_saving_usd_total") - (shadow["reference_cost_usd"] - shadow["cost_usd"]), abs=1e-6)
    assert chat["model_share"] == {"deepseek-v2": 0.75, "claude-3.5-sonnet": 0.25}
    assert 0.3 < chat["saving_vs_reference"] < 1.0  # three of four turns on DeepSeek, at its peak prices or not
    assert shadow["model_share"] == {"gpt-4o": 1.0} and shadow["saving_vs_reference"] == 0.0
    assert shadow["shadow"]["routed_cost_usd"] == pytest.approx(totals(rt, "llm_router_shadow_cost_usd_total"), abs=1e-6)
    assert shadow["shadow"]["served_cost_usd"] == shadow["cost_usd"] and shadow["shadow"]["saving"] > 0.9
    assert "shadow" not in chat


def test_the_readable_report_and_bad_input(logged, tmp_path, capsys):
    log, _ = logged
    with log.open("ab") as f:
        f.write(b"{not json\n[1, 2]\n\n")
    assert main(["report", "--log", str(log), "--config", str(log.parent / "router.yaml")]) == 0
    text = capsys.readouterr().out
    assert "8 log lines (2 unreadable, skipped)" in text and "/shadow: 2 requests" in text
    assert "routing would have spent $" in text and "at the reference model: saving" in text
    assert main(["report", "--log", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read decision log" in capsys.readouterr().err
    main(["report", "--log", str(log), "--json"])  # without the config: no reference for the 'shadow' policy
    assert "reference_cost_usd" not in orjson.loads(capsys.readouterr().out)["routes"]["/shadow"]
