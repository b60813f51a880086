"""Evaluation harness: the paper's metrics for any model, on any backend.

The pipe, one module per arrow::

    datasets.py (file / hub)  ->  prompts.py (chat template)  ->  backends/ (transformers, vllm, openai)
      ->  store.py (append-only samples.jsonl)  ->  graders/ (math, ifeval, gpqa)  ->  metrics.py  ->  report.py

Python API::

    from mi_mergekit.eval import EvalTask, evaluate, grade_run, load_run, write_report

    task = EvalTask(                # what is measured: the same for every model compared
        "toy.jsonl",                # dataset file: JSONL/CSV/Parquet, or "hf:NAME"
        benchmark="boxed",          # aime25 | ifeval | gpqa | boxed (id, prompt|question, answer)
        grader="math",              # math | ifeval | gpqa   (default: the benchmark's)
        decoding="thinking",        # thinking | instruct | greedy, or a Decoding
        n_samples=8,                # (default: the benchmark's)
        max_new_tokens=256,         # (default: the benchmark's)
        seed=0,
        grading="paper",            # paper (OpenCompass rules) | strict (default: the benchmark's)
    )
    run_dir = evaluate(
        model_path,                 # model folder with a chat template
        task,
        "runs/toy-0.5",             # the run folder (resumable)
        "transformers",             # or "vllm", "openai" (+ backend_options), or a Backend
        lambda_=0.5,                # recorded for report plots (default: model's mi_plan.json)
    )
    evaluate(instruct_path, task.replace(decoding="instruct"), "runs/instruct", lambda_=0.0)
    metrics = load_run(run_dir)["metrics"]
    # metrics: mean, pass@k / mean@k / vote@k {k: value} for k = 1..n, think_ratio,
    # tokens_mean, tokens_median, truncation_rate, unterminated_rate, scores (extra grader
    # scores, e.g. IFEval loose), n_questions, n_samples, label, lambda, benchmark, grading
    grade_run(run_dir, grading="strict")      # re-grade the stored samples under the other rules

    write_report([run_a, run_b], "report/", paper_reference="4b", thinking_run="Thinking")
    # report.md (paper's Tables 2/5 layout + details), report.csv, paper_table.csv, lambda_<benchmark>.png

All fractions are in [0, 1]; the report prints percent. See each module's
docstring for definitions (metrics.py) and file formats (store.py, datasets.py).
"""

from mi_mergekit.eval.decoding import PRESETS, Decoding, resolve_decoding
from mi_mergekit.eval.report import write_report
from mi_mergekit.eval.runner import evaluate, grade_run, load_run
from mi_mergekit.eval.task import EvalTask

__all__ = ["PRESETS", "Decoding", "EvalTask", "evaluate", "grade_run", "load_run", "resolve_decoding", "write_report"]
