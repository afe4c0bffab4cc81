"""The router: constraints, needs, client model handling, fallbacks, errors, per-route policies."""
from __future__ import annotations

import orjson
import pytest

from llm_router.config import default_data, parse_config
from llm_router.decision import Decision, RouteError
from llm_router.router import Router


def body(content="hello", **kw) -> bytes:
    return orjson.dumps({"model": kw.pop("model", "auto"), "messages": [{"role": "user", "content": content}], **kw})


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_config({"seed": 1}))


def decide(router, b, **kw) -> Decision:
    _, d = router.route(b, **kw)
    assert isinstance(d, Decision), d
    return d


def test_simple_and_hard_prompts_go_to_cheap_and_strong_models(router):
    cheap = decide(router, body("hi there"))
    hard = decide(router, body("Design a distributed, fault-tolerant consensus architecture; analyze the trade-offs step by step "
                               "and compare Raft with Paxos under network partitions."))
    assert cheap.model.id == "deepseek-v2"
    assert hard.model.id == "gpt-4o"
    assert cheap.estimated_cost < hard.estimated_cost


def test_decision_carries_reason_chain_and_cost(router):
    d = decide(router, body("Write a SQL query that joins orders and customers", max_tokens=100))
    assert d.reason.startswith("hybrid:") and "ladder" in d.reason and "rules " in d.reason
    assert len(d.fallbacks) == 2 and d.model not in d.fallbacks
    assert d.expected_output_tokens == 100
    assert d.estimated_cost == pytest.approx(d.model.cost(d.input_tokens, 100))
    assert d.chain[0] is d.model


def test_fallbacks_rise_in_capability_and_prefer_other_providers(router):
    d = decide(router, body("hi"))
    assert all((m.tier, m.quality) >= (d.model.tier, d.model.quality) for m in d.fallbacks)
    assert all(m.provider != d.model.provider for m in d.fallbacks)


def test_needs_filter_models(router):
    vision = orjson.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                      {"type": "image_url", "image_url": {"url": "u"}}]}]})
    d = decide(router, vision)
    assert "vision" in d.model.capabilities and all("vision" in m.capabilities for m in d.fallbacks)
    tools = decide(router, body("hi", tools=[{"type": "function", "function": {"name": "f"}}]))
    assert "tools" in tools.model.capabilities
    long = decide(router, body("lorem ipsum " * 20000))  # ~45k tokens
    assert long.model.context_window >= long.input_tokens


def test_no_capable_model_is_a_400_naming_the_need():
    r = Router(parse_config({"policies": {"default": {"strategy": "cost_weighted", "constraints": {"models": ["llama-3-70b"]}}}}))
    image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                       {"type": "image_url", "image_url": {"url": "u"}}]}]}
    _, err = r.route(orjson.dumps(image))
    assert isinstance(err, RouteError) and err.status == 400 and "vision" in err.message
    _, err = r.route(body("lorem ipsum " * 100000))  # ~225k tokens: Llama 3.3 reads 131,072
    assert err.status == 400 and "context" in err.message


def test_excluded_models_are_skipped_and_all_excluded_is_503(router):
    d = decide(router, body("hi"), excluded=frozenset({"deepseek-v2"}))
    assert d.model.id != "deepseek-v2" and all(m.id != "deepseek-v2" for m in d.fallbacks)
    _, err = router.route(body("hi"), excluded=frozenset(router.catalog.models))
    assert isinstance(err, RouteError) and err.status == 503 and "unavailable" in err.message


def test_client_model_modes():
    honor = Router(parse_config({"policies": {"default": {"classifier": "rules", "strategy": "ladder", "client_model": "honor",
                                                          "ladder": {"LOW": "deepseek-v2"}}}}))
    assert decide(honor, body("hi", model="gpt-4o")).model.id == "gpt-4o"
    assert decide(honor, body("hi", model="deepseek-flash")).model.id == "deepseek-v2"  # provider-side name works too
    assert decide(honor, body("hi", model="auto")).model.id == "deepseek-v2"
    _, err = honor.route(body("hi", model="gpt-17"))
    assert err.status == 400 and err.field == "model" and "unknown model 'gpt-17'" in err.message
    ceiling = Router(parse_config({"policies": {"default": {"strategy": "ladder", "client_model": "ceiling",
                                                            "ladder": {"LOW": "deepseek-v2", "CRITICAL": "gpt-4o"}}}}))
    hard = body("Prove rigorously that the halting problem is undecidable, step by step, with a formal proof and analysis.",
                model="mistral-large")
    d = decide(ceiling, hard)
    assert d.model.blended_price <= ceiling.catalog.models["mistral-large"].blended_price
    route = Router(parse_config({}))
    assert decide(route, body("hi", model="gpt-4o")).model.id == "deepseek-v2"  # default: the router decides


def test_bad_requests_become_route_errors(router):
    for raw, status in [(b"{", 400), (b'{"messages": 1}', 400), (b"", 400)]:
        req, err = router.route(raw)
        assert req is None and isinstance(err, RouteError) and err.status == status
        assert err.openai_body()["error"]["type"] == "invalid_request_error"
    _, err = router.route(body("hi"), path="/v1/embeddings")
    assert err.status == 404
    small = Router(parse_config({"policies": {"default": {"strategy": "ladder", "max_body_bytes": 100,
                                                          "ladder": {"LOW": "deepseek-v2"}}}}))
    _, err = small.route(body("x" * 200))
    assert err.status == 413 and "exceeds the limit of 100 bytes" in err.message


