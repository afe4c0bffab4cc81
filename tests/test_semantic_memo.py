"""The semantic classifier's memo: an agent loop's later calls reuse the vote of its instruction, same results."""
from __future__ import annotations

import orjson
import pytest

from llm_router.bench import without_memo
from llm_router.bench.decision import agent_loops
from llm_router.bench.envoy import router_config
from llm_router.classify.embeddings import load_default
from llm_router.classify.semantic import SemanticClassifier, load_examples
from llm_router.commands.demo import load_workload, request_for
from llm_router.config import ConfigError, load_config, parse_config
from llm_router.request import parse_request
from llm_router.router import Router


def parsed(path: str, body: bytes):
    return parse_request(body, "messages" if "messages" in path else "chat")


def verdict(c) -> tuple:
    return c.tier, c.category, c.score, c.confidence, c.label, tuple(c.evidence)


@pytest.fixture(scope="module")
def pair() -> tuple[SemanticClassifier, SemanticClassifier]:
    examples, emb = load_examples(), load_default()
    return SemanticClassifier(examples, emb, k=4096, memo=4096), SemanticClassifier(examples, emb, k=4096, memo=0)


def test_remembered_votes_classify_exactly_as_fresh_ones(pair):
    on, off = pair
    on._memo.clear()
    requests = [parsed(*request_for(item)) for item in load_workload(None)]
    for _ in range(2):  # the second pass is answered from the memo
        for r in requests:
            assert verdict(on.classify(r)) == verdict(off.classify(r)), r.prompt[:60]
    assert on.memo_hits >= len(requests) and off.memo_hits == 0 and not off._memo


def test_an_agent_loop_reuses_the_vote_and_still_weighs_its_growing_length(pair):
    on, off = pair
    on._memo.clear()
    before = on.memo_hits
    loop = [parsed(path, body) for path, body in agent_loops(calls=12)[0]]
    assert len({r.prompt for r in loop}) == 1 and len({r.conversation_tokens for r in loop}) == len(loop)
    got = [on.classify(r) for r in loop]
    assert on.memo_hits - before == len(loop) - 1  # every call after the first
    assert [verdict(c) for c in got] == [verdict(off.classify(r)) for r in loop]
    assert got[-1].score > got[0].score  # the length term is computed per call, not remembered


def test_a_short_prompt_is_remembered_with_the_context_it_borrows(pair):
    on, off = pair
    on._memo.clear()

    def follow_up(context: str):
        return parse_request(orjson.dumps({"model": "auto", "messages": [
            {"role": "user", "content": context}, {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "yes, do that"}]}), "chat")

    code = follow_up("Write a lock-free ring buffer in C++ with a proof that it is linearisable under the C++ memory model")
    chat = follow_up("hi! what a lovely morning")
    for r in (code, chat, code, chat):
        assert verdict(on.classify(r)) == verdict(off.classify(r))
    assert on.classify(code).tier != on.classify(chat).tier and len(on._memo) == 2


def test_the_memo_is_bounded():
    c = SemanticClassifier(load_examples(), load_default(), k=4096, memo=3)
    for text in ("one thing", "another thing", "a third thing", "a fourth thing", "a fifth thing"):
        c.classify(parse_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}), "chat"))
        assert len(c._memo) <= 3
    assert SemanticClassifier(load_examples(), load_default(), k=5, memo=10).memo_size == 0  # top-k mode: not kept


def test_config_turns_it_on_by_default_and_checks_it():
    router = Router(load_config(None))
    assert router.classifier("semantic").memo_size == 2048
    with pytest.raises(ConfigError) as err:
        parse_config({"classifiers": {"semantic": {"memo": -1}}})
    assert "memo" in str(err.value)


def test_the_speed_benchmarks_measure_with_the_memo_off():
    """They repeat one or a few bodies: remembered, those would not measure what a new prompt costs."""
    for data in (without_memo({}), router_config("semantic"), without_memo({"classifiers": {"semantic": {"k": 50}}})):
        cfg = parse_config(data)
        assert cfg.classifiers.semantic.memo == 0 and Router(cfg).classifier("semantic").memo_size == 0
    kept = parse_config(without_memo({}))
    assert kept.classifiers.rules == load_config(None).classifiers.rules  # the rest of the section stays
