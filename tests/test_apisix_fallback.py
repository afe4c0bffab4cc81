"""APISIX: a failed answer retried down the decision's chain by the runner (ext-plugin-post-resp), and
cascade / hedge answered by the runner's own calls (Stop) -- emulated APISIX, real Unix socket, real
fake providers over HTTP."""
from __future__ import annotations

import asyncio
import os
import socket
import time

import orjson
import pytest

from llm_router.config import parse_config
from llm_router.fakes import Behaviour
from llm_router.gateways.apisix.emulator import proxy
from llm_router.gateways.apisix.runner import Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.runtime import Exchange, Runtime

from apisix_emulator import Emulator, RouteConf, RunnerThread, remove_dir, socket_dir

LADDER = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true}'),), conf_id="ladder")
CASCADE = RouteConf(conf=(("llm-router", orjson.dumps({"strategy": "cascade", "explain": True, "params": {
    "scorer": "logprob", "floor": 0.6, "timeout_s": 5}}).decode()),), conf_id="cascade")
HEDGE = RouteConf(conf=(("llm-router", orjson.dumps({"strategy": "hedge", "explain": True, "params": {
    "n": 3, "scorer": "logprob", "floor": 0.6, "timeout_s": 5}}).decode()),), conf_id="hedge")
CLIENT = [("content-type", "application/json"), ("authorization", "Bearer client-own-key")]
PROMPT = "What does a load balancer do?"


def chat(**extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": PROMPT}], **extra})


@pytest.fixture
def gw(fakes, on_fakes):
    """A runner (in a thread, on a real socket) whose providers are the fakes; the emulated APISIX in front."""
    base = parse_config({})
    cfg = on_fakes(server={"orchestrate": {"fallback_timeout_s": 1.0}})
    runner = Runner(Runtime(cfg), TokenStore(ttl=100))
    d = socket_dir()
    thread = RunnerThread(os.path.join(d, "fb.sock"), runner).start()
    em = Emulator(thread.path, timeout=60)
    upstreams = {name: fakes.url(name) for name in base.providers}  # traffic-split: routing header -> upstream

    class Gateway:
        def __init__(self):
            self.runner, self.em, self.upstreams = runner, em, upstreams

        def send(self, route: RouteConf, body: bytes, *, post_resp: bool = True):
            return proxy(em, route, upstreams=upstreams, post_resp=post_resp, headers=CLIENT, body=body)

        def chain(self, route: RouteConf, body: bytes) -> list[str]:
            ex = Exchange("probe", "r", 0.0)
            runner.runtime.decide(body, path="/v1/chat/completions", ex=ex, route_conf=route.conf[0][1])
            return [m.id for m in ex.decision.chain]

        def provider(self, model_id: str) -> str:
            return runner.runtime.catalog.models[model_id].provider

    yield Gateway()
    em.close()
    thread.stop()
    remove_dir(d)


def sent_models(fakes) -> list[str]:
    return [r.json["model"] for r in fakes.requests()]


def assert_no_secret(resp, fakes) -> None:
    text = orjson.dumps({"h": resp.headers, "b": resp.body.decode("utf-8", "replace")}).decode()
    assert all(k not in text for k in fakes.keys().values()), "a provider key reached the client"


# ---- post-resp fallback (plain routing, the gateway makes the first call) ------------------------

def test_healthy_first_model_passes_through_untouched(gw, fakes):
    chain = gw.chain(LADDER, chat())
    resp = gw.send(LADDER, chat())
    assert resp.status == 200 and resp.upstream == gw.provider(chain[0])
    assert resp.post.reply["body"] is None  # the runner only read status and headers
    assert gw.runner.stats.fallbacks == 0 and len(fakes.requests()) == 1


@pytest.mark.parametrize("failing", [1, 2])
def test_failed_answers_are_retried_down_the_chain(gw, fakes, failing):
    chain = gw.chain(LADDER, chat())
    assert len(chain) >= 3
    statuses = (500, 429)
    for i, m in enumerate(chain[:failing]):
        fakes.set_behaviour(gw.provider(m), status=statuses[i])
    resp = gw.send(LADDER, chat())
    assert resp.upstream_status == 500  # the gateway's own call failed ...
    assert resp.status == 200  # ... and the client got one normal answer
    answer = orjson.loads(resp.body)
    winner = gw.runner.runtime.catalog.models[chain[failing]]
    assert answer["model"] == winner.name and answer["choices"][0]["message"]["content"]
    assert resp.headers["x-llm-router-model"] == winner.id
    assert resp.headers["content-type"] == "application/json"
    # every attempt carried its own provider's model name and key
    assert sent_models(fakes) == [gw.runner.runtime.catalog.models[m].name for m in chain[: failing + 1]]
    for rec in fakes.requests():
        prov = fakes.providers[rec.provider]
        got = rec.headers.get("authorization", "").removeprefix("Bearer ") if prov.auth == "bearer" else rec.headers.get(prov.auth)
        assert got == prov.key
    assert gw.runner.stats.fallbacks == 1
    m = gw.runner.runtime.metrics
    assert sum(v for k, v in m.fallbacks.values.items()) == failing
    assert_no_secret(resp, fakes)


def test_a_rate_limited_key_is_passed_over_while_the_providers_other_key_has_quota(fakes, on_fakes, monkeypatch):
    """DeepSeek with two keys, the first one's quota spent: its 429 is retried down the chain once, then the runner sends
    DeepSeek's calls with the other key, and DeepSeek stays in selection."""
    on_fakes()  # fakes reset, their keys in the environment
    monkeypatch.setenv("DEEPSEEK_SPENT_KEY", "fake-deepseek-spent-key")
    base = parse_config({})
    providers = {n: {**base.providers[n].model_dump(), "base_url": fakes.url(n)} for n in base.providers}
    providers["deepseek"]["credentials"] = ["env://DEEPSEEK_SPENT_KEY", "env://DEEPSEEK_API_KEY"]
    runner = Runner(Runtime(parse_config({"providers": providers})), TokenStore(ttl=100))
    fakes.set_behaviour("deepseek", rate_limited_keys=("fake-deepseek-spent-key",), retry_after_s=60)
    d = socket_dir()
    thread = RunnerThread(os.path.join(d, "keys.sock"), runner).start()
    em = Emulator(thread.path, timeout=60)
    try:
        greeting = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]})
        answered = []
        for _ in range(4):
            resp = proxy(em, LADDER, upstreams={n: fakes.url(n) for n in base.providers}, post_resp=True, headers=CLIENT,
                         body=greeting)
            assert resp.status == 200, resp.body
            answered.append(resp.headers["x-llm-router-model"])
        keys = [rec.headers["authorization"] for rec in fakes.requests("deepseek")]
        assert keys[0] == "Bearer fake-deepseek-spent-key" and answered[0] != "deepseek-v2", (keys, answered)
        assert answered[1:] == ["deepseek-v2"] * 3 and keys[1:] == [f"Bearer {fakes.providers['deepseek'].key}"] * 3
        assert_no_secret(resp, fakes)
    finally:
        em.close()
        thread.stop()
        remove_dir(d)
        asyncio.run(runner.runtime.stop())


