"""Data set loaders: format detection, blank-cell skipping, exclusions, estimated costs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_router import datasets
from llm_router.datasets import DatasetError, load

FIX = Path(__file__).parent / "fixtures" / "learned"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_routerbench_rows_costs_and_blank_cells():
    ds = load([FIX / "routerbench_small.csv"])
    assert ds.format == "routerbench"
    assert ds.models == ("tiny-7b", "mid-34b", "big-pro")
    assert ds.skipped == {"blank cells": 2}
    assert len(ds) == 88
    row = ds.row(0)
    assert row.prompt == "Translate 'good morning' for France #0."  # the list literal is unwrapped
    assert row.group == "easy" and row.id == "fx.0"
    assert set(row.scores) == set(ds.models) and all(0 <= v <= 1 for v in row.scores.values())
    assert row.costs["big-pro"] > row.costs["tiny-7b"] > 0
    assert json.loads(row.body())["messages"][0]["content"] == row.prompt
    assert "measured" in ds.cost_note


def test_routellm_exclusion_and_20_to_1_prices():
    ds = load([FIX / "routellm_small.csv", FIX / "contaminated_prompts.jsonl"])
    assert ds.format == "routellm"
    assert ds.skipped["contaminated"] == 1
    assert len(ds) == 29
    strong = ds.models.index("strong-model")
    ratio = ds.costs[:, strong] / ds.costs[:, 1 - strong]
    assert np.allclose(ratio, 20.0)
    assert "20:1" in ds.cost_note


def test_llmrouter_needs_prices_and_finds_them_beside(tmp_path):
    ds = load([FIX / "dcrouter_preprocessed__tiny.json"])  # llm_candidates beside it is picked up
    assert ds.format == "llmrouter" and len(ds) == 24
    assert ds.costs[:, ds.models.index("large-b")].mean() > ds.costs[:, ds.models.index("small-a")].mean()
    assert ds.scores.max() <= 1.0 and "assumed" in ds.cost_note
    alone = tmp_path / "dcrouter_preprocessed__x.json"
    alone.write_text((FIX / "dcrouter_preprocessed__tiny.json").read_text())
    with pytest.raises(DatasetError, match="need prices"):
        load([alone])


def test_detection_errors_name_the_file(tmp_path):
    bad = tmp_path / "numbers.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"numbers\.csv: cannot tell the format"):
        load([bad])
    js = tmp_path / "thing.json"
    js.write_text('{"x": 1}')
    with pytest.raises(DatasetError, match=r"thing\.json: cannot tell the format"):
        load([js])
    with pytest.raises(DatasetError, match="no such file"):
        load([tmp_path / "missing.csv"])
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load([txt])


def test_formats_cannot_be_mixed():
    with pytest.raises(DatasetError, match="different formats"):
        load([FIX / "routerbench_small.csv", FIX / "routellm_small.csv"])


def test_bad_score_is_named(tmp_path):
    import csv

    rows = list(csv.reader((FIX / "routellm_small.csv").open(newline="")))
    rows[3][1] = "maybe"
    f = tmp_path / "r.csv"
    with f.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DatasetError, match=r"r\.csv row 3 column 'weak-model'.*'maybe' is not a number"):
        load([f])


def test_prompt_key_is_stable():
    assert datasets.prompt_key("abc") == datasets.prompt_key("abc") != datasets.prompt_key("abd")
    assert 0 <= datasets.prompt_key("abc") < 2**63


@pytest.mark.skipif(not (SHARED / "routerbench").is_dir(), reason="shared RouterBench data not present")
def test_real_routerbench_smoke():
    ds = load([SHARED / "routerbench"])
    assert len(ds.models) == 11 and ds.skipped["blank cells"] == 20 and len(ds) == 2205
    gpt4 = ds.models.index("gpt-4-1106-preview")
    assert abs(ds.scores[:, gpt4].mean() - 0.879) < 0.002
    assert abs(ds.costs[:, gpt4].mean() * 1000 - 5.02) < 0.01
