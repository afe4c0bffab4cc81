"""Runtime telemetry: Prometheus metrics, the decision log, spend limits and breakers end to end in process."""
from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from llm_router.accounting import Usage
from llm_router.config import default_data, parse_config
from llm_router.credentials import Credentials
from llm_router.decision_log import SecretMask, redact_pii
from llm_router.metrics import scrape_totals
from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime
from llm_router.secrets.env import EnvStore

REQUIRED = ["llm_router_requests_total", "llm_router_tokens_total", "llm_router_cost_usd_total", "llm_router_saving_usd_total",
            "llm_router_decision_seconds_bucket", "llm_router_fallbacks_total", "llm_router_errors_total",
            "llm_router_budget_remaining_usd", "llm_router_breaker_open"]
KEYS = {"OPENAI_API_KEY": "sk-canary-openai-0001", "ANTHROPIC_API_KEY": "sk-ant-canary-0002", "GEMINI_API_KEY": "gm-canary-0003",
        "TOGETHER_API_KEY": "tg-canary-0004", "MISTRAL_API_KEY": "ms-canary-0005", "DEEPSEEK_API_KEY": "sk-canary-deepseek-0006"}


def chat(text: str) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})


def runtime(tmp_path, **sections) -> Runtime:
    cfg = parse_config({"metrics": {"listen": "127.0.0.1:0", "decision_log": str(tmp_path / "decisions.jsonl"),
                                    **sections.pop("metrics", {})}, **sections})
    creds = Credentials.resolve(build_catalog(cfg), [EnvStore(KEYS)])
    return Runtime(cfg, credentials=creds)


def exchange(rt: Runtime, body: bytes, *, status=200, usage=Usage(120, 80), headers=None, route="chat"):
    ex = Exchange(request_id=rt.new_request_id(), route=route, started=0.0)
    out = rt.decide(body, path="/v1/chat/completions", ex=ex, headers=headers)
    if not isinstance(out, Refusal):
        rt.on_response(ex, status, usage, 0.25, None)
    return ex, out


def test_metrics_endpoint_exports_every_required_metric(tmp_path):
    async def go():
        rt = runtime(tmp_path, accounting={"limits": [{"scope": "route", "usd": 10, "window": "day"}], "routes": ["chat"]})
        await rt.start()
        try:
            exchange(rt, chat("hello"))
            exchange(rt, chat("Prove rigorously that there are infinitely many primes, step by step"))
            exchange(rt, b"{broken")
            rt.telemetry.on_fallback(exchange(rt, chat("hi"))[0], "deepseek-v2", "llama-3-70b", "5xx")
            await rt.shared.sync()
            host, port = rt.metrics_address
            text = (await asyncio.to_thread(httpx.get, f"http://{host}:{port}/metrics")).text
        finally:
            await rt.stop()
        for name in REQUIRED:
            assert name in text, name
        totals = scrape_totals(text)
        assert totals["llm_router_requests_total"] == 3
        assert totals["llm_router_tokens_total"] == 3 * 200
        assert totals["llm_router_cost_usd_total"] > 0
        assert totals["llm_router_saving_usd_total"] > 0  # against gpt-4o, the default reference
        assert totals["llm_router_errors_total"] >= 1  # the broken body
        assert totals["llm_router_fallbacks_total"] == 1
        assert 'llm_router_budget_remaining_usd{scope="route:chat/day"}' in text
    asyncio.run(go())


