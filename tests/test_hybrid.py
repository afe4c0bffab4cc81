"""Hybrid classifier: precedence of rules' floors/caps, the unsure-semantic fallback, the tie-breaker."""
from __future__ import annotations

import orjson
import pytest

from llm_router.catalog import Tier
from llm_router.classify.embeddings import load_default
from llm_router.classify.factory import make_classifier, rules_classifier
from llm_router.classify.hybrid import HybridClassifier
from llm_router.classify.rules import Rule, RulesClassifier
from llm_router.classify.semantic import Example, SemanticClassifier
from llm_router.config import load_config, parse_config
from llm_router.decision import Decision
from llm_router.request import LLMRequest, parse_request
from llm_router.router import Router


def req(prompt: str) -> LLMRequest:
    return parse_request(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]}))


EXAMPLES = [
    Example("hi, how are you?", Tier.LOW, "chat", "greeting"),
    Example("hello there, good morning", Tier.LOW, "chat", "greeting"),
    Example("Design a multi-region database architecture with failover and consistency guarantees", Tier.HIGH, "analysis", "system-design"),
    Example("Design a scalable event pipeline for billions of events per day", Tier.HIGH, "analysis", "system-design"),
    Example("Write a SQL query that sums revenue per month", Tier.MEDIUM, "code", "sql-query"),
    Example("Write a query to count orders per customer in Postgres", Tier.MEDIUM, "code", "sql-query"),
]

RULES = [
    Rule(name="quick", keywords=("quick question",), weight=-0.1, category="chat", max_tier=Tier.LOW),
    Rule(name="regulated", keywords=("hipaa",), weight=0.3, category="analysis", min_tier=Tier.CRITICAL),
    Rule(name="sql-words", keywords=("select", "join", "group by"), weight=0.3, category="code", per_hit=True),
]


@pytest.fixture(scope="module")
def parts() -> tuple[RulesClassifier, SemanticClassifier]:
    return RulesClassifier(RULES), SemanticClassifier(EXAMPLES, load_default(), k=3)


def test_rules_floor_lifts_semantic_tier(parts):
    rules, sem = parts
    hyb = HybridClassifier(rules, sem)
    r = req("hello! good morning, quick note: our clinic app must follow HIPAA")
    assert sem.classify(r).tier == Tier.LOW  # semantically a greeting
    c = hyb.classify(r)
    assert c.tier == Tier.CRITICAL
    assert "at least CRITICAL by rule regulated" in c.evidence


def test_rules_cap_lowers_semantic_tier(parts):
    rules, sem = parts
    hyb = HybridClassifier(rules, sem)
    r = req("quick question: design a multi-region database architecture with failover")
    assert sem.classify(r).tier == Tier.HIGH
    c = hyb.classify(r)
    assert c.tier == Tier.LOW and "capped at LOW by rule quick" in c.evidence
    assert c.label == "system-design"  # the archetype still comes from semantic


def test_floor_wins_over_cap(parts):
    rules, sem = parts
    c = HybridClassifier(rules, sem).classify(req("quick question about HIPAA audit logging"))
    assert c.tier == Tier.CRITICAL
    assert any(e.startswith("rules ") and "quick" in e and "regulated" in e for e in c.evidence)  # both matched
    assert "at least CRITICAL by rule regulated" in c.evidence


def test_unsure_semantic_defers_to_sure_rules(parts):
    rules, sem = parts
    r = req("SELECT a, b FROM t JOIN u ON t.id = u.id GROUP BY a")
    rc = rules.classify(r)
    hyb = HybridClassifier(rules, sem, unsure=1.01, sure=0.0)  # force: semantic never sure enough
    c = hyb.classify(r)
    assert (c.tier, c.category) == (rc.tier, rc.category)
    assert any(e.startswith("semantic unsure, rules sure") for e in c.evidence)
    # ... and with the thresholds out of reach, semantic keeps its say.
    c2 = HybridClassifier(rules, sem, unsure=0.0, sure=1.01).classify(r)
    assert not any(e.startswith("semantic unsure") for e in c2.evidence)
    assert c2.category == sem.classify(r).category


def test_zero_rules_share_is_semantic_plus_limits(parts):
    rules, sem = parts
    hyb = HybridClassifier(rules, sem, rules_share=0.0, unsure=0.0)
    for prompt in ("good morning!", "Write a query summing sales per region", "Design an event pipeline at scale"):
        r = req(prompt)
        s, h = sem.classify(r), hyb.classify(r)
        assert (h.tier, h.category, h.label, h.score) == (s.tier, s.category, s.label, s.score)


