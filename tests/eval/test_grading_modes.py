"""`--grading paper` (OpenCompass's rules, the paper's evaluator) and `--grading strict`,
each rule pinned on fixture responses; GPQA's row rotation; run.json / metrics.json /
--grade-only in either mode."""

from __future__ import annotations

import csv
import json

import opencompass_gpqa
import pytest

from mi_mergekit.eval import EvalTask, evaluate, grade_run, load_run
from mi_mergekit.eval.backends import Backend, Completion
from mi_mergekit.eval.datasets import load_examples
from mi_mergekit.eval.grading import extract_non_reasoning_content
from mi_mergekit.eval.graders import get_grader
from mi_mergekit.eval.prompts import prompt_record
from mi_mergekit.eval.run_folder import RunMismatchError
from mi_mergekit.eval.runner import _grade_sample
from warm import run_warm


def load(fixtures, name):
    return [json.loads(line) for line in (fixtures / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_every_fixture_response_grades_as_pinned(fixtures, mode):
    cases = load(fixtures, "grading_modes.jsonl")
    assert {c["grader"] for c in cases} == {"math", "gpqa", "ifeval"}
    # the fixture separates the modes: every rule has a case where they disagree
    assert sum(c["paper"] != c["strict"] for c in cases) >= 10
    got, want = [], []
    for case in cases:
        grader = get_grader(case["grader"], mode)
        sample = {"question_id": "q", "sample_index": 0, "text": case["response"], "n_tokens": 7,
                  "finish_reason": case["finish_reason"]}
        item = {"answer": case["gold"], "prompt_opens_think": case["prompt_opens_think"],
                "grader_data": case.get("grader_data", {})}
        graded = _grade_sample(grader, sample, item)
        got.append((case["note"], graded["correct"], graded["extracted"]))
        want.append((case["note"], *case[mode]))
        # Think #R does not depend on the mode
        assert graded["has_think_close"] == ("</think>" in case["response"])
    assert got == want


def test_opencompass_extract_non_reasoning_content_examples():
    # the examples of OpenCompass's own docstring (opencompass/utils/text_postprocessors.py)
    assert extract_non_reasoning_content("This is a test.</think> How are you?") == "How are you?"
    assert extract_non_reasoning_content("Start<think>reasoning here</think> End") == "Start End"
    # and what follows from its two branches
    assert extract_non_reasoning_content("no tags at all \\boxed{1} ") == "no tags at all \\boxed{1}"
    assert extract_non_reasoning_content("a</think>b</think> c") == "c"  # after the last end token
    assert extract_non_reasoning_content("<think>never closed \\boxed{2}") == "<think>never closed \\boxed{2}"
    assert extract_non_reasoning_content("x</think>y<think>z</think>w") == "x</think>yw"  # pairs removed only


def test_unterminated_thinking_is_counted_in_both_modes_but_graded_only_in_paper():
    sample = {"question_id": "q", "sample_index": 0, "text": "so \\boxed{3}", "n_tokens": 5, "finish_reason": "length"}
    item = {"answer": "3", "prompt_opens_think": True}
    paper = _grade_sample(get_grader("math", "paper"), sample, item)
    strict = _grade_sample(get_grader("math", "strict"), sample, item)
    assert paper["unterminated"] and strict["unterminated"]
    assert (paper["correct"], strict["correct"]) == (True, False)


def test_unknown_grading_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown grading mode 'loose'.*paper.*strict"):
        get_grader("math", "loose")


# --------------------------------------------------------------------------- GPQA option order


@pytest.fixture
def gpqa_csv(tmp_path):
    path = tmp_path / "gpqa.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        # GPQA's own layout: OpenCompass reads the question and options from columns 7..11
        writer.writerow(["Pre-Revision Question", "", "", "", "", "", "", "Question", "Correct Answer",
                         "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Record ID"])
        for i in range(1, 7):
            writer.writerow(["", "", "", "", "", "", "", f"Question {i}?", f"right {i}", f"wrong {i}a", f"wrong {i}b",
                             f"wrong {i}c", f"r{i}"])
    return path


def test_gpqa_paper_options_rotate_by_row_as_opencompass(gpqa_csv):
    expected = opencompass_gpqa.load(str(gpqa_csv))  # OpenCompass's GPQADataset.load, vendored
    examples = load_examples(str(gpqa_csv), "gpqa")
    records = [prompt_record("gpqa", e, None, gpqa_options="rotate") for e in examples]
    assert [r["answer"] for r in records] == [row["answer"] for row in expected] == ["D", "C", "B", "A", "D", "C"]
    for record, row in zip(records, expected):
        text = record["messages"][-1]["content"]
        assert text.endswith(f"{row['question']}\n\nA) {row['A']}\nB) {row['B']}\nC) {row['C']}\nD) {row['D']}")
        assert record["grader_data"]["options"] == [row[x] for x in "ABCD"]
        assert record["grader_data"]["option_order"] == "rotate"
    # --limit keeps each question's row (and so its rotation)
    limited = [prompt_record("gpqa", e, None, gpqa_options="rotate") for e in load_examples(str(gpqa_csv), "gpqa", limit=2)]
    assert limited == records[:2]


def test_gpqa_prompt_is_opencompass_simple_evals_prompt(gpqa_csv):
    ours = [(r["messages"][-1]["content"], r["answer"])
            for r in (prompt_record("gpqa", e, None, gpqa_options="rotate") for e in load_examples(str(gpqa_csv), "gpqa"))]
    assert ours == opencompass_gpqa.prompts(str(gpqa_csv))  # align_prompt of gpqa_openai_simple_evals_gen_5aeece


class FunctionBackend(Backend):
    name = "function"
    chunk_size = 1

    def __init__(self, tokenizer, respond, finish="stop"):
        self.tokenizer, self.respond, self.finish = tokenizer, respond, finish

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            yield chunk, [Completion(self.respond(chunk), 5, self.finish)]


def test_gpqa_run_records_its_mode_and_regrades_in_either(tmp_path, gpqa_csv, tokenizer):
    import re

    def respond(chunk):  # right letter, written in lower case, then a wrong upper-case line
        right = re.search(r"([A-D])\) right", chunk.prompt).group(1)
        wrong = next(x for x in "ABCD" if x != right)
        return f"Done.</think>answer: {right.lower()}\nANSWER: {wrong}" if chunk.indices[0] == 0 else \
            f"Done.</think>ANSWER: {right}"

    run = evaluate("m", EvalTask(gpqa_csv, benchmark="gpqa", n_samples=2, max_new_tokens=8), out_dir=tmp_path / "run",
                   backend=FunctionBackend(tokenizer, respond), progress=False)
    config = json.loads((run / "run.json").read_text())
    assert config["grading"] == "paper" and config["gpqa_options"] == "rotate"
    paper = load_run(run)["metrics"]
    # paper: sample 0 extracts the lower-case letter, which is not the gold; sample 1 right
    assert paper["grading"] == "paper" and paper["mean"] == 0.5 and paper["vote@k"][2] == 0.5
    strict = grade_run(run, grading="strict", progress=False)
    # strict: the last ANSWER line of sample 0 is wrong, sample 1 right
    assert strict["grading"] == "strict" and strict["mean"] == 0.5
    assert json.loads((run / "run.json").read_text())["grading"] == "strict"
    grades = [json.loads(line) for line in (run / "grades.jsonl").read_text().splitlines()]
    assert {g["extracted"] for g in grades if g["sample_index"] == 0} <= set("ABCD")
    assert grade_run(run, progress=False)["grading"] == "strict"  # the run's recorded mode
    assert grade_run(run, grading="paper", progress=False)["grading"] == "paper"

    # the option order is part of the prompts: a resume under the other mode is refused, with the way out
    with pytest.raises(RunMismatchError, match=r"gpqa_options: stored 'rotate', now 'shuffle'.*--grading paper"):
        evaluate("m", EvalTask(gpqa_csv, benchmark="gpqa", n_samples=2, max_new_tokens=8, grading="strict"),
                 out_dir=run, backend=FunctionBackend(tokenizer, respond), progress=False)


def test_strict_gpqa_run_shuffles_and_an_old_run_resumes_as_strict(tmp_path, gpqa_csv, tokenizer):
    respond = lambda chunk: "</think>ANSWER: A"  # noqa: E731
    strict = EvalTask(gpqa_csv, benchmark="gpqa", n_samples=1, max_new_tokens=8, grading="strict", shuffle_seed=3)
    run = evaluate("m", strict, tmp_path / "run", FunctionBackend(tokenizer, respond), progress=False)
    config = json.loads((run / "run.json").read_text())
    assert config["grading"] == "strict" and config["gpqa_options"] == "shuffle"
    prompts = [json.loads(line) for line in (run / "prompts.jsonl").read_text().splitlines()]
    assert all(p["grader_data"]["shuffle_seed"] == 3 for p in prompts)
    # a run written before grading modes: no grading / gpqa_options keys
    for key in ("grading", "gpqa_options"):
        config.pop(key)
    (run / "run.json").write_text(json.dumps(config))
    assert grade_run(run, progress=False)["grading"] == "strict"  # graded as it always was
    config.pop("grading", None)
    (run / "run.json").write_text(json.dumps(config))
    evaluate("m", strict, run, FunctionBackend(tokenizer, respond), progress=False)
    with pytest.raises(RunMismatchError, match="--grading strict"):
        evaluate("m", strict.replace(grading=None), run, FunctionBackend(tokenizer, respond), progress=False)


def test_defaults_per_benchmark_and_math_regrade(tmp_path, fixtures, tokenizer):
    """aime25 defaults to paper, boxed to strict; a bare-number answer and a budget-cut
    thought separate them on the same stored samples."""
    texts = {0: "</think>The answer is 42.", 1: "cut off while thinking \\boxed{42}"}

    class Backend2(FunctionBackend):
        def generate(self, chunks, decoding, max_new_tokens):
            for chunk in chunks:
                i = chunk.indices[0]
                yield chunk, [Completion(texts[i], 5, "stop" if i == 0 else "length")]

    data = tmp_path / "aime.jsonl"
    data.write_text(json.dumps({"id": "p1", "problem": "What is 6*7?", "answer": "42"}) + "\n")
    run = evaluate("m", EvalTask(data, benchmark="aime25", n_samples=2, max_new_tokens=8), out_dir=tmp_path / "aime",
                   backend=Backend2(tokenizer, None), progress=False)
    m = load_run(run)["metrics"]
    assert m["grading"] == "paper" and m["mean"] == 0.5  # the bare 42 fails, the cut-off box counts
    assert m["unterminated_rate"] == 0.5 and m["think_ratio"] == 0.5
    s = grade_run(run, grading="strict", progress=False)
    assert s["mean"] == 0.5 and s["unterminated_rate"] == 0.5  # the bare 42 counts, the cut-off does not
    per_sample = {g["sample_index"]: g["correct"] for g in
                  map(json.loads, (run / "grades.jsonl").read_text().splitlines())}
    assert per_sample == {0: True, 1: False}

    boxed = evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=1, max_new_tokens=8), out_dir=tmp_path / "boxed",
                     backend=FunctionBackend(tokenizer, lambda c: "</think>\\boxed{3}"), progress=False)
    assert json.loads((boxed / "run.json").read_text())["grading"] == "strict"


