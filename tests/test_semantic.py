"""Semantic classifier: clear prompts per tier/category, score order, examples files, knn vs centroid."""
from __future__ import annotations

import json

import orjson
import pytest

from llm_router.catalog import Tier
from llm_router.classify.embeddings import load_default
from llm_router.classify.semantic import Example, SemanticClassifier, load_examples, parse_examples
from llm_router.config import ConfigError, SemanticConf, load_config, parse_config
from llm_router.request import LLMRequest, parse_request
from llm_router.router import Router


def req(prompt: str, *, system: str | None = None, history: list[tuple[str, str]] = ()) -> LLMRequest:
    msgs = ([{"role": "system", "content": system}] if system else [])
    msgs += [{"role": r, "content": c} for r, c in history]
    msgs.append({"role": "user", "content": prompt})
    return parse_request(orjson.dumps({"model": "auto", "messages": msgs}))


@pytest.fixture(scope="module")
def sem() -> SemanticClassifier:
    return SemanticClassifier.from_config(load_config().classifiers.semantic)


# Prompts written for these tests (not in the examples file).
def test_greeting_is_low_chat(sem):
    c = sem.classify(req("hey hey, good to see you again!"))
    assert c.tier == Tier.LOW and c.category == "chat" and c.label == "greeting"
    assert c.classifier == "semantic"


def test_formal_proof_is_high_math(sem):
    c = sem.classify(req("Prove rigorously that every finite integral domain is a field, and show where finiteness is used."))
    assert c.tier >= Tier.HIGH and c.category == "math"
    assert c.label in ("proof", "advanced-math", "competition-math")


def test_sql_is_code(sem):
    c = sem.classify(req("Write a Postgres query listing each department with its average salary, highest first."))
    assert c.category == "code" and c.label == "sql-query"
    assert Tier.LOW < c.tier < Tier.CRITICAL


def test_high_stakes_legal_is_critical(sem):
    c = sem.classify(req("Go through this acquisition agreement and flag the indemnity and liability clauses that could "
                         "bankrupt us if the target's tax filings turn out to be wrong. We sign tomorrow."))
    assert c.tier == Tier.CRITICAL and c.label.startswith("legal")


def test_other_categories(sem):
    assert sem.classify(req("Write a haiku about a quiet snowy street.")).category == "creative"
    assert sem.classify(req("Pull all the email addresses out of this text: reach bo@x.io or sales@y.com")).category == "extraction"
    assert sem.classify(req("Who was the first person to walk on the moon?")).category == "knowledge"
    bug = sem.classify(req("My Flask app fails with this traceback:\nTraceback (most recent call last):\n  File \"app.py\", line 12, "
                           "in index\n    user = session['user_id']\nKeyError: 'user_id'\nIt works locally but not behind the load balancer."))
    assert bug.category == "code" and bug.tier >= Tier.MEDIUM


def test_score_orders_prompts(sem):
    low = sem.classify(req("thanks a lot, bye!")).score
    mid = sem.classify(req("Write a short email inviting my team to lunch on Friday.")).score
    high = sem.classify(req("Design a globally distributed rate limiter for 1M requests per second with consistency trade-offs.")).score
    assert 0 <= low < mid < high <= 1


def test_evidence_names_neighbours_and_confidence_range(sem):
    c = sem.classify(req("How do I convert miles to kilometres?"))
    assert 0.0 <= c.confidence <= 1.0
    assert len(c.evidence) >= 2
    first = c.evidence[0]
    label, sim = first.rsplit(" ", 1)
    assert "/" in label and -1.0 <= float(sim) <= 1.0
    assert "k=" in c.evidence[-1]
    assert c.describe().startswith("semantic: ")


def test_deterministic(sem):
    r = req("Summarise the following meeting notes into action items: Ana to send the budget, Li to book the venue.")
    assert sem.classify(r) == sem.classify(r)


def test_empty_prompt_is_low_with_zero_confidence(sem):
    r = LLMRequest(api="chat", body={}, prompt="", context="", input_tokens=0)
    c = sem.classify(r)
    assert c.tier == Tier.LOW and c.confidence == 0.0 and c.evidence == ("no text to compare",)


def test_short_follow_up_borrows_context(sem):
    history = [("user", "Write a Python function that parses ISO dates and returns datetime objects, with tests."),
               ("assistant", "def parse_iso(s: str) -> datetime: ...")]
    c = sem.classify(req("now do it in go", history=history))
    assert c.category == "code"


def test_longer_prompt_scores_higher_in_same_topic(sem):
    short = sem.classify(req("Summarise this article."))
    long = sem.classify(req("Summarise this article.\n\n" + "The council met on Tuesday to discuss the new budget. " * 120))
    assert long.score > short.score


# ---- examples files ---------------------------------------------------------------------------

def write(tmp_path, lines: list[str]) -> str:
    p = tmp_path / "ex.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


GOOD = json.dumps({"text": "hello", "tier": "LOW", "category": "chat", "label": "greeting"})


