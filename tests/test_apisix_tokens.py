"""Conf token store: random start, expiry past APISIX's cache, dedupe by key, sharing across processes."""
from __future__ import annotations

from llm_router.gateways.apisix.tokens import TOKEN_SPACE, TokenStore, route_of, ttl_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_outlives_apisix_cache():
    assert ttl_from_env({}) == 3600 * 1.2
    assert ttl_from_env({"APISIX_CONF_EXPIRE_TIME": "10"}) == 12.0
    assert ttl_from_env({"APISIX_CONF_EXPIRE_TIME": "junk"}) == 3600 * 1.2


def test_tokens_start_at_random_and_are_never_zero():
    firsts = {TokenStore(ttl=10).put("k", ()).token for _ in range(20)}
    assert len(firsts) > 15  # a restarted runner does not hand out the tokens of the previous one
    store = TokenStore(ttl=10, base=TOKEN_SPACE - 1)
    tokens = [store.put(f"k{i}", ()).token for i in range(3)]
    assert 0 not in tokens and len(set(tokens)) == 3


def test_expiry_and_refresh_by_key():
    clock = Clock()
    store = TokenStore(ttl=100, clock=clock)
    a = store.put("route#1#ext-plugin-pre-req#7", (("llm-router", "{}"),))
    assert store.get(a.token) is a and a.route == "route:1"
    clock.now += 60
    again = store.put("route#1#ext-plugin-pre-req#7", (("llm-router", "{}"),))
    assert again.token == a.token  # same key and conf: same token, lifetime extended
    clock.now += 60
    assert store.get(a.token) is a
    changed = store.put("route#1#ext-plugin-pre-req#7", (("llm-router", '{"policy":"x"}'),))
    assert changed.token != a.token
    clock.now += 101
    assert store.get(a.token) is None and store.get(changed.token) is None
    assert store.get(12345) is None


def test_bounded_number_of_tokens():
    clock = Clock()
    store = TokenStore(ttl=100, clock=clock, max_tokens=10)
    tokens = []
    for i in range(25):
        clock.now += 1
        tokens.append(store.put(f"k{i}", ()).token)
    assert len(store) == 10
    assert store.get(tokens[-1]) is not None and store.get(tokens[0]) is None


def test_sibling_processes_share_tokens_through_the_directory(tmp_path):
    clock = Clock()
    a = TokenStore(ttl=100, base=500, index=0, stride=2, shared_dir=tmp_path, clock=clock)
    b = TokenStore(ttl=100, base=500, index=1, stride=2, shared_dir=tmp_path, clock=clock)
    ta = a.put("route#1#ext-plugin-pre-req#1", (("llm-router", "{}"),)).token
    tb = b.put("route#2#ext-plugin-pre-req#1", (("llm-router", "{}"),)).token
    assert ta % 2 == 0 and tb % 2 == 1  # disjoint token spaces, no locking needed
    seen = b.get(ta)
    assert seen is not None and seen.conf == (("llm-router", "{}"),) and seen.route == "route:1"
    assert a.get(tb).key == "route#2#ext-plugin-pre-req#1"
    # a refresh in one process keeps the token alive for the other
    clock.now += 90
    a.put("route#1#ext-plugin-pre-req#1", (("llm-router", "{}"),))
    clock.now += 20
    assert b.get(ta) is not None
    clock.now += 200
    assert b.get(ta) is None


def test_route_of_key():
    assert route_of("route#12#ext-plugin-pre-req#99") == "route:12"
    assert route_of("service#s1#ext-plugin-post-resp#2") == "service:s1"
    assert route_of("") == "unknown"
