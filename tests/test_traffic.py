"""Training on your own traffic: decision log + feedback -> learned router, exploration, doubly robust operating points."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
from llm_router.accounting import Usage
from llm_router.cli import main as cli_main
from llm_router.config import parse_config
from llm_router.credentials import Credentials
from llm_router.datasets import DatasetError, chat_body, load
from llm_router.learn import operating
from llm_router.learn.fit import MIN_ROWS_PER_MODEL, fit_partial
from llm_router.learn.traffic import load_traffic, partial, simulate
from llm_router.router import Router, build_catalog
from llm_router.runtime import Exchange, Refusal, Runtime

FIX = Path(__file__).parent / "fixtures" / "learned"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in records))
    return path


def _line(rid: str, model: str, prompt: str | None = "a prompt", status: int = 200, **extra) -> dict:
    rec = {"request_id": rid, "route": "chat", "status": status, "model": model, "decided_model": extra.pop("decided", model),
           "cost_usd": 0.001, **extra}
    if prompt is not None:
        rec["prompt"] = prompt
    return rec


def test_log_and_feedback_join_by_request_id(tmp_path):
    log = _write(tmp_path / "decisions.jsonl", [
        # Lines without a routing decision, as the runtime writes them: a refusal (first, so the file's
        # kind is told from it) and a forwarded embeddings call.
        {"ts": 1.0, "request_id": "r0", "route": "chat", "status": 400, "latency_ms": 0.0, "cost_usd": 0.0, "error": "bad JSON"},
        {"ts": 1.0, "request_id": "f1", "route": "/v1/embeddings", "status": 200, "latency_ms": 3.0, "forward": "embeddings",
         "model": "openai/text-embedding-3-small", "input_tokens": 8, "output_tokens": 0, "cost_usd": 1.6e-07},
        _line("r1", "cheap", "What is 2+2?", propensity=0.4),
        _line("r2", "dear", "Prove Fermat's little theorem.", propensity=0.8),
        _line("r3", "cheap", None),  # log_prompts was off
        _line("r4", "cheap", "upstream failed", status=502),
        _line("r5", "dear", "served after a fallback", decided="cheap"),
        _line("r6", "cheap", "nobody rated this"),
        _line("r7", "cheap", "a cascade: first answer"), _line("r7", "dear", "a cascade: escalated", decided="cheap"),
    ])
    fb = _write(tmp_path / "feedback.jsonl", [
        {"request_id": "r1", "score": 1.0}, {"request_id": "r1", "score": 0.5},  # two ratings: their mean
        {"request_id": "r2", "good": False}, {"request_id": "r3", "score": 1}, {"request_id": "ghost", "good": True},
        {"request_id": "r7", "score": 1.0},  # rates the answer returned, which the log cannot tell
    ])
    ds = load([log, fb])  # both detected from their content
    assert ds.format == "traffic" and partial(ds)
    assert ds.ids == ["r1", "r2"] and ds.models == ("cheap", "dear")
    assert ds.scores[0, 0] == 0.75 and np.isnan(ds.scores[0, 1])
    assert ds.scores[1, 1] == 0.0 and np.isnan(ds.scores[1, 0])
    assert ds.propensity.tolist() == [0.4, 0.8]
    assert ds.skipped == {"log lines without a routing decision (refusals, forwarded calls)": 2,
                          "log lines without a prompt (log_prompts off)": 1, "log lines without a 2xx answer": 1,
                          "answered by a fallback model": 1, "answered by several models (cascade, hedge)": 1,
                          "answered requests without feedback": 1,
                          "feedback without an answered request": 3}  # r3 (no prompt), ghost and r7
    assert load([tmp_path]).ids == ["r1", "r2"]  # a folder holding both files works too


@pytest.mark.parametrize("records, message", [
    ([{"request_id": "r1", "score": 1.5}], r"feedback.jsonl:1: 'score' must be a number from 0 to 1, got 1.5"),
    ([{"request_id": "r1", "good": "yes"}], r"feedback.jsonl:1: 'good' must be true or false"),
    ([{"request_id": "r1", "score": True}], r"'score' must be a number"),
])
def test_bad_feedback_lines_are_named(tmp_path, records, message):
    log = _write(tmp_path / "decisions.jsonl", [_line("r1", "cheap")])
    fb = _write(tmp_path / "feedback.jsonl", records)
    with pytest.raises(DatasetError, match=message):
        load([log, fb])


def test_bad_logs_and_missing_halves_are_named(tmp_path):
    log = _write(tmp_path / "decisions.jsonl", [_line("r1", "cheap")])
    fb = _write(tmp_path / "feedback.jsonl", [{"request_id": "r1", "score": 1}])
    with pytest.raises(DatasetError, match="without feedback"):
        load([log])
    with pytest.raises(DatasetError, match="without the decision log"):
        load([fb])
    with pytest.raises(DatasetError, match="cannot be combined with routerbench"):
        load([log, fb, FIX / "routerbench_small.csv"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(orjson.dumps(_line("r1", "cheap")).decode() + "\n{oops\n")
    with pytest.raises(DatasetError, match=r"broken.jsonl:2: not valid JSON"):
        load_traffic([broken], [fb])
    _write(tmp_path / "badprop.jsonl", [_line("r1", "cheap", propensity=0)])
    with pytest.raises(DatasetError, match=r"badprop.jsonl:1: 'propensity' must be a number in \(0, 1\]"):
        load_traffic([tmp_path / "badprop.jsonl"], [fb])
    unrated = _write(tmp_path / "other.jsonl", [{"request_id": "zzz", "score": 1}])
    with pytest.raises(DatasetError, match="no answered request .* has both a logged prompt and feedback"):
        load_traffic([log], [unrated])


def test_fit_partial_and_doubly_robust_quality_track_the_truth():
    """One observed outcome per row: cross-fitted predictions + DR estimate the quality of a routing rule."""
    rng = np.random.default_rng(3)
    n = 6000
    x = rng.normal(size=(n, 6))
    truth = np.stack([1 / (1 + np.exp(-2.5 * x[:, 0])), np.full(n, 0.9)], 1)  # cheap: depends on x0; dear: flat 0.9
    outcomes = (rng.random((n, 2)) < truth).astype(float)
    served = (rng.random(n) < 0.3).astype(int)  # 30% to the dear model, independently of the prompt
    y = np.full((n, 2), np.nan)
    y[np.arange(n), served] = outcomes[np.arange(n), served]
    _, probs, info = fit_partial(x, y, np.arange(n) * 7919)
    assert [i["rows"] for i in info] == [int((served == 0).sum()), int((served == 1).sum())]
    # The cheap model's prediction follows x0 on every row, observed or not.
    assert np.corrcoef(probs[:, 0], truth[:, 0])[0, 1] > 0.9
    prop = np.where(served == 1, 0.3, 0.7)
    for t in (0.0, 0.3, 1.0):
        choice = operating.choose(probs, np.array([1.0, 20.0]), t)
        est, se = operating.logged_quality(probs, choice, served, outcomes[np.arange(n), served], prop)
        true_q = truth[np.arange(n), choice].mean()
        assert abs(est - true_q) < max(4 * se, 0.02), (t, est, true_q, se)


def _config(explore: float, log: Path | None = None, learned: str | None = None, params: dict | None = None) -> dict:
    prov = {"p": {"base_url": "http://127.0.0.1:9", "auth": "none", "paths": {"chat": "/v1/chat/completions"}}}
    models = {
        "tiny-7b": {"provider": "p", "input_price": 0.1, "output_price": 0.1, "context_window": 100000, "tier": "LOW"},
        "mid-34b": {"provider": "p", "input_price": 1.0, "output_price": 1.0, "context_window": 100000, "tier": "MEDIUM"},
        "big-pro": {"provider": "p", "input_price": 10.0, "output_price": 10.0, "context_window": 100000, "tier": "CRITICAL"},
    }
    policy: dict = {"classifier": "rules", "strategy": "ladder", "explore": explore,
                    "ladder": {"LOW": "big-pro", "MEDIUM": "big-pro", "HIGH": "big-pro", "CRITICAL": "big-pro"}}
    out: dict = {"providers": prov, "models": models, "seed": 11, "policies": {"default": policy}}
    if learned:
        out["classifiers"] = {"learned": {"model": learned}}
        out["policies"]["default"] = {"classifier": "learned", "strategy": "quality_gate", "params": params or {}}
    if log:
        out["metrics"] = {"listen": "127.0.0.1:0", "decision_log": str(log), "log_prompts": True, "redact_pii": False}
    return out


def test_explore_sends_a_share_at_random_and_logs_its_propensity():
    router = Router(parse_config(_config(0.3), with_defaults=False))
    body = chat_body("Summarise this paragraph in one line.")
    decisions = [router.route(body)[1] for _ in range(3000)]
    explored = [d for d in decisions if d.strategy == "explore"]
    assert 0.26 < len(explored) / len(decisions) < 0.34
    assert {d.model.id for d in explored} == {"tiny-7b", "mid-34b", "big-pro"}
    assert all(d.reason.endswith("(0.3 of requests explore)") for d in explored)
    # P(model) = 0.3/3 for a drawn model, plus 0.7 for the ladder's pick (big-pro).
    by_model = {d.model.id: d.propensity for d in decisions}
    assert by_model["tiny-7b"] == pytest.approx(0.1) and by_model["big-pro"] == pytest.approx(0.8)
    again = Router(parse_config(_config(0.3), with_defaults=False))
    assert [again.route(body)[1].model.id for _ in range(200)] == [d.model.id for d in decisions[:200]]  # seeded
    plain = Router(parse_config(_config(0.0), with_defaults=False)).route(body)[1]
    assert plain.propensity is None and plain.strategy == "ladder"
    pinned = Router(parse_config({**_config(1.0), "policies": {"default": {**_config(1.0)["policies"]["default"],
                                                                             "client_model": "honor"}}}, with_defaults=False))
    asked = [pinned.route(orjson.dumps({"model": "mid-34b", "messages": [{"role": "user", "content": "hi"}]}))[1] for _ in range(50)]
    assert {d.model.id for d in asked} == {"mid-34b"} and all(d.propensity is None for d in asked)


def test_explore_must_be_a_share():
    from llm_router.config import ConfigError

    with pytest.raises(ConfigError, match="explore"):
        parse_config(_config(1.5), with_defaults=False)


def _fixture_rows() -> list[tuple[str, dict[str, float]]]:
    ds = load([FIX / "routerbench_small.csv"])
    return [(p, dict(zip(ds.models, s.tolist()))) for p, s in zip(ds.prompts, ds.scores)]


def test_from_logged_traffic_to_a_trained_router(tmp_path, capsys):
    """Runtime with explore on writes the log; feedback by request id; `llm-router train` on both; route with it."""
    log = tmp_path / "decisions.jsonl"
    rows = _fixture_rows()
    cfg = parse_config(_config(1.0, log), with_defaults=False)
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []))
    feedback = []

    async def serve():
        await rt.start()
        try:
            for i in range(6 * len(rows)):
                prompt, scores = rows[i % len(rows)]
                ex = Exchange(request_id=rt.new_request_id(), route="chat", started=0.0)
                out = rt.decide(chat_body(prompt), path="/v1/chat/completions", ex=ex, headers=None)
                assert not isinstance(out, Refusal)
                rt.on_response(ex, 200, Usage(50, 20), 0.2, None)
                feedback.append({"request_id": ex.request_id, "score": scores[ex.decision.model.id]})
        finally:
            await rt.stop()

    asyncio.run(serve())
    fb = _write(tmp_path / "feedback.jsonl", feedback)
    out = tmp_path / "router.npz"
    assert cli_main(["train", "--data", str(log), str(fb), "--out", str(out), "--features", "hashing"]) == 0
    printed = capsys.readouterr().out
    n = 6 * len(rows)
    assert f"traffic: {n} prompts x 3 models" in printed and f"{n} of {n} lines carry one" in printed
    from llm_router.learn.model import QualityModel

    model = QualityModel.load(out)
    assert set(model.models) == {"tiny-7b", "mid-34b", "big-pro"}
    assert all(n >= MIN_ROWS_PER_MODEL for n in model.meta["rows_per_model"].values())
    assert set(model.meta["operating_points"]) == {"0.95", "1.00"}
    router = Router(parse_config(_config(0.0, learned=str(out), params={"min_quality": 0.8}), with_defaults=False))
    easy = router.route(chat_body("Translate 'good morning' for Peru #91."))[1]
    hard = router.route(chat_body("Prove that the sum of the first n odd numbers is a square, then apply it to Dan #8."))[1]
    p_easy, p_hard = dict(easy.classification.quality), dict(hard.classification.quality)
    assert p_easy["tiny-7b"] > 0.8 and p_hard["tiny-7b"] < 0.2  # tiny answered those well in the logs, and failed these
    assert easy.model.id == "tiny-7b"
    assert hard.model.id != "tiny-7b"


def test_models_with_few_logged_answers_are_not_routed_to(tmp_path, capsys):
    rows = _fixture_rows()
    recs, fb = [], []
    for i in range(4 * len(rows)):
        prompt, scores = rows[i % len(rows)]
        model = "tiny-7b" if i % 20 == 0 else "big-pro"  # tiny: 18 answers only
        recs.append(_line(f"r{i}", model, prompt))
        fb.append({"request_id": f"r{i}", "score": scores[model]})
    log, fbp = _write(tmp_path / "d.jsonl", recs), _write(tmp_path / "f.jsonl", fb)
    out = tmp_path / "m.npz"
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--features", "hashing"]) == 0
    assert "not routed to (fewer than 100 answered requests with feedback; keep exploring): tiny-7b" in capsys.readouterr().out
    from llm_router.learn.model import QualityModel

    assert QualityModel.load(out).models == ("big-pro",)
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--features", "hashing", "--min-answers", "10"]) == 0
    assert set(QualityModel.load(out).models) == {"big-pro", "tiny-7b"}  # a smaller bar, for small deployments
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--min-answers", "0"]) == 2
    assert "--min-answers must be at least 1" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--caution", "-1"]) == 2
    assert "--caution must be from 0 to 10" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--clusters", "-3"]) == 2
    assert "--clusters must be from 0 (none) to 10000" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--cluster-seed", "-1"]) == 2
    assert "--cluster-seed must be 0 or more" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(log), str(fbp), "--out", str(out), "--features", "hashing", "--min-answers", "10",
                     "--clusters", "3"]) == 0
    assert "topic clusters: 3\n" in capsys.readouterr().out and QualityModel.load(out).clusters.k == 3
    few = _write(tmp_path / "few.jsonl", recs[:50])
    assert cli_main(["train", "--data", str(few), str(fbp), "--out", str(out), "--features", "hashing"]) == 2
    assert "no model answered 100 or more logged requests" in capsys.readouterr().err


def test_eval_refuses_logs_and_names_why(tmp_path, capsys):
    log = _write(tmp_path / "decisions.jsonl", [_line("r1", "cheap")])
    fb = _write(tmp_path / "feedback.jsonl", [{"request_id": "r1", "score": 1}])
    assert cli_main(["eval", "--data", str(log), str(fb)]) == 2
    assert "holds only the answering model's outcome per prompt" in capsys.readouterr().err


def test_simulated_logs_match_the_data_set(tmp_path):
    ds = load([FIX / "routerbench_small.csv"])
    summary = simulate(ds, tmp_path, explore=0.5, seed=2, holdout_fold=1)
    logged = load_traffic([tmp_path / "decisions.jsonl"], [tmp_path / "feedback.jsonl"])
    assert summary["logged"] == len(logged) and 0 < len(logged) < len(ds)
    index = {p: i for i, p in enumerate(ds.prompts)}
    for i, prompt in enumerate(logged.prompts):
        j = int(np.nonzero(~np.isnan(logged.scores[i]))[0][0])
        src = index[prompt]
        assert logged.scores[i, j] == ds.scores[src, ds.models.index(logged.models[j])]
        expected = 0.5 / 3 + 0.5 * (logged.models[j] == summary["best_single"])
        assert logged.propensity[i] == pytest.approx(expected, abs=1e-6)


@pytest.mark.skipif(not (SHARED / "routellm" / "mmlu").is_dir(), reason="needs ../shared/data/routellm/mmlu beside the repo")
def test_mmlu_router_learned_from_logs_reaches_the_target_on_held_out_prompts(tmp_path):
    """20% exploration, the rest to GPT-4: the router trained on those logs keeps >= 95% quality on unseen prompts."""
    from llm_router.learn.traffic import learning_curve

    ds = load([SHARED / "routellm" / "mmlu"])
    result = learning_curve(ds, [0.2], work=tmp_path)
    run = result["runs"]["0.2"]["0.95"]
    assert run["reached"] and run["relative_quality"] >= 0.95
    assert run["saving_vs_best"] > 0.15


def test_feedback_endpoint_collects_lines_that_train_reads(tmp_path):
    """POST /v1/feedback beside /metrics: validated, appended to metrics.feedback_log, counted, readable by train."""
    import httpx

    log, fb_path = tmp_path / "decisions.jsonl", tmp_path / "feedback.jsonl"
    data = _config(1.0, log)
    data["metrics"]["feedback_log"] = str(fb_path)
    cfg = parse_config(data, with_defaults=False)
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []))

    async def go():
        await rt.start()
        try:
            ids = []
            for prompt in ("What is the capital of Peru?", "Prove that sqrt(2) is irrational."):
                ex = Exchange(request_id=rt.new_request_id(), route="chat", started=0.0)
                rt.decide(chat_body(prompt), path="/v1/chat/completions", ex=ex, headers=None)
                rt.on_response(ex, 200, Usage(10, 5), 0.1, None)
                ids.append(ex.request_id)
            host, port = rt.metrics_address
            url = f"http://{host}:{port}/v1/feedback"

            def post(content: bytes):
                return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=10)

            replies = [await asyncio.to_thread(post, orjson.dumps({"request_id": ids[0], "score": 0.9})),
                       await asyncio.to_thread(post, orjson.dumps([{"request_id": ids[1], "good": False}])),
                       await asyncio.to_thread(post, b"{broken"),
                       await asyncio.to_thread(post, orjson.dumps({"request_id": ids[0], "score": 7})),
                       await asyncio.to_thread(post, orjson.dumps({"request_id": "bad id with spaces", "good": True})),
                       await asyncio.to_thread(post, orjson.dumps({"request_id": ids[0]})),
                       await asyncio.to_thread(post, b"[" + b"1," * 600_000 + b"1]"),
                       await asyncio.to_thread(httpx.get, url, timeout=10)]
            metrics = (await asyncio.to_thread(httpx.get, f"http://{host}:{port}/metrics", timeout=10)).text
            return ids, replies, metrics
        finally:
            await rt.stop()

    ids, replies, metrics = asyncio.run(go())
    assert [r.status_code for r in replies] == [200, 200, 400, 400, 400, 400, 413, 405]
    assert replies[0].json() == {"accepted": 1}
    assert "not valid JSON" in replies[2].json()["error"]["message"]
    err = replies[3].json()["error"]
    assert err["param"] == "score" and "'score' must be a number from 0 to 1, got 7" in err["message"]
    assert replies[4].json()["error"]["param"] == "request_id"
    assert "give 'score'" in replies[5].json()["error"]["message"]
    assert 'llm_router_feedback_total{result="accepted"} 2.0' in metrics
    assert 'llm_router_feedback_total{result="rejected"} 5.0' in metrics
    lines = [orjson.loads(x) for x in fb_path.read_text().splitlines()]
    assert [(x["request_id"], x["score"]) for x in lines] == [(ids[0], 0.9), (ids[1], 0.0)]
    # Each rating is counted for the model that answered (the log's line says which).
    answered = {x["request_id"]: x["model"] for x in map(orjson.loads, log.read_text().splitlines())}
    assert [x["model"] for x in lines] == [answered[ids[0]], answered[ids[1]]]
    for x in lines:
        assert f'llm_router_feedback_rated_total{{model="{x["model"]}"}}' in metrics
    total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("llm_router_feedback_score_total{"))
    assert total == pytest.approx(0.9)
    ds = load([log, fb_path])  # the decision log and the endpoint's file join in train's loader
    assert sorted(ds.ids) == sorted(ids)


def test_feedback_endpoint_off_says_how_to_turn_it_on(tmp_path):
    import httpx

    cfg = parse_config(_config(0.0, tmp_path / "d.jsonl"), with_defaults=False)
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []))

    async def go():
        await rt.start()
        try:
            host, port = rt.metrics_address
            return await asyncio.to_thread(httpx.post, f"http://{host}:{port}/v1/feedback", json={"request_id": "x", "good": True})
        finally:
            await rt.stop()

    reply = asyncio.run(go())
    assert reply.status_code == 404 and "metrics.feedback_log" in reply.json()["error"]["message"]


def test_feedback_through_a_real_envoy(tmp_path, fakes):
    """The bootstrap routes POST /v1/feedback to the processor's listener (routing filter off for it)."""
    import httpx
    from conftest import free_port, wait_for
    from fixtures_envoy import start_stack
    from llm_router.plan import ROUTE_HEADER
    from llm_router.router import build_catalog

    fb_path, log = tmp_path / "feedback.jsonl", tmp_path / "decisions.jsonl"
    stack = start_stack(tmp_path, fakes, {"metrics": {"listen": f"127.0.0.1:{free_port()}", "decision_log": str(log),
                                                      "log_prompts": True, "feedback_log": str(fb_path)}}, processor="cli")
    try:
        with httpx.Client(timeout=30.0) as client:
            answer = client.post(f"{stack.url}/v1/chat/completions", json={"model": "auto", "messages": [
                {"role": "user", "content": "What is the capital of Peru?"}]})
            assert answer.status_code == 200
            rid = answer.headers["x-llm-router-request-id"]
            # A client-sent routing header must not divert feedback to a provider cluster.
            spoofed = next(iter(build_catalog(stack.cfg).models.values())).upstream
            ok = client.post(f"{stack.url}/v1/feedback", json={"request_id": rid, "score": 1.0}, headers={ROUTE_HEADER: spoofed})
            bad = client.post(f"{stack.url}/v1/feedback", json={"request_id": rid, "score": "great"})
        assert ok.status_code == 200 and ok.json() == {"accepted": 1}
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
        assert all("/v1/feedback" not in r.path for name in fakes.keys() for r in fakes.requests(name))  # no provider saw it
        wait_for(lambda: log.exists() and rid in log.read_text(), 30, "the decision log line")
    finally:
        stack.stop()
    ds = load([log, fb_path])
    assert ds.ids == [rid] and ds.scores[0][~np.isnan(ds.scores[0])].tolist() == [1.0]


