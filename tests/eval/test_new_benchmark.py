"""A benchmark defined in this file alone runs everywhere ours do.

``caps_words`` — a word, the model asked to write it in capitals, graded by exact match of
the last line — is declared below (name, columns, dataset adapter, prompt, a grader of its
own, defaults, the paper-table column) and registered; no file of the package names it.
It then runs through ``evaluate`` (dataset, prompts, generation, grading, metrics, resume),
``grade_run``, ``write_report`` (both tables, the λ plot) and the lm-eval export, against
expectations written here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mi_mergekit.eval import EvalTask, evaluate, grade_run, load_run, write_report
from mi_mergekit.eval.backends import Backend, Completion
from mi_mergekit.eval.benchmarks import ALIASES, BENCHMARKS, Benchmark, get_benchmark, register_benchmark
from mi_mergekit.eval.datasets import DatasetError, Example, load_examples
from mi_mergekit.eval.graders import GRADERS, Grade, Grader, get_grader

NAME = "caps_words"


class ExactGrader(Grader):
    """Correct when the answer's last non-empty line is the gold answer, exactly."""

    name = "exact_caps"
    score_names = ("lowercase_share",)

    def grade(self, answer, item):
        lines = [line.strip() for line in answer.splitlines() if line.strip()]
        said = lines[-1] if lines else None
        lower = sum(c.islower() for c in answer) / max(1, sum(c.isalpha() for c in answer))
        return Grade(correct=said == item["answer"], extracted=said, scores={"lowercase_share": lower})


class Uppercase(Benchmark):
    name, title, aliases = NAME, "Upper", ("shout",)
    grader, grader_class = "exact_caps", ExactGrader
    max_new_tokens, n_samples = 32, 3
    columns = {"id": ("word_id",), "word": ("word", "text"), "hint": ("hint",)}

    def example(self, row, mapping, number):
        word = str(row[mapping["word"]])
        return Example(self.row_id(row, mapping, number), word, word.upper(), {"hint": str(row[mapping["hint"]])})

    def message(self, example, shuffle_seed=0, **options):
        return (f"Write {example.question!r} in capital letters ({example.grader_data['hint']}). End with the word "
                "alone.", example.answer, {})


@pytest.fixture(autouse=True)
def registered():
    register_benchmark(Uppercase())
    yield
    BENCHMARKS.pop(NAME, None), ALIASES.pop("shout", None), GRADERS.pop("exact_caps", None)


class Capitals(Backend):
    """Answers with the word in capitals, except sample 0 of a question whose word has an 'a'
    (lowercase), with a think block; n_tokens = the word's length."""

    name, chunk_size = "capitals", 3

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            word = chunk.messages[-1]["content"].split("'")[1]
            yield chunk, [Completion(f"Thinking.</think>\n{word if i == 0 and 'a' in word else word.upper()}",
                                     len(word), "stop") for i in chunk.indices]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "words.jsonl"
    rows = [{"word_id": "w1", "word": "cat", "hint": "an animal"}, {"word_id": "w2", "word": "sun", "hint": "a star"},
            {"word_id": "w3", "word": "tree", "hint": "a plant"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(tmp_path, dataset, label, lam):
    from tiny_model import build_tokenizer

    return evaluate("models/upper", EvalTask(dataset, benchmark="shout"), tmp_path / label,
                    Capitals(build_tokenizer()), label=label, lambda_=lam, progress=False)


def test_the_benchmark_loads_prompts_and_grades(dataset, tmp_path):
    examples = load_examples(str(dataset), NAME)
    assert [(e.id, e.question, e.answer) for e in examples] == [("w1", "cat", "CAT"), ("w2", "sun", "SUN"),
                                                                 ("w3", "tree", "TREE")]
    assert get_benchmark("shout").name == NAME and get_grader("exact_caps").grade("x\nCAT", {"answer": "CAT"}).correct
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "", "hint": "none"}) + "\n")
    with pytest.raises(DatasetError, match="'text' is empty"):
        load_examples(str(tmp_path / "bad.jsonl"), NAME)

    out = run(tmp_path, dataset, "upper", 0.5)
    config = json.loads((out / "run.json").read_text())
    assert (config["benchmark"], config["grader"], config["grading"]) == (NAME, "exact_caps", "strict")
    assert (config["n_samples"], config["max_new_tokens"]) == (3, 32)  # the benchmark's defaults
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert prompts[0]["messages"][-1]["content"] == "Write 'cat' in capital letters (an animal). End with the word alone."
    assert "<|im_start|>user\nWrite 'sun' in capital letters (a star). End" in prompts[1]["prompt"]
    m = load_run(out)["metrics"]
    assert m["benchmark"] == NAME and m["n_questions"] == 3 and m["n_samples"] == 3
    assert m["mean"] == pytest.approx(8 / 9) and m["pass@k"][3] == 1.0 and m["pass@k"][1] == pytest.approx(8 / 9)
    assert m["scores"]["lowercase_share"] == pytest.approx(1 / 9)  # the grader's own score, averaged
    assert m["vote@k"][3] == 1.0 and m["think_ratio"] == 1.0 and m["tokens_mean"] == pytest.approx(10 / 3)
    assert run(tmp_path, dataset, "upper", 0.5) == out  # resumes: nothing left to generate
    assert grade_run(out, grading="paper")["grading"] == "paper"


def test_report_and_lm_eval_export_take_it(dataset, tmp_path):
    from mi_mergekit.eval.export import export_lm_eval

    runs = [run(tmp_path, dataset, f"mi-{lam:g}", lam) for lam in (0.2, 0.8)]
    result = write_report(runs, tmp_path / "report")
    header = result["markdown"].splitlines()[0]
    assert "Upper Mean/Pass@3" in header and "Upper Token #N" in header and "Upper Think #R" in header
    assert "| mi-0.2 | 88.9/100.0 | 3 | 100.0 |" in result["markdown"]
    assert "- Upper grading: strict (mi-0.2, mi-0.8)" in result["markdown"]
    with (tmp_path / "report" / "report.csv").open() as handle:
        details = list(csv.DictReader(handle))
    assert details[1]["Upper Mean@3"] == "88.9" and details[1]["Upper Vote@3"] == "100.0"
    assert (tmp_path / "report" / f"lambda_{NAME}.png").stat().st_size > 0
    written = export_lm_eval(runs, tmp_path / "lm")
    assert len(written) == 2
    results = json.loads(written[0].read_text())
    task = results["results"][f"mi_{NAME}"]
    assert task["mean@3,none"] == pytest.approx(8 / 9) and task["pass@3,none"] == 1.0 and "vote@3,none" in task
    assert results["configs"][f"mi_{NAME}"]["metadata"]["grader"] == "exact_caps"
    (samples,) = Path(written[0]).parent.glob(f"samples_mi_{NAME}_*.jsonl")
    first = json.loads(samples.read_text().splitlines()[0])
    assert first["target"] == "CAT" and first["filtered_resps"] == ["cat", "CAT", "CAT"]


def test_no_file_of_the_package_names_it():
    """What the benchmark did not have to touch: no module, CLI or README line names it."""
    root = Path(__file__).resolve().parents[2]
    for path in [*root.joinpath("mi_mergekit").rglob("*.py"), root / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert NAME not in text and "exact_caps" not in text, path
