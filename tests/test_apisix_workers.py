"""`serve --apisix --workers 2`: a response call, a stream's usage log or a scrape that reaches the process which did
not route the request still counts there. Real runner processes on a real socket, fake providers over HTTP."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import httpx
import orjson
import pytest

from llm_router.gateways.apisix.peers import merge, snapshot
from llm_router.gateways.apisix.runner import REQUEST_ID_VAR
from llm_router.gateways.apisix.usage_log import KEY_ENV
from llm_router.metrics import Metrics

from apisix_emulator import Emulator, RouteConf, RunnerProcess, SharedDict, remove_dir, runner_config_at_fakes, socket_dir
from conftest import free_port, wait_for
from test_apisix_runner import _children

PRE = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true}'),), conf_id="w")
POST = RouteConf(conf=PRE.conf, conf_id="w", plugin="ext-plugin-post-resp")
EASY = "hi there, thanks!"
STREAM = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
          b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}}\n\n'
          b"data: [DONE]\n\n")
KEY = "usage-log-key-for-tests"


def _chat(**extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": EASY}], **extra})


def _one_emulator_per_process(proc: RunnerProcess) -> dict[str, tuple[Emulator, str]]:
    """Process prefix -> (an emulator whose one connection reaches that process, the request id of its first call)."""
    path = proc.path
    wait_for(lambda: proc.log().count("serves the other processes on") >= 2, 60, "both workers to start")
    shared = SharedDict()
    # Both confs' tokens first: an emulator that must ask for a token does so on a connection of its own, and the
    # connection it keeps afterwards need not be the one it made the call on.
    warm = Emulator(path, shared=shared)
    assert warm.http_req_call(PRE, body=_chat()).ok
    warm.http_resp_call(POST, headers=[("content-type", "application/json")])
    warm.close()
    found: dict[str, tuple[Emulator, str]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # new connections until each process has one (APISIX's land at random too)
        em = Emulator(path, shared=shared, pool_size=1)
        out = em.http_req_call(PRE, body=_chat())
        assert out.ok, out
        rid = out.upstream_headers["x-llm-router-request-id"]
        if rid.split("-")[0] in found:
            em.close()
        else:
            found[rid.split("-")[0]] = (em, rid)
        if len(found) == 2:
            return found
    for em, _ in found.values():
        em.close()
    raise AssertionError("every connection went to one process")


@pytest.fixture(scope="module")
def two(fakes, tmp_path_factory):
    """Two runner processes on one socket, /metrics (and the usage log) on the first; an emulator on each process."""
    d = socket_dir()
    port = free_port()
    work = tmp_path_factory.mktemp("workers")
    cfg = runner_config_at_fakes(work / "llm-router.json", fakes, port)
    data = json.loads(open(cfg).read())
    data["metrics"]["feedback_log"] = str(work / "feedback.jsonl")
    open(cfg, "w").write(json.dumps(data))
    proc = RunnerProcess(os.path.join(d, "w.sock"), workers=2, config=cfg, env={**fakes.env(), KEY_ENV: KEY}).start()
    by_process: dict[str, Emulator] = {}
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200, 60, "/readyz")
        by_process = {prefix: em for prefix, (em, _) in _one_emulator_per_process(proc).items()}
        for prefix, em in by_process.items():
            em.http_resp_call(POST, headers=[("content-type", "application/json")])  # each process sees post-resp's conf
            again = em.http_req_call(PRE, body=_chat()).upstream_headers["x-llm-router-request-id"]
            assert again.startswith(prefix + "-") and em.connections_opened == 1  # one connection, one process
        yield {"proc": proc, "ems": list(by_process.items()), "metrics": f"http://127.0.0.1:{port}", "fakes": fakes}
    finally:
        for em in by_process.values():
            em.close()
        proc.stop()
        remove_dir(d)


def _scrape(two) -> str:
    return httpx.get(f"{two['metrics']}/metrics", timeout=30).text


def _value(text: str, name: str, **labels) -> float:
    """The sum of a family's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _event(text: str, event: str) -> float:
    return _value(text, "llm_router_apisix_runner_events_total", event=event)


