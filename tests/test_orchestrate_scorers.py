"""Scorers: logprob, verifiers (refusal, hedge, JSON/schema, multiple-choice format, code), params validation."""
from __future__ import annotations

import math

import orjson
import pytest

from llm_router.classify.answer_kind import choice_letters
from llm_router.config import ConfigError, parse_config
from llm_router.orchestrate.params import CascadeParams, HedgeParams, param_problems, parse_params
from llm_router.orchestrate.scorers import (
    AnswerText, combined, format_score, json_score, logprob_score, read_answer, verify,
)
from llm_router.orchestrate.settings import OrchestrateSettings

MC = ("Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\nC) helium\nD) neon\n"
      "Print only a single choice  from \"A\" or \"B\" or \"C\" or \"D\" without explanation.\nAnswer:")


def test_logprob_score_is_the_geometric_mean_probability():
    s = logprob_score([-0.1, -0.3])
    assert s.value == pytest.approx(math.exp(-0.2)) and s.source == "logprob"
    assert logprob_score([]) is None and logprob_score(None) is None
    assert logprob_score([-5.0] * 10).value < 0.01


@pytest.mark.parametrize("text,expected", [
    ("B", 1.0), ("B\n", 1.0), ("(B)", 1.0), ("The answer is B.", 1.0), ("Answer: B", 1.0),
    ("B) carbon dioxide", 0.7), ("A or B", 0.3), ("I do", 0.1), ("", 0.1), ("E", 0.1),
])
def test_multiple_choice_format(text, expected):
    letters = choice_letters(MC)
    assert letters == frozenset("ABCD")
    assert format_score(text, letters).value == expected


def test_choice_letters_only_for_multiple_choice_prompts():
    assert choice_letters("Write a poem about the sea.") is None
    assert choice_letters("Pick one:\nA) red\nB) blue\nAnswer:") == frozenset("AB")


@pytest.mark.parametrize("text,low", [
    ("I'm sorry, but I can't help with that request.", True),
    ("I cannot assist with this.", True),
    ("I don't know. It is unclear and hard to say.", True),
    ("Paris is the capital of France.", False),
])
def test_refusals_and_hedges(text, low):
    s = verify(AnswerText(text), {}, "What is the capital of France?")
    assert (s.value < 0.5) is low, s


def test_provider_refusal_field_and_empty_and_truncated():
    assert verify(AnswerText("x", refusal="no"), {}, "q").value < 0.1
    assert verify(AnswerText("  "), {}, "q").value == 0.0
    assert verify(AnswerText("a long answer", finish_reason="length"), {}, "q").value == 0.6


def test_json_and_schema_checks():
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}}
    assert verify(AnswerText('{"name": "Ann", "age": 3}'), body, "q").value == 1.0
    bad_type = verify(AnswerText('{"name": "Ann", "age": "three"}'), body, "q")
    assert bad_type.value == 0.2 and "age" in bad_type.reason
    assert verify(AnswerText("not json"), body, "q").value == 0.0
    assert verify(AnswerText("```json\n{\"a\": 1}\n```"), {"response_format": {"type": "json_object"}}, "q").value == 1.0
    assert json_score("[1,2]", None).value == 1.0


def test_code_requested_and_missing():
    prompt = "Write a python function to reverse a list."
    assert verify(AnswerText("```python\ndef rev(x):\n    return x[::-1]\n```"), {}, prompt).value == 1.0
    assert verify(AnswerText("You can reverse it with slicing."), {}, prompt).value == 0.3


def test_read_answer_formats():
    chat = {"choices": [{"message": {"content": "hi", "refusal": None}, "finish_reason": "stop",
                         "logprobs": {"content": [{"token": "hi", "logprob": -0.5}]}}]}
    a = read_answer("chat", orjson.dumps(chat))
    assert a.text == "hi" and a.logprobs == [-0.5] and a.finish_reason == "stop"
    msg = {"type": "message", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], "stop_reason": "max_tokens"}
    m = read_answer("messages", orjson.dumps(msg))
    assert m.text == "AB" and m.finish_reason == "length"
    comp = {"choices": [{"text": "x", "logprobs": {"token_logprobs": [-1.0, None, -2.0]}, "finish_reason": "length"}]}
    assert read_answer("completions", orjson.dumps(comp)).logprobs == [-1.0, -2.0]
    assert read_answer("chat", b"not json") is None and read_answer("chat", b'{"choices": []}') is None