def test_every_model_failing_is_one_clear_502(gw, fakes):
    fakes.set_behaviour(None, status=500)
    resp = gw.send(LADDER, chat())
    assert resp.status == 502
    err = orjson.loads(resp.body)["error"]
    assert err["type"] == "server_error" and err["code"] == "upstream_failed"
    assert "(through the gateway)" in resp.headers["x-llm-router-steps"]
    assert len(fakes.requests()) == 3
    assert_no_secret(resp, fakes)


def test_every_model_rate_limited_is_503_with_retry_after(gw, fakes):
    fakes.set_behaviour(None, status=429, retry_after_s=4)
    resp = gw.send(LADDER, chat())
    assert resp.status == 503 and resp.headers["retry-after"] == "4"
    assert orjson.loads(resp.body)["error"]["code"] == "no_model_available"


def test_a_slow_fallback_model_is_skipped_after_its_timeout(gw, fakes):
    chain = gw.chain(LADDER, chat())
    fakes.set_behaviour(gw.provider(chain[0]), status=503)
    fakes.set_behaviour(gw.provider(chain[1]), first_byte_ms=4000)
    t0 = time.monotonic()
    resp = gw.send(LADDER, chat())
    assert resp.status == 200 and resp.headers["x-llm-router-model"] == chain[2]
    assert time.monotonic() - t0 < 3.5
    assert "timeout after 1s" in resp.headers["x-llm-router-steps"]