def test_a_response_reaching_the_other_process_is_accounted_by_the_one_that_routed_it(two):
    (routing_prefix, routing), (_, answering) = two["ems"]
    before = _scrape(two)
    answer = orjson.dumps({"usage": {"prompt_tokens": 1000, "completion_tokens": 2000}})
    json_headers = [("content-type", "application/json"), ("content-length", str(len(answer)))]
    for _ in range(12):
        rid = routing.http_req_call(PRE, body=_chat()).upstream_headers["x-llm-router-request-id"]
        assert rid.startswith(routing_prefix + "-")
        out = answering.http_resp_call(POST, body=answer, headers=json_headers, variables={REQUEST_ID_VAR: rid})
        assert out.ok and out.body == answer  # the answer goes through untouched
    after = wait_for(lambda: (t := _scrape(two)) and _event(t, "from_peers") - _event(before, "from_peers") >= 12 and t,
                     30, "the routing process to account the 12 answers")
    assert _event(after, "to_peers") - _event(before, "to_peers") == 12
    assert _event(after, "unmatched_responses") == _event(before, "unmatched_responses")
    tokens = _value(after, "llm_router_tokens_total", direction="output") - _value(before, "llm_router_tokens_total",
                                                                                     direction="output")
    assert tokens == 12 * 2000


def test_a_failed_answer_reaching_the_other_process_is_retried_down_the_chain_by_the_routing_one(two):
    (_, routing), (_, answering) = two["ems"]
    fakes = two["fakes"]
    call = routing.http_req_call(PRE, body=_chat())
    rid = call.upstream_headers["x-llm-router-request-id"]
    first = orjson.loads(call.upstream_body)["model"]  # the provider's name of the model the gateway called
    fakes.clear()
    out = answering.http_resp_call(POST, status=503, body=b'{"error": "overloaded"}',
                                   headers=[("content-type", "application/json")], variables={REQUEST_ID_VAR: rid})
    assert out.status == 200, out
    reply = orjson.loads(out.body)
    assert reply["choices"][0]["message"]["content"] and reply["model"] != first  # the next model of the chain answered
    assert [r.json["model"] for r in fakes.requests()] == [reply["model"]]  # called by the routing process
    assert out.response_headers["x-llm-router-model"]
    text = _scrape(two)
    assert _event(text, "fallbacks") >= 1 and _event(text, "peer_failures") == 0