def test_combined_takes_the_lower_of_logprob_and_verifier():
    confident_refusal = AnswerText("I can't help with that.", logprobs=[-0.01] * 5)
    assert combined(confident_refusal, {}, "q", "auto").source == "verify"
    assert combined(confident_refusal, {}, "q", "logprob").source == "logprob"
    unsure = AnswerText("Paris.", logprobs=[-3.0] * 5)
    assert combined(unsure, {}, "q", "auto").source == "logprob"
    no_lp = combined(AnswerText("Paris."), {}, "q", "logprob")
    assert no_lp.source == "verify" and "no logprobs" in no_lp.reason


def test_params_defaults_and_errors_name_the_field():
    c = parse_params("cascade", {})
    assert isinstance(c, CascadeParams) and c.scoring.floor == 0.5 and c.scoring.scorer == "auto" and c.max_steps == 0
    h = parse_params("hedge", {"n": 3, "pick": "best"})
    assert isinstance(h, HedgeParams) and h.n == 3 and h.pick == "best"
    assert parse_params("cascade", {"scorer": "logprob"}).scoring.request_logprobs is True
    models = ["a", "b"]
    assert param_problems("cascade", {"floor": 1.5}, models) == ["params.floor: must be in [0, 1], got 1.5"]
    assert param_problems("cascade", {"timeout_s": 0}, models)[0].startswith("params.timeout_s")
    assert param_problems("cascade", {"scorer": "judge"}, models) == ["params.judge: scorer 'judge' needs a judge model id"]
    assert "params.judge: unknown model 'zz'" in param_problems("cascade", {"scorer": "judge", "judge": "zz"}, models)[0]
    assert param_problems("hedge", {"pick": "fastest"}, models)[0].startswith("params.pick: must be one of")
    assert param_problems("hedge", {"models": ["a", "nope"]}, models)[0].startswith("params.models: unknown model 'nope'")
    assert param_problems("cascade", {"flor": 0.3}, models)[0].startswith("params.flor: unknown")


def test_config_names_the_policy_field():
    with pytest.raises(ConfigError) as err:
        parse_config({"policies": {"c": {"strategy": "cascade", "params": {"floor": "high"}}}})
    assert "policies.c.params.floor: must be a number" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"policies": {"h": {"strategy": "hedge", "params": {"n": 20}}}})
    assert "policies.h.params.n: must be an integer in [2, 8]" in str(err.value)
    cfg = parse_config({"policies": {"h": {"strategy": "hedge", "params": {"n": 3, "pick": "best"}}}})
    assert cfg.policies["h"].strategy == "hedge"


def test_settings_validation():
    s = OrchestrateSettings.from_config({"orchestrate": {"egress": "http://127.0.0.1:9080/", "deadline_s": 20}})
    assert s.egress == "http://127.0.0.1:9080" and s.deadline_s == 20.0 and s.http2 is True
    assert OrchestrateSettings.from_config({}).egress is None
    for bad, msg in (({"egress": "ftp://x"}, "server.orchestrate.egress"), ({"deadline_s": -1}, "server.orchestrate.deadline_s"),
                     ({"http2": "yes"}, "server.orchestrate.http2"), ({"colour": 1}, "unknown fields ['colour']")):
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            OrchestrateSettings.from_config({"orchestrate": bad})


def test_hedge_strategy_picks_n_models_one_per_provider_first():
    from llm_router.runtime import Runtime

    cfg = parse_config({"policies": {"h": {"strategy": "hedge", "params": {"n": 3}},
                                     "x": {"strategy": "hedge", "params": {"models": ["gpt-4o", "deepseek-v2"]}}},
                        "secrets": {"missing": "skip"}})
    rt = Runtime(cfg, telemetry=False)
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello there"}]})
    for policy, expected in (("h", None), ("x", ["gpt-4o", "deepseek-v2"])):
        _, d = rt.router.route(body, policy=rt.router.policies[policy])
        assert d.mode == "hedge" and d.strategy == "hedge" and "hedge (first) over" in d.selection
        ids = [m.id for m in d.chain]
        if expected:
            assert ids == expected
        else:
            assert len(ids) == 3 and len({rt.catalog.models[i].provider for i in ids}) == 3
            prices = [rt.catalog.models[i].blended_price for i in ids]
            assert prices[0] == min(prices)
