"""The runner over a real Unix socket, driven byte for byte by the APISIX-side emulator."""
from __future__ import annotations

import os
import select
import signal
import socket
import stat
import threading

import orjson
import pytest

from llm_router.accounting import Usage
from llm_router.config import load_config
from llm_router.gateways.apisix import encode, framing
from llm_router.gateways.apisix.runner import REQUEST_ID_VAR, Runner
from llm_router.gateways.apisix.tokens import TokenStore
from llm_router.runtime import Exchange, Runtime

from apisix_emulator import (
    FAKE_KEYS, Emulator, RouteConf, RunnerProcess, RunnerThread, SharedDict, build_extra_info_resp, build_prepare_conf,
    build_req_call, build_resp_call, decode_reply, raw_frame, recv_frame, remove_dir, socket_dir, wait_until,
)

DEFAULT = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
EXPLAIN = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true}'),), conf_id="explain")
CLIENT_HEADERS = [("Authorization", "Bearer client-own-key"), ("x-api-key", "client-anthropic-key"),
                  ("X-LLM-Router-Upstream", "openai"), ("Content-Type", "application/json"), ("Host", "gw.example")]
EASY = "hi there, thanks!"
HARD = ("Prove rigorously that the sum of two even integers is even, then derive a formal proof of the "
        "theorem for all integers, step by step.")


def chat(prompt: str, **extra) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra})


@pytest.fixture(scope="module")
def sockdir():
    d = socket_dir()
    yield d
    remove_dir(d)


@pytest.fixture(scope="module")
def runner(sockdir):
    proc = RunnerProcess(os.path.join(sockdir, "runner.sock")).start()
    yield proc
    proc.stop()
    assert all(v not in proc.log() for v in FAKE_KEYS.values()), "a provider key reached the runner log"


@pytest.fixture
def em(runner):
    e = Emulator(runner.path, timeout=30)
    yield e
    e.close()


@pytest.fixture
def expected(monkeypatch):
    """The decision the core makes for the same body and route conf (the runner must apply exactly it)."""
    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    rt = Runtime(load_config(None), telemetry=False)

    def decide(body: bytes, conf: str, path: str = "/v1/chat/completions"):
        return rt.decide(body, path=path, ex=Exchange("t", "r", 0.0), route_conf=conf)
    return decide


# ---- routing -------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [EASY, HARD])
def test_rewrite_applies_the_decision(em, expected, prompt):
    body = chat(prompt)
    out = em.http_req_call(EXPLAIN, headers=CLIENT_HEADERS, body=body)
    assert out.ok and out.action == "rewrite", out
    call = expected(body, EXPLAIN.conf[0][1])
    assert out.upstream_path == call.path
    assert out.upstream_body == call.body
    assert orjson.loads(out.upstream_body)["model"] == call.model.name
    up = out.upstream_headers
    # the routing header is the runner's, whatever the client sent
    assert up["x-llm-router-upstream"] == call.model.upstream
    for name, value in call.set_headers:
        assert up[name] == value
    for name in call.remove_headers:
        assert name not in up, f"client credential header {name} reached the provider"
    assert "client-own-key" not in str(up) and "client-anthropic-key" not in str(up)
    # explanation headers go to the client
    assert out.response_headers["x-llm-router-model"] == call.model.id
    assert out.response_headers["x-llm-router-request-id"] == up["x-llm-router-request-id"]
    assert [i["info"] for i in out.extra_info] == ["req_body"]


def test_easy_and_hard_prompts_go_to_different_providers(em):
    easy = em.http_req_call(DEFAULT, headers=CLIENT_HEADERS, body=chat(EASY))
    hard = em.http_req_call(DEFAULT, headers=CLIENT_HEADERS, body=chat(HARD))
    assert easy.upstream_headers["x-llm-router-upstream"] != hard.upstream_headers["x-llm-router-upstream"]
    assert easy.upstream_headers.get("authorization") == f"Bearer {FAKE_KEYS['DEEPSEEK_API_KEY']}"
    assert hard.upstream_headers.get("x-api-key") == FAKE_KEYS["ANTHROPIC_API_KEY"]
    assert "authorization" not in hard.upstream_headers