def test_grade_only_cli_regrades_in_the_mode_asked(tmp_path, tokenizer):
    import sys

    data = tmp_path / "aime.jsonl"
    data.write_text(json.dumps({"id": "p1", "problem": "What is 6*7?", "answer": "42"}) + "\n")
    run = evaluate("m", EvalTask(data, benchmark="aime25", n_samples=1, max_new_tokens=8), out_dir=tmp_path / "run",
                   backend=FunctionBackend(tokenizer, lambda c: "</think>The answer is 42."), progress=False)
    assert load_run(run)["metrics"]["mean"] == 0.0  # paper: a bare number is no answer
    cli = [sys.executable, "-m", "mi_mergekit.cli", "eval", "--out", str(run), "--grade-only", "--no-progress"]
    result = run_warm(cli + ["--grading", "strict"], timeout=240)
    assert result.returncode == 0, result.stderr
    assert "Mean@1 100.0" in result.stdout and "[strict grading]" in result.stdout
    assert json.loads((run / "metrics.json").read_text())["grading"] == "strict"
    result = run_warm(cli + ["--grading", "paper"], timeout=240)
    assert result.returncode == 0 and "Mean@1 0.0" in result.stdout and "[paper grading]" in result.stdout
    bad = run_warm(cli + ["--grading", "lenient"], timeout=240)
    assert bad.returncode == 2 and "Invalid value for '--grading'" in bad.stderr
