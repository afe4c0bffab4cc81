"""The routing CLI: route, classify, check."""
from __future__ import annotations

import re

import orjson
import pytest
import yaml

from llm_router.cli import main


def test_route_prompt_and_json(capsys):
    assert main(["route", "hello there"]) == 0
    out = capsys.readouterr().out
    assert "model:" in out and "deepseek-v2" in out and "reason:" in out
    assert main(["route", "--json", "Prove rigorously that there are infinitely many primes"]) == 0
    d = orjson.loads(capsys.readouterr().out)
    assert d["tier"] in ("HIGH", "CRITICAL") and d["category"] == "math" and d["fallbacks"]


def test_route_shows_how_much_of_the_input_is_system_prompt_and_tools(tmp_path, capsys):
    f = tmp_path / "agent.json"
    f.write_text(orjson.dumps({"model": "auto", "tools": [{"type": "function", "function": {"name": "run", "parameters": {}}}],
                               "messages": [{"role": "system", "content": "You are a coding agent. " * 100},
                                            {"role": "user", "content": "run the tests"}]}).decode())
    assert main(["route", "--body", str(f)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cost:"))
    m = re.search(r"\((\d+) in, (\d+) of them system prompt and tools, \d+ out\)", line)
    assert m, line
    shown_in, standing = int(m.group(1)), int(m.group(2))
    assert standing > 400 and shown_in - standing < 30  # the turn is a few tokens; the rest is the app's standing part
    assert main(["route", "hello there"]) == 0
    assert "system prompt" not in capsys.readouterr().out


def test_route_body_file_and_refusal(tmp_path, capsys):
    f = tmp_path / "b.json"
    f.write_text('{"messages": [{"role": "user", "content": 5}]}')
    assert main(["route", "--body", str(f)]) == 1
    assert "messages[0].content" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # a file that is not there: a line naming it, not a traceback
        main(["route", "--body", str(tmp_path / "missing.json")])
    assert stop.value.code == 2
    assert f"error: cannot read --body {tmp_path / 'missing.json'}: No such file or directory" in capsys.readouterr().err


@pytest.mark.parametrize("argv, problem", [
    (["demo", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
    (["bench", "decision", "-n", "0"], "argument --requests/-n: must be at least 1, got 0"),
    (["bench", "apisix", "--concurrency", "1", "0"], "argument --concurrency: must be at least 1, got 0"),
    (["bench", "envoy", "--requests", "ten"], "argument --requests: 'ten' is not a whole number"),
    (["serve", "--apisix", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
])
def test_counts_below_their_least_are_usage_errors(capsys, argv, problem):
    with pytest.raises(SystemExit) as stop:  # was: a run of the whole workload, an IndexError or a ZeroDivisionError
        main(argv)
    assert stop.value.code == 2 and problem in capsys.readouterr().err


def test_demo_workers_are_for_the_apisix_runner(capsys):
    assert main(["demo", "--workers", "2"]) == 2
    assert "error: --workers is for --gateway nginx" in capsys.readouterr().err


def test_train_refuses_an_out_folder_that_does_not_exist_before_training(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "no" / "m.npz")]) == 2
    assert f"error: --out {tmp_path / 'no' / 'm.npz'}: folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err


def test_classify_jsonl(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "hi"}\n\n{"model": "auto", "messages": [{"role": "user", "content": "Write a SQL query joining two tables"}]}\n{bad\n')
    assert main(["classify", "--input", str(f), "--json"]) == 1  # one bad line
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["line"] for x in lines] == [1, 3, 4]
    assert lines[0]["tier"] == "LOW" and lines[0]["model"] == "deepseek-v2"
    assert lines[1]["category"] == "code" and 0 <= lines[1]["score"] <= 1 and lines[1]["reason"]
    assert "not valid JSON" in lines[2]["error"]
    f.write_text('{"prompt": ["a", "list"]}\n')
    assert main(["classify", "--input", str(f)]) == 1
    assert orjson.loads(capsys.readouterr().out)["error"] == "'prompt' must be a string, got list"
    with pytest.raises(SystemExit) as stop:
        main(["classify", "--input", str(tmp_path / "missing.jsonl")])
    assert stop.value.code == 2 and "error: cannot read --input" in capsys.readouterr().err
    # scores order prompts: a trivial one scores below a hard one
    f.write_text('{"prompt": "thanks!"}\n{"prompt": "Design a fault-tolerant distributed lock service and prove its safety step by step"}\n')
    assert main(["classify", "--input", str(f)]) == 0
    easy, hard = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert easy["score"] < hard["score"]


def test_check_names_unknown_fields_of_the_edge_sections(tmp_path, capsys):
    def write(path, data):
        path.write_text(yaml.safe_dump(data))
        return path

    bad = write(tmp_path / "bad.yaml", {"metrics": {"feedbak_log": "f.jsonl"}})
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "metrics: unknown fields ['feedbak_log']" in err and "'feedback_log'" in err
    bad = write(tmp_path / "health.yaml", {"health": {"min_requests": "five", "error_rate": 2}})
    assert main(["check", str(bad)]) == 2  # a breaker that cannot compare its counts is refused, one line per field
    err = capsys.readouterr().err
    assert "  - health.min_requests: must be a whole number >= 1, got 'five'\n" in err
    assert "  - health.error_rate: must be a share of failed requests in (0, 1], got 2\n" in err
    ladder = {t: "gpt-4o" for t in ("LOW", "MEDIUM", "HIGH", "CRITICAL")}
    good = write(tmp_path / "good.yaml", {"metrics": {"feedback_log": "f.jsonl"}, "policies": {"default": {
        "classifier": "rules", "strategy": "ladder", "ladder": ladder, "explore": 0.1}}})
    assert main(["check", str(good)]) == 0
    shown = capsys.readouterr().out
    assert "claude-3.5-sonnet" in shown and "cache read $0.3 / write $3.75" in shown  # prompt-cache prices shown
    assert "explore: 10% of requests go to a random candidate" in shown
    # DeepSeek serves Anthropic-format requests but not their token counts, and check says so
    assert "deepseek messages: /anthropic/v1/messages, without count_tokens" in shown
    assert "messages: 2 models" in shown
    assert "client_model=route output_limit=refuse" in shown  # the default: a too-long answer is refused, not clamped



@pytest.mark.parametrize("sections, problem", [
    ({"server": {"mesage_timeout_ms": 250}}, "server: unknown fields ['mesage_timeout_ms'] (known: ['apisix_answer_poll_us', 'apisix_early_body', 'apisix_fallback',"),
    ({"server": {"apisix_answer_poll_us": -5}}, "server.apisix_answer_poll_us: must be a number of microseconds from 0 to 10000, got -5"),
    ({"server": {"apisix_early_body": "yes"}}, "server.apisix_early_body: must be true or false, got 'yes'"),
    ({"server": {"workers": 0}}, "server.workers: must be a whole number >= 1, got 0"),
    ({"server": {"route_header": "x llm model"}}, "server.route_header: must be an HTTP header name, got 'x llm model'"),
    ({"server": {"envoy": {"transport": "quic"}}}, "server.envoy.transport: Input should be 'h2', 'grpclib' or 'grpcio'"),
    ({"server": {"orchestrate": {"egress": 5}}}, "server.orchestrate.egress: must be an http:// or https:// URL, got 5"),
    ({"state": {"backend": "redis", "url": "localhost:6379"}}, "state.url: must be a Redis URL (redis://, rediss:// or unix://)"),
    ({"state": {"refresh_s": 0}}, "state.refresh_s: must be a positive number of seconds, got 0"),
    ({"metrics": {"listen": "127.0.0.1:metrics"}}, "metrics.listen: must be 'host:port' or a port number, got '127.0.0.1:metrics'"),
    ({"metrics": {"log_prompts": "no"}}, "metrics.log_prompts: must be true or false, got 'no'"),
    ({"accounting": {"routes": "chat"}}, "accounting.routes: must be a list of route names, got 'chat'"),
    ({"secrets": {"refresh_s": -1}}, "secrets.refresh_s: must be a positive number of seconds, got -1"),
    ({"secrets": {"missing": "ignore"}}, "secrets.missing: must be 'error' or 'skip', got 'ignore'"),
])
def test_check_refuses_bad_values_in_the_edge_sections_naming_the_field(tmp_path, capsys, sections, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sections))
    assert main(["check", str(path)]) == 2  # was: "is valid", then ignored (a typo) or failed when serving
    assert f"  - {problem}" in capsys.readouterr().err


def test_check_accepts_null_where_it_means_off(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"metrics": {"listen": None, "decision_log": None}, "accounting": {"consumer_header": None},
                                    "server": {"envoy": None, "workers": 2, "route_header": "x-llm-upstream"},
                                    "secrets": {"vault": None}}))
    assert main(["check", str(path)]) == 0, capsys.readouterr().err


def test_check_validates_and_explains_spend_limits_and_forwards(tmp_path, capsys):
    def write(path, data):
        path.write_text(yaml.safe_dump(data))
        return path

    bad = write(tmp_path / "bad.yaml", {"accounting": {"limits": [{"scope": "route", "usd": 5, "action": "downgrade"}]}})
    assert main(["check", str(bad)]) == 2  # refused here, not only when the runner starts
    assert "accounting.limits[0]: a 'downgrade' limit needs max_input_price and/or max_output_price" in capsys.readouterr().err
    assert main(["check", str(write(tmp_path / "dict.yaml", {"accounting": {"limits": {"scope": "route"}}}))]) == 2
    assert "accounting.limits: must be a list of limit rules, got dict" in capsys.readouterr().err
    good = write(tmp_path / "good.yaml", {
        "accounting": {"limits": [{"scope": "consumer", "window": "month", "usd": 20},
                                  {"scope": "route", "usd": 50, "action": "downgrade", "max_output_price": 3}]},
        "policies": {"default": {"classifier": "rules", "ladder": {"LOW": "deepseek-v2"}, "forward": {"embeddings": "openai"}}}})
    assert main(["check", str(good)]) == 0
    shown = capsys.readouterr().out
    assert "consumer (each): $20 per month, then requests get 429" in shown
    assert "route (each): $50 per day, then only models up to output $3 per 1M tokens serve it" in shown
    assert "forwards: embeddings -> openai" in shown and "text-embedding-3-small $0.02" in shown
