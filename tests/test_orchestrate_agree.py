"""Agreement cascade: final-answer extraction, the agreement scorer, its params, and the runtime against fake providers over HTTP."""
from __future__ import annotations

import orjson
import pytest
from agree_prompts import CODE, FOUR, MATH, TWO
from conftest import orchestrated_answer

from llm_router.classify.answer_kind import answer_kind
from llm_router.config import ConfigError, parse_config
from llm_router.fakes import FakeProviders
from llm_router.orchestrate.agreement import agreement, final_answer, settle
from llm_router.orchestrate.params import CascadeParams, param_problems, parse_params
from llm_router.router import Router
from llm_router.runtime import Runtime



@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("B\n", "B"), ("(B)", "B"), ("B) mercury", "B"), ("The answer is B.", "B"), ("Answer: b", "B"),
    ("mercury", "B"), ("I think the answer is D because zinc", "D"), ("A or B", None), ("I do", None), ("", None),
    ("E", None), ("A good question. Mercury, so B.", "B"),
])
def test_final_answer_of_a_four_option_prompt(text, expected):
    assert answer_kind(FOUR) == "choice"
    assert final_answer(text, FOUR) == expected


@pytest.mark.parametrize("text,expected", [
    ("A", "A"), ("B)", "B"), ("Tom", "B"), ("Maya", "A"), ("Ma", None), ("May", "A"), ("I do", None),
    ("There is", None), ("Tom and Maya", None),
])
def test_final_answer_of_a_two_option_prompt_reads_the_option_text(text, expected):
    assert final_answer(text, TWO) == expected


@pytest.mark.parametrize("text,expected", [
    ("12 x 6 = 72, plus 3 is 75.", "75"), ("#### 75", "75"), ("The answer is 1,275.", "1275"),
    ("So she sells \\boxed{75} rolls; 3 were single.", "75"), ("75.0", "75"), ("no idea", None),
])
def test_final_answer_of_a_math_prompt_is_the_final_number(text, expected):
    assert answer_kind(MATH) == "number"
    assert final_answer(text, MATH) == expected


def test_final_answer_of_code_and_text_is_normalised():
    assert answer_kind(CODE) == "code"
    a = "Here you go:\n```python\ndef biggest(a, b, c):\n    return max(a, b, c)  # simple\n```\nDone."
    b = "```python\ndef biggest(a, b, c):\n  return max(a, b, c)\n```"
    assert final_answer(a, CODE) == final_answer(b, CODE) == "def biggest(a, b, c): return max(a, b, c)"
    assert final_answer("def f(): pass", CODE) != final_answer(a, CODE)
    assert answer_kind("Name the capital of France.") == "text"
    assert final_answer("  Paris! ", "Name the capital of France.") == final_answer("paris", "Name the capital of France.") == "paris"
    assert final_answer(None, FOUR) is None and final_answer("...", "Name it.") is None


def test_agreement_scores_and_says_why():
    s = agreement(["B", "B) mercury", "mercury"], FOUR)
    assert s.value == 1.0 and s.source == "agree" and "3 answers agree on 'B'" in s.reason
    s = agreement(["B", "C"], FOUR)
    assert s.value == 0.0 and "differ" in s.reason and "'B' vs 'C'" in s.reason
    s = agreement(["B", "I do"], FOUR)
    assert s.value == 0.0 and "no final answer in answer 2 of 2" in s.reason
    assert agreement(["B"], FOUR).value == 0.0
    long = agreement(["x" * 300, "y" * 300], "Say something.")
    assert len(long.reason) < 120  # answers are shown cut short


def test_settle_picks_the_first_answer_a_quorum_shares():
    assert settle(["B", "B"], 2) == 0
    assert settle(["B", "C"], 2) is None
    assert settle(["B", None, "B"], 2) == 0
    assert settle(["B", "C", "C"], 2) == 1
    assert settle([None, None], 2) is None
    assert settle(["A", "B", "B", "A"], 2) == 1  # B reached two votes first
    assert settle(["A", "A", "B"], 3) is None


def test_params_of_the_agreement_cascade_and_errors_name_the_field():
    p = parse_params("cascade", {"scorer": "agree"})
    assert isinstance(p, CascadeParams) and p.quorum == 2 and p.scoring.scorer == "agree"
    assert parse_params("cascade", {"scorer": "agree", "quorum": 3}).quorum == 3
    models = ["a", "b", "c"]
    assert param_problems("cascade", {"scorer": "agree", "quorum": 1}, models) == [
        "params.quorum: must be an integer in [2, 8], got 1"]
    assert param_problems("cascade", {"scorer": "verify", "quorum": 2}, models) == [
        "params.quorum: only used with scorer 'agree', the scorer is 'verify'"]
    assert param_problems("cascade", {"scorer": "agree", "quorum": 3, "chain": ["a", "b", "c"]}, models) == [
        "params.quorum: 3 needs a chain of at least 4 models (the quorum asked at once, then one to escalate to), got 3"]
    assert param_problems("cascade", {"scorer": "agree", "max_steps": 2}, models)[0].startswith("params.max_steps: 2 leaves")
    assert param_problems("hedge", {"scorer": "agree"}, models)[0].startswith("params.scorer: 'agree' is for strategy 'cascade'")
    with pytest.raises(ConfigError) as err:
        parse_config({"policies": {"ag": {"strategy": "cascade", "params": {"scorer": "agree", "quorum": "two"}}}})
    assert "policies.ag.params.quorum: must be an integer" in str(err.value)


