"""End to end through a real nginx + lua-nginx-module (APISIX's engine) calling the runner over its Unix socket.

nginx's access phase runs llm_router/bench/lua/ext_plugin.lua, a client of the ext-plugin protocol, as APISIX's
ext-plugin-pre-req would: real nginx worker (another user), real cosocket keepalive pool, real body rewrite and
Content-Length, upstream picked by the routing header. Fake providers answer. Skipped where nginx or its Lua
module is not installed (`make test` installs them on Debian as root).
"""
from __future__ import annotations

import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from apisix_emulator import RunnerProcess, remove_dir, runner_config_at_fakes, socket_dir
from conftest import sse_data_lines, wait_for

from llm_router.bench.nginx_gateway import NginxNotFound, NginxProcess, Server, find_nginx, gateway_conf
from llm_router.gateways.apisix.usage_log import KEY_ENV
from llm_router.gateways.envoy.stack import free_port
from llm_router.fakes import FakeProviders


def _nginx_or_skip():
    try:
        return find_nginx()
    except NginxNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """Fake providers, the runner and an nginx gateway in front of it; yields the pieces."""
    yield from _stack(tmp_path_factory, workers=1)


@pytest.fixture(scope="module")
def gateway2(tmp_path_factory):
    """The same with two runner processes on the socket."""
    yield from _stack(tmp_path_factory, workers=2)


def _stack(tmp_path_factory, workers: int):
    ng = _nginx_or_skip()
    fakes = FakeProviders.from_config().start()
    sockdir = socket_dir()
    os.chmod(sockdir, 0o755)  # the nginx worker runs as another user
    sock = os.path.join(sockdir, "runner.sock")
    work = tmp_path_factory.mktemp("nginx")
    os.chmod(work, 0o755)
    metrics = free_port()
    cfg_path = runner_config_at_fakes(work / "llm-router.yaml", fakes, metrics)
    key = secrets.token_hex(16)
    runner = RunnerProcess(sock, workers=workers, config=cfg_path, env={**fakes.env(), KEY_ENV: key}).start()
    conf = '{"extends": "default", "explain": true}'
    routed = Server("routed", sock, conf=conf)
    post = Server("post-resp", sock, conf=conf, post_resp=True, usage_log_port=metrics, usage_log_key=key)
    gw = NginxProcess(ng, work / "gw", gateway_conf(ng, work / "gw", [routed, post], fakes.ports, default="openai"),
                      [routed.port, post.port])
    pieces = {"url": f"http://127.0.0.1:{routed.port}", "post_url": f"http://127.0.0.1:{post.port}", "fakes": fakes,
              "runner": runner, "nginx": gw, "socket": sock, "config": cfg_path,
              "metrics": f"http://127.0.0.1:{metrics}/metrics", "key": key}
    try:
        gw.start()
        wait_for(lambda: httpx.get(pieces["metrics"], timeout=10).status_code == 200, 60, "the runner's /metrics")
        yield pieces
    finally:
        gw.stop()
        pieces["runner"].stop()  # a test may have replaced it
        fakes.stop()
        remove_dir(sockdir)


def _chat(prompt: str, **extra) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra}


def _post(gateway, body, url: str = "url", **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gateway[url]}/v1/chat/completions", content=content, timeout=30,
                      headers={"content-type": "application/json", **kw.pop("headers", {})}, **kw)


def test_requests_are_routed_with_the_provider_key(gateway):
    fakes = gateway["fakes"]
    fakes.clear()
    easy = _post(gateway, _chat("hi there, thanks!"), headers={"Authorization": "Bearer client-key"})
    hard = _post(gateway, _chat("Prove rigorously that the sum of two even integers is even, then derive a formal "
                                "proof step by step."), headers={"Authorization": "Bearer client-key"})
    assert easy.status_code == 200 and hard.status_code == 200, (easy.text, hard.text)
    assert easy.headers["x-llm-router-model"] != hard.headers["x-llm-router-model"]  # resp_headers reach the client
    seen = {r.provider: r for r in fakes.requests()}
    assert len(seen) == 2
    for provider, rec in seen.items():
        assert rec.json["model"] != "auto"
        headers = {k.lower(): v for k, v in rec.headers.items()}
        auth = headers.get("authorization") or headers.get("x-api-key") or ""
        assert fakes.keys()[provider] in auth and "client-key" not in auth
        assert headers["x-llm-router-upstream"] == provider  # the header the upstream was picked by
        assert int(headers["content-length"]) == len(rec.body)  # nginx recomputed it after the body rewrite