def test_an_anthropic_format_request_goes_to_deepseeks_messages_api_or_to_claude(em):
    """/v1/messages bodies are routed too: a simple one to DeepSeek's Anthropic-compatible path with its Bearer key."""
    def messages(prompt: str) -> bytes:
        return orjson.dumps({"model": "claude-3-5-sonnet-latest", "max_tokens": 100,
                             "messages": [{"role": "user", "content": prompt}]})
    easy = em.http_req_call(DEFAULT, path="/v1/messages", headers=CLIENT_HEADERS, body=messages(EASY))
    assert easy.ok and easy.action == "rewrite", easy
    assert easy.upstream_path == "/anthropic/v1/messages"
    assert easy.upstream_headers["x-llm-router-upstream"] == "deepseek"
    assert easy.upstream_headers.get("authorization") == f"Bearer {FAKE_KEYS['DEEPSEEK_API_KEY']}"
    assert "x-api-key" not in easy.upstream_headers
    assert orjson.loads(easy.upstream_body)["model"] == "deepseek-flash"
    hard = em.http_req_call(DEFAULT, path="/v1/messages", headers=CLIENT_HEADERS, body=messages(HARD))
    assert hard.upstream_path == "/v1/messages" and hard.upstream_headers["x-llm-router-upstream"] == "anthropic"
    assert hard.upstream_headers.get("x-api-key") == FAKE_KEYS["ANTHROPIC_API_KEY"]


def test_streaming_request_asks_for_usage(em):
    out = em.http_req_call(DEFAULT, body=chat(EASY, stream=True))
    sent = orjson.loads(out.upstream_body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_shadow_route_serves_the_asked_model_and_reports_what_routing_would_choose(em):
    shadow = RouteConf(conf=(("llm-router", '{"extends": "default", "explain": true, "shadow": true, "reference_model": "gpt-4o"}'),),
                       conf_id="shadow")
    out = em.http_req_call(shadow, headers=CLIENT_HEADERS, body=chat(EASY))
    assert out.ok and out.action == "rewrite"
    assert orjson.loads(out.upstream_body)["model"] == "gpt-4o" and out.upstream_headers["x-llm-router-upstream"] == "openai"
    assert out.upstream_headers["authorization"] == f"Bearer {FAKE_KEYS['OPENAI_API_KEY']}"
    assert (out.response_headers["x-llm-router-model"], out.response_headers["x-llm-router-shadow-model"]) == ("gpt-4o", "deepseek-v2")
    asked = em.http_req_call(shadow, headers=CLIENT_HEADERS, body=chat(EASY, model="mistral-large"))
    assert orjson.loads(asked.upstream_body)["model"] == "mistral-large-latest"
    unknown = em.http_req_call(shadow, headers=CLIENT_HEADERS, body=chat(EASY, model="gpt-9"))
    assert unknown.status == 400 and orjson.loads(unknown.body)["error"]["param"] == "model"


def test_the_model_list_is_answered_by_the_runner_in_openai_or_anthropic_format(em):
    out = em.http_req_call(DEFAULT, method="GET", path="/v1/models", headers=CLIENT_HEADERS)
    assert out.status == 200 and out.action == "stop" and out.extra_info == []
    assert out.response_headers["content-type"] == "application/json" and out.response_headers["x-llm-router-request-id"]
    listed = orjson.loads(out.body)
    assert listed["object"] == "list" and listed["data"][0]["id"] == "auto" and len(listed["data"]) == 7
    one = em.http_req_call(DEFAULT, method="GET", path="/v1/models/deepseek-v2", headers=CLIENT_HEADERS)
    assert one.status == 200 and orjson.loads(one.body)["owned_by"] == "deepseek"
    unknown = em.http_req_call(DEFAULT, method="GET", path="/v1/models/gpt-5", headers=CLIENT_HEADERS)
    assert unknown.status == 404 and orjson.loads(unknown.body)["error"]["code"] == "model_not_found"
    anthropic = em.http_req_call(DEFAULT, method="GET", path="/v1/models",
                                 headers=[*CLIENT_HEADERS, ("anthropic-version", "2023-06-01")])
    assert orjson.loads(anthropic.body)["data"][0] == {"type": "model", "id": "auto", "display_name": "auto",
                                                       "created_at": "2023-11-14T22:13:20Z"}


def test_non_llm_calls_pass_but_never_with_the_clients_routing_header(em):
    out = em.http_req_call(DEFAULT, method="GET", path="/v1/files", headers=CLIENT_HEADERS)
    assert out.ok and out.action == "rewrite"
    assert out.reply["headers"] == [("x-llm-router-upstream", None)]
    assert "x-llm-router-upstream" not in out.upstream_headers
    assert out.upstream_headers["authorization"] == "Bearer client-own-key"  # untouched otherwise
    assert out.extra_info == []  # no body fetched


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, "body"),
    (b"", 400, "body"),
    (b"[1, 2]", 400, "body"),
    (orjson.dumps({"model": "auto", "messages": "hello"}), 400, "messages"),
    (orjson.dumps({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}), 400, "messages[0].role"),
    (orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}), 400, "max_tokens"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": NaN}]}', 400, "body"),
])
def test_bad_requests_get_an_openai_error_and_the_next_request_works(em, body, status, param):
    out = em.http_req_call(DEFAULT, body=body)
    assert out.status == status and out.action == "stop", out
    assert out.response_headers["content-type"] == "application/json"
    err = orjson.loads(out.body)["error"]
    assert err["param"] == param and err["message"] and err["type"] == "invalid_request_error"
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_huge_body_is_refused_with_413(em):
    huge = chat("x" * (9 * 1024 * 1024))
    out = em.http_req_call(DEFAULT, body=huge)
    assert out.status == 413 and "exceeds" in orjson.loads(out.body)["error"]["message"]
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_declared_huge_body_is_refused_before_it_crosses_the_socket(em):
    out = em.http_req_call(DEFAULT, headers=[("content-length", str(20 * 1024 * 1024))], body=chat(EASY))
    assert out.status == 413 and out.extra_info == []  # no ReqBody asked: over 16 MiB APISIX could not send it
    assert "exceeds the limit" in orjson.loads(out.body)["error"]["message"]
    small = em.http_req_call(DEFAULT, headers=[("content-length", "1500000")], body=chat(EASY))
    assert small.ok  # under the policy's limit: fetched and routed