def validate_with_envoy(boot: dict, tmp_path: Path) -> None:
    """`envoy --mode validate` accepts the bootstrap (skipped without an Envoy binary)."""
    import subprocess

    from llm_router.gateways.envoy.binary import EnvoyNotFound, envoy_path
    from llm_router.gateways.envoy.bootstrap import render

    try:
        binary = envoy_path()
    except EnvoyNotFound as exc:
        pytest.skip(f"no Envoy binary: {exc}")
    path = tmp_path / "boot.yaml"
    path.write_text(render(boot))
    done = subprocess.run([str(binary), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("metrics, expected", [
    ({"listen": "127.0.0.1:9464", "feedback_log": "/tmp/fb.jsonl"}, ("127.0.0.1", 9464)),
    ({"listen": "0.0.0.0:9464", "feedback_log": "/tmp/fb.jsonl"}, ("127.0.0.1", 9464)),
    ({"listen": "127.0.0.1:0", "feedback_log": "/tmp/fb.jsonl"}, None),  # a port picked at run time cannot be routed to
    ({"listen": "127.0.0.1:9464"}, None),  # feedback off
    ({"listen": "localhost:9464", "feedback_log": "/tmp/fb.jsonl"}, ("localhost", 9464)),  # a name: Envoy resolves it
])
def test_bootstrap_routes_feedback_only_when_it_is_collected(metrics, expected, tmp_path):
    from llm_router.config import load_config
    from llm_router.gateways.envoy.bootstrap import (
        FEEDBACK_CLUSTER,
        build,
        spec_from_config,
    )

    cfg = load_config(None).model_copy(update={"metrics": metrics})
    spec = spec_from_config(cfg, listen=("127.0.0.1", 10000), processor="unix:/tmp/x.sock")
    assert spec.feedback == expected
    boot = build(spec)
    vhost = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    names = [r["name"] for r in vhost["routes"]]
    clusters = [c["name"] for c in boot["static_resources"]["clusters"]]
    assert ("llm-router-feedback" in names) == (expected is not None)
    assert (FEEDBACK_CLUSTER in clusters) == (expected is not None)
    if expected:
        assert names[0] == "llm-router-feedback"
        cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == FEEDBACK_CLUSTER)
        assert cluster["type"] == ("STRICT_DNS" if expected[0] == "localhost" else "STATIC")
        validate_with_envoy(boot, tmp_path)
        assert vhost["routes"][0]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True


@pytest.mark.parametrize("strategy, params", [("cost_weighted", {}), ("round_robin", {})])
def test_explore_propensity_on_a_randomised_strategy_is_the_true_chance(strategy, params):
    """Measured frequencies of each model match the logged propensity (within sampling error)."""
    data = _config(0.25)
    data["policies"]["default"] = {"classifier": "rules", "strategy": strategy, "params": params, "explore": 0.25}
    router = Router(parse_config(data, with_defaults=False))
    body = chat_body("Summarise this paragraph in one line.")
    decisions = [router.route(body)[1] for _ in range(6000)]
    for model in ("tiny-7b", "mid-34b", "big-pro"):
        logged = {round(d.propensity, 9) for d in decisions if d.model.id == model}
        assert len(logged) == 1, logged  # the same prompt: the same chance, whichever branch picked it
        seen = sum(d.model.id == model for d in decisions) / len(decisions)
        assert abs(seen - logged.pop()) < 0.03, (model, seen)


def test_a_single_route_can_explore_through_its_conf():
    """APISIX plugin conf / Envoy route metadata: {"extends": "default", "explore": x}."""
    from llm_router.config import load_config

    router = Router(load_config(None))
    policy = router.policy_for({"extends": "default", "explore": 0.5})
    decisions = [router.route(chat_body("hello there"), policy=policy)[1] for _ in range(400)]
    explored = sum(d.strategy == "explore" for d in decisions)
    assert 140 < explored < 260 and all(d.propensity is not None for d in decisions)
    assert all(d.propensity is None for d in (router.route(chat_body("hello there"))[1] for _ in range(20)))  # default: off
    bad = router.policy_for({"extends": "default", "explore": -0.1})
    assert bad.status == 500 and "explore" in bad.message


def test_feedback_posted_concurrently_is_written_whole(tmp_path):
    """Many clients at once: every line lands once and intact (the listener serves each request in a thread)."""
    import threading

    import httpx

    fb_path = tmp_path / "feedback.jsonl"
    data = _config(0.0, tmp_path / "d.jsonl")
    data["metrics"]["feedback_log"] = str(fb_path)
    cfg = parse_config(data, with_defaults=False)
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []))

    async def go() -> tuple[list[int], str]:
        await rt.start()
        try:
            host, port = rt.metrics_address
            codes: list[int] = []

            def client(k: int) -> None:
                with httpx.Client(timeout=30) as c:
                    for i in range(50):
                        batch = [{"request_id": f"c{k}-{i}-{j}", "score": j / 2} for j in range(3)]
                        codes.append(c.post(f"http://{host}:{port}/v1/feedback", json=batch).status_code)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            await asyncio.to_thread(lambda: ([t.start() for t in threads], [t.join(120) for t in threads]))
            return codes, rt.metrics.exposition().decode()
        finally:
            await rt.stop()

    codes, metrics = asyncio.run(go())
    assert codes == [200] * 400
    assert 'llm_router_feedback_total{result="accepted"} 1200.0' in metrics  # no increment lost between threads
    assert 'llm_router_feedback_rated_total{model="unknown"} 1200.0' in metrics
    lines = [orjson.loads(x) for x in fb_path.read_text().splitlines()]
    assert len(lines) == 1200 and len({x["request_id"] for x in lines}) == 1200
    assert {x["score"] for x in lines} == {0.0, 0.5, 1.0}


def test_request_ids_cannot_be_guessed_from_ones_own(tmp_path):
    """Feedback rates by request id, so ids carry per-request randomness, not just a counter."""
    cfg = parse_config(_config(0.0), with_defaults=False)
    rt = Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []), telemetry=False)
    ids = [rt.new_request_id() for _ in range(3000)]
    assert len(set(ids)) == 3000
    prefix, counter, rand = ids[1500].split("-")
    assert int(counter, 16) == 1501 and len(rand) == 12
    # Knowing id n does not give id n+1: the random parts differ and do not follow from each other.
    assert len({i.rsplit("-", 1)[1] for i in ids}) == 3000
    assert Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), []), telemetry=False).new_request_id() != ids[0]