def test_a_streams_usage_log_reaches_the_process_holding_the_stream(two):
    (_, routing), (_, answering) = two["ems"]
    before = _scrape(two)
    rids = []
    for em in (routing, answering):  # one stream held by each process; the log goes to the first process's listener
        rid = em.http_req_call(PRE, body=_chat(stream=True)).upstream_headers["x-llm-router-request-id"]
        other = answering if em is routing else routing
        out = other.http_resp_call(POST, body=STREAM, variables={REQUEST_ID_VAR: rid},
                                   headers=[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")])
        assert out.ok and [i["info"] for i in out.extra_info] == ["var"]  # never buffered
        rids.append(rid)
    entries = [{"request": {"headers": {"x-llm-router-request-id": rid}}, "response": {"body": STREAM.decode()}}
               for rid in rids]
    r = httpx.post(f"{two['metrics']}/v1/usage-log", content=orjson.dumps(entries), timeout=30,
                   headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json() == {"accepted": 2, "skipped": 0}
    after = wait_for(lambda: (t := _scrape(two)) and _event(t, "stream_usage_logged") - _event(before, "stream_usage_logged")
                     >= 2 and t, 30, "both streams to be accounted with their usage")
    assert _event(after, "stream_usage_unmatched") == _event(before, "stream_usage_unmatched")
    assert _value(after, "llm_router_tokens_total", direction="output") - \
        _value(before, "llm_router_tokens_total", direction="output") == 2 * 22


def test_metrics_count_the_requests_of_every_process(two):
    before = _scrape(two)
    for _, em in two["ems"]:
        for _ in range(3):
            assert em.http_req_call(PRE, body=_chat()).ok
    after = _scrape(two)
    assert _event(after, "req_calls") - _event(before, "req_calls") == 6
    assert _value(after, "llm_router_requests_total") - _value(before, "llm_router_requests_total") == 6
    assert after.count("# TYPE llm_router_requests_total counter") == 1  # one family, not one per process
    assert _value(after, "llm_router_build_info") == 1.0  # a gauge is not summed


def test_feedback_is_counted_for_the_model_that_answered_in_either_process(two):
    answer = orjson.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    json_headers = [("content-type", "application/json"), ("content-length", str(len(answer)))]
    rids = []
    for _, em in two["ems"]:  # one request answered in each process
        call = em.http_req_call(PRE, body=_chat())
        rid = call.upstream_headers["x-llm-router-request-id"]
        assert em.http_resp_call(POST, body=answer, headers=json_headers, variables={REQUEST_ID_VAR: rid}).ok
        rids.append(rid)
    before = _scrape(two)
    r = httpx.post(f"{two['metrics']}/v1/feedback", timeout=30,
                   content=orjson.dumps([{"request_id": rid, "score": 1.0} for rid in rids]))
    assert r.status_code == 200, r.text
    after = _scrape(two)
    rated = _value(after, "llm_router_feedback_rated_total") - _value(before, "llm_router_feedback_rated_total")
    unknown = _value(after, "llm_router_feedback_rated_total", model="unknown") - \
        _value(before, "llm_router_feedback_rated_total", model="unknown")
    assert rated == 2 and unknown == 0


def test_merge_sums_counters_and_histograms_and_keeps_gauges_cautious():
    a, b = Metrics(), Metrics()
    a.requests.inc(("r", "m1", "LOW", "ladder"), 2)
    b.requests.inc(("r", "m1", "LOW", "ladder"), 3)
    b.requests.inc(("r", "m2", "HIGH", "ladder"))
    a.decision_seconds.observe((), 30e-6)
    b.decision_seconds.observe((), 3e-3)
    a.breaker_open.set(("m1",), 0.0)
    b.breaker_open.set(("m1",), 1.0)
    a.budget_remaining.set(("global",), 7.5)
    b.budget_remaining.set(("global",), 2.5)
    merged = {m.name: m for m in merge(list(a.collect_own()), [snapshot(b.collect_own())])}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in merged.values() for s in m.samples}
    assert samples[("llm_router_requests_total", (("model", "m1"), ("route", "r"), ("strategy", "ladder"),
                                                  ("tier", "LOW")))] == 5
    assert samples[("llm_router_requests_total", (("model", "m2"), ("route", "r"), ("strategy", "ladder"),
                                                  ("tier", "HIGH")))] == 1
    assert samples[("llm_router_decision_seconds_count", ())] == 2
    assert samples[("llm_router_decision_seconds_bucket", (("le", "5e-05"),))] == 1
    assert samples[("llm_router_breaker_open", (("model", "m1"),))] == 1.0  # open in one process: open
    assert samples[("llm_router_budget_remaining_usd", (("scope", "global"),))] == 2.5  # the least left


def test_sighup_turns_the_stream_usage_log_on(fakes, tmp_path):
    d = socket_dir()
    port = free_port()
    path = tmp_path / "llm-router.json"
    data = json.loads(open(runner_config_at_fakes(path, fakes, port)).read())
    data["server"]["apisix_stream_usage"] = False
    path.write_text(json.dumps(data))
    proc = RunnerProcess(os.path.join(d, "h.sock"), workers=2, config=str(path), env=fakes.env()).start()
    url = f"http://127.0.0.1:{port}/v1/usage-log"
    try:
        off = wait_for(lambda: _post_or_none(url), 30, "the listener")
        assert off.status_code == 404 and "server.apisix_stream_usage" in off.json()["error"]["message"]
        data["server"]["apisix_stream_usage"] = True
        path.write_text(json.dumps(data))
        os.kill(proc.proc.pid, signal.SIGHUP)
        on = wait_for(lambda: (r := _post_or_none(url)) is not None and r.status_code == 200 and r, 30,
                      "the usage log to be taken after SIGHUP")
        assert on.json() == {"accepted": 0, "skipped": 1}
    finally:
        proc.stop()
        remove_dir(d)


def _post_or_none(url: str) -> httpx.Response | None:
    try:
        return httpx.post(url, content=b'{"request": {}}', timeout=10)
    except httpx.HTTPError:
        return None


def test_responses_of_a_process_that_died_go_through_and_the_rest_still_counts(fakes):
    d = socket_dir()
    proc = RunnerProcess(os.path.join(d, "k.sock"), workers=2, env=fakes.env()).start()
    ems: dict[str, Emulator] = {}
    try:
        found = _one_emulator_per_process(proc)
        ems = {prefix: em for prefix, (em, _) in found.items()}
        rids = {prefix: rid for prefix, (_, rid) in found.items()}
        (dead, _), (alive, em) = ems.items()
        pids = re.findall(rf"(\d+) INFO llm_router.apisix: runner process {dead} ", proc.log())
        assert pids, proc.log()
        pid = int(pids[0])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2], 30,
                 "the worker to die")
        out = em.http_resp_call(POST, status=503, body=b'{"error": "overloaded"}',
                                headers=[("content-type", "application/json")], variables={REQUEST_ID_VAR: rids[dead]})
        assert out.ok and out.body == b'{"error": "overloaded"}'  # nobody can retry it: the failed answer goes through
        assert em.http_req_call(PRE, body=_chat()).ok  # and the next request is served
        assert "could not hand the response of " + rids[dead] in proc.log()
    finally:
        for e in ems.values():
            e.close()
        proc.stop()
        remove_dir(d)