def test_bad_route_conf_is_reported_not_ignored(em, runner):
    bogus = RouteConf(conf=(("llm-router", '{"extends": "default", "strategy": "bogus"}'),), conf_id="bogus")
    out = em.http_req_call(bogus, body=chat(EASY))
    assert out.status == 500
    msg = orjson.loads(out.body)["error"]["message"]
    assert "strategy" in msg and "route:bogus" in msg
    wrong_plugin = RouteConf(conf=(("some-other-plugin", "{}"),), conf_id="other")
    out = em.http_req_call(wrong_plugin, body=chat(EASY))
    assert out.status == 500 and "some-other-plugin" in orjson.loads(out.body)["error"]["message"]
    not_json = RouteConf(conf=(("llm-router", "{policy: default"),), conf_id="notjson")
    assert em.http_req_call(not_json, body=chat(EASY)).status == 500
    wait_until(lambda: "route:bogus" in runner.log() and "strategy" in runner.log(), 10, "the bad conf in the runner log")


# ---- connections and tokens -----------------------------------------------------------------

def test_keepalive_reuse_and_nested_prepare_conf(runner):
    em = Emulator(runner.path)
    try:
        first = em.http_req_call(DEFAULT, body=chat(EASY))
        assert first.ok
        # the HTTPReqCall connection was held while PrepareConf ran on a second one
        assert em.connections_opened == 2 and em.prepare_conf_sent == 1
        for _ in range(30):
            assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        assert em.connections_opened == 2 and em.prepare_conf_sent == 1
        assert em.frames_checked >= 1 + 31 * 2
    finally:
        em.close()


def test_apisix_side_token_expiry_sends_prepare_conf_again(runner):
    now = [0.0]
    em = Emulator(runner.path, clock=lambda: now[0], cache_ttl=100)
    try:
        assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        now[0] += 50
        assert em.http_req_call(DEFAULT, body=chat(EASY)).ok and em.prepare_conf_sent == 1
        now[0] += 60  # past APISIX's cache time: the worker asks again
        assert em.http_req_call(DEFAULT, body=chat(EASY)).ok and em.prepare_conf_sent == 2
    finally:
        em.close()


def test_runner_side_expiry_answers_token_not_found_and_apisix_recovers(sockdir):
    path = os.path.join(sockdir, "expiry.sock")
    with RunnerProcess(path, env={"APISIX_CONF_EXPIRE_TIME": "1"}):
        em = Emulator(path)  # APISIX's own cache keeps the token for an hour
        try:
            assert em.http_req_call(DEFAULT, body=chat(EASY)).tries == 1
            # once the runner forgot the token: CONF_TOKEN_NOT_FOUND, flush, PrepareConf, retry
            out = wait_until(lambda: (o := em.http_req_call(DEFAULT, body=chat(EASY))).tries == 2 and o, 20,
                             "the runner to expire the token")
            assert out.ok and em.prepare_conf_sent == 2
        finally:
            em.close()


