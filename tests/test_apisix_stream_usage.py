"""Usage of streamed answers on APISIX: the runner waits for http-logger's copy of a stream (POST /v1/usage-log)."""
from __future__ import annotations


import httpx
import orjson
import pytest

from llm_router.accounting import Usage
from llm_router.gateways.apisix import usage_log
from llm_router.gateways.apisix.runner import REQUEST_ID_VAR, STREAM_USAGE_WAIT_S
from llm_router.gateways.apisix.server import usage_log_handler
from llm_router.metrics import Metrics, serve_metrics, stop_metrics

from apisix_emulator import Emulator, RouteConf

PRE = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
POST = RouteConf(conf=PRE.conf, plugin="ext-plugin-post-resp")
STREAM = (b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
          b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}}\n\n'
          b"data: [DONE]\n\n")
SSE_HEADERS = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]


class Recorder:
    def __init__(self) -> None:
        self.responses: list[tuple] = []

    def on_decision(self, ex) -> None:
        pass

    def on_response(self, ex, status, usage, latency_s, headers=None) -> None:
        self.responses.append((ex.request_id, status, usage))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gw(apisix_runner_thread):
    rec = Recorder()
    thread = apisix_runner_thread(observer=rec, telemetry=True, clock=Clock(), apisix_fallback=False, apisix_stream_usage=True)
    em = Emulator(thread.path)
    em.http_resp_call(POST, headers=[("content-type", "application/json")])  # the route now known to use post-resp
    yield em, thread.runner, rec, thread
    em.close()


def _streamed(em) -> str:
    """One streamed call through pre-req and post-resp; its request id."""
    pre = em.http_req_call(PRE, body=orjson.dumps({"model": "auto", "stream": True,
                                                   "messages": [{"role": "user", "content": "hi there, thanks!"}]}))
    rid = pre.upstream_headers["x-llm-router-request-id"]
    out = em.http_resp_call(POST, body=STREAM, headers=SSE_HEADERS, variables={REQUEST_ID_VAR: rid})
    assert [i["info"] for i in out.extra_info] == ["var"]  # still never buffered
    return rid


def _entry(rid: str, body: bytes = STREAM) -> dict:
    """An http-logger entry as log-util's full log has it (the fields the runner reads, and some it does not)."""
    return {"request": {"headers": {"x-llm-router-request-id": rid, "host": "api.example.com"}, "method": "POST"},
            "response": {"status": 200, "headers": {"content-type": "text/event-stream"}, "body": body.decode()},
            "latency": 12.5, "route_id": "llm"}


def test_a_stream_is_accounted_once_with_the_usage_its_log_carries(gw):
    em, runner, rec, thread = gw
    before = len(rec.responses)
    rid = _streamed(em)
    assert len(rec.responses) == before and rid in runner.parked  # waits for its log
    thread.call(runner.take_usage, usage_log.parse(orjson.dumps([_entry(rid), _entry("someone-else")]))[0])
    assert rec.responses[-1][0] == rid and rec.responses[-1][1] == 200
    assert rec.responses[-1][2].input_tokens == 11 and rec.responses[-1][2].output_tokens == 22
    assert len(rec.responses) == before + 1 and not runner.parked
    assert runner.stats.stream_usage_logged == 1 and runner.stats.stream_usage_unmatched == 1
    thread.call(runner.take_usage, usage_log.parse(orjson.dumps(_entry(rid)))[0])  # a repeated log counts nothing
    assert len(rec.responses) == before + 1 and runner.stats.stream_usage_unmatched == 2


def test_a_log_that_comes_before_its_streams_response_call_is_kept_for_it(gw):
    """With several processes, the response call may still be on its way from the process APISIX asked."""
    em, runner, rec, thread = gw
    pre = em.http_req_call(PRE, body=orjson.dumps({"model": "auto", "stream": True,
                                                   "messages": [{"role": "user", "content": "hi there, thanks!"}]}))
    rid = pre.upstream_headers["x-llm-router-request-id"]
    before = len(rec.responses)
    thread.call(runner.take_usage, usage_log.parse(orjson.dumps(_entry(rid)))[0])
    assert len(rec.responses) == before and runner.stats.stream_usage_unmatched == 0  # not accounted yet
    em.http_resp_call(POST, body=STREAM, headers=SSE_HEADERS, variables={REQUEST_ID_VAR: rid})
    assert rec.responses[-1][0] == rid and rec.responses[-1][2].output_tokens == 22  # at once, with the usage
    assert not runner.parked and not runner.early_usage and runner.stats.stream_usage_logged == 1


