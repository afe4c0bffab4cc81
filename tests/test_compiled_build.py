"""The decision path compiled by mypyc (`llm-router bench compiled`) loads and routes exactly as plain Python."""
from __future__ import annotations

import shutil

import pytest

from llm_router.bench import compiled


@pytest.fixture(scope="module")
def compiled_root(tmp_path_factory):
    pytest.importorskip("mypyc", reason="mypy's mypyc not installed (pip install 'llm-router[compile]')")
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler (gcc/cc) to build the mypyc extension modules")
    work = tmp_path_factory.mktemp("compiled")
    return work, compiled.compile_copy(work)


def test_compiled_copy_routes_the_workload_like_plain_python(compiled_root):
    work, root = compiled_root
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
