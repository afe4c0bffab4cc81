"""Config: defaults load, user config merges, and every error names its field."""
from __future__ import annotations

import pytest
import yaml

from llm_router.cli import main
from llm_router.config import ConfigError, load_config, parse_config, parse_policy


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_defaults_hold_the_seed_catalog_and_ladder():
    from datetime import datetime, timezone

    cfg = load_config()
    # The seed's six ids, calling what their providers serve today at what those providers charge (the seed's prices were
    # those of models since retired or re-priced): a Tuesday noon UTC, off DeepSeek's peak, before Gemini's half price ends.
    noon = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    prices = {mid: (m.input_price, m.output_price) for mid, m in cfg.as_of(noon).models.items()}
    assert prices == {
        "gpt-4o": (5.0, 15.0), "claude-3.5-sonnet": (3.0, 15.0), "gemini-1.5-pro": (0.75, 3.75),
        "llama-3-70b": (1.04, 1.04), "mistral-large": (0.5, 1.5), "deepseek-v2": (0.15, 0.6),
    }
    peak = cfg.as_of(datetime(2026, 12, 1, 2, tzinfo=timezone.utc)).models["deepseek-v2"]
    assert (peak.input_price, peak.output_price, peak.cached_input_price) == (0.3, 1.2, 0.006)  # DeepSeek's peak: twice
    assert cfg.as_of(datetime(2027, 1, 1, tzinfo=timezone.utc)).models["gemini-1.5-pro"].output_price == 7.5
    assert dict(cfg.policies["default"].ladder) == {
        "LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
    hosts = {p.base_url for p in cfg.providers.values()}
    assert "https://api.openai.com" in hosts and "https://api.deepseek.com" in hosts


def test_user_config_extends_and_removes_by_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "models": {
            "claude-3-haiku": {"provider": "anthropic", "name": "claude-3-haiku-20240307", "input_price": 0.25,
                               "output_price": 1.25, "context_window": 200000, "tier": "low", "capabilities": ["tools"]},
            "mistral-large": None,
        },
        "policies": {"cheap": {"strategy": "cost_weighted", "constraints": {"max_input_price": 1.0}}},
    }))
    cfg = load_config(path)
    assert "claude-3-haiku" in cfg.models and "mistral-large" not in cfg.models
    assert cfg.models["claude-3-haiku"].tier == "LOW"
    assert "default" in cfg.policies and "cheap" in cfg.policies


@pytest.mark.parametrize("data, expected", [
    ({"models": {"x": {"provider": "openai", "input_price": -1, "output_price": 1, "context_window": 5}}},
     "models.x.input_price: Input should be greater than or equal to 0"),
    ({"models": {"x": {"provider": "openai", "input_price": 1, "output_price": 1}}}, "models.x.context_window: required field is missing"),
    ({"models": {"x": {"provider": "nope", "input_price": 1, "output_price": 1, "context_window": 5}}},
     "models.x.provider: unknown provider 'nope'"),
    ({"models": {"x": {"provider": "openai", "input_price": 1, "output_price": 1, "context_window": 5, "capabilities": ["telepathy"]}}},
     "unknown capabilities ['telepathy']"),
    ({"models": {"x": {"provider": "openai", "input_price": 1, "output_price": 1, "context_window": 5, "colour": "red"}}},
     "models.x.colour: unknown field"),
    ({"policies": {"default": {"ladder": {"LOW": "gpt-5"}}}}, "policies.default.ladder.LOW: unknown model 'gpt-5'"),
    ({"policies": {"default": {"strategy": "telepathic"}}}, "policies.default.strategy: Input should be"),
    ({"policies": {"p": {"strategy": "ladder"}}}, "policies.p.ladder: the ladder strategy needs a ladder"),
    ({"policies": {"p": {"strategy": "cost_weighted", "constraints": {"providers": ["acme"]}}}}, "unknown provider 'acme'"),
    ({"policies": {"p": {"strategy": "cost_weighted", "constraints": {"max_input_price": 0.01}}}}, "no model of the catalog satisfies"),
    ({"policies": {"p": {"strategy": "round_robin", "params": {"pool": ["gpt-4o", "nope"]}}}}, "policies.p.params.pool: unknown model 'nope'"),
    ({"policies": {"p": {"classifier": "learned", "strategy": "quality_gate"}}}, "needs classifiers.learned.model"),
    ({"default_policy": "missing"}, "default_policy: unknown policy 'missing'"),
    ({"classifiers": {"rules": {"cuts": [0.5, 0.2, 0.9]}}}, "classifiers.rules.cuts: must be three ascending"),
    ({"classifiers": {"rules": {"add": [{"name": "bad", "patterns": ["("]}]}}}, "classifiers.rules.add.0.patterns: patterns[0] is not a valid regex"),
    ({"classifiers": {"rules": {"add": [{"name": "empty"}]}}}, "needs keywords, starts_with or patterns"),
    ({"providers": {"p": {"base_url": "ftp://x", "paths": {"chat": "/c"}}}}, "providers.p.base_url: must start with http"),
    ({"providers": {"p": {"base_url": "https://x", "paths": {"chat": "c"}}}}, "must start with '/'"),
    ({"unknown_section": 1}, "unknown_section: unknown field"),
])
def test_errors_name_the_field(data, expected):
    problems = problems_of(data)
    assert any(expected in p for p in problems), problems