def test_sse_streams_through_and_keeps_its_content_type(gateway):
    status, headers, events = sse_data_lines(f"{gateway['url']}/v1/chat/completions", _chat("hi, tell me a story", stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert len(events) > 2 and events[-1].strip() == "data: [DONE]"


def test_spoofed_routing_header_is_overwritten(gateway):
    fakes = gateway["fakes"]
    fakes.clear()
    r = _post(gateway, _chat("hi there, thanks!"), headers={"x-llm-router-upstream": "openai",
                                                               "Authorization": "Bearer attacker"})
    assert r.status_code == 200
    [rec] = fakes.requests()
    assert rec.provider == {k.lower(): v for k, v in rec.headers.items()}["x-llm-router-upstream"] != "openai"
    assert "attacker" not in json.dumps(rec.headers)


def test_bad_body_is_stopped_with_an_openai_error_and_the_next_request_works(gateway):
    fakes = gateway["fakes"]
    fakes.clear()
    bad = _post(gateway, b'{"model": "auto", "messages": [')
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert "JSON" in err["message"] and err["type"] == "invalid_request_error"
    assert fakes.requests() == []  # stopped at the gateway
    assert _post(gateway, _chat("hi")).status_code == 200


def test_runner_restart_is_retried_with_a_new_conf_token(gateway):
    assert _post(gateway, _chat("hi")).status_code == 200  # the worker holds a token of this runner
    runner = gateway["runner"]
    runner.stop()
    down = _post(gateway, _chat("hi"))
    assert down.status_code == 503  # allow_degradation false: closed, never past the gateway unrouted
    gateway["runner"] = RunnerProcess(gateway["socket"], config=gateway["config"],
                                      env={**gateway["fakes"].env(), KEY_ENV: gateway["key"]}).start()
    # the new runner answers the worker's old token with CONF_TOKEN_NOT_FOUND; the client prepares again and retries
    r = _post(gateway, _chat("hi"))
    assert r.status_code == 200, r.text


def test_concurrent_requests_are_each_routed(gateway):
    fakes = gateway["fakes"]
    fakes.clear()
    prompts = [f"question {i}: what is {i} plus {i}?" for i in range(64)]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: client.post(f"{gateway['url']}/v1/chat/completions", json=_chat(p)), prompts))
    assert [a.status_code for a in answers] == [200] * len(prompts)
    sent = sorted(r.json["messages"][-1]["content"] for r in fakes.requests())
    assert sent == sorted(prompts)  # each body reached a provider once, none mixed up between calls
    assert all(r.json["model"] != "auto" for r in fakes.requests())


