"""The console commands as subprocesses: eval / report, bad input, and a SIGKILLed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mi_mergekit.eval import EvalTask, evaluate
from warm import run_warm

CLI = [sys.executable, "-m", "mi_mergekit.cli"]


def subprocess_env() -> dict:
    """One torch thread in the subprocesses too (shared 2-core machine)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args, timeout=240):
    return run_warm([*CLI, *map(str, args)], timeout=timeout, env=subprocess_env())


def sample_set(run_dir):
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["question_id"], r["sample_index"], r["text"], r["n_tokens"], r["finish_reason"], r["seed"]) for r in rows)


def test_eval_and_report_commands(tmp_path, fixtures, tiny_model):
    run_dir = tmp_path / "run"
    result = run_cli("eval", "--model", tiny_model, "--dataset", fixtures / "aime_sample.jsonl", "--benchmark", "aime25",
                     "-n", "2", "--max-new-tokens", "8", "--batch-size", "2", "--out", run_dir, "--label", "tiny",
                     "--lambda", "0.4", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "tiny / aime25: Mean@2" in result.stdout
    for name in ("run.json", "prompts.jsonl", "samples.jsonl", "grades.jsonl", "metrics.json", "questions.json"):
        assert (run_dir / name).is_file()
    config = json.loads((run_dir / "run.json").read_text())
    assert config["max_new_tokens"] == 8 and config["lambda"] == 0.4 and config["grader"] == "math"
    prompt = json.loads((run_dir / "prompts.jsonl").read_text().splitlines()[0])
    assert "Please reason step by step, and put your final answer within \\boxed{}." in prompt["prompt"]

    regrade = run_cli("eval", "--out", run_dir, "--grade-only")
    assert regrade.returncode == 0, regrade.stderr
    assert len(sample_set(run_dir)) == 4

    report = run_cli("report", run_dir, "--out", tmp_path / "report", "--lm-eval", tmp_path / "lm")
    assert report.returncode == 0, report.stderr
    (results,) = (tmp_path / "lm" / "tiny").glob("results_*.json")
    assert f"wrote {results}" in report.stderr
    assert json.loads(results.read_text())["results"]["mi_aime25"]["alias"] == "mi_aime25"
    assert report.stdout.startswith("| Method | AIME'25 Mean/Pass@2 | AIME'25 Token #N | AIME'25 Think #R |")
    assert "| tiny | 0.4 |" in report.stdout  # the details table
    assert "- AIME'25 grading: paper (tiny)" in report.stdout
    assert (tmp_path / "report" / "lambda_aime25.png").is_file()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--dataset", "{tmp}/missing.jsonl"], 1, "dataset file not found"),
        (["--dataset", "{fixtures}/boxed.jsonl", "--column", "question=nope"], 1, "column 'nope' (for question) is not in the dataset"),
        (["--dataset", "{fixtures}/boxed.jsonl", "--column", "oops"], 2, "expected ROLE=COLUMN"),
        (["--dataset", "{fixtures}/boxed.jsonl", "--grader", "regex"], 2, "Invalid value for '--grader'"),
        (["--dataset", "{fixtures}/boxed.jsonl", "--benchmark", "gpqa"], 1, "gpqa dataset has no 'question' column"),
    ],
)
def test_eval_bad_input_fails_clearly(tmp_path, fixtures, args, code, message):
    args = [a.format(tmp=tmp_path, fixtures=fixtures) for a in args]
    result = run_cli("eval", "--model", tmp_path / "no-model", *args, "--out", tmp_path / "run")
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_grade_only_and_report_on_non_runs_fail_clearly(tmp_path):
    result = run_cli("eval", "--out", tmp_path, "--grade-only")
    assert result.returncode == 1 and "is not a run directory" in result.stderr
    result = run_cli("report", tmp_path / "nothing")
    assert result.returncode == 1 and "run directory not found" in result.stderr


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, fixtures, tiny_model):
    n, budget = 4, 16
    args = ["eval", "--model", tiny_model, "--dataset", fixtures / "boxed.jsonl", "-n", n, "--max-new-tokens", budget,
            "--batch-size", "1", "--seed", "7", "--no-progress"]
    run_dir = tmp_path / "killed"
    samples_file = run_dir / "samples.jsonl"
    process = subprocess.Popen([*CLI, *map(str, args), "--out", str(run_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if samples_file.exists() and len(samples_file.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    stored = len(samples_file.read_text().splitlines())
    assert 2 <= stored < 3 * n, "the run was not interrupted mid-way"
    assert not (run_dir / "metrics.json").exists()

    resumed = run_cli(*args, "--out", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    reference = evaluate(tiny_model, EvalTask(fixtures / "boxed.jsonl", n_samples=n, max_new_tokens=budget, seed=7),
                         out_dir=tmp_path / "uninterrupted", backend_options={"batch_size": 1}, progress=False)
    assert sample_set(run_dir) == sample_set(reference)
    assert len(sample_set(run_dir)) == 3 * n
    assert json.loads((run_dir / "metrics.json").read_text())["n_responses"] == 3 * n


@pytest.mark.parametrize("blocked, grader", [("math_verify", "math"), ("lm_eval", "ifeval"), ("matplotlib", "math")])
def test_a_missing_extra_fails_before_generating(tmp_path, fixtures, tiny_model, blocked, grader):
    """An import blocker stands in for an environment without the [eval] extra."""
    prelude = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] == {blocked!r}: raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mi_mergekit.cli import main\n"
        "main()\n"
    )
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", prelude, "eval", "--model", str(tiny_model), "--dataset", str(fixtures / "boxed.jsonl"),
         "--grader", grader, "-n", "1", "--max-new-tokens", "4", "--out", str(run_dir), "--no-progress"],
        capture_output=True, text=True, timeout=240, env=subprocess_env())
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: grading with {grader!r} and reporting need {blocked}")
    assert "pip install 'mi-mergekit[eval]'" in last
    assert not run_dir.exists()  # nothing generated, nothing written