def test_unknown_token_gets_conf_token_not_found_frame(runner):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(runner.path)
        # a GET's call is read before anything is asked: the error comes at once
        s.sendall(framing.frame(2, build_req_call(1, 12345, method="GET")))
        reply = recv_frame(s)
        assert reply[0] == 0 and decode_reply(2, *reply).fields["message"] == "conf token not found"
        # a POST's body is asked for before its call is read; APISIX answers that first, then gets the error
        s.sendall(framing.frame(2, build_req_call(2, 12345)))
        assert decode_reply(2, *recv_frame(s)).fields == {"info": "req_body"}
        s.sendall(framing.frame(3, build_extra_info_resp(b'{"model": "auto"}')))
        reply = recv_frame(s)
        assert reply[0] == 0 and decode_reply(2, *reply).fields["message"] == "conf token not found"


def test_runner_restart_in_the_middle_of_traffic(sockdir):
    path = os.path.join(sockdir, "restart.sock")
    first = RunnerProcess(path).start()
    em = Emulator(path)
    try:
        for _ in range(5):
            assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        assert em.pooled >= 1
        first.stop(signal.SIGKILL)
        down = em.http_req_call(DEFAULT, body=chat(EASY))
        assert down.status == 503 and "failed to connect" in down.error
        with RunnerProcess(path):
            out = em.http_req_call(DEFAULT, body=chat(EASY))
            # the old token is unknown to the new runner: APISIX re-sends PrepareConf and retries
            assert out.ok and out.tries == 2, out
            for _ in range(5):
                assert em.http_req_call(DEFAULT, body=chat(EASY)).tries == 1
    finally:
        em.close()
        first.stop()


def test_sigterm_shuts_down_cleanly(sockdir):
    path = os.path.join(sockdir, "term.sock")
    proc = RunnerProcess(path).start()
    em = Emulator(path)
    try:
        assert em.http_req_call(DEFAULT, body=chat(EASY)).ok  # leaves kept-alive connections open
        assert proc.stop(signal.SIGTERM) == 0
        assert not os.path.exists(path)
        assert "stopped" in proc.log()
    finally:
        em.close()
        proc.stop()


def test_socket_has_its_final_mode_from_the_first_instant(sockdir):
    path = os.path.join(sockdir, "mode.sock")
    proc = RunnerProcess(path)
    proc_start = threading.Thread(target=proc.start)
    proc_start.start()
    try:
        first_seen = wait_until(lambda: os.stat(path), 60, "the socket file")
        assert stat.S_ISSOCK(first_seen.st_mode)
        assert stat.S_IMODE(first_seen.st_mode) == 0o766  # group/others may connect (nginx workers run as nobody)
    finally:
        proc_start.join()
        proc.stop()


def test_two_processes_share_tokens(sockdir):
    path = os.path.join(sockdir, "workers.sock")
    shared = SharedDict()
    with RunnerProcess(path, workers=2):
        em = Emulator(path, shared=shared)
        first = em.http_req_call(EXPLAIN, body=chat(EASY))
        assert first.ok
        origin = first.response_headers["x-llm-router-request-id"].split("-")[0]
        other = None
        for _ in range(300):  # new connections until one lands on the process that did not see PrepareConf
            fresh = Emulator(path, shared=shared)
            try:
                out = fresh.http_req_call(EXPLAIN, body=chat(EASY))
                assert out.ok and fresh.prepare_conf_sent == 0, out
                prefix = out.response_headers["x-llm-router-request-id"].split("-")[0]
                if prefix != origin:
                    other = prefix
                    break
            finally:
                fresh.close()
        em.close()
        assert other is not None, "every connection went to one process"


def test_many_concurrent_connections(runner):
    shared = SharedDict()
    failures: list = []

    def worker(wid: int) -> None:
        em = Emulator(runner.path, worker_id=wid, shared=shared)
        try:
            for i in range(25):
                out = em.http_req_call(DEFAULT, body=chat(EASY if i % 2 else HARD))
                if not out.ok:
                    failures.append(out)
        except Exception as exc:  # reported below
            failures.append(exc)
        finally:
            em.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]


# ---- broken input on the wire ---------------------------------------------------------------

def _prepare(s: socket.socket, route: RouteConf = DEFAULT) -> int:
    s.sendall(framing.frame(1, build_prepare_conf(route.conf, route.key)))
    ty, payload = recv_frame(s)
    return decode_reply(1, ty, payload).fields["token"]