def _output_tokens(gateway) -> dict[str, float]:
    """llm_router_tokens_total{direction="output"} per model, from the runner's /metrics."""
    out: dict[str, float] = {}
    for line in httpx.get(gateway["metrics"], timeout=10).text.splitlines():
        if line.startswith("llm_router_tokens_total{") and 'direction="output"' in line:
            model = line.split('model="', 1)[1].split('"', 1)[0]
            out[model] = out.get(model, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_post_resp_accounts_a_json_answer_and_passes_it_through(gateway):
    before = _output_tokens(gateway)
    r = _post(gateway, _chat("hi there, thanks!"), url="post_url")
    assert r.status_code == 200, r.text
    model = r.headers["x-llm-router-model"]
    answer = r.json()
    assert answer["usage"]["completion_tokens"] > 0
    assert r.headers["content-type"].startswith("application/json")
    after = _output_tokens(gateway)
    assert after.get(model, 0) - before.get(model, 0) == answer["usage"]["completion_tokens"]


def test_post_resp_streams_sse_incrementally_with_its_content_type(gateway):
    fakes = gateway["fakes"]
    fakes.set_behaviour(chunk_ms=250, chunks=6)
    try:
        arrivals = []
        with httpx.stream("POST", f"{gateway['post_url']}/v1/chat/completions", json=_chat("hi, tell me a story", stream=True),
                          timeout=60) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")  # the upstream headers came back
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    arrivals.append((time.monotonic(), line))
    finally:
        fakes.set_behaviour(chunk_ms=0.0, chunks=8)
    assert arrivals[-1][1].strip() == "data: [DONE]"
    # 6 pieces 250 ms apart: had the plugin buffered the stream, every event would arrive at once
    assert arrivals[-1][0] - arrivals[0][0] > 0.75


def test_a_streams_usage_is_counted_from_the_gateways_log_of_it(gateway):
    before = _output_tokens(gateway)
    _, headers, events = sse_data_lines(f"{gateway['post_url']}/v1/chat/completions",
                                        _chat("hi, tell me a story", stream=True), timeout=60)
    model = headers["x-llm-router-model"]
    usage = [json.loads(e[5:])["usage"] for e in events if '"usage"' in e and e[5:].strip() != "[DONE]"]
    assert usage and usage[-1]["completion_tokens"] > 0
    # the log is posted after the exchange ends: wait for the runner to count it
    wait_for(lambda: _output_tokens(gateway).get(model, 0) - before.get(model, 0) == usage[-1]["completion_tokens"], 30,
             "the stream's tokens on /metrics", interval=0.1)


def test_post_resp_falls_back_down_the_chain_when_the_provider_fails(gateway):
    fakes = gateway["fakes"]
    fakes.clear()
    first = _post(gateway, _chat("hi there, thanks!"), url="post_url")
    [failing] = [r.provider for r in fakes.requests()]  # the provider this prompt is routed to
    fakes.clear()
    fakes.set_behaviour(failing, status=503)
    try:
        r = _post(gateway, _chat("hi there, thanks!"), url="post_url")
    finally:
        fakes.set_behaviour(failing, status=None)
    assert r.status_code == 200, r.text
    providers = [rec.provider for rec in fakes.requests()]
    assert providers[0] == failing and len(providers) >= 2 and providers[-1] != failing
    assert r.headers["x-llm-router-model"] != first.headers["x-llm-router-model"]  # the model that answered
    assert r.json()["choices"][0]["message"]["content"]


def test_usage_log_posts_without_the_key_are_refused(gateway):
    url = gateway["metrics"].replace("/metrics", "/v1/usage-log")
    forged = json.dumps({"request": {"headers": {"x-llm-router-request-id": "x"}}, "response": {"body": "data: x"}})
    for auth in (None, "Bearer wrong"):
        r = httpx.post(url, content=forged, headers={"authorization": auth} if auth else {}, timeout=10)
        assert r.status_code == 401 and "LLM_ROUTER_USAGE_LOG_KEY" in r.json()["error"]["message"]
        assert gateway["key"] not in r.text


def test_logs_hold_no_keys(gateway):
    logs = gateway["runner"].log() + gateway["nginx"].error_log()
    assert all(k not in logs for k in [*gateway["fakes"].keys().values(), gateway["key"]])


def test_bench_nginx_measures_every_setup_side_by_side():
    import shutil
    import subprocess
    import sys

    _nginx_or_skip()
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (Debian package wrk)")
    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "bench", "nginx", "--requests", "40", "--rounds", "2",
                          "--warmup", "10", "--duration", "1", "--concurrency", "4", "--classifier", "rules", "--json",
                          "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert list(result["setups"]) == ["nginx", "trivial", "floor", "router"]
    assert "non_2xx" not in result
    for name, row in result["setups"].items():
        assert row["c1"]["requests"] == 40 and row["c1"]["p50_us"] > 0 and row["c4"]["rps"] > 0
        if name != "nginx":
            assert row["c4"]["runner_cpu_us_per_req"] > 0 and "added_p50_us" in row


def _events(gateway) -> dict[str, float]:
    text = httpx.get(gateway["metrics"], timeout=10).text
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("llm_router_apisix_runner_events_total{")}