def test_strategy_chain_is_long_enough_for_the_quorum():
    cfg = parse_config({"policies": {"ag": {"strategy": "cascade", "params": {"scorer": "agree", "quorum": 3}}}})
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": FOUR}]})
    router = Router(cfg)
    _, decision = router.route(body, path="/v1/chat/completions", policy=router.policies["ag"])
    assert len(decision.chain) >= 4 and decision.mode == "cascade"


# ---- the runtime, against fake providers over real HTTP ------------------------------------------

CHAIN = ["deepseek-v2", "llama-3-70b", "gpt-4o"]
AGREE = {"strategy": "cascade", "explain": True, "params": {"scorer": "agree", "chain": CHAIN, "timeout_s": 5}}


@pytest.fixture
def make(on_fakes):
    return lambda policies: Runtime(on_fakes(policies))


def answer(rt: Runtime, fakes: FakeProviders, texts: dict[str, str], prompt: str = FOUR, policy: str = "ag"):
    """Give each model of the chain a fixed answer text, then decide and orchestrate one request."""
    return orchestrated_answer(rt, fakes, texts, prompt, policy)


def called(rt: Runtime, fakes: FakeProviders) -> list[str]:
    return sorted(r.json["model"] for r in fakes.requests())


def names(rt: Runtime, ids: list[str]) -> list[str]:
    return sorted(rt.catalog.models[i].name for i in ids)


def test_agreeing_pair_returns_the_cheap_answer_and_both_calls_are_paid(make, fakes):
    rt = make({"ag": AGREE})
    rep = answer(rt, fakes, {"deepseek-v2": "B", "llama-3-70b": "B) mercury", "gpt-4o": "B"})
    assert rep.status == 200 and rep.model == "deepseek-v2", rep.steps
    assert orjson.loads(rep.body)["choices"][0]["message"]["content"] == "B"
    assert called(rt, fakes) == names(rt, CHAIN[:2])  # gpt-4o never asked
    assert all(rt.metrics.cost.values[("r", m)] > 0 for m in CHAIN[:2]) and ("r", "gpt-4o") not in rt.metrics.cost.values
    assert "2 agree on 'B'" in rep.header("x-llm-router-steps")
    assert rep.header("x-llm-router-model") == "deepseek-v2"


def test_disagreeing_pair_escalates_to_the_last_model(make, fakes):
    rt = make({"ag": AGREE})
    rep = answer(rt, fakes, {"deepseek-v2": "B", "llama-3-70b": "C", "gpt-4o": "D"})
    assert rep.status == 200 and rep.model == "gpt-4o", rep.steps
    assert called(rt, fakes) == names(rt, CHAIN)
    assert all(rt.metrics.cost.values[("r", m)] > 0 for m in CHAIN)
    assert rt.metrics.fallbacks.values.get(("llama-3-70b", "gpt-4o", "disagree")) == 1
    steps = rep.header("x-llm-router-steps")
    assert "answer 'B'" in steps and "answer 'C'" in steps and "gpt-4o's answer stands" in steps


def test_the_escalated_answer_confirms_a_cheap_one(make, fakes):
    rt = make({"ag": {**AGREE, "params": {**AGREE["params"], "chain": ["deepseek-v2", "llama-3-70b", "mistral-large", "gpt-4o"]}}})
    rep = answer(rt, fakes, {"deepseek-v2": "mercury", "llama-3-70b": "C", "mistral-large": "B", "gpt-4o": "A"})
    assert rep.model == "deepseek-v2", rep.steps  # the third model sided with the cheapest: two agree, gpt-4o not asked
    assert "gpt-4o" not in " ".join(rep.steps)
    assert len(fakes.requests()) == 3


def test_one_failing_cheap_call_is_a_missing_vote(make, fakes):
    rt = make({"ag": AGREE})
    fakes.set_behaviour(rt.catalog.models["llama-3-70b"].provider, status=500)
    rep = answer(rt, fakes, {"deepseek-v2": "B", "gpt-4o": "B"})
    # No agreement is possible with one vote: the chain escalates; gpt-4o agrees with the survivor, whose answer is returned.
    assert rep.status == 200 and rep.model == "deepseek-v2", rep.steps
    assert len(fakes.requests()) == 3
    assert rt.metrics.responses.values.get(("llama-3-70b", "5xx")) == 1


def test_every_call_failing_is_one_clear_error_and_the_next_request_works(make, fakes):
    rt = make({"ag": AGREE})
    fakes.set_behaviour(None, status=503)
    rep = answer(rt, fakes, {})
    assert rep.status == 502 and b"every model of the chain failed" in rep.body
    fakes.set_behaviour(None, status=None)
    rt2 = make({"ag": AGREE})
    assert answer(rt2, fakes, {"deepseek-v2": "A", "llama-3-70b": "A"}).status == 200


def test_a_bad_request_is_passed_through_not_escalated(make, fakes):
    rt = make({"ag": AGREE})
    fakes.set_behaviour(rt.catalog.models["deepseek-v2"].provider, status=400)
    rep = answer(rt, fakes, {"llama-3-70b": "B"})
    assert rep.status == 400 and len(fakes.requests()) == 2  # the pair was asked at once; nothing more