def _quiet(s: socket.socket, wait: float = 0.05) -> bool:
    readable, _, _ = select.select([s], [], [], wait)
    return not readable


def test_frames_split_across_reads(runner):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(runner.path)
        token = _prepare(s)
        req = framing.frame(2, build_req_call(77, token, headers=[("authorization", "Bearer c")]))
        head, last = req[:-1], req[-1:]
        for i in range(0, len(head), 7):
            s.sendall(head[i:i + 7])
            assert _quiet(s), "the runner answered a partial frame"
        s.sendall(last)
        ty, payload = recv_frame(s)
        assert decode_reply(2, ty, payload).fields == {"info": "req_body"}
        body = framing.frame(3, build_extra_info_resp(chat(EASY)))
        s.sendall(body[:3])
        assert _quiet(s)
        s.sendall(body[3:10])
        assert _quiet(s)
        s.sendall(body[10:])
        reply = decode_reply(2, *recv_frame(s)).fields
        assert reply["id"] == 77 and reply["action"] == "rewrite"


def test_truncated_frame_then_close_leaves_the_runner_serving(runner, em):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(runner.path)
        s.sendall(bytes((2, 0, 3, 232)) + b"0123456789")  # claims 1000 bytes, sends 10, hangs up
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_garbage_unknown_types_and_empty_payloads_get_bad_request(runner, em):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(runner.path)
        for frame in (raw_frame(9, b"whatever"), raw_frame(2, b""), raw_frame(1, b"\xff" * 40), raw_frame(4, b"\x00" * 3)):
            s.sendall(frame)
            ty, payload = recv_frame(s)
            assert ty == 0 and decode_reply(2, ty, payload).fields["message"] == "bad request"
        assert _prepare(s) > 0  # the same connection still works
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_oversized_frame_at_the_24_bit_limit(runner, em):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(runner.path)
        s.sendall(raw_frame(2, b"\x07" * framing.MAX_PAYLOAD))
        ty, payload = recv_frame(s)
        assert ty == 0 and decode_reply(2, ty, payload).fields["code"] == encode.BAD_REQUEST
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_protocol_violation_closes_only_that_connection(runner, em):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(runner.path)
        token = _prepare(s)
        s.sendall(framing.frame(2, build_req_call(1, token)))
        assert recv_frame(s)[0] == 3
        s.sendall(framing.frame(2, build_req_call(2, token)))  # a new call instead of the body
        with pytest.raises(ConnectionError):
            recv_frame(s)
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok


def test_body_absent_is_a_clear_400(em):
    out = em.http_req_call(DEFAULT, body=None)
    assert out.status == 400 and "empty" in orjson.loads(out.body)["error"]["message"]


# ---- responses: usage accounting without breaking streams -------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.decisions: list[Exchange] = []
        self.responses: list[tuple] = []

    def on_decision(self, ex):
        self.decisions.append(ex)

    def on_response(self, ex, status, usage, latency_s, headers=None):
        self.responses.append((ex, status, usage, latency_s, headers))


@pytest.fixture
def inproc(apisix_runner_thread):
    rec = Recorder()
    # no runner-side fallback here: these providers are the real (unreachable) ones; test_apisix_fallback covers it
    thread = apisix_runner_thread(observer=rec, telemetry=True, apisix_fallback=False)
    em = Emulator(thread.path)
    yield em, thread.runner, rec
    em.close()


def _post(route: RouteConf) -> RouteConf:
    return RouteConf(conf=route.conf, conf_id=route.conf_id, plugin="ext-plugin-post-resp")


def test_json_answer_usage_is_accounted(inproc):
    em, runner, rec = inproc
    post = _post(DEFAULT)
    pre = em.http_req_call(DEFAULT, body=chat(EASY))
    first = em.http_resp_call(post, headers=[("content-type", "application/json")],
                              variables={REQUEST_ID_VAR: pre.upstream_headers["x-llm-router-request-id"]})
    # post-resp was not known before this request: the route's first requests are remembered anyway
    assert first.ok and runner.stats.unmatched_responses == 0
    pre = em.http_req_call(DEFAULT, body=chat(EASY))
    rid = pre.upstream_headers["x-llm-router-request-id"]
    answer = orjson.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 34}})
    out = em.http_resp_call(post, status=200, body=answer, variables={REQUEST_ID_VAR: rid},
                            headers=[("Content-Type", "application/json"), ("Content-Length", str(len(answer))),
                                     ("Connection", "keep-alive"), ("x-ratelimit-remaining-requests", "99")])
    assert out.ok and [i["info"] for i in out.extra_info] == ["var", "resp_body"]
    assert out.body == answer  # the buffered answer still reaches the client
    assert out.response_headers["content-type"] == "application/json"
    assert "connection" not in out.response_headers
    ex, status, usage, latency, headers = rec.responses[-1]
    assert ex.request_id == rid and status == 200 and usage == Usage(12, 34) and latency >= 0
    assert ex.decision is not None and ex.decision.model.id == "deepseek-v2" and ex.call.model.id == "deepseek-v2"
    assert ("x-ratelimit-remaining-requests", "99") in headers
    assert rid not in runner.exchanges