def test_two_runner_processes_account_every_answer_and_fall_back_whichever_one_apisix_asks(gateway2):
    """Concurrent calls take the worker's pooled connections at random, so a response call often reaches the process
    that did not route its request; every token still counts once, and failed answers are still retried."""
    fakes = gateway2["fakes"]
    failing = "deepseek"  # where the easy prompts go: their answers fail and fall back
    fakes.set_behaviour(failing, status=503)
    try:
        for _ in range(5):  # rounds until some response calls have crossed between the processes
            before, events = _output_tokens(gateway2), _events(gateway2)

            def one(i: int):
                body = _chat(f"question {i}: what is {i} plus {i}?" if i % 3 else "hi there, thanks!", stream=i % 2 == 0)
                if i % 2:
                    r = _post(gateway2, body, url="post_url")
                    assert r.status_code == 200, r.text
                    return r.headers["x-llm-router-model"], r.json()["usage"]["completion_tokens"]
                status, headers, lines = sse_data_lines(f"{gateway2['post_url']}/v1/chat/completions", body, timeout=60)
                assert status == 200, lines
                usage = [json.loads(e[5:])["usage"] for e in lines if '"usage"' in e and e[5:].strip() != "[DONE]"]
                return headers["x-llm-router-model"], usage[-1]["completion_tokens"]

            with ThreadPoolExecutor(16) as pool:
                answered = list(pool.map(one, range(48)))
            assert failing not in {m.split("-")[0] for m, _ in answered}
            expected: dict[str, float] = {}
            for model, tokens in answered:
                expected[model] = expected.get(model, 0) + tokens
            wait_for(lambda: {m: v - before.get(m, 0) for m, v in _output_tokens(gateway2).items()
                              if v - before.get(m, 0)} == expected, 60, "every answer's tokens on /metrics", interval=0.1)
            after = _events(gateway2)
            assert after["unmatched_responses"] == events["unmatched_responses"]
            assert after["peer_failures"] == 0 and after["fallbacks"] > events["fallbacks"]
            if after["to_peers"] > events["to_peers"]:
                break
        assert after["to_peers"] > 0 and after["from_peers"] == after["to_peers"]
    finally:
        fakes.set_behaviour(failing, status=None)


def _demo(*args: str) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "llm_router.cli", "demo", "--json", *args], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_demo_through_nginx_routes_the_workload_as_through_envoy():
    from fixtures_envoy import require_envoy

    _nginx_or_skip()
    require_envoy()
    nginx, envoy = _demo("--gateway", "nginx", "--limit", "80"), _demo("--limit", "80")
    assert nginx["requests"] == envoy["requests"] == 80 and nginx["errors"] == envoy["errors"] == 0
    two = _demo("--gateway", "nginx", "--limit", "80", "--workers", "2")  # two runner processes: the same counts
    assert two["runner_workers"] == 2 and two["errors"] == 0 and two["model_share"] == nginx["model_share"]
    assert two["metrics"]["llm_router_tokens_total"] == nginx["metrics"]["llm_router_tokens_total"]
    assert nginx["model_share"] == envoy["model_share"] and len(nginx["model_share"]) >= 3
    assert nginx["by_api"] == envoy["by_api"] and nginx["agent"] == envoy["agent"]
    if nginx["peak_prices"] == envoy["peak_prices"]:
        assert nginx["cost_per_1k"] == envoy["cost_per_1k"]
    # JSON answers' tokens read at post-resp, streams' from the gateway's log of them: every token Envoy's processor saw
    assert nginx["metrics"]["llm_router_tokens_total"] == envoy["metrics"]["llm_router_tokens_total"] > 0
    assert nginx["metrics"]["llm_router_cost_usd_total"] == pytest.approx(envoy["metrics"]["llm_router_cost_usd_total"])


def test_demo_through_nginx_falls_back_when_providers_fail():
    _nginx_or_skip()
    s = _demo("--gateway", "nginx", "--limit", "80", "--fail", "deepseek,together")
    assert s["requests"] == 80 and s["errors"] == 0
    fb = s["fallbacks"]
    assert fb["requests"] > 0 and fb["attempts"] >= fb["requests"]  # counted from the runner's x-llm-router-steps
    assert not {"deepseek-v2", "llama-3-70b"} & set(s["model_share"])
    assert fb["taken"] and all(move.endswith("(server_error)") for move in fb["taken"])  # the same labels as on Envoy
    assert sum(fb["taken"].values()) == fb["attempts"]
