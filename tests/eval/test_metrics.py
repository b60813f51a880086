"""Estimators against brute-force enumeration; Vote@k tie rules."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from mi_mergekit.eval.metrics import mean_at_k, pass_at_k, run_metrics, vote_at_k


def brute_pass_at_k(correct, k):
    subsets = list(itertools.combinations(range(len(correct)), k))
    return Fraction(sum(any(correct[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_over_all_k_subsets(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        random.Random(n * 31 + c).shuffle(correct)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(correct, k)), abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(64, 0, 64) == 0.0
    assert pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    for bad in [(4, 5, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_mean_at_k_uses_the_first_k_samples():
    correct = [True, False, False, True]
    assert [mean_at_k(correct, k) for k in (1, 2, 3, 4)] == [1.0, 0.5, pytest.approx(1 / 3), 0.5]


def brute_vote(keys, correct, k):
    """Expected score of a uniformly random tie-break among the most common answers."""
    votes = [key for key in keys[:k] if key is not None]
    if not votes:
        return 0.0
    top = max(votes.count(v) for v in set(votes))
    tied = sorted({v for v in votes if votes.count(v) == top})
    right = {key for key, ok in zip(keys[:k], correct[:k]) if ok}
    return sum(v in right for v in tied) / len(tied)


def test_vote_majority_and_ties():
    # clear majority of a wrong answer
    assert vote_at_k(["5", "5", "3"], [False, False, True], 3) == 0.0
    # correct majority
    assert vote_at_k(["3", "5", "3"], [True, False, True], 3) == 1.0
    # two-way tie with the correct answer: half credit
    assert vote_at_k(["3", "5"], [True, False], 2) == 0.5
    # three-way tie: one third
    assert vote_at_k(["3", "5", "7"], [True, False, False], 3) == pytest.approx(1 / 3)
    # tie among wrong answers only
    assert vote_at_k(["4", "5", "3", "3", "4", "5"], [False, False, True, True, False, False], 6) == pytest.approx(1 / 3)
    # abstentions (None) do not vote; a single answer among abstentions wins
    assert vote_at_k([None, None, "3"], [False, False, True], 3) == 1.0
    assert vote_at_k([None, None], [False, False], 2) == 0.0
    # only the first k samples vote
    assert vote_at_k(["5", "3", "3"], [False, True, True], 1) == 0.0


def test_vote_matches_random_tie_break_expectation():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 7)
        keys = [rng.choice([None, "a", "b", "c"]) for _ in range(n)]
        correct = [key == "a" for key in keys]
        k = rng.randint(1, n)
        assert vote_at_k(keys, correct, k) == pytest.approx(brute_vote(keys, correct, k))


def grade(qid, index, correct, key=None, tokens=10, think=True, finish="stop"):
    return {"question_id": qid, "sample_index": index, "correct": correct, "vote_key": key, "n_tokens": tokens,
            "has_think_close": think, "unterminated": not think, "finish_reason": finish, "scores": {}}


def test_question_and_run_metrics():
    grades = [
        grade("q1", 1, False, "5", tokens=30, think=False, finish="length"),
        grade("q1", 0, True, "3", tokens=10),
        grade("q2", 0, False, "4", tokens=20),
        grade("q2", 1, False, "4", tokens=40),
    ]
    result = run_metrics(grades)
    q1 = next(q for q in result["questions"] if q["question_id"] == "q1")
    assert q1["mean@k"] == {1: 1.0, 2: 0.5}  # sorted by sample index
    assert q1["pass@k"][2] == 1.0
    run = result["run"]
    assert run["n_questions"] == 2 and run["n_samples"] == 2
    assert run["mean"] == pytest.approx(0.25)
    assert run["pass@k"][1] == pytest.approx(0.25) and run["pass@k"][2] == pytest.approx(0.5)
    assert run["vote@k"][2] == pytest.approx((0.5 + 0.0) / 2)
    assert run["think_ratio"] == pytest.approx(0.75)
    assert run["truncation_rate"] == pytest.approx(0.25)
    assert run["tokens_mean"] == pytest.approx(25.0) and run["tokens_median"] == pytest.approx(25.0)


def test_run_metrics_rejects_incomplete_runs():
    with pytest.raises(ValueError, match="different sample counts"):
        run_metrics([grade("q1", 0, True), grade("q1", 1, True), grade("q2", 0, True)])
    with pytest.raises(ValueError):
        run_metrics([])
