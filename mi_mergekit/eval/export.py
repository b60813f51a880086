"""Runs in lm-eval's results format, written by lm-eval's own ``EvaluationTracker``.

Each run becomes one lm-eval *task* named ``mi_<benchmark>`` with metrics
``mean@n`` and ``pass@n`` (with ``_stderr``: see ``metrics.STDERR_METHOD``),
``vote@n`` where the grader votes, ``think_ratio``, ``tokens_mean`` and
``truncation_rate``, all under lm-eval's ``none`` filter; ``configs`` records the
dataset, decoding and budget, ``n-samples`` the question count, and the
per-sample log (``samples_<task>_<date>.jsonl``) holds, per question, the
prompt, the gold answer, every response and its extracted answer. Files land
where ``lm_eval --output_path DIR`` puts them:
``DIR/<model>/results_<date>.json``, so tools that read lm-eval output
(``lm_eval.utils.make_table``, its loggers, leaderboards) read these.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

from mi_mergekit.errors import ContractError
from mi_mergekit.eval import store as st

#: lm-eval's symbol for "higher is better" per metric (None: neither)
HIGHER_IS_BETTER = {"mean": True, "pass": True, "vote": True, "think_ratio": None,
                    "tokens_mean": False, "truncation_rate": False}


def lm_eval_results(run: dict) -> dict:
    """The results dict of one loaded run (see :func:`mi_mergekit.eval.load_run`)."""
    m, config = run["metrics"], run["config"]
    n, task = m["n_samples"], f"mi_{m['benchmark']}"
    stderr = m.get("stderr", {})
    values = {}
    for name in ("mean", "pass", "vote"):
        if not m[f"{name}@k"]:
            continue  # e.g. IFEval has no vote
        values[f"{name}@{n},none"] = m[f"{name}@k"][n]
        if name != "vote":
            se = stderr.get(f"{name}@k", {}).get(n)
            values[f"{name}@{n}_stderr,none"] = "N/A" if se is None else se
    for name in ("think_ratio", "tokens_mean", "truncation_rate"):
        values[f"{name},none"] = m[name]
    metric_names = [key.split(",")[0] for key in values if "_stderr" not in key]
    decoding = config["decoding"]
    return {
        "results": {task: {"alias": task, **values}},
        "group_subtasks": {task: []},
        "configs": {task: {
            "task": task,
            "dataset_path": config["dataset"],
            "output_type": "generate_until",
            "repeats": n,
            "num_fewshot": 0,
            "generation_kwargs": {
                "temperature": decoding["temperature"], "top_p": decoding["top_p"], "top_k": decoding["top_k"],
                "min_p": decoding["min_p"], "max_gen_toks": config["max_new_tokens"], "do_sample": True,
            },
            "metric_list": [{"metric": name, "aggregation": "mean",
                             "higher_is_better": HIGHER_IS_BETTER[name.split("@")[0]]} for name in metric_names],
            "metadata": {"version": 1.0, "grader": m["grader"], "grading": m.get("grading", "strict"),
                         "label": m["label"], "lambda": m.get("lambda"),
                         "stderr_method": m.get("stderr_method"), "seed": config["seed"],
                         "dataset_fingerprint": config["dataset_fingerprint"],
                         "versions": config.get("versions", {})},
        }},
        "versions": {task: 1.0},
        "n-shot": {task: 0},
        "higher_is_better": {task: {name: HIGHER_IS_BETTER[name.split("@")[0]] for name in metric_names}},
        "n-samples": {task: {"original": m["n_questions"], "effective": m["n_questions"]}},
        "config": {"model": f"mi-mergekit-{config['backend_name']}", "model_args": f"pretrained={m['label']}",
                   "batch_size": None, "device": None, "gen_kwargs": None, "random_seed": config["seed"]},
    }


def lm_eval_samples(run: dict) -> List[dict]:
    """lm-eval's per-sample records: one per question, its ``n`` responses in ``resps``."""
    from lm_eval.utils import hash_string

    n = run["metrics"]["n_samples"]
    out = Path(run["path"])
    prompts = st.read_jsonl(out / st.PROMPTS_FILE)
    samples = {(s["question_id"], s["sample_index"]): s for s in st.SampleStore(out / st.SAMPLES_FILE).samples()}
    grades = {(g["question_id"], g["sample_index"]): g for g in st.read_jsonl(out / st.GRADES_FILE)}
    per_question = {q["question_id"]: q for q in run["questions"]}
    records = []
    for doc_id, prompt in enumerate(prompts):
        qid = prompt["question_id"]
        text = prompt["prompt"] if prompt["prompt"] is not None else str(prompt["messages"])
        question = per_question[qid]
        records.append({
            "doc_id": doc_id,
            "doc": {"question_id": qid, "messages": prompt["messages"], "grader_data": prompt["grader_data"]},
            "target": prompt["answer"],
            "arguments": [[text, {"max_gen_toks": run["config"]["max_new_tokens"]}]],
            "resps": [[samples[(qid, i)]["text"] for i in range(n)]],
            "filtered_resps": [grades[(qid, i)]["extracted"] for i in range(n)],
            "filter": "none",
            "metrics": [f"mean@{n}", f"pass@{n}"],
            "doc_hash": hash_string(qid),
            "prompt_hash": hash_string(text),
            "target_hash": hash_string(str(prompt["answer"])),
            f"mean@{n}": question["mean@k"][n],
            f"pass@{n}": question["pass@k"][n],
        })
    return records


def export_lm_eval(run_dirs: Sequence[Union[str, Path]], out_dir: Union[str, Path]) -> List[Path]:
    """Write every run in lm-eval's format under ``out_dir``; returns the results files."""
    from lm_eval.loggers import EvaluationTracker

    from mi_mergekit.eval.runner import load_run

    written = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        results, task = lm_eval_results(run), f"mi_{run['metrics']['benchmark']}"
        samples = {task: lm_eval_samples(run)}
        tracker = EvaluationTracker(output_path=str(out_dir))
        tracker.general_config_tracker.log_experiment_args(
            model_source=results["config"]["model"], model_args=results["config"]["model_args"],
            system_instruction=run["config"].get("system_prompt"), chat_template=None, fewshot_as_multiturn=False)
        before = set(Path(out_dir).rglob("*"))
        tracker.save_results_aggregated(results=results, samples=samples)
        tracker.save_results_samples(task_name=task, samples=samples[task])
        new = sorted(set(Path(out_dir).rglob("*")) - before)
        result_files = [p for p in new if p.name.startswith("results_")]
        if not result_files or not any(p.name.startswith(f"samples_{task}_") for p in new):
            raise ContractError(f"lm-eval's tracker did not write the results of {run_dir} (see its log) ({out_dir})")
        written += result_files
    return written
