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

from pathlib import Path

import click

from mi_mergekit.cli.options import check_plausible, device_options, eval_options, evaluation


@click.command("eval")
@click.option("--model", "model_path",
              help="Model folder (or hub id) to evaluate; its chat template renders prompts. (Here --model is "
                   "the model itself; in merge/plan/sweep it is NAME=PATH, a local copy of a recipe's model.)")
@eval_options()
@device_options(default=None, what="transformers: generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--label", help="Row name in reports (default: model folder name).")
@click.option("--lambda", "lambda_", type=float, callback=lambda ctx, param, value: _plausible(value),
              help="λ of this model, for report's plots: 0 for the Instruct model, 1 for the Thinking model "
                   "(default: the model's mi_plan.json; a run without λ is left out of the plots).")
@click.option("--grade-only", is_flag=True, help="Re-grade the samples stored in --out; never generates.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(device, **opts):
    """Generate k samples per question, grade them and write per-run metrics (resumable)."""
    from mi_mergekit.eval.runner import evaluate, grade_run, load_run

    if opts["no_progress"]:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if opts["grade_only"]:
        summary = grade_run(opts["out_dir"], grader=opts["grader"], progress=not opts["no_progress"],
                            grading=opts["grading"],
                            postprocess=None if opts["postprocess"] == "auto" else opts["postprocess"])
        _echo_summary(summary, Path(opts["out_dir"]))
        return
    if not opts["model_path"] or not opts["dataset"]:
        raise click.UsageError("--model and --dataset are required (unless --grade-only)")
    task, backend, backend_options = evaluation(opts, device)
    run_dir = evaluate(opts["model_path"], task, opts["out_dir"], backend, backend_options=backend_options,
                       label=opts["label"], lambda_=opts["lambda_"], progress=not opts["no_progress"])
    _echo_summary(load_run(run_dir)["metrics"], run_dir)


def _plausible(value):
    if value is not None:
        check_plausible([value], param_hint="'--lambda'")
    return value


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
@click.option("--baseline", "baselines", multiple=True, metavar="LABEL",
              help="A run that is another merge of the pair (TA, TIES; repeatable): drawn on the accuracy-against-"
                   "tokens frontier beside the MI curve and set against the best λ at equal tokens (frontier.*).")
def report_command(runs, out_dir, lm_eval_dir, paper_reference, thinking_run, baselines):
    """Put eval runs side by side in the paper's Table 2 / 5 layout (Mean/Pass@64, Mean/Pass@8,
    Mean/Vote@8, Token #N, Think #R; Markdown + CSV), with details, and plot metrics against λ."""
    from mi_mergekit.eval.report import write_report

    result = write_report(runs, out_dir, paper_reference=paper_reference, thinking_run=thinking_run,
                          frontier=True if baselines else None, baselines=baselines)
    click.echo(result["markdown"], nl=False)
    exported = []
    if lm_eval_dir:
        from mi_mergekit.eval.export import export_lm_eval

        exported = export_lm_eval(runs, lm_eval_dir)
    for path in [result["md"], result["csv"], result["paper_csv"], *result["plots"], *exported]:
        click.echo(f"wrote {path}", err=True)
    for bench, labels in sorted(result["without_lambda"].items()):
        click.echo(f"note: lambda_{bench}.png leaves out the runs without a λ: {', '.join(labels)} (give eval "
                   "--lambda: 0 for the Instruct model, 1 for the Thinking model)", err=True)
