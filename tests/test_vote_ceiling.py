"""The answer-aware cascade bound (learn.vote): a vote that carries the signal is found and scored held out."""
from __future__ import annotations

import numpy as np
import pytest

from llm_router.learn import vote
from llm_router.learn.fit import fold_ids


def _voters(n: int = 1000, signal: bool = True, seed: int = 0):
    """Two $1 models and a $10 one that is always right; the cheap pair disagrees on 30% of rows.

    With `signal`, their shared answer is always right; without, it is right at their usual rate.
    """
    rng = np.random.default_rng(seed)
    disagree = rng.random(n) < 0.3
    codes = np.zeros((n, 3), np.int64)
    codes[disagree, 1] = 1  # B's answer differs where the pair disagrees
    scores = np.zeros((n, 3))
    scores[:, 2] = 1.0
    if signal:
        scores[~disagree, 0] = scores[~disagree, 1] = 1.0
        a_right = rng.random(n) < 0.5
        scores[disagree, 0] = a_right[disagree]
        scores[disagree, 1] = ~a_right[disagree]
    else:
        right = rng.random(n) < 0.65
        scores[:, 0] = right
        scores[:, 1] = np.where(disagree, ~right, right)
    costs = np.tile([1.0, 1.0, 10.0], (n, 1))
    kinds = np.full(n, "choice:4")
    keys = rng.integers(0, 2**31, n)
    return codes, scores, costs, kinds, keys


def test_a_vote_that_carries_the_signal_reaches_the_best_quality_at_half_its_cost():
    codes, scores, costs, kinds, keys = _voters()
    share = np.mean(codes[:, 1] == 1)  # the rows the pair disagrees on
    want = 1 - (2 + 10 * share) / 10  # ask both; the top model only where they disagree
    bound = vote.in_hindsight(codes, scores, costs, kinds, keys, (0.95, 1.0))
    assert bound[1.0].saving == pytest.approx(want, abs=0.01) and bound[1.0].relative_quality == pytest.approx(1.0)
    held = vote.held_out(codes, scores, costs, kinds, keys, fold_ids(keys, 5), (1.0,))
    assert held[1.0].relative_quality == pytest.approx(1.0) and held[1.0].saving == pytest.approx(want, abs=0.01)
    # 95%: a single cheap model would reach 0.85; the vote does better for the price
    assert bound[0.95].saving > want and bound[0.95].relative_quality >= 0.95


def test_a_vote_without_signal_cannot_save_at_the_best_quality():
    codes, scores, costs, kinds, keys = _voters(signal=False)
    bound = vote.in_hindsight(codes, scores, costs, kinds, keys, (1.0,))
    assert bound[1.0].saving == pytest.approx(0.0, abs=1e-9)  # only the top model itself reaches 100%


def test_plurality_breaks_ties_to_the_earlier_column_and_skips_missing_answers():
    c = np.array([[0, 1, 1], [2, 3, -1], [-1, -1, -1], [-1, 4, 5]])
    answer, count = vote.plurality(c)
    assert answer.tolist() == [1, 2, -1, 4] and count.tolist() == [2, 1, 0, 1]
    v = vote.Votes.of(c, np.ones((4, 3)), (0, 1, 2))
    assert v.owner.tolist() == [1, 0, 0, 1]  # no answer at all: the first asked model's answer stands


def test_the_ceiling_tool_prints_the_vote_reach_on_data_with_answers(capsys):
    from pathlib import Path

    from llm_router.learn.ceiling import main

    data = Path(__file__).parent / "fixtures" / "learned" / "routerbench_small.csv"
    assert main(["--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "answer-aware cascade: every set of the models cheaper than the best one (up to 10)" in out
    hindsight = next(line for line in out.splitlines() if line.strip().startswith("in hindsight"))
    held = next(line for line in out.splitlines() if line.strip().startswith("held out (picked on the training folds"))
    for line in (hindsight, held):
        assert "95%: " in line and "100%: " in line and "of best)" in line