def test_top_level_must_be_mapping_and_files_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2])  # type: ignore[arg-type]
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_route_policy_forms():
    cfg = load_config()
    assert parse_policy({}, cfg)[0] == "default"
    assert parse_policy({"policy": "default"}, cfg)[0] == "default"
    assert parse_policy(b'{"policy": "default"}', cfg)[0] == "default"
    name, p = parse_policy({"strategy": "cost_weighted", "constraints": {"forbid_tags": ["cn"]}}, cfg)
    assert name == "inline" and p.strategy == "cost_weighted"
    name, p = parse_policy({"policy": {"extends": "default", "explain": True}}, cfg)
    assert p.explain and p.ladder == cfg.policies["default"].ladder
    for bad, words in [
        ({"policy": "nope"}, "unknown policy 'nope'"), (b"{oops", "not valid JSON"), ([1], "must be a JSON object"),
        ({"strategy": "x"}, "strategy"), ({"ladder": {"LOW": "zzz"}}, "unknown model 'zzz'"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_policy(bad, cfg)
        assert words in str(info.value)


def test_check_command(tmp_path, capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "LOW -> deepseek-v2" in out
    assert ("  mistral body: chat: 17 fields accepted, others dropped; max_completion_tokens as max_tokens; seed as "
            "random_seed; streams report usage unasked (no stream_options added); tool call ids rewritten to 9 letters or "
            "digits; an assistant message between tool results and a user message; developer messages as system; message "
            "fields kept per role: system content, user content, assistant content/tool_calls/prefix, tool "
            "content/tool_call_id/name, tool_call id/type/function/index; a last assistant message sent as a prefix") in out
    assert ("                       body over anthropic's: top_p left out when temperature is set; a tool_choice forcing a "
            "tool (named, required, any) sent as auto while it thinks; it thinks only when thinking is enabled or adaptive; "
            "while it thinks, a temperature other than 1, a top_p below 0.95 and top_k left out") in out
    assert "                       prefill: false: requests that end with an assistant message go to other models" in out
    assert ("  deepseek body: max_completion_tokens as max_tokens; chat content arrays of text sent as one string; developer "
            "messages as system; extended thinking only when every tool call turn holds thinking; reasoning effort left out "
            "when thinking is disabled\n") in out
    assert "  openai body: tool call ids over 40 characters shortened; empty tool_calls arrays left out\n" in out
    assert "  anthropic body: tool call ids of letters, digits, _ and - only" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policies": {"default": {"ladder": {"LOW": "gpt-5"}}}}))
    with pytest.raises(SystemExit) as info:
        main(["check", str(bad)])
    assert info.value.code == 2
    assert "policies.default.ladder.LOW: unknown model 'gpt-5'" in capsys.readouterr().err
