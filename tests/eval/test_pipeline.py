"""The whole pipe through evaluate(): a scripted backend (exact metrics), the transformers
backend on a tiny random model (determinism per chunk), and the report."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from mi_mergekit.eval import EvalTask, evaluate, grade_run, load_run, write_report
from mi_mergekit.eval.backends import Backend, Completion
from mi_mergekit.eval.run_folder import RunMismatchError

SCRIPT = {
    "add": ["</think>\\boxed{3}", "</think>\\boxed{3}", "</think>\\boxed{5}", "still thinking \\boxed{3}"],
    "half": ["</think>\\boxed{0.5}", "</think>\\boxed{2}", "</think>\\boxed{2}", "</think>\\boxed{\\frac12}"],
    "sq": ["</think>\\boxed{8}"] * 4,
}


class ScriptedBackend(Backend):
    """Returns fixed texts per (question, sample index); counts the chunks it was asked for."""

    name = "scripted"
    chunk_size = 2

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.chunks = []

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            self.chunks.append(chunk)
            texts = [SCRIPT[chunk.question_id][i] for i in chunk.indices]
            yield chunk, [Completion(t, 100 + 10 * i, "length" if "still" in t else "stop")
                          for t, i in zip(texts, chunk.indices)]


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_model import build_tokenizer

    return build_tokenizer()


def test_scripted_run_metrics_are_exact(tmp_path, fixtures, tokenizer):
    backend = ScriptedBackend(tokenizer)
    run_dir = evaluate("models/scripted", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64),
                       out_dir=tmp_path / "run", backend=backend, lambda_=0.5, progress=False)
    assert len(backend.chunks) == 6 and {c.indices for c in backend.chunks} == {(0, 1), (2, 3)}
    m = load_run(run_dir)["metrics"]
    assert m["mean"] == pytest.approx(1 / 3)
    assert m["pass@k"][4] == pytest.approx(2 / 3)
    assert m["vote@k"][4] == pytest.approx((1 + 0.5 + 0) / 3)  # half: {1/2: 2, 2: 2} is a tie
    assert m["think_ratio"] == pytest.approx(11 / 12)
    assert m["truncation_rate"] == pytest.approx(1 / 12) and m["unterminated_rate"] == pytest.approx(1 / 12)
    assert m["tokens_mean"] == pytest.approx(115.0)
    assert m["lambda"] == 0.5 and m["label"] == "scripted"
    questions = {q["question_id"]: q for q in load_run(run_dir)["questions"]}
    assert questions["add"]["correct"] == 2 and questions["sq"]["pass@k"][4] == 0.0
    grades = [json.loads(line) for line in (run_dir / "grades.jsonl").read_text().splitlines()]
    half = [g["vote_key"] for g in grades if g["question_id"] == "half"]
    assert half[0] == half[3] and half[1] == half[2] and half[0] != half[1]

    # resuming a complete run generates nothing; re-grading never generates
    again = ScriptedBackend(tokenizer)
    evaluate("models/scripted", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64), out_dir=run_dir,
             backend=again, lambda_=0.5, progress=False)
    assert again.chunks == []
    assert grade_run(run_dir)["mean"] == pytest.approx(1 / 3)

    # other generation settings in the same directory are refused
    with pytest.raises(RunMismatchError, match="n_samples"):
        evaluate("models/scripted", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=64), out_dir=run_dir,
                 backend=ScriptedBackend(tokenizer), progress=False)


def test_partial_store_regenerates_only_missing_chunks(tmp_path, fixtures, tokenizer):
    run_dir = tmp_path / "run"
    evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64), out_dir=run_dir,
             backend=ScriptedBackend(tokenizer), progress=False)
    samples = (run_dir / "samples.jsonl").read_text().splitlines()
    kept = [line for line in samples if not (json.loads(line)["question_id"] == "half" and json.loads(line)["sample_index"] == 3)]
    (run_dir / "samples.jsonl").write_text("\n".join(kept) + "\n")
    with pytest.raises(ValueError, match="incomplete: 1 of 12 samples missing"):
        grade_run(run_dir)
    backend = ScriptedBackend(tokenizer)
    evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64), out_dir=run_dir, backend=backend,
             progress=False)
    assert [(c.question_id, c.indices) for c in backend.chunks] == [("half", (2, 3))]
    assert sorted((run_dir / "samples.jsonl").read_text().splitlines()) == sorted(samples)


def sample_tuples(run_dir):
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["question_id"], r["sample_index"], r["text"], r["n_tokens"], r["finish_reason"], r["seed"]) for r in rows)


def test_transformers_backend_end_to_end(tmp_path, fixtures, tiny_model):
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=12, seed=3)
    common = dict(backend="transformers", backend_options={"batch_size": 2}, progress=False)
    run_a = evaluate(tiny_model, task, tmp_path / "a", **common)
    samples = sample_tuples(run_a)
    assert len(samples) == 12
    for _qid, _index, _text, n_tokens, finish, _seed in samples:
        assert 1 <= n_tokens <= 12 and finish in ("stop", "length")
        assert finish == "stop" or n_tokens == 12
    config = json.loads((run_a / "run.json").read_text())
    assert config["backend"]["name"] == "transformers" and config["chunk_size"] == 2
    assert config["decoding"]["name"] == "thinking" and config["seed"] == 3
    prompts = [json.loads(line) for line in (run_a / "prompts.jsonl").read_text().splitlines()]
    assert all(p["prompt"].endswith("<think>\n") and p["prompt_opens_think"] for p in prompts)
    m = load_run(run_a)["metrics"]
    assert m["n_questions"] == 3 and m["n_samples"] == 4
    # Think #R from the stored texts
    texts = [s[2] for s in samples]
    assert m["think_ratio"] == pytest.approx(sum("</think>" in t for t in texts) / 12)

    # a chunk's samples depend only on (seed, question, first index): the first question
    # alone reproduces exactly; another seed gives other samples
    run_b = evaluate(tiny_model, task.replace(limit=1), tmp_path / "b", **common)
    assert sample_tuples(run_b) == [s for s in samples if s[0] == "add"]
    run_c = evaluate(tiny_model, task.replace(limit=1, seed=4), tmp_path / "c", **common)
    assert [s[2] for s in sample_tuples(run_c)] != [s[2] for s in samples if s[0] == "add"]


def test_report_table_csv_and_lambda_plot(tmp_path, fixtures, tokenizer):
    runs = []
    for lam in (0.8, 0.2):
        runs.append(evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64),
                             out_dir=tmp_path / f"mi-{lam}", backend=ScriptedBackend(tokenizer), label=f"MI-{lam}",
                             lambda_=lam, progress=False))
    result = write_report(runs, tmp_path / "report")
    lines = result["markdown"].splitlines()
    # the paper layout first (Tables 2 / 5: Mean/Pass@k, Token #N, Think #R per benchmark)
    assert lines[0] == "| Method | Boxed Mean/Pass@4 | Boxed Token #N | Boxed Think #R |"
    assert lines[2] == "| MI-0.8 | 33.3/66.7 | 115 | 91.7 |"
    assert "- Boxed grading: strict (MI-0.8, MI-0.2)" in lines
    details = lines[lines.index("Details (± standard error over questions):") + 2:]
    assert details[0] == ("| Model | λ | Boxed Mean@4 | Boxed Pass@4 | Boxed Vote@4 | Boxed #N | Boxed #R | "
                          "Boxed Trunc | Boxed Grading |")
    # ± the standard error over questions, computed here from the per-question values
    questions = json.loads((runs[0] / "questions.json").read_text())
    mean_se, pass_se = (100 * statistics.stdev(q[key]["4"] for q in questions) / math.sqrt(len(questions))
                        for key in ("mean@k", "pass@k"))
    assert f"{mean_se:.1f}" == "16.7" and f"{pass_se:.1f}" == "33.3"
    assert details[2] == "| MI-0.8 | 0.8 | 33.3 ± 16.7 | 66.7 ± 33.3 | 50.0 | 115 | 91.7 | 8.3 | strict |"
    assert [line.split(" | ")[0] for line in details[2:]] == ["| MI-0.8", "| MI-0.2"]
    csv_lines = (tmp_path / "report" / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("Model,λ,Boxed Mean@4,Boxed Mean@4 SE,Boxed Pass@4,Boxed Pass@4 SE,Boxed Vote@4,Boxed #N")
    assert csv_lines[1] == "MI-0.8,0.8,33.3,16.7,66.7,33.3,50.0,115,91.7,8.3,strict"
    paper_csv = (tmp_path / "report" / "paper_table.csv").read_text().splitlines()
    assert paper_csv[:2] == ["Method,Boxed Mean/Pass@4,Boxed Token #N,Boxed Think #R,Boxed Grading",
                             "MI-0.8,33.3/66.7,115,91.7,strict"]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert "question" in metrics["stderr_method"] and set(metrics["stderr"]) == {"mean@k", "pass@k"}
    (png,) = result["plots"]
    assert png.name == "lambda_boxed.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_two_runs_of_one_model_on_one_benchmark(tmp_path, fixtures, tokenizer):
    runs = [evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=8),
                     out_dir=tmp_path / name, backend=ScriptedBackend(tokenizer), label="same", progress=False)
            for name in ("x", "y")]
    with pytest.raises(ValueError, match="two runs of 'same' on boxed"):
        write_report(runs, tmp_path / "report")


def test_lambda_from_mi_plan(tmp_path, fixtures, tokenizer):
    model_dir = tmp_path / "merged"
    model_dir.mkdir()
    (model_dir / "mi_plan.json").write_text(json.dumps({"lambda": 0.6}))
    run = evaluate(model_dir, EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=8), out_dir=tmp_path / "r",
                   backend=ScriptedBackend(tokenizer), progress=False)
    assert load_run(run)["metrics"]["lambda"] == 0.6


def test_windowed_merge_is_not_on_the_lambda_curve(tmp_path):
    from mi_mergekit.eval.model_info import model_lambda

    (tmp_path / "mi_plan.json").write_text(json.dumps({"lambda": 0.8, "whole_model": False}))
    assert model_lambda(tmp_path) is None
    (tmp_path / "mi_plan.json").write_text(json.dumps({"lambda": 0.8, "whole_model": True}))
    assert model_lambda(tmp_path) == 0.8
    assert model_lambda(tmp_path / "nowhere") is None


class FunctionBackend(Backend):
    """Answers every sample with ``respond(chunk)``; chunk size 1."""

    name = "function"
    chunk_size = 1

    def __init__(self, tokenizer, respond):
        self.tokenizer, self.respond = tokenizer, respond

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            yield chunk, [Completion(self.respond(chunk), 5, "stop")]


def test_gpqa_pipeline_grades_against_the_shuffled_gold_letter(tmp_path, fixtures, tokenizer):
    import re

    correct = {"rec1": "Carbon dioxide", "rec2": "Negative"}

    def respond(chunk):  # answer correctly for sample 0, with the first other letter for sample 1
        letter = re.search(rf"([A-D])\) {correct[chunk.question_id]}\n?", chunk.prompt).group(1)
        if chunk.indices[0] == 1:
            letter = next(x for x in "ABCD" if x != letter)
        return f"Thinking.</think>Reasoning done.\nANSWER: {letter}"

    task = EvalTask(fixtures / "gpqa_sample.csv", benchmark="gpqa", n_samples=2, max_new_tokens=8, shuffle_seed=5)
    run = evaluate("m", task, tmp_path / "gpqa", FunctionBackend(tokenizer, respond), progress=False)
    m = load_run(run)["metrics"]
    assert m["grader"] == "gpqa" and m["mean"] == 0.5 and m["pass@k"][2] == 1.0 and m["vote@k"][2] == 0.5


def test_ifeval_pipeline_reports_strict_and_loose(tmp_path, fixtures, tokenizer):
    responses = {"1001": "</think>**Note**\nthe sea is calm. the waves are small.", "1002": "</think>A cat purrs softly."}
    run = evaluate("m", EvalTask(fixtures / "ifeval_sample.jsonl", benchmark="ifeval", n_samples=1, max_new_tokens=8),
                   out_dir=tmp_path / "ifeval", backend=FunctionBackend(tokenizer, lambda c: responses[c.question_id]),
                   progress=False)
    m = load_run(run)["metrics"]
    # 1001 fails strict lowercase (**Note**) but passes loose (first line removed); 1002 passes both
    assert m["mean"] == 0.5 and m["scores"]["prompt_level_loose"] == 1.0
    assert m["vote@k"] == {} and all(q["vote@k"] == {} for q in load_run(run)["questions"])  # no vote for IFEval


def test_hub_datasets_are_loaded_by_name(monkeypatch):
    import sys
    import types

    from mi_mergekit.eval.datasets import load_examples

    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"problem": "p", "answer": "1", "id": 0}]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    (example,) = load_examples("hf:math-ai/aime25", "aime25", split="test")
    load_examples("hf:Idavidrein/gpqa:gpqa_diamond", "aime25")
    assert calls == [("math-ai/aime25", None, "test"), ("Idavidrein/gpqa", "gpqa_diamond", "train")]
    assert example.question == "p"


def test_prompt_batches_resume_to_the_same_samples(tmp_path, fixtures, tiny_model):
    """Questions generated together (prompt_batch) in fixed groups: a run that lost samples
    regenerates whole groups and ends with exactly the samples of an uninterrupted run."""
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=12, seed=5)
    common = dict(backend="transformers", backend_options={"batch_size": 2, "prompt_batch": 2}, progress=False)
    full = evaluate(tiny_model, task, tmp_path / "full", **common)
    samples = sample_tuples(full)
    assert len(samples) == 12
    assert json.loads((full / "run.json").read_text())["backend"]["prompt_batch"] == 2

    resumed = tmp_path / "resumed"
    evaluate(tiny_model, task, resumed, **common)
    lines = (resumed / "samples.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["sample_index"] != 3][:5]  # lose 7 samples
    (resumed / "samples.jsonl").write_text("\n".join(kept) + "\n")
    evaluate(tiny_model, task, resumed, **common)
    assert sample_tuples(resumed) == samples


def test_a_finished_run_evaluated_again_never_loads_the_model(tmp_path, fixtures, tiny_model, monkeypatch):
    """Resuming a finished run (a resumed demo, a routing grid whose runs are done) reads the
    tokenizer only: the weights are loaded on the first generation, and there is none."""
    import transformers

    task = EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=8, seed=1)
    run = evaluate(tiny_model, task, tmp_path / "r", progress=False)
    before = sample_tuples(run)
    loads = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    evaluate(tiny_model, task, run, progress=False)
    assert loads == [] and sample_tuples(run) == before
    lines = (run / "samples.jsonl").read_text().splitlines()
    (run / "samples.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one sample lost: now it loads, once
    evaluate(tiny_model, task, run, progress=False)
    assert len(loads) == 1 and sample_tuples(run) == before


def test_plan_chunks_groups_questions_in_fixed_batches():
    from mi_mergekit.eval.runner import plan_chunks

    prompts = [{"question_id": q, "prompt": q, "messages": []} for q in "abcde"]
    have = {("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1), ("d", 0)}
    chunks = plan_chunks(prompts, 2, 2, 0, have, prompt_batch=2)
    # group (a, b) is complete and skipped; (c, d) has a missing sample and is planned whole
    assert [(c.question_id, c.batch) for c in chunks] == [("c", 2), ("d", 2), ("e", 4)]
    assert plan_chunks(prompts, 2, 2, 0, have)[0].batch == -1


def test_run_records_timing_and_the_hashes_of_what_shapes_samples(tmp_path, fixtures, tokenizer):
    import hashlib

    run = evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=16),
                   out_dir=tmp_path / "r", backend=ScriptedBackend(tokenizer), progress=False)
    config = json.loads((run / "run.json").read_text())
    expected = "sha256:" + hashlib.sha256(tokenizer.chat_template.encode("utf-8")).hexdigest()
    assert config["chat_template_sha256"] == expected
    assert config["generation_settings_sha256"].startswith("sha256:")
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    timing = config["timing"]
    assert timing["generated_samples"] == len(samples) == 6
    assert timing["generated_tokens"] == sum(s["n_tokens"] for s in samples)
    assert timing["generation_seconds"] >= 0
    assert json.loads((run / "metrics.json").read_text())["timing"] == timing

    again = evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=16),
                     out_dir=tmp_path / "r", backend=ScriptedBackend(tokenizer),
                     progress=False)  # resumes: nothing left to generate
    assert json.loads((again / "run.json").read_text())["timing"]["generated_samples"] == 6
    other = evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=17),
                     out_dir=tmp_path / "o", backend=ScriptedBackend(tokenizer), progress=False)
    assert json.loads((other / "run.json").read_text())["generation_settings_sha256"] != config["generation_settings_sha256"]


def test_lm_eval_export_reads_back_with_lm_evals_own_tools(tmp_path, fixtures, tokenizer):
    from lm_eval.utils import get_latest_filename, get_results_filenames, make_table

    from mi_mergekit.eval.export import export_lm_eval

    runs = [evaluate("models/mi", EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=64),
                     out_dir=tmp_path / "mi", backend=ScriptedBackend(tokenizer), label="MI-0.8", lambda_=0.8,
                     progress=False)]
    (written,) = export_lm_eval(runs, tmp_path / "lm")
    files = [str(p) for p in (tmp_path / "lm").rglob("*")]
    assert get_latest_filename(get_results_filenames(files)) == str(written)  # lm-eval finds it
    results = json.loads(written.read_text())
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    task = results["results"]["mi_boxed"]
    assert task["mean@4,none"] == metrics["mean@k"]["4"] and task["pass@4,none"] == metrics["pass@k"]["4"]
    assert task["mean@4_stderr,none"] == metrics["stderr"]["mean@k"]["4"]
    assert results["n-samples"]["mi_boxed"] == {"original": 3, "effective": 3}
    assert results["higher_is_better"]["mi_boxed"]["pass@4"] is True
    assert results["configs"]["mi_boxed"]["generation_kwargs"]["max_gen_toks"] == 64
    assert results["model_name"] == "MI-0.8" and results["task_hashes"]["mi_boxed"]
    table = make_table(results)  # lm-eval's own renderer of a results file
    assert "mean@4" in table and "±" in table and "mi_boxed" in table
    (samples_file,) = (tmp_path / "lm").rglob("samples_mi_boxed_*.jsonl")
    records = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["resps"][0]) == 4 and len(r["filtered_resps"]) == 4 for r in records)
    assert records[0]["arguments"]["gen_args_0"]["arg_1"] == {"max_gen_toks": 64}