def test_a_failed_stream_is_answered_with_the_next_models_whole_stream(gw, fakes):
    body = chat(stream=True)
    chain = gw.chain(LADDER, body)
    fakes.set_behaviour(gw.provider(chain[0]), status=502)
    resp = gw.send(LADDER, body)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [line for line in resp.body.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    assert all(orjson.loads(e[6:])["model"] == gw.runner.runtime.catalog.models[chain[1]].name for e in events[:-1])


def test_a_bad_request_is_not_retried(gw, fakes):
    fakes.set_behaviour(None, status=400)
    resp = gw.send(LADDER, chat())
    assert resp.status == 400 and gw.runner.stats.fallbacks == 0 and len(fakes.requests()) == 1


def test_the_next_request_works_and_kept_bodies_are_released(gw, fakes):
    fakes.set_behaviour(None, status=500)
    assert gw.send(LADDER, chat()).status == 502
    fakes.set_behaviour(None, status=None)
    assert gw.send(LADDER, chat()).status == 200
    assert gw.runner._kept_bytes == 0 and not gw.runner.exchanges


def test_without_post_resp_a_failure_reaches_the_client(gw, fakes):
    chain = gw.chain(LADDER, chat())
    fakes.set_behaviour(gw.provider(chain[0]), status=500)
    resp = gw.send(LADDER, chat(), post_resp=False)
    assert resp.status == 500  # documented: the fallback needs ext-plugin-post-resp on the route


# ---- cascade and hedge: the runner answers with a Stop -----------------------------------------

def test_cascade_answers_with_the_better_models_answer(gw, fakes):
    chain = gw.chain(CASCADE, chat())
    fakes.set_behaviour(gw.provider(chain[0]), default_quality=0.0)
    resp = gw.send(CASCADE, chat(), post_resp=False)
    assert resp.pre.action == "stop" and resp.upstream is None  # no gateway upstream call at all
    assert resp.status == 200 and resp.headers["x-llm-router-model"] == chain[1]
    assert "<0.6" in resp.headers["x-llm-router-steps"]
    assert orjson.loads(resp.body)["model"] == gw.runner.runtime.catalog.models[chain[1]].name
    assert gw.runner.stats.orchestrated == 1
    assert_no_secret(resp, fakes)


def test_cascade_survives_an_unreachable_provider(gw, fakes):
    chain = gw.chain(CASCADE, chat())
    first = gw.provider(chain[0])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    rt = gw.runner.runtime
    prov = rt.catalog.providers[first]
    object.__setattr__(prov, "base_url", f"http://127.0.0.1:{dead}")
    try:
        resp = gw.send(CASCADE, chat(), post_resp=False)
    finally:
        object.__setattr__(prov, "base_url", fakes.url(first))
    assert resp.status == 200 and resp.headers["x-llm-router-model"] == chain[1]
    assert "ConnectError" in resp.headers["x-llm-router-steps"]


def test_hedge_through_apisix(gw, fakes):
    chain = gw.chain(HEDGE, chat())
    for m in chain[:2]:
        fakes.set_behaviour(gw.provider(m), first_byte_ms=3000)
    t0 = time.monotonic()
    resp = gw.send(HEDGE, chat(), post_resp=False)
    assert time.monotonic() - t0 < 2.5
    assert resp.status == 200 and resp.headers["x-llm-router-model"] == chain[2]


def test_a_streaming_cascade_request_takes_plain_routing(gw, fakes):
    resp = gw.send(CASCADE, chat(stream=True))
    assert resp.pre.action == "rewrite" and resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")


# ---- the real runner process ------------------------------------------------------------------

def test_the_runner_process_falls_back_and_checks_its_settings(fakes, tmp_path):
    import yaml

    from apisix_emulator import RunnerProcess

    for p in fakes.providers.values():
        p.behaviour = Behaviour(models=p.behaviour.models)
        p.records.clear()
    base = parse_config({})
    providers = {n: {**base.providers[n].model_dump(), "base_url": fakes.url(n)} for n in base.providers}
    cfg = tmp_path / "router.yaml"
    cfg.write_text(yaml.safe_dump({"providers": providers}))
    d = socket_dir()
    try:
        with RunnerProcess(os.path.join(d, "p.sock"), config=str(cfg), env=fakes.env()) as proc:
            em = Emulator(proc.path, timeout=60)
            try:
                body = chat()
                first = proxy(em, LADDER, upstreams={n: fakes.url(n) for n in base.providers}, post_resp=True,
                              headers=CLIENT, body=body)
                assert first.status == 200
                fakes.set_behaviour(first.upstream, status=503)
                again = proxy(em, LADDER, upstreams={n: fakes.url(n) for n in base.providers}, post_resp=True,
                              headers=CLIENT, body=body)
                assert again.upstream_status == 503 and again.status == 200
                assert again.headers["x-llm-router-model"] != first.headers["x-llm-router-model"]
            finally:
                em.close()
        assert all(k not in proc.log() for k in fakes.keys().values())
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"server": {"apisix_fallback": "yes", "orchestrate": {"deadline_s": 0}}}))
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-m", "llm_router.cli", "serve", "--apisix", "--socket", os.path.join(d, "b.sock"),
                              "--config", str(bad)], capture_output=True, text=True, timeout=60, env={**os.environ, **fakes.env()})
        assert out.returncode == 2 and "server.apisix_fallback: must be true or false" in out.stderr
    finally:
        remove_dir(d)
