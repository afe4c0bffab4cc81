"""`serve` moves onto the compiled build of the installed files, keeping its PID; never onto a stale or broken one."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llm_router import compiled_build
from llm_router.bench.apisix import runs_compiled

from apisix_emulator import Emulator, RouteConf, RunnerProcess

BODY = b'{"model": "auto", "messages": [{"role": "user", "content": "hi there, thanks!"}]}'


def _build(builds: Path, digest: str) -> Path:
    """A stand-in build: the package copied (not compiled, which test_compiled_build covers), marked with `digest`."""
    out = builds / compiled_build.source_digest()
    shutil.copytree(compiled_build.package_dir(), out / "llm_router", ignore=shutil.ignore_patterns("__pycache__"))
    compiled_build.mark_done(out, digest)
    return out


def _runner(tmp_path: Path, builds: Path, cwd: Path | None = None, **env: str) -> RunnerProcess:
    """`serve --apisix` that may move onto a build under `builds`, its log in r.log (stderr in r.log.stderr)."""
    runner = RunnerProcess(str(tmp_path / "r.sock"), env={compiled_build.DIR_ENV: str(builds), **env},
                           log_file=str(tmp_path / "r.log"), cwd=str(cwd) if cwd else None)
    runner.env.pop(compiled_build.ACTIVE_ENV, None)
    return runner


def _routes(runner: RunnerProcess) -> None:
    em = Emulator(runner.path, timeout=30)
    try:
        assert em.http_req_call(RouteConf(conf=(("llm-router", "{}"),)), body=BODY).ok
    finally:
        em.close()


@pytest.mark.parametrize("case", ["current", "stale", "off", "shadowed"])
def test_serve_runs_on_the_build_of_its_own_files_only(tmp_path, case):
    builds = tmp_path / "builds"
    digest = compiled_build.source_digest()
    build = _build(builds, digest if case != "stale" else "0" * 16)  # stale: made from other files
    # shadowed: started in the folder that holds the package, which `python -m` imports from before PYTHONPATH
    cwd = compiled_build.package_dir().parent if case == "shadowed" else None
    runner = _runner(tmp_path, builds, cwd, **{compiled_build.OFF_ENV: "0" if case == "off" else "1"}).start()
    try:
        _routes(runner)
        moved = runs_compiled(runner.proc.pid)  # the same PID: re-executed in place, as APISIX tracks its runner by it
        log = runner.log()
        if case == "current":
            assert moved and f"compiled request path from {build}" in log
        elif case == "shadowed":  # the log does not claim the build runs
            assert f"plain Python from {compiled_build.package_dir()}: it shadows the compiled build {build}" in log
        else:
            assert not moved and "plain Python" in log
    finally:
        assert runner.stop() == 0


def test_a_build_that_does_not_load_falls_back_to_plain_python(tmp_path):
    builds = tmp_path / "builds"
    build = _build(builds, compiled_build.source_digest())
    (build / "llm_router" / "runtime.py").write_text("raise ImportError('built for another machine')\n")
    runner = _runner(tmp_path, builds, **{compiled_build.OFF_ENV: "1"}).start()
    try:
        _routes(runner)
        assert not runs_compiled(runner.proc.pid)
        assert "plain Python" in runner.log()
    finally:
        assert runner.stop() == 0
    err = (tmp_path / "r.log.stderr").read_text()
    assert f"the compiled build {build} does not load (ImportError: built for another machine); serving plain Python" in err


def test_the_digest_follows_every_file_of_the_package(tmp_path):
    root = tmp_path / "pkg"
    shutil.copytree(compiled_build.package_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    before = compiled_build.source_digest(root)
    assert compiled_build.source_digest(root) == before
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "x.pyc").write_bytes(b"cache")  # caches do not count
    assert compiled_build.source_digest(root) == before
    data = next(root.rglob("*.yaml"))
    data.write_text(data.read_text() + "\n")  # data and code do
    assert compiled_build.source_digest(root) != before


def test_the_metrics_say_which_code_serves(monkeypatch):
    from llm_router.classify import native
    from llm_router.metrics import Metrics

    kernels = "c" if native.KERNELS is not None else "numpy"
    monkeypatch.delenv(compiled_build.ACTIVE_ENV, raising=False)
    assert f'llm_router_build_info{{code="plain",kernels="{kernels}"}} 1.0' in Metrics().exposition().decode()
    monkeypatch.setenv(compiled_build.ACTIVE_ENV, str(compiled_build.package_dir().parent))  # the package is in the build
    assert f'llm_router_build_info{{code="compiled",kernels="{kernels}"}} 1.0' in Metrics().exposition().decode()
    monkeypatch.setenv(compiled_build.ACTIVE_ENV, "/nonexistent/build")  # a build some other folder shadows
    assert f'llm_router_build_info{{code="plain",kernels="{kernels}"}} 1.0' in Metrics().exposition().decode()
