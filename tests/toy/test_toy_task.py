"""The toy task generator and answer checker (pure Python)."""

import json
import random

from mi_mergekit.toy import HELDOUT_PATH, task


def test_problem_formats():
    p = task.Problem(id="x", terms=(3, 5, 2, 8))
    assert p.question == "3+5+2+8="
    assert p.answer == "18"
    assert p.difficulty == 4
    assert p.work() == "3+5=8\n8+2=10\n10+8=18\n"
    assert p.thinking_completion() == "3+5=8\n8+2=10\n10+8=18\n</think>\n\n\\boxed{18}"
    assert p.instruct_completion() == "\\boxed{18}"
    assert task.parse_question(p.question) == p.terms


def test_generator_is_deterministic_and_graded():
    a = task.generate_problems(70, seed=1)
    b = task.generate_problems(70, seed=1)
    assert a == b
    assert a != task.generate_problems(70, seed=2)
    assert sorted({p.difficulty for p in a}) == list(range(task.MIN_DIFFICULTY, task.MAX_DIFFICULTY + 1))
    for p in a:
        assert all(0 <= t <= 9 for t in p.terms)
        assert len(set(p.terms)) == len(p.terms)  # distinct digits
        assert int(p.answer) == sum(p.terms)
    exclude = {p.question for p in a[:10]}
    c = task.generate_problems(50, seed=1, exclude=exclude)
    assert not exclude & {p.question for p in c}


def test_make_problem_rejects_bad_difficulty():
    import pytest

    with pytest.raises(ValueError):
        task.make_problem(random.Random(0), 1)


def test_checker():
    assert task.is_correct("\\boxed{18}", "18")
    assert task.is_correct("3+5=8\n</think>\n\n\\boxed{ 18 }", 18)
    assert not task.is_correct("\\boxed{17}", "18")
    assert not task.is_correct("no box here", "18")
    # graded after the last </think>: a box inside the thinking does not count
    assert not task.is_correct("\\boxed{18}\n</think>\n\nthe answer is 18", "18")
    assert task.is_correct("\\boxed{3}</think>\\boxed{4}\\boxed{18}", "18")  # last box wins
    assert task.extract_answer("\\boxed{007}") == "007" and task.normalize("007") == "7"
    assert task.has_thinking("a</think>b") and not task.has_thinking("\\boxed{1}")


def test_shipped_heldout_matches_generator():
    rows = [json.loads(line) for line in HELDOUT_PATH.read_text().splitlines()]
    assert rows == [p.to_record() for p in task.make_heldout()]
    assert set(rows[0]) == {"id", "question", "answer", "difficulty"}
    assert len({r["id"] for r in rows}) == len({r["question"] for r in rows}) == len(rows) == 138
    for r in rows:
        assert int(r["answer"]) == sum(task.parse_question(r["question"]))
        assert r["difficulty"] == len(task.parse_question(r["question"]))
    assert task.load_heldout() == rows


def test_training_stream_excludes_heldout():
    held = {r["question"] for r in task.load_heldout()}
    stream = task.iter_training_problems(0, exclude=held)
    qs = [next(stream).question for _ in range(3000)]
    assert not held & set(qs)


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, mi_mergekit.toy, mi_mergekit.toy.task; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
