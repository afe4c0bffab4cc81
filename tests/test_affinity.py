"""Conversation affinity: later turns stay on the conversation's model unless they need a higher tier."""
from __future__ import annotations

import orjson
import pytest

from llm_router.affinity import AffinityTable, conversation_key
from llm_router.config import ConfigError, parse_config
from llm_router.request import parse_request
from llm_router.router import Router

LADDER = {"LOW": "deepseek-v2", "MEDIUM": "llama-3-70b", "HIGH": "claude-3.5-sonnet", "CRITICAL": "gpt-4o"}
# CRITICAL under the rules with a margin (0.81 against the 0.70 cut): the system prompt no longer adds length.
HARD = ("Prove rigorously that the halting problem is undecidable, step by step, and explain why the proof works. "
        "Then analyse the complexity of the reduction.")
EASY = "thanks! that is all"


def router(affinity: str = "conversation", **policy) -> Router:
    return Router(parse_config({"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER,
                                                         "affinity": affinity, **policy}}}))


def turns(*users: str, system: str = "You are terse.") -> bytes:
    messages = [{"role": "system", "content": system}]
    for i, text in enumerate(users):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": text})
    return orjson.dumps({"model": "auto", "messages": messages})


def model(r: Router, body: bytes, path: str = "/v1/chat/completions"):
    _, d = r.route(body, path=path)
    return d


def test_an_easy_follow_up_stays_on_the_model_that_answered_the_hard_opening():
    r = router()
    first = model(r, turns(HARD))
    assert first.model.id == "gpt-4o" and first.strategy == "ladder"
    follow = model(r, turns(HARD, EASY))
    assert follow.model.id == "gpt-4o" and follow.strategy == "affinity"
    assert "affinity: the conversation stays on gpt-4o" in follow.reason and "this turn needs LOW" in follow.reason
    assert follow.fallbacks  # the chain is built as usual
    assert model(router("off"), turns(HARD, EASY)).model.id == "deepseek-v2"  # without it the turn alone decides


def test_a_harder_turn_moves_the_conversation_up_and_it_stays_there():
    r = router()
    assert model(r, turns(EASY)).model.id == "deepseek-v2"
    harder = model(r, turns(EASY, HARD))
    assert harder.model.id == "gpt-4o" and harder.strategy == "ladder"
    assert model(r, turns(EASY, HARD, "ok")).model.id == "gpt-4o"


def test_other_conversations_and_one_shot_requests_are_not_affected():
    r = router()
    model(r, turns(HARD))
    assert model(r, turns(HARD, EASY, system="You are verbose.")).model.id == "deepseek-v2"  # another opening
    assert model(r, turns(EASY, EASY)).model.id == "deepseek-v2"
    completions = orjson.dumps({"model": "auto", "prompt": EASY})
    assert conversation_key(parse_request(completions, "completions")) is None


def test_a_model_that_left_the_candidates_is_not_kept():
    r = router()
    model(r, turns(HARD))
    _, d = r.route(turns(HARD, EASY), excluded=frozenset({"gpt-4o"}))  # e.g. its breaker opened
    assert d.model.id == "deepseek-v2" and d.strategy == "ladder"
    again = model(r, turns(HARD, EASY, "thanks again"))
    assert (again.model.id, again.strategy) == ("deepseek-v2", "affinity")  # the conversation moved with it


def test_the_clients_prompt_cache_key_ties_requests_together():
    r = router()
    one = orjson.dumps({"model": "auto", "prompt_cache_key": "user-42-thread-7", "messages": [{"role": "user", "content": HARD}]})
    two = orjson.dumps({"model": "auto", "prompt_cache_key": "user-42-thread-7", "messages": [{"role": "user", "content": EASY}]})
    first = model(r, one).model.id
    assert first != "deepseek-v2"
    assert model(r, two).model.id == first  # a new user turn, no history in the body: the key alone ties them
    other = orjson.dumps({"model": "auto", "prompt_cache_key": "user-43", "messages": [{"role": "user", "content": EASY}]})
    assert model(r, other).model.id == "deepseek-v2"


def test_anthropic_messages_conversations_are_kept_too():
    r = router()

    def body(*users: str) -> bytes:
        msgs = []
        for i, text in enumerate(users):
            if i:
                msgs.append({"role": "assistant", "content": [{"type": "text", "text": "ok"}]})
            msgs.append({"role": "user", "content": [{"type": "text", "text": text}]})
        return orjson.dumps({"model": "auto", "max_tokens": 100, "system": "terse", "messages": msgs})

    assert model(r, body(HARD), "/v1/messages").model.id == "claude-3.5-sonnet"  # the only messages-API model
    kept = model(r, body(HARD, EASY), "/v1/messages")
    assert (kept.model.id, kept.strategy) == ("claude-3.5-sonnet", "affinity")


def test_the_table_is_bounded_and_evicts_the_least_recently_used():
    t = AffinityTable(max_entries=3)
    for k in range(3):
        t.put(k, f"m{k}")
    assert t.get(0) == "m0"  # 0 is now the most recent
    t.put(3, "m3")
    assert len(t) == 3 and t.get(1) is None and t.get(0) == "m0" and t.get(3) == "m3"


def test_affinity_is_refused_for_strategies_that_ask_several_models():
    with pytest.raises(ConfigError, match=r"policies\.default\.affinity: .*hedge strategy asks several models"):
        parse_config({"policies": {"default": {"strategy": "hedge", "affinity": "conversation",
                                               "params": {"models": ["gpt-4o", "claude-3.5-sonnet"]}}}})
    with pytest.raises(ConfigError, match=r"policies\.default\.affinity"):
        parse_config({"policies": {"default": {"affinity": "sticky"}}})


def test_a_config_reload_keeps_the_conversations_of_policies_that_still_keep_them(monkeypatch):
    from llm_router.runtime import Runtime

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "TOGETHER_API_KEY", "MISTRAL_API_KEY",
                 "DEEPSEEK_API_KEY"):
        monkeypatch.setenv(name, "k")
    data = {"policies": {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER, "affinity": "conversation"}}}
    rt = Runtime(parse_config(data), telemetry=False)
    assert model(rt.router, turns(HARD)).model.id == "gpt-4o"
    edited = {"policies": {"default": {**data["policies"]["default"], "explain": True}}}  # an unrelated edit
    rt.apply_reload(parse_config(edited), rt.prepare_reload(parse_config(edited)))
    assert model(rt.router, turns(HARD, EASY)).model.id == "gpt-4o"  # still kept after the reload
    off = {"policies": {"default": {**data["policies"]["default"], "affinity": "off"}}}
    rt.apply_reload(parse_config(off), rt.prepare_reload(parse_config(off)))
    assert model(rt.router, turns(HARD, EASY)).model.id == "deepseek-v2"