def test_a_stream_whose_log_never_comes_is_accounted_without_usage_when_its_wait_ends(gw):
    em, runner, rec, thread = gw
    rid = _streamed(em)
    runner.clock.now += STREAM_USAGE_WAIT_S - 1
    thread.call(runner.sweep, runner.clock.now)
    assert rid in runner.parked
    runner.clock.now += 2
    thread.call(runner.sweep, runner.clock.now)
    assert rec.responses[-1] == (rid, 200, None) and runner.stats.stream_usage_expired == 1 and not runner.parked


def test_json_answers_and_streams_without_the_setting_are_accounted_at_once(gw, monkeypatch):
    em, runner, rec, thread = gw
    pre = em.http_req_call(PRE, body=orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
    rid = pre.upstream_headers["x-llm-router-request-id"]
    answer = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    em.http_resp_call(POST, body=answer, variables={REQUEST_ID_VAR: rid},
                      headers=[("content-type", "application/json"), ("content-length", str(len(answer)))])
    assert rec.responses[-1] == (rid, 200, Usage(3, 4)) and not runner.parked
    runner.stream_usage = False
    rid = _streamed(em)
    assert rec.responses[-1] == (rid, 200, None) and not runner.parked


def test_shutdown_accounts_every_waiting_stream(gw):
    em, runner, rec, thread = gw
    rids = [_streamed(em) for _ in range(3)]
    thread.call(runner.flush_parked)
    assert [r[0] for r in rec.responses[-3:]] == rids and all(r[2] is None for r in rec.responses[-3:])


def test_the_listener_takes_logs_and_refuses_bad_posts_by_name(gw):
    em, runner, rec, thread = gw
    rid = _streamed(em)
    address = serve_metrics(Metrics(), "127.0.0.1:0", usage_log=usage_log_handler(runner, thread.loop))
    url = f"http://127.0.0.1:{address[1]}/v1/usage-log"
    try:
        r = httpx.post(url, content=orjson.dumps(_entry(rid)), timeout=10)
        assert r.status_code == 200 and r.json() == {"accepted": 1, "skipped": 0}
        thread.call(lambda: None)  # the entries reach the runner on its own loop, in order
        assert rec.responses[-1][0] == rid and rec.responses[-1][2].output_tokens == 22
        bad = httpx.post(url, content=b"{not json", timeout=10)
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
        assert httpx.post(url, content=b'"text"', timeout=10).json()["error"]["message"].startswith("usage log must be")
        assert httpx.get(url, timeout=10).status_code == 405
        skipped = httpx.post(url, content=orjson.dumps([{"request": {}}, 7]), timeout=10)
        assert skipped.json() == {"accepted": 0, "skipped": 2}
        assert httpx.get(f"http://127.0.0.1:{address[1]}/metrics", timeout=10).status_code == 200  # the rest as before
    finally:
        stop_metrics(address)


def test_parse_reads_batches_and_repeated_headers():
    logs, skipped = usage_log.parse(orjson.dumps([
        {"request": {"headers": {"x-llm-router-request-id": ["a", "b"]}}, "response": {"body": "data: x\n\n"}},
        {"request": {"headers": {"x-llm-router-request-id": "c"}}, "response": {}},  # no body: nothing to read
    ]))
    assert [(x.request_id, x.body) for x in logs] == [("a", b"data: x\n\n")] and skipped == 1
    status, body = usage_log.handle("POST", usage_log.MAX_BODY_BYTES + 1, lambda n: b"", lambda logs: None)
    assert status == 413 and b"Content-Length" in body



def test_with_a_key_only_posts_carrying_it_are_taken():
    taken: list = []
    body = orjson.dumps(_entry("r1"))
    post = lambda auth: usage_log.handle("POST", len(body), lambda n: body, taken.append, authorization=auth,  # noqa: E731
                                         key="s3cret-key")
    for auth in (None, "", "Bearer wrong", "s3cret-key", "Bearer s3cret-key "):
        status, answer = post(auth)
        assert status == 401 and b"s3cret" not in answer
    assert not taken
    assert post("Bearer s3cret-key")[0] == 200 and [x.request_id for x in taken[0]] == ["r1"]