def test_decision_log_lines_without_prompt_by_default(tmp_path):
    async def go():
        rt = runtime(tmp_path)
        await rt.start()
        exchange(rt, chat("my email is jane@example.com"))
        exchange(rt, b'{"messages": 5}')
        await rt.stop()
    asyncio.run(go())
    lines = [orjson.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    ok, bad = lines
    for key in ("request_id", "route", "model", "tier", "reason", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "status"):
        assert key in ok, key
    assert "prompt" not in ok and "jane@" not in (tmp_path / "decisions.jsonl").read_text()
    assert bad["status"] == 400 and "messages" in bad["error"] and "response_id" not in ok


def test_decision_log_names_the_providers_id_of_a_responses_answer(tmp_path):
    async def go():
        rt = runtime(tmp_path)
        await rt.start()
        ex = Exchange(request_id=rt.new_request_id(), route="r", started=0.0)
        rt.decide(orjson.dumps({"model": "auto", "input": "hello"}), path="/v1/responses", ex=ex)
        rt.on_response(ex, 200, Usage(12, 3, response_id="resp_abc123"), 0.2, None)
        await rt.stop()
    asyncio.run(go())
    [rec] = [orjson.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert (rec["model"], rec["response_id"], rec["input_tokens"]) == ("gpt-4o", "resp_abc123", 12)


def test_decision_log_prompts_opt_in_and_redacted(tmp_path):
    async def go():
        rt = runtime(tmp_path, metrics={"log_prompts": True, "redact_pii": True})
        await rt.start()
        exchange(rt, chat("mail jane@example.com or call +1 415 555 0100 about card 4111 1111 1111 1111"))
        await rt.stop()
    asyncio.run(go())
    rec = orjson.loads((tmp_path / "decisions.jsonl").read_text().splitlines()[0])
    assert "<email>" in rec["prompt"] and "<phone>" in rec["prompt"] and "<card>" in rec["prompt"]
    assert "jane@" not in rec["prompt"]


def test_secrets_never_reach_logs_or_metrics(tmp_path):
    async def go():
        rt = runtime(tmp_path, metrics={"log_prompts": True, "redact_pii": False})
        await rt.start()
        # a client pastes a provider key into its prompt: the log must not carry it either
        exchange(rt, chat(f"why does {KEYS['DEEPSEEK_API_KEY']} fail?"))
        await rt.shared.sync()
        text = rt.metrics.exposition().decode()
        await rt.stop()
        return text
    metrics_text = asyncio.run(go())
    log_text = (tmp_path / "decisions.jsonl").read_text()
    for value in KEYS.values():
        assert value not in log_text and value not in metrics_text
    assert "***" in log_text


def test_spend_limit_rejects_with_429_and_model_budget_excludes(tmp_path):
    async def go():
        rt = runtime(tmp_path, accounting={"limits": [
            {"scope": "consumer", "usd": 0.005, "window": "day"},
            {"scope": "model", "match": "deepseek-v2", "usd": 0.0001, "window": "day", "action": "exclude"}]})
        await rt.start()
        alice = {"authorization": "Bearer client-key-alice"}
        _, first = exchange(rt, chat("hi"), headers=alice, usage=Usage(1000, 1000))
        assert first.model.id == "deepseek-v2"
        await rt.shared.sync()
        _, second = exchange(rt, chat("hi"), headers={"authorization": "Bearer client-key-bob"})
        assert second.model.id != "deepseek-v2"  # its budget is spent: out of selection
        for _ in range(3):
            exchange(rt, chat("hi"), headers=alice, usage=Usage(2000, 2000))
        await rt.shared.sync()
        ex, refused = exchange(rt, chat("hi"), headers=alice)
        await rt.stop()
        return ex, refused
    ex, refused = asyncio.run(go())
    assert isinstance(refused, Refusal) and refused.status == 429
    body = orjson.loads(refused.body)["error"]
    assert body["code"] == "spend_limit_exceeded" and "consumer 'key:" in body["message"]
    assert "client-key-alice" not in refused.body.decode()
    assert ("x-llm-router-request-id", ex.request_id) in refused.headers


def test_breaker_opens_through_runtime(tmp_path):
    async def go():
        rt = runtime(tmp_path, health={"min_requests": 3, "cooldown_s": 60})
        await rt.start()
        for _ in range(3):
            exchange(rt, chat("hi"), status=503, usage=None)
        await rt.shared.sync()
        _, out = exchange(rt, chat("hi"))
        text = rt.metrics.exposition().decode()
        await rt.stop()
        return out, text
    out, text = asyncio.run(go())
    assert out.model.id != "deepseek-v2"
    assert 'llm_router_breaker_open{model="deepseek-v2"} 1.0' in text


def test_a_429_cools_down_the_key_that_got_it_and_the_model_only_when_every_key_is_cooling(tmp_path):
    """DeepSeek with two keys: a 429 on one sends the model's next calls with the other; a 429 on both opens the model."""
    keys = {**KEYS, "DEEPSEEK_KEY_2": "sk-canary-deepseek-0007"}
    deepseek = {**default_data()["providers"]["deepseek"], "credentials": ["env://DEEPSEEK_API_KEY", "env://DEEPSEEK_KEY_2"]}
    cfg = parse_config({"metrics": {"decision_log": str(tmp_path / "decisions.jsonl")}, "providers": {"deepseek": deepseek}})
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(keys)]))
    limited = [("retry-after", "30"), ("x-ratelimit-remaining-requests", "0")]

    def call(status=200):
        ex = Exchange(request_id=rt.new_request_id(), route="chat", started=0.0)
        out = rt.decide(chat("hi"), path="/v1/chat/completions", ex=ex)
        assert not isinstance(out, Refusal)
        rt.on_response(ex, status, None if status == 429 else Usage(10, 5), 0.1, limited if status == 429 else None)
        return out

    first = call(429)
    assert first.model.id == "deepseek-v2" and first.key in (0, 1)
    following = [call() for _ in range(4)]
    assert {c.model.id for c in following} == {"deepseek-v2"}  # the model stays in selection
    assert {c.key for c in following} == {1 - first.key}  # with the key that has quota left
    assert dict(following[0].set_headers)["authorization"] == f"Bearer {keys['DEEPSEEK_API_KEY' if first.key else 'DEEPSEEK_KEY_2']}"
    rt.telemetry.refresh(rt.shared, 0.0)
    text = rt.metrics.exposition().decode()
    assert 'llm_router_keys_cooling{model="deepseek-v2"} 1.0' in text and 'llm_router_keys_cooling{model="gpt-4o"} 0.0' in text
    assert 'llm_router_breaker_open{model="deepseek-v2"} 0.0' in text
    call(429)  # the second key is rate-limited too
    assert call().model.id != "deepseek-v2"  # now the model is out of selection until the retry-after
    asyncio.run(rt.stop())


