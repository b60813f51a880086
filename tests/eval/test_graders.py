"""Graders on fixture answers: math equivalences and thinking, IFEval checkers, GPQA letters."""

from __future__ import annotations

import json

import pytest

from mi_mergekit.eval.graders import get_grader
from mi_mergekit.eval.graders.gpqa import extract_letter
from mi_mergekit.eval.runner import _grade_sample
from mi_mergekit.eval.thinking import split_response


def load(fixtures, name):
    return [json.loads(line) for line in (fixtures / name).read_text().splitlines() if line.strip()]


def test_math_fixture_answers(fixtures):
    grader = get_grader("math")
    cases = load(fixtures, "math_answers.jsonl")
    results = []
    for case in cases:
        sample = {"question_id": "q", "sample_index": 0, "text": case["response"], "n_tokens": 1,
                  "finish_reason": case.get("finish_reason", "stop")}
        graded = _grade_sample(grader, sample, {"answer": case["gold"], "prompt_opens_think": case["prompt_opens_think"]})
        results.append((case["note"], graded["correct"]))
    assert results == [(case["note"], case["correct"]) for case in cases]


def test_unterminated_thinking_is_no_answer():
    split = split_response("thinking about \\boxed{3} for a long time", prompt_opens_think=True)
    assert split == split.__class__(has_think_close=False, unterminated=True, answer=None)
    grader = get_grader("math")
    sample = {"question_id": "q", "sample_index": 0, "text": "so \\boxed{3}", "n_tokens": 5, "finish_reason": "length"}
    graded = _grade_sample(grader, sample, {"answer": "3", "prompt_opens_think": True})
    assert graded["correct"] is False and graded["extracted"] is None and graded["unterminated"] is True
    # the same text from an Instruct model (no think block anywhere) is all answer
    graded = _grade_sample(grader, sample, {"answer": "3", "prompt_opens_think": False})
    assert graded["correct"] is True and graded["unterminated"] is False and graded["has_think_close"] is False


def test_open_think_block_that_ends_its_turn_is_a_direct_answer():
    """The Instruct end of a sweep under the Thinking template: no </think>, but EOS."""
    split = split_response("\\boxed{18}", prompt_opens_think=True, truncated=False)
    assert split == split.__class__(has_think_close=False, unterminated=False, answer="\\boxed{18}")
    assert split_response("<think>\\boxed{2}", False, truncated=False).answer == "\\boxed{2}"
    grader = get_grader("math")
    sample = {"question_id": "q", "sample_index": 0, "text": "\\boxed{18}", "n_tokens": 4, "finish_reason": "stop"}
    graded = _grade_sample(grader, sample, {"answer": "18", "prompt_opens_think": True})
    assert graded["correct"] is True and graded["unterminated"] is False and graded["has_think_close"] is False


def test_math_vote_keys_group_equivalent_answers():
    keys = get_grader("math").vote_keys(["\\frac{1}{2}", "0.5", "1/2", "3", None, "3.0", "7"])
    assert keys[0] == keys[1] == keys[2] == "\\frac{1}{2}"
    assert keys[3] == keys[5] == "3"
    assert keys[4] is None and keys[6] == "7"


@pytest.mark.parametrize("grading", ["strict", "paper"])
def test_ifeval_fixture_cases_strict_and_loose(fixtures, grading):
    # without falsy kwargs, lm-eval's functions (strict) and OpenCompass's rule (paper) agree
    grader = get_grader("ifeval", grading)
    cases = load(fixtures, "ifeval_cases.jsonl")
    kinds = {i.split(":")[0] for case in cases for i in case["instruction_id_list"]}
    assert len(kinds) >= 6  # several kinds of instructions
    got, want = [], []
    for case in cases:
        item = {"grader_data": {k: case[k] for k in ("prompt", "instruction_id_list", "kwargs")}}
        grade = grader.grade(case["response"], item)
        got.append((case["key"], grade.correct, grade.scores["prompt_level_loose"] == 1.0))
        want.append((case["key"], case["strict"], case["loose"]))
    assert got == want


def test_ifeval_uses_offline_punkt_data(tmp_path, monkeypatch):
    import os

    import nltk

    from mi_mergekit.eval.graders import ifeval

    ifeval._lm_eval_ifeval()
    root = os.environ["MI_MERGEKIT_NLTK_DATA"]
    assert nltk.data.find("tokenizers/punkt_tab/english/").path.startswith(root)
    from lm_eval.tasks.ifeval import instructions_util

    # punkt knows "Dr." is an abbreviation: two sentences, not three
    assert instructions_util.count_sentences("Dr. Smith came. He left.") == 2


def test_ifeval_unterminated_thinking_fails_every_instruction():
    grader = get_grader("ifeval")
    sample = {"question_id": "q", "sample_index": 0, "text": "all lowercase", "n_tokens": 3, "finish_reason": "length"}
    item = {"prompt_opens_think": True,
            "grader_data": {"prompt": "p", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}}
    graded = _grade_sample(grader, sample, item)
    assert graded["correct"] is False
    assert graded["scores"] == {"prompt_level_loose": 0.0, "inst_level_strict": 0.0, "inst_level_loose": 0.0}
    assert graded["extracted"] is None


@pytest.mark.parametrize(
    "text, letter",
    [
        ("Reasoning...\nANSWER: C", "C"),
        ("answer: b", "B"),
        ("ANSWER: $D$", "D"),
        ("First ANSWER: A, then on reflection\nANSWER: (B)", "B"),
        ("The choice is \\boxed{C}", "C"),
        ("ANSWER: E", None),  # not one of A-D
        ("I cannot decide.", None),
    ],
)
def test_gpqa_letter_extraction(text, letter):
    assert extract_letter(text) == letter


def test_gpqa_grade_against_gold_letter():
    grader = get_grader("gpqa")
    item = {"answer": "C", "grader_data": {"options": ["w", "x", "y", "z"]}}
    assert grader.grade("ANSWER: C", item).correct is True
    assert grader.grade("ANSWER: A", item).correct is False
    assert grader.grade("no idea", item).extracted is None


def test_unknown_grader_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown grader 'nope'.*gpqa.*ifeval.*math"):
        get_grader("nope")


def test_ifeval_falsy_kwargs_are_kept_under_paper_grading(tmp_path, fixtures):
    # OpenCompass drops only None kwargs; lm-eval drops every falsy one (and then draws a random
    # value): a row carrying num_words=0 / end_phrase="" is graded differently by the two
    from mi_mergekit.eval.datasets import load_examples
    from mi_mergekit.eval.graders.ifeval import check, check_opencompass
    from mi_mergekit.eval.prompts import prompt_record

    row = {"key": 7, "prompt": "Say hi.", "instruction_id_list": ["length_constraints:number_words", "startend:end_checker"],
           "kwargs": [{"relation": "at least", "num_words": 0, "end_phrase": None}, {"end_phrase": ""}]}
    path = tmp_path / "ifeval.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (example,) = load_examples(str(path), "ifeval")
    assert example.grader_data["kwargs"] == [{"relation": "at least", "num_words": 0}, {"end_phrase": ""}]
    item = prompt_record("ifeval", example, None)
    response = "hi"
    assert check_opencompass(response, "Say hi.", row["instruction_id_list"], row["kwargs"])["prompt_level_strict"]
    assert not check(response, "Say hi.", row["instruction_id_list"], row["kwargs"])["prompt_level_strict"]
    assert get_grader("ifeval", "paper").grade(response, item).correct is True
    assert get_grader("ifeval", "strict").grade(response, item).correct is False
