"""``mi-mergekit eval`` and ``mi-mergekit report`` (click commands).

Examples::

    mi-mergekit eval --model out/mi-0.8 --benchmark aime25 --dataset aime25.jsonl \\
        --decoding thinking -n 64 --out runs/mi-0.8-aime --lambda 0.8
    mi-mergekit eval --model Qwen/Qwen3-4B-Thinking-2507 --benchmark gpqa --dataset gpqa_diamond.csv \\
        --backend openai --base-url http://gpu-box:8000/v1 --concurrency 32 --out runs/thinking-gpqa
    mi-mergekit eval --out runs/mi-0.8-aime --grade-only       # re-grade, never regenerates
    mi-mergekit eval --out runs/mi-0.8-aime --grade-only --grading strict   # … under the other rules
    mi-mergekit report runs/* --out report/ --paper-reference 4b --thinking-run Thinking

Re-running an interrupted ``eval`` with the same arguments resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mi_mergekit.eval.backends import BACKENDS
from mi_mergekit.eval.benchmarks import ALIASES, BENCHMARKS
from mi_mergekit.eval.decoding import PRESETS
from mi_mergekit.eval.graders import GRADERS
from mi_mergekit.eval.grading import GRADING_MODES, POSTPROCESS


class _JSONObject(click.ParamType):
    name = "json"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc.msg} at column {exc.colno}): {value!r}", param, ctx)
        if not isinstance(data, dict):
            self.fail(f"must be a JSON object, got {type(data).__name__}", param, ctx)
        return data


JSON_OBJECT = _JSONObject()


def _parse_columns(values) -> dict:
    columns = {}
    for value in values:
        role, sep, column = value.partition("=")
        if not sep or not role or not column:
            raise click.BadParameter(f"expected ROLE=COLUMN, got {value!r}", param_hint="--column")
        columns[role.strip()] = column.strip()
    return columns


@click.command("eval")
@click.option("--model", "model_path",
              help="Model folder (or hub id) to evaluate; its chat template renders prompts. (Here --model is "
                   "the model itself; in merge/plan/sweep it is NAME=PATH, a local copy of a recipe's model.)")
@click.option("--dataset", help="Dataset file (.jsonl/.csv/.parquet) or hf:NAME[:CONFIG] (needs `datasets`).")
@click.option("--benchmark", type=click.Choice(sorted(BENCHMARKS) + sorted(ALIASES)), default="boxed",
              show_default=True, help="Dataset kind, prompt and defaults.")
@click.option("--grader", type=click.Choice(sorted(GRADERS)), help="Grader (default: the benchmark's).")
@click.option("--grading", type=click.Choice(GRADING_MODES),
              help="paper: the paper's evaluator (OpenCompass rules: a response without </think> is graded on its "
                   "whole text; math LaTeX-only, \\boxed first; GPQA options rotated by row, first ANSWER match) — "
                   "default for aime25/ifeval/gpqa; strict: this harness's stricter rules — default for boxed. "
                   "With --grade-only: re-grade in this mode (default: the run's).")
@click.option("--postprocess", type=click.Choice(["auto", *POSTPROCESS]), default="auto", show_default=True,
              help="paper grading: non-reasoning = OpenCompass's extract_non_reasoning_content (the paper's Thinking "
                   "and merged models), none = the raw response (the paper's Instruct model); auto = the paper's "
                   "grouping: none for --decoding instruct with a template that opens no think block. "
                   "With --grade-only: re-grade with this (default: the run's).")
@click.option("--decoding", type=click.Choice(sorted(PRESETS) + ["custom"]), default="thinking", show_default=True)
@click.option("--temperature", type=float, help="Override the preset's temperature.")
@click.option("--top-p", type=float, help="Override the preset's top_p.")
@click.option("--top-k", type=int, help="Override the preset's top_k.")
@click.option("--min-p", type=float, help="min_p (default: unset).")
@click.option("-n", "--n-samples", type=int, help="Samples per question (default: aime25 64, others 8).")
@click.option("--max-new-tokens", type=int, help="Token budget (default: aime25 81920, others 65536).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (per-chunk seeds derive from it).")
@click.option("--shuffle-seed", type=int, default=0, show_default=True,
              help="GPQA option shuffling seed (--grading strict; paper grading rotates options by row).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--backend", type=click.Choice(BACKENDS + ("http",)), default="transformers", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="transformers: samples per generate call.")
@click.option("--prompt-batch", type=int, default=1, show_default=True,
              help="transformers: questions per generate call (fixed groups; faster for small models).")
@click.option("--device", help="transformers: device (default cuda if available, else cpu).")
@click.option("--dtype", default="auto", show_default=True, help="transformers/vllm: model dtype.")
@click.option("--tokenizer", "tokenizer_path", help="Tokenizer folder if not the model's.")
@click.option("--base-url", "base_urls", multiple=True,
              help="openai: server base URL, e.g. http://gpu1:8000/v1; repeat it to spread the run over a "
                   "fleet (a failing server leaves the rotation, its requests go elsewhere).")
@click.option("--served-model", help="openai: model name the server knows (default: --model).")
@click.option("--api", type=click.Choice(["completions", "chat"]), default="completions", show_default=True,
              help="openai: endpoint; completions renders the chat template locally.")
@click.option("--api-key", envvar="OPENAI_API_KEY", show_envvar=True, help="openai: bearer token.")
@click.option("--extra-body", type=JSON_OBJECT, metavar="JSON",
              help='openai: merged into every request, e.g. \'{"chat_template_kwargs": {"enable_thinking": true}}\'.')
@click.option("--drop-unsupported", is_flag=True,
              help="openai: send only the sampling fields the server takes (e.g. no top_k for the OpenAI API or "
                   "transformers serve); what is dropped is recorded in run.json and shown in the report as a "
                   "deviation from the paper's decoding. Without it, a refused field stops the run before generating.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="openai: requests in flight.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="openai: seconds of silence allowed between streamed chunks (never bounds a whole generation).")
@click.option("--connect-timeout", type=float, default=30.0, show_default=True, help="openai: seconds to connect.")
@click.option("--retries", type=int, default=3, show_default=True, help="openai: retries per request.")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="vllm: GPUs per model.")
@click.option("--samples-per-request", type=int,
              help="vllm/openai: samples per request (n; default vllm 8, openai 8 with a tokenizer, else 1).")
@click.option("--max-model-len", type=int, help="vllm: context length.")
@click.option("--column", "columns", multiple=True, metavar="ROLE=COLUMN", help="Map a dataset column (repeatable).")
@click.option("--split", default="train", show_default=True, help="Split for hf: datasets.")
@click.option("--limit", type=int, help="Only the first N questions.")
@click.option("--label", help="Row name in reports (default: model folder name).")
@click.option("--lambda", "lambda_", type=float, help="λ of this model, for plots (default: model's mi_plan.json).")
@click.option("--system-prompt", help="Optional system message.")
@click.option("--grade-only", is_flag=True, help="Re-grade the samples stored in --out; never generates.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(**opts):
    """Generate k samples per question, grade them and write per-run metrics (resumable)."""
    from mi_mergekit.eval.runner import evaluate, grade_run, load_run

    if opts["grade_only"]:
        summary = grade_run(opts["out_dir"], grader=opts["grader"], progress=not opts["no_progress"],
                            grading=opts["grading"],
                            postprocess=None if opts["postprocess"] == "auto" else opts["postprocess"])
        _echo_summary(summary, Path(opts["out_dir"]))
        return
    if not opts["model_path"] or not opts["dataset"]:
        raise click.UsageError("--model and --dataset are required (unless --grade-only)")
    run_dir = evaluate(
        opts["model_path"],
        opts["dataset"],
        grader=opts["grader"],
        decoding=_decoding(opts),
        n_samples=opts["n_samples"],
        max_new_tokens=opts["max_new_tokens"],
        seed=opts["seed"],
        out_dir=opts["out_dir"],
        backend=opts["backend"],
        benchmark=opts["benchmark"],
        backend_options=_backend_options(opts),
        columns=_parse_columns(opts["columns"]),
        split=opts["split"],
        limit=opts["limit"],
        label=opts["label"],
        lambda_=opts["lambda_"],
        shuffle_seed=opts["shuffle_seed"],
        system_prompt=opts["system_prompt"],
        progress=not opts["no_progress"],
        grading=opts["grading"],
        postprocess=opts["postprocess"],
    )
    _echo_summary(load_run(run_dir)["metrics"], run_dir)


def _decoding(opts):
    from mi_mergekit.eval.decoding import resolve_decoding

    return resolve_decoding(opts["decoding"], opts["temperature"], opts["top_p"], opts["top_k"], opts["min_p"])


def _backend_options(opts) -> dict:
    backend = opts["backend"]
    if backend == "transformers":
        return dict(batch_size=opts["batch_size"], prompt_batch=opts["prompt_batch"],
                    device=opts["device"], dtype=opts["dtype"],
                    tokenizer_path=opts["tokenizer_path"])
    if backend == "vllm":
        return dict(samples_per_request=opts["samples_per_request"], tensor_parallel_size=opts["tensor_parallel_size"],
                    dtype=opts["dtype"], max_model_len=opts["max_model_len"], tokenizer_path=opts["tokenizer_path"],
                    seed=opts["seed"])
    if not opts["base_urls"]:
        raise click.UsageError("--backend openai needs --base-url (repeatable)")
    return dict(base_url=list(opts["base_urls"]), served_model=opts["served_model"], api=opts["api"],
                concurrency=opts["concurrency"], timeout=opts["timeout"], connect_timeout=opts["connect_timeout"],
                retries=opts["retries"], api_key=opts["api_key"], extra_body=opts["extra_body"],
                samples_per_request=opts["samples_per_request"], tokenizer_path=opts["tokenizer_path"],
                drop_unsupported=opts["drop_unsupported"])


def _echo_summary(m: dict, run_dir: Path) -> None:
    n = m["n_samples"]
    vote = f"{100 * m['vote@k'][n]:.1f}" if m["vote@k"] else "n/a"
    click.echo(
        f"{m['label']} / {m['benchmark']}: Mean@{n} {100 * m['mean']:.1f}  Pass@{n} {100 * m['pass@k'][n]:.1f}  "
        f"Vote@{n} {vote}  #N {m['tokens_mean']:.0f} (median {m['tokens_median']:.0f})  "
        f"#R {100 * m['think_ratio']:.1f}%  truncated {100 * m['truncation_rate']:.1f}%  "
        f"[{m.get('grading', 'strict')} grading]  -> {run_dir}"
    )
    for deviation in m.get("decoding_deviations") or ():
        click.echo(f"  decoding deviation: {deviation}", err=True)


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", default="report", show_default=True, type=click.Path(file_okay=False),
              help="Where report.md, report.csv and lambda_*.png go.")
@click.option("--lm-eval", "lm_eval_dir", type=click.Path(file_okay=False),
              help="Also write each run in lm-eval's results format (results_*.json + samples_*.jsonl) here.")
@click.option("--paper-reference", type=click.Choice(["4b", "30b"]),
              help="Append the paper's own rows: 4b = Table 2 (Qwen3-4B-2507), 30b = Table 5 (Qwen3-30B-A3B-2507).")
@click.option("--thinking-run", metavar="LABEL",
              help="Label of the Thinking run: adds each run's Length Ratio (Token #N relative to it, %; Fig. 5).")
def report_command(runs, out_dir, lm_eval_dir, paper_reference, thinking_run):
    """Put eval runs side by side in the paper's Table 2 / 5 layout (Mean/Pass@64, Mean/Pass@8,
    Mean/Vote@8, Token #N, Think #R; Markdown + CSV), with details, and plot metrics against λ."""
    from mi_mergekit.eval.report import write_report

    result = write_report(runs, out_dir, paper_reference=paper_reference, thinking_run=thinking_run)
    click.echo(result["markdown"], nl=False)
    exported = []
    if lm_eval_dir:
        from mi_mergekit.eval.export import export_lm_eval

        exported = export_lm_eval(runs, lm_eval_dir)
    for path in [result["md"], result["csv"], result["paper_csv"], *result["plots"], *exported]:
        click.echo(f"wrote {path}", err=True)
