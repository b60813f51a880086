"""EvalTask: what a run measures, one value every caller passes to evaluate()."""

import json

import pytest

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval import EvalTask, evaluate
from mi_mergekit.eval.benchmarks import BENCHMARKS
from mi_mergekit.eval.decoding import PRESETS, Decoding


def test_settled_takes_the_benchmarks_defaults(fixtures):
    task = EvalTask(fixtures / "boxed.jsonl", benchmark="aime").settled()  # an alias
    aime = BENCHMARKS["aime25"]
    assert (task.benchmark, task.grader, task.grading) == ("aime25", aime.grader, aime.grading)
    assert (task.n_samples, task.max_new_tokens) == (aime.n_samples, aime.max_new_tokens)
    assert task.decoding == PRESETS["thinking"] and task.postprocess is None
    chosen = EvalTask(fixtures / "boxed.jsonl", n_samples=3, max_new_tokens=9, decoding="greedy", grading="strict",
                      grader="math", postprocess="none").settled()
    assert (chosen.n_samples, chosen.max_new_tokens, chosen.decoding.name) == (3, 9, "greedy")
    assert (chosen.grading, chosen.grader, chosen.postprocess) == ("strict", "math", "none")
    assert chosen.settled() == chosen  # settling twice changes nothing


@pytest.mark.parametrize("changes, words", [
    ({"benchmark": "nope"}, "unknown benchmark 'nope'"),
    ({"n_samples": 0}, "n_samples and max_new_tokens must be >= 1"),
    ({"max_new_tokens": 0}, "n_samples and max_new_tokens must be >= 1"),
    ({"grading": "lenient"}, "unknown grading mode 'lenient'"),
    ({"postprocess": "trim"}, "unknown post-processing 'trim'"),
    ({"decoding": "hot"}, "hot"),
])
def test_a_bad_task_is_refused_before_anything_loads(fixtures, tmp_path, changes, words):
    task = EvalTask(fixtures / "boxed.jsonl").replace(**changes)
    with pytest.raises(EvalInputError, match=words):
        task.settled()
    with pytest.raises(EvalInputError, match=words):  # the model folder does not exist: it is never reached
        evaluate(tmp_path / "no-model", task, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_evaluate_names_the_task_it_wants(fixtures, tmp_path):
    """The keyword form of older releases fails in one line that says what to pass."""
    with pytest.raises(EvalInputError, match=r"takes an EvalTask \(mi_mergekit.eval.EvalTask\), got PosixPath"):
        evaluate(tmp_path / "model", fixtures / "boxed.jsonl", tmp_path / "run")
    with pytest.raises(TypeError):
        evaluate(tmp_path / "model", EvalTask(fixtures / "boxed.jsonl"), tmp_path / "run", n_samples=2)


def test_replace_and_plain_values(fixtures):
    task = EvalTask(fixtures / "boxed.jsonl", columns={"question": "q"}, decoding=Decoding("custom", 0.3, top_p=0.9))
    other = task.replace(dataset="other.jsonl", seed=4)
    assert (other.dataset, other.seed, other.columns) == ("other.jsonl", 4, {"question": "q"})
    assert task.seed == 0  # a task is a value: replace() leaves it as it was
    data = json.loads(json.dumps(task.to_dict()))
    assert data["dataset"] == str(fixtures / "boxed.jsonl")
    assert data["decoding"] == {"name": "custom", "temperature": 0.3, "top_p": 0.9, "top_k": None, "min_p": None}
    assert EvalTask(**{**data, "decoding": Decoding.from_dict(data["decoding"])}).settled() == task.replace(
        dataset=str(task.dataset)).settled()


def test_examples_follow_the_task(fixtures):
    everything = EvalTask(fixtures / "boxed.jsonl").examples()
    assert [e.id for e in EvalTask(fixtures / "boxed.jsonl", limit=2).examples()] == [e.id for e in everything[:2]]
