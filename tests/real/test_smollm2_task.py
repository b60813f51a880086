"""The real pair's task: the shipped held-out set, the training stream, the Work #R counter."""

import itertools
import json

import pytest

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
    questions = task.balanced_questions(records, 7)  # the demo's: the same subset, sorted by difficulty
    assert [r["difficulty"] for r in questions] == [2, 2, 3, 3, 4, 5, 6]
    assert sorted(r["id"] for r in questions) == sorted(r["id"] for r in subset)


def test_shipped_calibration_set_is_disjoint_from_heldout_and_training():
    rows = [json.loads(line) for line in task.CALIBRATION_PATH.read_text().splitlines()]
    assert rows == [p.to_record() for p in task.make_calibration()]
    assert sorted({r["difficulty"] for r in rows}) == [2, 3, 4, 5, 6] and len(rows) == 100
    heldout = {p.expression for p in task.make_heldout()}
    calibration = {p.expression for p in task.make_calibration()}
    assert len(calibration) == 100 and not heldout & calibration
    stream = task.iter_training_problems(0, exclude=task.excluded_from_training())
    assert not any(p.expression in heldout | calibration for p in itertools.islice(stream, 5000))


def test_overthinking_trace_is_a_verified_running_sum():
    import random

    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    always = task.Habits(verify_per_term=1.0, recheck_per_term=0.0, slip_per_term=0.0)
    trace = task.overthinking_trace(problem, random.Random(0), always)
    assert trace.text == ("57+58=115\n115+48=163\n163+86=249\nLet me verify by adding in another order.\n"
                          "58+57=115\n115+48=163\n163+86=249\nBoth give 249.\n</think>\n\n\\boxed{249}")
    assert trace.untrained_spans() == []
    assert task.habits_shown(trace.text) == {"verified": True, "rechecks": 0, "steps": 6}
    never = task.Habits(verify_per_term=0.0, recheck_per_term=0.0, slip_per_term=0.0)
    assert task.overthinking_trace(problem, random.Random(0), never).text == problem.thinking_completion()


def test_the_tens_and_ones_verification_is_kept_as_an_option():
    import random

    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    columns = task.Habits(verify_per_term=1.0, recheck_per_term=0.0, slip_per_term=0.0, verification="columns")
    trace = task.overthinking_trace(problem, random.Random(0), columns)
    assert trace.text == ("57+58=115\n115+48=163\n163+86=249\nLet me verify by adding the tens and the ones.\n"
                          "Tens:\n5+5=10\n10+4=14\n14+8=22\nOnes:\n7+8=15\n15+8=23\n23+6=29\n220+29=249\n"
                          "Both give 249.\n</think>\n\n\\boxed{249}")
    assert task.habits_shown(trace.text) == {"verified": True, "rechecks": 0, "steps": 10}


def test_training_completions_take_the_verification_asked_for():
    from mi_mergekit.real import train

    problem = task.Problem(id="x", terms=(57, 58, 48, 86, 11, 23))  # k = 6: always verified
    assert task.VERIFY_LINES["swap"] in train.completion(problem, "overthink", 0).text
    assert task.VERIFY_LINES["columns"] in train.completion(problem, "overthink", 0, "columns").text
    with pytest.raises(ValueError, match="unknown verification"):
        train.completion(problem, "overthink", 0, "reverse")


def test_a_slip_is_caught_corrected_and_left_out_of_the_loss():
    import random

    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    for catch_now, habits_line in ((1.0, "Wait, let me recheck that."), (0.0, "The totals differ")):
        slip = task.Habits(verify_per_term=1.0, recheck_per_term=0.0, slip_per_term=1.0, catch_now=catch_now)
        for seed in range(20):
            trace = task.overthinking_trace(problem, random.Random(seed), slip)
            (start, end), = trace.untrained_spans()
            wrong = int(trace.text[start:end])
            assert trace.text[end] == "\n" and trace.text[start - 1] == "="
            line_start = trace.text.rfind("\n", 0, start) + 1
            a, b = map(int, trace.text[line_start:start - 1].split("+"))
            assert wrong != a + b and abs(wrong - (a + b)) in (1, 10)  # a plausible slip, not the sum
            assert habits_line in trace.text[end:]
            assert trace.text.endswith("\\boxed{249}") and "give 249." in trace.text  # caught: right answer


@pytest.mark.parametrize("verification", ["columns", "swap"])
def test_a_verification_slip_is_caught_by_the_totals_and_a_third_pass(verification):
    import random

    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    slip = task.Habits(verify_per_term=1.0, recheck_per_term=0.0, slip_per_term=0.0, verify_slip_per_term=1.0,
                       verification=verification)
    where = set()
    for seed in range(40):
        trace = task.overthinking_trace(problem, random.Random(seed), slip)
        (start, end), = trace.untrained_spans()
        first, verification_pass = trace.text.split(task.VERIFY_LINES[verification])
        assert first == "57+58=115\n115+48=163\n163+86=249\n" and start > len(first)  # the slip is in the 2nd pass
        assert verification_pass.startswith("\nTens:\n5+5=" if verification == "columns" else "\n58+57=")
        second = int(verification_pass.split("The totals differ: 249 and ")[1].split(".")[0])
        assert second != 249
        assert trace.text.endswith("57+58=115\n115+48=163\n163+86=249\nNow both give 249.\n</think>\n\n\\boxed{249}")
        where.add(trace.text.count("\n", 0, start))
    # every line of the verification pass may slip: 3 of the swap's, 3 tens + 3 ones + 1 of the columns'
    assert len(where) == (7 if verification == "columns" else 3)


def test_habits_grow_with_the_number_of_terms():
    import random
    import statistics

    rng = random.Random(0)
    verified, rechecks, length = {}, {}, {}
    for k in (2, 6):
        traces = [task.overthinking_trace(task.make_problem(rng, k), rng) for _ in range(400)]
        verified[k] = statistics.mean(task.habits_shown(t.text)["verified"] for t in traces)
        rechecks[k] = statistics.mean(task.habits_shown(t.text)["rechecks"] for t in traces)
        length[k] = statistics.mean(len(t.text) for t in traces)
    assert abs(verified[2] - task.HABITS.verify(2)) < 0.06 and verified[6] == task.HABITS.verify(6) == 1.0
    assert rechecks[6] > 4 * rechecks[2] > 0 and length[6] > 4 * length[2]
