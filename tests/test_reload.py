"""Config reload on SIGHUP: policies, classifiers and model fields change without a restart; the rest is refused by name."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from apisix_emulator import (
    FAKE_KEYS,
    Emulator,
    RouteConf,
    RunnerProcess,
    remove_dir,
    socket_dir,
    wait_until,
)
from llm_router.config import ConfigError, load_config
from llm_router.credentials import Credentials
from llm_router.router import build_catalog
from llm_router.runtime import Exchange, Runtime, reload_from_file
from llm_router.secrets.env import EnvStore

DEFAULT = RouteConf(conf=(("llm-router", '{"policy": "default"}'),))
TIERS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def chat(text: str = "hi there, thanks!") -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})


def policy_to(model: str, **extra) -> dict:
    """A config whose default policy sends every tier to one model, explaining itself."""
    return {"policies": {"default": {"classifier": "rules", "strategy": "ladder", "explain": True,
                                     "ladder": {t: model for t in TIERS}}}, **extra}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def runtime_for(path: Path) -> Runtime:
    cfg = load_config(path)
    return Runtime(cfg, credentials=Credentials.resolve(build_catalog(cfg), [EnvStore(FAKE_KEYS)]), telemetry=False)


def routed_model(rt: Runtime) -> str:
    ex = Exchange(request_id=rt.new_request_id(), route="r", started=0.0)
    rt.decide(chat(), path="/v1/chat/completions", ex=ex)
    return ex.decision.model.id


def test_reload_takes_policies_and_model_prices(tmp_path):
    path = write(tmp_path / "c.yaml", policy_to("deepseek-v2"))
    rt = runtime_for(path)
    assert routed_model(rt) == "deepseek-v2"
    gpt4o = {**load_config(None).models["gpt-4o"].model_dump(exclude_unset=True), "input_price": 2.5, "output_price": 10.0}
    write(path, {**policy_to("gpt-4o"), "models": {"gpt-4o": gpt4o}})
    assert asyncio.run(reload_from_file(rt, str(path)))
    assert routed_model(rt) == "gpt-4o"
    assert rt.catalog.models["gpt-4o"].input_price == 2.5  # a price change takes effect too
    assert rt.config.policies["default"].ladder["LOW"] == "gpt-4o"


@pytest.mark.parametrize("change, named", [
    ({"server": {"route_header": "x-other"}}, "server: changed; restart the process to apply it"),
    ({"models": {"my-new-model": {"provider": "openai", "name": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6,
                                  "context_window": 128000, "tier": "LOW"}}}, "models: added my-new-model"),
    ({"metrics": {"listen": "127.0.0.1:9999"}}, "metrics: changed"),
])
def test_reload_refuses_what_needs_a_restart_and_keeps_routing(tmp_path, caplog, change, named):
    path = write(tmp_path / "c.yaml", policy_to("deepseek-v2"))
    rt = runtime_for(path)
    write(path, {**policy_to("gpt-4o"), **change})
    with pytest.raises(ConfigError) as exc:
        rt.prepare_reload(load_config(path))
    assert any(named in p for p in exc.value.problems), exc.value.problems
    with caplog.at_level("ERROR", logger="llm_router"):
        assert not asyncio.run(reload_from_file(rt, str(path)))
    assert "config reload refused, still routing with the previous config" in caplog.text and named in caplog.text
    assert routed_model(rt) == "deepseek-v2"  # the policy change in the same file was not half-applied


def test_reload_takes_the_apisix_runners_per_call_settings_but_not_the_rest_of_server(tmp_path):
    path = write(tmp_path / "c.yaml", {**policy_to("deepseek-v2"), "server": {"workers": 2}})
    rt = runtime_for(path)
    taken = {"workers": 2, "apisix_stream_usage": True, "apisix_fallback": False, "apisix_answer_poll_us": 0,
             "apisix_early_body": False}
    write(path, {**policy_to("gpt-4o"), "server": taken})
    assert asyncio.run(reload_from_file(rt, str(path)))
    assert rt.config.server == taken and routed_model(rt) == "gpt-4o"
    write(path, {**policy_to("gpt-4o"), "server": {**taken, "workers": 3}})
    with pytest.raises(ConfigError, match="server: changed; restart the process to apply it"):
        rt.prepare_reload(load_config(path))


def test_a_broken_file_or_model_keeps_the_old_config(tmp_path, caplog):
    path = write(tmp_path / "c.yaml", policy_to("deepseek-v2"))
    rt = runtime_for(path)
    path.write_text("policies: {default: {ladder: {LOW: gpt-5}}}")
    with caplog.at_level("ERROR", logger="llm_router"):
        assert not asyncio.run(reload_from_file(rt, str(path)))
        write(path, {**policy_to("gpt-4o"), "classifiers": {"learned": {"model": str(tmp_path / "none.npz")}},
                     "policies": {"default": {"classifier": "learned", "strategy": "quality_gate"}}})
        assert not asyncio.run(reload_from_file(rt, str(path)))
    assert "gpt-5" in caplog.text and "none.npz" in caplog.text
    assert routed_model(rt) == "deepseek-v2"


def _upstream_via_envoy(url: str) -> str:
    r = httpx.post(url, content=chat(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-llm-router-model"]


def test_sighup_reloads_the_envoy_processor(tmp_path, fakes):
    from fixtures_envoy import start_stack

    stack = start_stack(tmp_path, fakes, policy_to("deepseek-v2"), processor="cli")
    path = tmp_path / "envoy-config.yaml"  # the file start_stack wrote and the processor reads
    try:
        url = f"{stack.url}/v1/chat/completions"
        assert _upstream_via_envoy(url) == "deepseek-v2"
        write(path, policy_to("gpt-4o"))
        os.kill(stack.processor.pid, signal.SIGHUP)
        wait_until(lambda: _upstream_via_envoy(url) == "gpt-4o", 30, "the reloaded policy")
        path.write_text("policies: {default: {ladder: {LOW: gpt-5}}}")  # broken: refused, traffic goes on
        os.kill(stack.processor.pid, signal.SIGHUP)
        wait_until(lambda: "config reload refused" in stack.processor.log_tail(20_000), 30, "the refusal in the log")
        assert _upstream_via_envoy(url) == "gpt-4o" and stack.processor.alive()
        # Reloads under traffic lose nothing: every request is answered, by the old or the new policy.
        statuses, models, stop = [], set(), threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    r = c.post(url, content=chat(), headers={"content-type": "application/json"})
                    statuses.append(r.status_code)
                    models.add(r.headers.get("x-llm-router-model"))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            def reloads() -> int:
                return stack.processor.log_tail(50_000).count("config reloaded from")

            for i in range(6):
                write(path, policy_to("deepseek-v2" if i % 2 == 0 else "gpt-4o"))
                os.kill(stack.processor.pid, signal.SIGHUP)
                wait_until(lambda n=i: reloads() == n + 2, 60, f"reload {i + 2}")  # the first one above counts
                wait_until(lambda n=len(statuses): len(statuses) > n + 20, 60, "traffic after a reload")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert len(statuses) > 100 and set(statuses) == {200}, sorted(set(statuses))
        assert models == {"deepseek-v2", "gpt-4o"}
    finally:
        stack.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_every_apisix_runner_process(tmp_path, workers):
    d = socket_dir()
    path = write(tmp_path / "c.yaml", policy_to("deepseek-v2"))
    proc = RunnerProcess(os.path.join(d, "r.sock"), workers=workers, config=str(path)).start()
    em = Emulator(proc.path)
    try:
        def upstream() -> str:
            out = em.http_req_call(DEFAULT, body=chat())
            assert out.ok, out
            return out.upstream_headers["x-llm-router-upstream"]

        assert {upstream() for _ in range(6)} == {"deepseek"}
        write(path, policy_to("gpt-4o"))
        os.kill(proc.proc.pid, signal.SIGHUP)
        # every process reloads: once one answers with the new policy, all of a run of calls must
        wait_until(lambda: upstream() == "openai", 30, "the reloaded policy")
        wait_until(lambda: {upstream() for _ in range(8)} == {"openai"}, 30, "every worker on the new policy")
        # each process logs its own reload (the emulator may keep talking to one of them)
        wait_until(lambda: proc.log().count("config reloaded from") == workers, 30, f"{workers} reloads in the log")
        # Reloads under traffic: every call of a second APISIX-side client is answered.
        results, stop = [], threading.Event()

        def client() -> None:
            other = Emulator(proc.path)
            try:
                while not stop.is_set():
                    results.append(other.http_req_call(DEFAULT, body=chat()).ok)
            finally:
                other.close()

        thread = threading.Thread(target=client)
        thread.start()
        try:
            for i in range(4):
                write(path, policy_to("deepseek-v2" if i % 2 == 0 else "gpt-4o"))
                os.kill(proc.proc.pid, signal.SIGHUP)
                wait_until(lambda n=i: proc.log().count("config reloaded from") == workers * (n + 2), 60, "the reload")
                wait_until(lambda n=len(results): len(results) > n + 20, 60, "calls after a reload")
        finally:
            stop.set()
            thread.join(60)
        assert len(results) > 80 and all(results)
    finally:
        em.close()
        proc.stop()
        remove_dir(d)