def test_gzip_answer_usage_is_accounted(inproc):
    import gzip

    em, runner, rec = inproc
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])
    rid = em.http_req_call(DEFAULT, body=chat(EASY)).upstream_headers["x-llm-router-request-id"]
    answer = gzip.compress(orjson.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 6}}))
    out = em.http_resp_call(post, body=answer, variables={REQUEST_ID_VAR: rid}, headers=[
        ("content-type", "application/json"), ("content-encoding", "gzip"), ("content-length", str(len(answer)))])
    assert out.body == answer and out.response_headers["content-encoding"] == "gzip"
    assert rec.responses[-1][2] == Usage(5, 6)


def test_a_client_accepting_brotli_is_asked_for_gzip_where_the_answer_is_read(inproc):
    em, runner, rec = inproc
    from llm_router.gateways.apisix.runner import PROBE_REQUESTS

    sent = [("Accept-Encoding", "br, gzip, deflate")]
    probes = [em.http_req_call(DEFAULT, body=chat(EASY), headers=sent) for _ in range(PROBE_REQUESTS + 1)]
    # the first requests are kept in case the route has a post-resp call; after them nothing reads the answers
    assert probes[0].upstream_headers["accept-encoding"] == "gzip, deflate"
    assert probes[-1].upstream_headers["accept-encoding"] == "br, gzip, deflate"
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])  # the route now reads its answers
    after = em.http_req_call(DEFAULT, body=chat(EASY), headers=sent)
    assert after.upstream_headers["accept-encoding"] == "gzip, deflate"
    plain = em.http_req_call(DEFAULT, body=chat(EASY), headers=[("accept-encoding", "gzip")])
    assert plain.upstream_headers["accept-encoding"] == "gzip"


def test_streamed_answer_is_never_buffered_and_keeps_its_content_type(inproc):
    em, runner, rec = inproc
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "text/event-stream")])  # route now known to use post-resp
    pre = em.http_req_call(DEFAULT, body=chat(EASY, stream=True))
    rid = pre.upstream_headers["x-llm-router-request-id"]
    stream = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    out = em.http_resp_call(post, body=stream, variables={REQUEST_ID_VAR: rid},
                            headers=[("content-type", "text/event-stream; charset=utf-8"), ("transfer-encoding", "chunked")])
    assert [i["info"] for i in out.extra_info] == ["var"]  # RespBody never requested on SSE
    assert out.response_headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "transfer-encoding" not in out.response_headers
    assert out.body == stream and out.reply["body"] is None
    ex, status, usage, _, _ = rec.responses[-1]
    assert ex.request_id == rid and status == 200 and usage is None


def test_unknown_length_json_is_not_buffered(inproc):
    em, runner, rec = inproc
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])
    rid = em.http_req_call(DEFAULT, body=chat(EASY)).upstream_headers["x-llm-router-request-id"]
    out = em.http_resp_call(post, status=502, variables={REQUEST_ID_VAR: rid},
                            headers=[("content-type", "application/json"), ("transfer-encoding", "chunked")])
    assert [i["info"] for i in out.extra_info] == ["var"]
    assert rec.responses[-1][1] == 502


def test_exchanges_waiting_for_responses_are_bounded(inproc):
    em, runner, rec = inproc
    from llm_router.gateways.apisix import runner as runner_mod

    em.http_resp_call(_post(DEFAULT), headers=[("content-type", "application/json")])
    limit = runner_mod.MAX_EXCHANGES
    runner_mod.MAX_EXCHANGES = 5
    try:
        for _ in range(12):
            assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        assert len(runner.exchanges) == 5
        assert all(ex.call.body == b"" and ex.call.model and ex.request.body == {} for ex in runner.exchanges.values())
    finally:
        runner_mod.MAX_EXCHANGES = limit


