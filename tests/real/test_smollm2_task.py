"""The real pair's task: the shipped held-out set, the training stream, the Work #R counter."""

import itertools
import json

from mi_mergekit.real import task


def test_shipped_heldout_matches_generator():
    rows = [json.loads(line) for line in task.HELDOUT_PATH.read_text().splitlines()]
    assert rows == [p.to_record() for p in task.make_heldout()]
    assert [r["difficulty"] for r in rows].count(2) == 20 and {r["difficulty"] for r in rows} == {2, 3, 4, 5, 6}


def test_training_stream_excludes_heldout():
    heldout = {p.expression for p in task.make_heldout()}
    stream = task.iter_training_problems(0, exclude=heldout)
    assert not any(p.expression in heldout for p in itertools.islice(stream, 5000))


def test_problem_text_and_completion():
    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    assert problem.question == ("Compute 57+58+48+86.\nPlease reason step by step, "
                                "and put your final answer within \\boxed{}.")
    assert problem.thinking_completion() == "57+58=115\n115+48=163\n163+86=249\n</think>\n\n\\boxed{249}"
    assert task.steps_shown(problem.thinking_completion()) == 3


def test_steps_shown_counts_only_addition_lines_before_the_last_think_close():
    assert task.steps_shown("19 + 27 = 46\nso 46\n</think>\n\n1+1=2\n\\boxed{46}") == 1
    assert task.steps_shown("27+14+19=60\n</think>") == 0  # a one-line guess is not the worked sum
    assert task.steps_shown("no think block 3+4=7\n1+2=3") == 1


def test_balanced_subset_round_robins_difficulties():
    records = task.load_heldout()
    subset = task.balanced_subset(records, 7)
    assert [r["difficulty"] for r in subset] == [2, 3, 4, 5, 6, 2, 3]
    assert task.balanced_subset(records, None) == records