def test_requests_only_go_to_models_whose_provider_serves_their_api(router):
    msg = orjson.dumps({"model": "claude-3-5-sonnet-20240620", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    d = decide(router, msg, path="/v1/messages")
    assert d.model.id == "deepseek-v2"  # DeepSeek's Anthropic-compatible API serves Messages requests too
    assert all(router.catalog.serves(m, "messages") for m in (d.model, *d.fallbacks))
    assert {m.provider for m in (d.model, *d.fallbacks)} == {"deepseek", "anthropic"}
    deepseek = default_data()["providers"]["deepseek"]
    chat_only = Router(parse_config({"providers": {"deepseek": {**deepseek, "paths": {"chat": "/v1/chat/completions"}}}}))
    only = decide(chat_only, msg, path="/v1/messages")
    assert only.model.provider == "anthropic" and not only.fallbacks
    comp = decide(router, orjson.dumps({"prompt": "Once upon a time"}), path="/v1/completions")
    assert "completions" in comp.model.capabilities


def test_per_route_policies_compile_once_and_errors_are_reported(router):
    p1 = router.policy_for('{"strategy": "cost_weighted", "constraints": {"forbid_tags": ["cn"]}}')
    assert p1 is router.policy_for('{"strategy": "cost_weighted", "constraints": {"forbid_tags": ["cn"]}}')
    d = decide(router, body("hi"), policy=p1)
    assert "cn" not in d.model.tags and d.strategy == "cost_weighted"
    assert router.policy_for({"policy": "default"}) is router.default
    bad = router.policy_for('{"strategy": "nope"}')
    assert isinstance(bad, RouteError) and bad.status == 500 and "strategy" in bad.message


def test_compliance_and_residency_constraints():
    eu = Router(parse_config({"policies": {"default": {"strategy": "cost_weighted", "constraints": {"require_tags": ["eu"]}}}}))
    assert {decide(eu, body("hi")).model.id for _ in range(20)} == {"mistral-large"}


def test_same_seed_same_decisions():
    cfg = {"seed": 42, "policies": {"default": {"strategy": "cost_weighted"}}}
    a, b = Router(parse_config(cfg)), Router(parse_config(cfg))
    prompts = [body(f"question number {i}") for i in range(30)]
    assert [decide(a, p).model.id for p in prompts] == [decide(b, p).model.id for p in prompts]


def test_a_failing_classifier_degrades_instead_of_raising():
    class Broken:
        name = "broken"

        def classify(self, request):
            raise RuntimeError("boom")

    r = Router(parse_config({}), classifiers={"hybrid": Broken()})
    d = decide(r, body("hi"))
    assert d.classification.classifier == "fallback" and "classifier error" in d.reason


def test_rule_patterns_are_prefiltered_by_their_literal_prefix():
    from llm_router.classify.rules import Rule, RulesClassifier, _literal_prefix

    assert _literal_prefix(r"def \w+\(") == "def "
    assert _literal_prefix(r"\n *(\d+[.)]|[-*]) \S") == "\n"
    assert _literal_prefix(r"ab*c") == "a" and _literal_prefix("a|b") == "" and _literal_prefix("Upper") == ""
    rc = RulesClassifier([Rule("syntax", patterns=(r"def \w+\(",), weight=0.2), Rule("alt", patterns=("cat|dog",), weight=0.1),
                          Rule("steps", patterns=(r"\n *(\d+[.)]|[-*]) \S",), weight=0.1)])
    assert rc.matches("please fix def parse(x): pass") == {0: 1}
    assert rc.matches("a hot dog") == {1: 1}
    assert rc.matches("do this:\n1. first\n2. second") == {2: 1}
    assert rc.matches("nothing here") == {}


def test_classifier_none_skips_classification_and_routes_by_strategy_alone(monkeypatch):
    """`classifier: none`: no classifier runs; the pool rotates whatever the prompt says."""
    from llm_router.classify import rules, semantic

    def never(*args, **kwargs):
        raise AssertionError("a classifier ran under classifier: none")

    monkeypatch.setattr(rules.RulesClassifier, "classify", never)
    monkeypatch.setattr(semantic.SemanticClassifier, "classify", never)
    r = Router(parse_config({"policies": {"default": {"classifier": "none", "strategy": "round_robin",
                                                      "params": {"pool": ["deepseek-v2", "gpt-4o"]}}}}))
    hard = "Prove that there are infinitely many primes and derive the prime number theorem step by step."
    got = [decide(r, body(text)) for text in ("hi", hard, "hi", hard)]
    assert [d.model.id for d in got] == ["deepseek-v2", "gpt-4o", "deepseek-v2", "gpt-4o"]
    assert all(d.classification.classifier == "none" and d.classification.tier.name == "MEDIUM" for d in got)
    assert "routes by its strategy alone" in got[0].reason
    # without a pool, the fixed MEDIUM tier keeps the pool to models of MEDIUM and above
    r = Router(parse_config({"policies": {"default": {"classifier": "none", "strategy": "round_robin"}}}))
    picked = {decide(r, body("hi")).model for _ in range(12)}
    assert picked and all(m.tier.name != "LOW" for m in picked)