def test_a_spend_limit_counts_the_spend_of_every_process(fakes, tmp_path):
    """State in memory (the default) is held by one process for all workers: what one spends, the other sees."""
    d = socket_dir()
    path = tmp_path / "llm-router.json"
    data = json.loads(open(runner_config_at_fakes(path, fakes, free_port())).read())
    data["accounting"] = {"limits": [{"scope": "global", "window": "day", "usd": 0.01}]}
    path.write_text(json.dumps(data))
    proc = RunnerProcess(os.path.join(d, "s.sock"), workers=2, config=str(path), env=fakes.env()).start()
    ems: dict[str, Emulator] = {}
    try:
        ems = {prefix: em for prefix, (em, _) in _one_emulator_per_process(proc).items()}
        (_, spender), (_, other) = ems.items()
        rid = spender.http_req_call(PRE, body=_chat()).upstream_headers["x-llm-router-request-id"]
        answer = orjson.dumps({"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}})  # > $0.01 anywhere
        assert spender.http_resp_call(POST, body=answer, variables={REQUEST_ID_VAR: rid},
                                      headers=[("content-type", "application/json"),
                                               ("content-length", str(len(answer)))]).ok
        refused = wait_for(lambda: (out := other.http_req_call(PRE, body=_chat())).status == 429 and out, 30,
                           "the other process to refuse under the spent limit")
        assert orjson.loads(refused.body)["error"]["code"] == "spend_limit_exceeded"
    finally:
        for em in ems.values():
            em.close()
        proc.stop()
        remove_dir(d)


def test_the_workers_and_the_state_process_end_with_a_killed_supervisor(fakes):
    """APISIX SIGKILLs a runner that has not stopped 1 s after SIGTERM: nothing it started may serve on."""
    d = socket_dir()
    proc = RunnerProcess(os.path.join(d, "x.sock"), workers=2, env=fakes.env()).start()
    children: list[int] = []
    try:
        children = wait_for(lambda: len(c := _children(proc.proc.pid)) == 3 and c, 30, "two workers and the state")
        proc.proc.kill()
        proc.proc.wait(30)
        wait_for(lambda: not any(_alive(pid) for pid in children), 30, "every child of the supervisor to end")
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stop()
        remove_dir(d)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_a_later_turn_reaching_the_other_process_stays_on_the_conversations_model(fakes, tmp_path):
    """Without Redis, the processes share conversation affinity directly: the next turn may reach either."""
    from test_affinity import EASY, HARD, LADDER, turns

    d = socket_dir()
    port = free_port()
    path = tmp_path / "llm-router.json"
    data = json.loads(open(runner_config_at_fakes(path, fakes, port)).read())
    data["policies"] = {"default": {"classifier": "rules", "strategy": "ladder", "ladder": LADDER,
                                    "affinity": "conversation"}}
    path.write_text(json.dumps(data))
    proc = RunnerProcess(os.path.join(d, "a.sock"), workers=2, config=str(path), env=fakes.env()).start()
    ems: dict[str, Emulator] = {}
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200, 60, "/readyz")
        ems = {prefix: em for prefix, (em, _) in _one_emulator_per_process(proc).items()}
        (_, first), (_, second) = ems.items()
        opening = orjson.loads(first.http_req_call(PRE, body=turns(HARD)).upstream_body)["model"]
        alone = orjson.loads(second.http_req_call(PRE, body=turns(EASY)).upstream_body)["model"]
        assert opening != alone  # the easy turn alone would go elsewhere
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: _value(httpx.get(metrics, timeout=10).text, "llm_router_affinity_shared_total",
                                direction="received") >= 2, 30, "each placement to reach the other process")
        follow = orjson.loads(second.http_req_call(PRE, body=turns(HARD, EASY)).upstream_body)["model"]
        assert follow == opening
    finally:
        for em in ems.values():
            em.close()
        proc.stop()
        remove_dir(d)


def test_shared_tables_reach_every_other_process_without_echo(tmp_path):
    import asyncio

    from llm_router.gateways.apisix.peers import Peers
    from llm_router.reasoning_memory import ReasoningMemory

    async def main():
        tables = [ReasoningMemory() for _ in range(3)]
        counts: list[dict[str, float]] = [{}, {}, {}]
        peers = [Peers(tmp_path, f"p{i}", {}) for i in range(3)]
        for i, (p, table) in enumerate(zip(peers, tables)):
            await p.start()
            p.share("reasoning", table, lambda what, n, c=counts[i]: c.__setitem__(what, c.get(what, 0) + n))
        try:
            tables[0].remember("answer-1", "Greet back.")
            tables[0].remember("answer-2", "Add the numbers.")  # one batch with the first
            await wait_async(lambda: all(t.recall("answer-2") for t in tables[1:]))
            assert [t.recall("answer-1") for t in tables] == ["Greet back."] * 3
            assert counts[0] == {"sent": 2} and counts[1] == counts[2] == {"received": 2}  # learned, not passed on
        finally:
            for p in peers:
                await p.stop()

    async def wait_async(check, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "the entries to arrive"
            await asyncio.sleep(0.01)

    asyncio.run(main())