def test_socket_path_from_apisix_environment():
    from llm_router.gateways.apisix.server import socket_path

    assert socket_path(None, {"APISIX_LISTEN_ADDRESS": "unix:/usr/local/apisix/conf/apisix-1.sock"}) == \
        "/usr/local/apisix/conf/apisix-1.sock"
    assert socket_path("/tmp/x.sock", {"APISIX_LISTEN_ADDRESS": "unix:/other"}) == "/tmp/x.sock"
    with pytest.raises(ValueError, match="APISIX_LISTEN_ADDRESS"):
        socket_path(None, {})


def test_stale_socket_file_is_replaced(sockdir):
    path = os.path.join(sockdir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # leaves the file behind, as a killed runner does
    with RunnerProcess(path):
        em = Emulator(path)
        try:
            assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        finally:
            em.close()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def test_workers_are_respawned_and_all_stop_on_sigterm(sockdir):
    path = os.path.join(sockdir, "respawn.sock")
    proc = RunnerProcess(path, workers=2).start()
    try:
        # two workers and the process holding their memory state (started first)
        first = wait_until(lambda: len(c := _children(proc.proc.pid)) == 3 and c, 30, "two workers and the state")
        for victim in (first[-1], first[0]):  # a worker dies, then the state process: the supervisor starts another
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(c := _children(proc.proc.pid)) == 3 and victim not in c, 30, "a respawned process")
        em = Emulator(path)
        try:
            for _ in range(10):
                assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
        finally:
            em.close()
        workers = _children(proc.proc.pid)
        assert proc.stop(signal.SIGTERM) == 0
        assert not os.path.exists(path)
        for pid in workers:
            assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    finally:
        proc.stop()


@pytest.fixture
def live(monkeypatch):
    """A runner over the built-in config with telemetry on (metrics, health, spend limits), and an emulator on its socket."""
    for k, v in FAKE_KEYS.items():
        monkeypatch.setenv(k, v)
    d = socket_dir()
    runtime = Runtime(load_config(None))
    thread = RunnerThread(os.path.join(d, "live.sock"), Runner(runtime, TokenStore(ttl=100))).start()
    em = Emulator(thread.path)
    try:
        yield runtime, em
    finally:
        em.close()
        thread.stop()
        remove_dir(d)


def test_post_resp_feeds_the_real_telemetry(live):
    runtime, em = live
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])
    rid = em.http_req_call(DEFAULT, body=chat(EASY)).upstream_headers["x-llm-router-request-id"]
    answer = orjson.dumps({"usage": {"prompt_tokens": 1000, "completion_tokens": 2000}})
    out = em.http_resp_call(post, body=answer, variables={REQUEST_ID_VAR: rid},
                            headers=[("content-type", "application/json"), ("content-length", str(len(answer)))])
    assert out.ok
    text = runtime.metrics.exposition().decode()
    cost = [line for line in text.splitlines() if line.startswith("llm_router_cost_usd_total{")]
    assert cost and 'model="deepseek-v2"' in cost[0] and 'route="route:1"' in cost[0]
    priced = runtime.catalog.models["deepseek-v2"]  # $0.15/$0.60, or twice that in DeepSeek's peak hours
    assert (priced.input_price, priced.output_price) in ((0.15, 0.6), (0.3, 1.2))
    assert float(cost[0].rsplit(" ", 1)[1]) == pytest.approx((1000 * priced.input_price + 2000 * priced.output_price) / 1e6)
    assert 'llm_router_tokens_total{direction="output",model="deepseek-v2"} 2000.0' in text


def test_post_resp_teaches_the_router_who_wrote_a_thinking_block(live):
    """An Anthropic-format JSON answer read at post-resp: its thinking signatures are kept with the model that answered."""
    runtime, em = live
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])
    body = orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8192, "thinking": {"type": "enabled", "budget_tokens": 2048},
                         "messages": [{"role": "user", "content": EASY}]})
    call = em.http_req_call(DEFAULT, path="/v1/messages", headers=CLIENT_HEADERS, body=body)
    assert call.upstream_headers["x-llm-router-upstream"] == "deepseek"
    answer = orjson.dumps({"type": "message", "model": "deepseek-flash", "content": [
        {"type": "thinking", "thinking": "Greet back.", "signature": "c2lnLWRlZXBzZWVr"}, {"type": "text", "text": "Hi!"}],
        "usage": {"input_tokens": 12, "output_tokens": 9}})
    assert runtime.router.thinking_origin("c2lnLWRlZXBzZWVr") is None
    out = em.http_resp_call(post, body=answer, variables={REQUEST_ID_VAR: call.upstream_headers["x-llm-router-request-id"]},
                            headers=[("content-type", "application/json"), ("content-length", str(len(answer)))])
    assert out.ok
    assert runtime.router.thinking_origin("c2lnLWRlZXBzZWVr") == "deepseek-v2"