def test_bad_telemetry_config_names_the_field(tmp_path, provider_keys):
    from llm_router.config import ConfigError

    for sections, words in [({"health": {"colour": 1}}, "health: unknown fields"),
                            ({"health": {"min_requests": "five"}}, "health.min_requests: must be a whole number >= 1, got 'five'"),
                            ({"health": {"error_rate": 2}}, "health.error_rate: must be a share"),
                            ({"health": {"bucket_s": 60}}, "health.bucket_s: must not exceed window_s"),
                            ({"health": {"cooldown_s": 600}}, "health.max_cooldown_s: must be at least cooldown_s"),
                            ({"health": {"slow_s": "2s"}}, "health.slow_s: must be a number of seconds > 0, or null"),
                            ({"state": {"refresh_s": 0}}, "state.refresh_s: must be a positive number"),
                            ({"accounting": {"limits": [{"scope": "x", "usd": 1}]}}, "accounting.limits[0].scope"),
                            ({"state": {"backend": "etcd"}}, "state.backend"),
                            ({"metrics": {"port": 1}}, "metrics: unknown fields")]:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
            Runtime(parse_config(sections))


def test_redaction_helpers():
    assert redact_pii("write to a.b@c.io now") == "write to <email> now"
    mask = SecretMask(["sk-abcdef123456"])
    assert mask("token sk-abcdef123456 leaked") == "token *** leaked"
    assert SecretMask([])("unchanged") == "unchanged"


def test_decision_log_follows_logrotate_to_a_new_file(tmp_path):
    from llm_router.decision_log import DecisionLog

    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path))
    log.write({"n": 1})
    log.flush()
    path.rename(tmp_path / "decisions.jsonl.1")  # logrotate's default: move away, expect a new file
    log.write({"n": 2})
    log.flush()
    log.write({"n": 3})
    log.flush()
    path.unlink()  # deleted outright
    log.write({"n": 4})
    log.close()
    assert [orjson.loads(x)["n"] for x in (tmp_path / "decisions.jsonl.1").read_text().splitlines()] == [1]
    assert [orjson.loads(x)["n"] for x in path.read_text().splitlines()] == [4]
    assert not log.enabled


def test_decision_log_drops_a_batch_it_cannot_write_and_recovers(tmp_path, caplog):
    from llm_router.decision_log import DecisionLog

    folder = tmp_path / "logs"
    folder.mkdir()
    log = DecisionLog(str(folder / "d.jsonl"))
    (folder / "d.jsonl").unlink()
    folder.rmdir()  # the directory is gone: the reopen fails
    log.write({"n": 1})
    log.flush()
    assert "decision log write failed" in caplog.text and log.enabled
    folder.mkdir()
    log.write({"n": 2})
    log.flush()
    assert [orjson.loads(x)["n"] for x in (folder / "d.jsonl").read_text().splitlines()] == [2]
    log.close()