@pytest.mark.parametrize("bad, expect", [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: must be a JSON object"),
    (json.dumps({"text": "x", "tier": "HUGE", "category": "chat", "label": "a"}), "line 2: tier must be one of"),
    (json.dumps({"text": "x", "tier": "LOW", "category": "poetry", "label": "a"}), "line 2: category must be one of"),
    (json.dumps({"text": "", "tier": "LOW", "category": "chat", "label": "a"}), "line 2: text must be a non-empty string"),
    (json.dumps({"text": "x", "tier": "LOW", "category": "chat"}), "line 2: missing field(s) ['label']"),
    (json.dumps({"text": "x", "tier": "LOW", "category": "chat", "label": "a", "note": 1}), "line 2: unknown field(s) ['note']"),
    (json.dumps({"text": 5, "tier": "LOW", "category": "chat", "label": " "}), "label must be a non-empty string"),
])
def test_bad_examples_name_the_line(tmp_path, bad, expect):
    path = write(tmp_path, [GOOD, bad])
    with pytest.raises(ConfigError) as err:
        load_examples(path)
    assert expect in str(err.value)
    assert "classifiers.semantic.examples" in str(err.value)


def test_many_problems_are_all_listed_up_to_a_bound(tmp_path):
    path = write(tmp_path, ["{bad"] * 30)
    with pytest.raises(ConfigError) as err:
        load_examples(path)
    assert "line 1:" in str(err.value) and "line 10:" in str(err.value) and "line 11:" not in str(err.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="no examples"):
        load_examples(write(tmp_path, ["", "  "]))
    with pytest.raises(ConfigError, match="cannot read examples file"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read examples file"):
        load_examples(tmp_path / "bin.jsonl")


def test_bad_examples_file_fails_router_config(tmp_path):
    path = write(tmp_path, [GOOD, '{"text": "x"}'])
    cfg = parse_config({"classifiers": {"semantic": {"examples": path}},
                        "policies": {"default": {"classifier": "semantic", "ladder": dict(load_config().policies["default"].ladder)}}})
    with pytest.raises(ConfigError, match="line 2"):
        Router(cfg)


def test_config_fields_are_validated():
    with pytest.raises(ConfigError, match="classifiers.semantic.mode"):
        parse_config({"classifiers": {"semantic": {"mode": "magic"}}})
    with pytest.raises(ConfigError, match="classifiers.semantic.k"):
        parse_config({"classifiers": {"semantic": {"k": 0}}})
    with pytest.raises(ConfigError, match="classifiers.semantic.cuts"):
        parse_config({"classifiers": {"semantic": {"cuts": [0.5, 0.4, 0.9]}}})


def test_builtin_examples_cover_every_tier_and_category():
    ex = load_examples()
    assert len(ex) >= 400
    for tier in Tier:
        assert sum(e.tier == tier for e in ex) >= 60, tier
    from llm_router.classify.base import CATEGORIES

    for cat in CATEGORIES:
        assert sum(e.category == cat for e in ex) >= 25, cat
    assert len({e.text for e in ex}) == len(ex)


def test_user_examples_file_drives_labels(tmp_path):
    rows = [
        {"text": "refund my order please", "tier": "LOW", "category": "chat", "label": "refund"},
        {"text": "I want my money back for this purchase", "tier": "LOW", "category": "chat", "label": "refund"},
        {"text": "the invoice total is wrong, I was overcharged", "tier": "MEDIUM", "category": "extraction", "label": "billing"},
        {"text": "why was my card charged twice this month", "tier": "MEDIUM", "category": "extraction", "label": "billing"},
    ]
    path = write(tmp_path, [json.dumps(r) for r in rows])
    clf = SemanticClassifier.from_config(SemanticConf(examples=path, k=3), embedder=load_default())
    assert clf.classify(req("can I get a refund for the shoes I bought?")).label == "refund"
    assert clf.classify(req("there is an extra charge on my bill")).label == "billing"


# ---- knn vs centroid --------------------------------------------------------------------------

def test_centroid_mode_has_one_vector_per_archetype():
    ex = load_examples()
    cen = SemanticClassifier(ex, load_default(), mode="centroid", k=3)
    assert cen._vectors.shape[0] == len({e.label for e in ex})
    c = cen.classify(req("hello!! how are you"))
    assert c.label == "greeting" and c.tier == Tier.LOW and "centroid" in c.evidence[-1]


def test_knn_and_centroid_agree_on_clear_prompts(sem):
    cen = SemanticClassifier(list(sem.examples), load_default(), mode="centroid", k=3)
    for prompt in ("good morning!", "Write a SQL query to count users per country.", "Write a limerick about a sleepy dog."):
        a, b = sem.classify(req(prompt)), cen.classify(req(prompt))
        assert (a.category, a.label) == (b.category, b.label), prompt


def test_k1_label_is_the_nearest_example():
    ex = [Example("write a poem about rain", Tier.MEDIUM, "creative", "poem"),
          Example("fix my python traceback", Tier.HIGH, "code", "bug-fix"),
          Example("hello there", Tier.LOW, "chat", "greeting")]
    clf = SemanticClassifier(ex, load_default(), k=1, length_weight=0.0)
    c = clf.classify(req("a short poem about the rain on my window"))
    assert c.label == "poem" and c.evidence[0].startswith("poem/MEDIUM")
    assert c.score == pytest.approx(1 / 3, abs=1e-3)  # one MEDIUM voter, no length term


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        SemanticClassifier([Example("hi", Tier.LOW, "chat", "greeting")], load_default(), mode="bogus")


def test_parse_examples_accepts_lowercase_tier():
    ex = parse_examples([json.dumps({"text": "hi", "tier": "low", "category": "chat", "label": "greeting"})])
    assert ex[0].tier == Tier.LOW