def test_rules_score_breaks_ties_near_a_cut(parts):
    rules, sem = parts
    r = req("Write a query to count orders per customer; SELECT with JOIN and GROUP BY")
    s = sem.classify(r)
    lo = HybridClassifier(rules, sem, rules_share=0.0, unsure=0.0).classify(r)
    hi = HybridClassifier(rules, sem, rules_share=0.9, unsure=0.0).classify(r)
    assert hi.score > lo.score == s.score  # SQL keywords push the blended score up
    assert hi.tier >= lo.tier


def test_evidence_explains_both_sides(parts):
    rules, sem = parts
    c = HybridClassifier(rules, sem).classify(req("Write a SQL query that sums revenue per month with GROUP BY"))
    assert c.classifier == "hybrid"
    assert any(e.startswith("semantic ") for e in c.evidence)
    assert any(e.startswith("rules ") and "sql-words" in e for e in c.evidence)
    assert 0.0 <= c.confidence <= 1.0


def test_rescaled_rules_score_maps_cuts_onto_semantic_cuts(parts):
    rules, sem = parts
    hyb = HybridClassifier(rules, sem)
    for a, b in zip(rules.cuts, sem.cuts):
        assert hyb._on_semantic_scale(a) == pytest.approx(b)
    assert hyb._on_semantic_scale(0.0) == 0.0 and hyb._on_semantic_scale(1.0) == pytest.approx(1.0)


def test_factory_shares_instances_and_router_decides():
    cfg = parse_config({"policies": {"default": {"classifier": "hybrid", "ladder": dict(load_config().policies["default"].ladder)}}})
    built: dict = {}
    hyb = make_classifier("hybrid", cfg, built)
    assert isinstance(hyb, HybridClassifier) and hyb.rules is built["rules"] and hyb.semantic is built["semantic"]
    router = Router(cfg)
    _, d = router.route(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "Prove that sqrt(3) is irrational."}]}))
    assert isinstance(d, Decision)
    assert d.classification.classifier == "hybrid" and d.classification.tier >= Tier.HIGH
    assert "hybrid:" in d.reason


def test_builtin_rules_with_builtin_examples():
    cfg = load_config()
    hyb = HybridClassifier(rules_classifier(cfg), SemanticClassifier.from_config(cfg.classifiers.semantic))
    assert hyb.classify(req("hi!")).tier == Tier.LOW
    assert hyb.classify(req("Prove that there is no largest prime number.")).tier >= Tier.HIGH


def test_rules_evidence_names_matches_counts_caps_and_floors(parts):
    rules, _ = parts
    c, matched = rules.classify_with_matches(req("quick question: select and join with group by, HIPAA audit"))
    assert [m.name for m in matched] == ["quick", "regulated", "sql-words"]
    ev = tuple(c.evidence)
    assert ev[0].startswith("~") and ev[0].endswith(" tokens")
    assert ev[1:4] == ("quick", "regulated", "sql-words x3")
    assert "capped at LOW" in ev and "at least CRITICAL" in ev and c.tier == Tier.CRITICAL
    plain, none = rules.classify_with_matches(req("tell me about the weather"))
    assert none == () and len(plain.evidence) == 1


def test_evidence_is_formatted_once_on_first_read_and_compares_as_a_tuple():
    from llm_router.classify.base import Evidence

    calls = []

    def make():
        calls.append(1)
        return ["a", "b", "c"]

    ev = Evidence(make)
    assert calls == []  # nothing formatted while routing
    assert ev == ("a", "b", "c") and ev[:2] == ("a", "b") and len(ev) == 3 and list(ev) == ["a", "b", "c"]
    assert ev == ["a", "b", "c"] and ev != ("a",) and "b" in ev and repr(ev) == "('a', 'b', 'c')"
    assert calls == [1]


def test_semantic_and_hybrid_reasons_read_the_lazy_evidence(parts):
    rules, sem = parts
    c = HybridClassifier(rules, sem).classify(req("Write a SQL query that sums revenue per month, select and join"))
    text = c.describe()
    assert text.startswith("hybrid: ") and "semantic MEDIUM code" in text and "sql-words" in text
    neighbours = [e for e in c.evidence if e.startswith("sql-query/MEDIUM ")]
    assert neighbours, c.evidence  # the nearest examples come from semantic's evidence
