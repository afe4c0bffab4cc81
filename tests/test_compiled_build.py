"""The decision path compiled by mypyc (`llm-router bench compiled`) loads and routes exactly as plain Python."""
from __future__ import annotations

import shutil

import pytest

from llm_router.bench import compiled
from llm_router.cli import main
from llm_router.commands import compile as compile_command


@pytest.fixture(scope="module")
def compiled_root(tmp_path_factory):
    """What `llm-router compile --out DIR` writes (built once for the module, without its own check)."""
    pytest.importorskip("mypyc", reason="mypy's mypyc not installed (pip install 'llm-router[compile]')")
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler (gcc/cc) to build the mypyc extension modules")
    out = tmp_path_factory.mktemp("compiled") / "pkg"
    assert compile_command.build(out, check=False) == []
    return out


def test_compiled_copy_routes_the_workload_like_plain_python(compiled_root, tmp_path):
    work, root = tmp_path, compiled_root
    plain = compiled.decisions(None, work)
    fast = compiled.decisions(str(root), work)
    assert plain["compiled"] == [False] * 4  # the installed package, not the copy
    assert fast["compiled"] == [True] * 4  # request, router, semantic and the APISIX runner as C extensions
    assert len(plain["decisions"]["rules"]) >= 200 and len(plain["decisions"]["semantic"]) >= 200
    assert compiled.compare(plain, fast) == []


def test_compare_names_a_differing_decision():
    row = ["deepseek-v2", "LOW", "chat", 0.1, 0.5, ["~3 tokens"], "ladder LOW -> deepseek-v2"]
    other = ["gpt-4o", "CRITICAL", "chat", 0.9, 0.5, ["~3 tokens"], "ladder CRITICAL -> gpt-4o"]
    plain = {"decisions": {"rules": [row, row]}}
    fast = {"decisions": {"rules": [row, other]}}
    problems = compiled.compare(plain, fast)
    assert problems == ["rules workload row 1: plain ['deepseek-v2', 'LOW', 'chat', 0.1] vs compiled ['gpt-4o', 'CRITICAL', 'chat', 0.9]"]
    assert compiled.compare(plain, {"decisions": {"rules": [row]}}) == ["rules: 2 plain decisions vs 1 compiled"]


def test_bench_compiled_without_mypyc_says_how_to_install(monkeypatch, capsys):
    import argparse
    import sys

    monkeypatch.setitem(sys.modules, "mypyc", None)  # import now raises ImportError
    args = argparse.Namespace(rounds=1, requests=100, apisix_requests=0, json=False)
    assert compiled.run(args) == 2
    assert "pip install 'llm-router[compile]'" in capsys.readouterr().err


def test_compile_command_refuses_a_folder_with_files_or_a_missing_compiler(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "keep.txt").write_text("mine")
    if compile_command._problem(tmp_path / "new") is None:  # mypyc and a compiler are here
        assert main(["compile", "--out", str(tmp_path)]) == 2
        assert "must be a new or empty folder" in capsys.readouterr().err
        assert (tmp_path / "keep.txt").read_text() == "mine"
    monkeypatch.setitem(sys.modules, "mypyc", None)
    assert main(["compile", "--out", str(tmp_path / "new")]) == 2
    assert "pip install 'llm-router[compile]'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_runner_and_parser_tests_pass_on_the_compiled_copy(compiled_root):
    """`serve` runs the compiled copy by default (compiled_build): the tests of what it runs pass on it too."""
    import os
    import subprocess
    import sys

    from apisix_emulator import REPO

    from llm_router import compiled_build

    env = {**os.environ, "PYTHONPATH": str(compiled_root), compiled_build.OFF_ENV: "0"}
    files = ["tests/test_request.py", "tests/test_apisix_runner.py", "tests/test_apisix_early_body.py",
             "tests/test_apisix_answer_poll.py", "tests/test_apisix_wire.py", "tests/test_router.py"]
    # the one test that replaces a runner method: compiled classes do not take that
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not goes_out_before", *files]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    check = subprocess.run([sys.executable, "-c", "import llm_router.runtime as r; print(r.__file__)"], cwd=compiled_root,
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip().endswith(".so")  # the copy's compiled module, not the checkout's source


def test_compile_keeps_one_finished_build_where_serve_looks(tmp_path, monkeypatch, capsys):
    from llm_router import compiled_build

    monkeypatch.setenv(compiled_build.DIR_ENV, str(tmp_path))
    digest = compiled_build.source_digest()
    old = tmp_path / "0123456789abcdef"  # a build of earlier files
    old.mkdir()
    compiled_build.mark_done(old, old.name)
    (tmp_path / digest / "llm_router").mkdir(parents=True)  # an unfinished build of these files: no mark
    built = []

    def build(out, *, check=True):  # the mypyc run itself is test_compiled_copy_routes_...'s
        built.append(out)
        (out / "llm_router").mkdir(parents=True)
        compiled_build.mark_done(out, digest)
        return []

    monkeypatch.setattr(compile_command, "build", build)
    monkeypatch.setattr(compile_command, "_problem", lambda out: None)
    assert main(["compile"]) == 0
    assert built == [tmp_path / digest] and compiled_build.current() == tmp_path / digest
    assert not old.exists()  # never served again, so removed
    assert main(["compile"]) == 0 and len(built) == 1  # up to date: nothing built
    assert "the compiled build of the installed files is up to date" in capsys.readouterr().err