def test_post_resp_keeps_the_reasoning_a_deepseek_answer_held(live):
    """A chat JSON answer with reasoning_content read at post-resp: kept for the client that sends the answer back without it."""
    from llm_router.message_rules import message_key

    runtime, em = live
    post = _post(DEFAULT)
    em.http_resp_call(post, headers=[("content-type", "application/json")])
    rid = em.http_req_call(DEFAULT, body=chat(EASY)).upstream_headers["x-llm-router-request-id"]
    message = {"role": "assistant", "content": "Hello!", "reasoning_content": "A greeting: greet back."}
    answer = orjson.dumps({"object": "chat.completion", "model": "deepseek-flash", "choices": [{"index": 0, "message": message}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 9}})
    assert runtime.router.recall_reasoning(message_key(message)) is None
    out = em.http_resp_call(post, body=answer, variables={REQUEST_ID_VAR: rid},
                            headers=[("content-type", "application/json"), ("content-length", str(len(answer)))])
    assert out.ok
    assert runtime.router.recall_reasoning(message_key(message)) == "A greeting: greet back."


def test_the_runners_protocol_counters_are_scraped_with_the_metrics(live):
    runtime, em = live
    assert em.http_req_call(DEFAULT, body=chat(EASY)).ok
    assert em.http_req_call(DEFAULT, body=b"{not json").status == 400
    em.close()
    with socket.socket(socket.AF_UNIX) as s:  # a frame of an unknown RPC type
        s.settimeout(10)
        s.connect(em.path)
        s.sendall(framing.frame(9, b"\x00" * 8))
        recv_frame(s)
    totals = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in runtime.metrics.exposition().decode().splitlines()
              if line.startswith("llm_router_apisix_runner_events_total{")}
    assert totals["req_calls"] == 2 and totals["rewrites"] == 1 and totals["stops"] == 1
    assert totals["bad_frames"] == 1 and totals["internal_errors"] == 0
    assert totals["answer_polls"] >= totals["answer_polls_caught"] >= 0


def test_request_id_and_json_answer_are_asked_for_at_once(inproc):
    em, runner, rec = inproc
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(em.path)
        s.sendall(framing.frame(1, build_prepare_conf([("llm-router", "{}")], "route#9#ext-plugin-post-resp#1")))
        token = decode_reply(1, *recv_frame(s)).fields["token"]
        answer = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
        json_headers = [("content-type", "application/json"), ("content-length", str(len(answer)))]
        s.sendall(framing.frame(4, build_resp_call(7, token, 200, json_headers)))
        # both requests arrive before APISIX has answered either: APISIX's loop answers them in turn
        first, second = recv_frame(s), recv_frame(s)
        assert decode_reply(4, *first).fields == {"info": "var", "name": REQUEST_ID_VAR}
        assert decode_reply(4, *second).fields == {"info": "resp_body"}
        s.sendall(framing.frame(3, build_extra_info_resp(b"not-a-request-of-ours")))
        s.sendall(framing.frame(3, build_extra_info_resp(answer)))
        reply = decode_reply(4, *recv_frame(s))
        assert reply.rpc_type == 4 and reply.fields["body"] is None  # the answer goes through as it came
        assert runner.stats.unmatched_responses == 1
        # a failed answer is not read unless the request turns out to be ours: only the id is asked for
        s.sendall(framing.frame(4, build_resp_call(8, token, 503, json_headers)))
        assert decode_reply(4, *recv_frame(s)).fields == {"info": "var", "name": REQUEST_ID_VAR}
        s.sendall(framing.frame(3, build_extra_info_resp(b"not-ours-either")))
        assert decode_reply(4, *recv_frame(s)).rpc_type == 4
        # so is a stream
        s.sendall(framing.frame(4, build_resp_call(9, token, 200, [("content-type", "text/event-stream")])))
        assert decode_reply(4, *recv_frame(s)).fields == {"info": "var", "name": REQUEST_ID_VAR}
        s.sendall(framing.frame(3, build_extra_info_resp(None)))
        assert decode_reply(4, *recv_frame(s)).rpc_type == 4
        # no request id at all: a call the runner let through unrouted, not one it lost
        assert runner.stats.unmatched_responses == 2 and runner.stats.unrouted_responses == 1
