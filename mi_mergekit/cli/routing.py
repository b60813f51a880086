"""``mi-mergekit route``: λ per question — signals, a fitted router, a routed eval run
(the work is in :mod:`mi_mergekit.routing`).

    mi-mergekit route signals --instruct pair/instruct --thinking pair/thinking --dataset calib.jsonl --out calib-signals.json
    mi-mergekit route fit --signals calib-signals.json --signal divergence --run 0.4=runs/cal_0.4 ... --out router.json
    mi-mergekit route eval --router router.json --model 0.4=models/mi_0.4 ... --dataset test.jsonl \\
        --instruct pair/instruct --thinking pair/thinking --out runs/routed
    mi-mergekit route eval ... --model 0.4=http://gpu-a:8000/v1 --model 1=http://gpu-b:8000/v1 --tokenizer pair/thinking

The calibration runs are ordinary ``mi-mergekit eval`` runs of each grid λ's merge on the
calibration set; the test set must share no question with it (checked).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mi_mergekit.cli.options import device_options, eval_options, evaluation
from mi_mergekit.routing.policy import OBJECTIVES
from mi_mergekit.routing.signals import SIGNALS


@click.group("route")
def route_command():
    """λ per question (DAMI-style): route each question to one merge of a λ grid by a zero-shot signal."""


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


@route_command.command("signals")
@click.option("--instruct", required=True, type=click.Path(file_okay=False, exists=True), help="The Instruct model folder.")
@click.option("--thinking", type=click.Path(file_okay=False, exists=True),
              help="The Thinking model folder (needed for divergence).")
@click.option("--dataset", required=True, help="Dataset file, as for `mi-mergekit eval`.")
@click.option("--benchmark", default="boxed", show_default=True)
@click.option("--signals", "signal_names", default=",".join(SIGNALS), show_default=True,
              help=f"Comma list of {', '.join(SIGNALS)}.")
@click.option("--samples", default=4, show_default=True, help="disagreement: Instruct samples per question.")
@click.option("--max-new-tokens", default=48, show_default=True, help="disagreement: tokens per sample.")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, help="Only the first N questions.")
@click.option("--instruct-url", help="disagreement: sample the Instruct model from this OpenAI-compatible server.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="signals.json to write.")
def signals_command(instruct, thinking, dataset, benchmark, signal_names, samples, max_new_tokens, seed, limit,
                    instruct_url, out_path):
    """Compute zero-shot routing signals of every question from the two endpoint models."""
    from mi_mergekit.routing.signals import check_signals, compute_signals

    names = check_signals(signal_names.split(","))
    backend = None
    if instruct_url:
        from mi_mergekit.eval.backends.openai_http import OpenAIHTTPBackend

        backend = OpenAIHTTPBackend(instruct, instruct_url, samples_per_request=samples)
    doc = compute_signals(dataset, instruct=instruct, thinking=thinking, benchmark=benchmark, signals=names,
                          samples=samples, max_new_tokens=max_new_tokens, seed=seed, limit=limit,
                          instruct_backend=backend)
    _write_json(Path(out_path), doc)
    click.echo(f"{len(doc['questions'])} questions; seconds {doc['seconds']}; written to {out_path}")


@route_command.command("fit")
@click.option("--signals", "signals_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="signals.json of the calibration set.")
@click.option("--signal", required=True, type=click.Choice(SIGNALS))
@click.option("--run", "runs", multiple=True, required=True, metavar="LAMBDA=RUN",
              help="The eval run of the grid λ's merge on the calibration set (repeat once per λ).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="fewest-tokens", show_default=True,
              help="fewest-tokens: the fewest tokens within --tolerance standard errors of the top λ's accuracy; "
                   "best-accuracy: the highest accuracy.")
@click.option("--tolerance", default=1.0, show_default=True, help="fewest-tokens: standard errors of slack.")
@click.option("--quantiles", default=10, show_default=True, help="Cut points at this many quantiles of the signal.")
@click.option("--name", help="The router's name (labels its runs; default SIGNAL:OBJECTIVE).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="router.json to write.")
def fit_command(signals_path, signal, runs, objective, tolerance, quantiles, name, out_path):
    """Fit the signal → λ map on a calibration split (one eval run per grid λ on it)."""
    from mi_mergekit.routing.policy import fit, outcomes_of_runs
    from mi_mergekit.routing.run import parse_grid
    from mi_mergekit.routing.signals import signal_values

    doc = json.loads(Path(signals_path).read_text(encoding="utf-8"))
    run_dirs = parse_grid(runs)
    router = fit(signal, signal_values(doc, signal), outcomes_of_runs(run_dirs), objective=objective,
                 tolerance=tolerance, quantiles=quantiles, name=name,
                 calibration_questions=calibration_hashes(next(iter(run_dirs.values()))))
    router.save(out_path)
    calib = router.fit["calibration"]
    click.echo(f"{router.fit['name']}: thresholds {list(router.thresholds)} (direction {router.direction:+d}); "
               f"calibration accuracy {100 * calib['mean']:.1f}% at {calib['tokens_mean']:.0f} tokens, "
               f"mean λ {calib['lambda_mean']:.2f}; written to {out_path}")


def calibration_hashes(run_dir) -> list:
    """Hashes of the user messages of a run's questions (what the router refuses to route later)."""
    from mi_mergekit.eval.store import PROMPTS_FILE, read_jsonl
    from mi_mergekit.routing.policy import question_hash

    return [question_hash(p["messages"][-1]["content"]) for p in read_jsonl(Path(run_dir) / PROMPTS_FILE)]


@route_command.command("eval")
@click.option("--router", "router_path", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--model", "models", multiple=True, required=True, metavar="LAMBDA=PATH|URL",
              help="The merge of each grid λ (repeat once per λ): a model folder (loaded once, transformers) or the "
                   "base URL of an OpenAI-compatible server serving it (a fleet; --served-model NAME names the model "
                   "on every server, --served-model LAMBDA=NAME,... on each, default mi_<λ>; the openai options below "
                   "apply to each).")
@click.option("--signals", "signals_path", type=click.Path(dir_okay=False, exists=True),
              help="signals.json of the dataset (default: computed now from --instruct/--thinking).")
@click.option("--instruct", type=click.Path(file_okay=False, exists=True), help="The Instruct model (signals).")
@click.option("--thinking", type=click.Path(file_okay=False, exists=True), help="The Thinking model (signals).")
@eval_options(dataset_required=True)
@device_options(default=None, what="transformers: generate (and compute the signals)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--label", help="Row name in reports (default: the router's name).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars (as `mi-mergekit eval`).")
def eval_command(router_path, models, signals_path, instruct, thinking, device, out_dir, label, no_progress, **opts):
    """Evaluate with a λ per question: signals (before generating), the router, the grid's merges
    (the evaluation options are `mi-mergekit eval`'s; each λ's --model sets its backend)."""
    from mi_mergekit.routing.policy import Router
    from mi_mergekit.routing.run import GridBackends, parse_grid, parse_served_models, routed_evaluate
    from mi_mergekit.routing.signals import compute_signals, signal_values

    if opts["backend"] != "transformers" or opts["base_urls"]:
        raise click.UsageError("each λ's --model LAMBDA=PATH|URL sets its backend: leave out --backend and --base-url")
    router = Router.load(router_path)
    grid = parse_grid(models)
    task = evaluation(opts, device).task  # the backend is the grid's, below
    if signals_path:
        doc = json.loads(Path(signals_path).read_text(encoding="utf-8"))
    else:
        if not instruct:
            raise click.UsageError("give --signals FILE, or --instruct (and --thinking) to compute them")
        doc = compute_signals(opts["dataset"], instruct=instruct, thinking=thinking, benchmark=opts["benchmark"],
                              signals=[router.signal], seed=opts["seed"], limit=opts["limit"], device=device,
                              progress=not no_progress)
        _write_json(Path(out_dir).with_name(Path(out_dir).name + ".signals.json"), doc)
    http = {key: opts[key] for key in ("api", "api_key", "extra_body", "drop_unsupported", "concurrency", "timeout",
                                       "connect_timeout", "retries")}
    with GridBackends(grid, batch_size=opts["batch_size"], prompt_batch=opts["prompt_batch"], device=device,
                      dtype=opts["dtype"], compact=opts["compact"], slots=opts["slots"], tokenizer_path=opts["tokenizer_path"],
                      served_models=parse_served_models(opts["served_model"], grid),
                      http_options=http) as backends:
        run = routed_evaluate(router, backends, task, out_dir, values=signal_values(doc, router.signal),
                              label=label, progress=not no_progress)
    from mi_mergekit.eval.runner import load_run

    metrics = load_run(run)["metrics"]
    shares = ", ".join(f"λ={b['lambda']:g}: {b['questions']}" for b in metrics["routing"]["by_lambda"])
    click.echo(f"{metrics['label']}: Mean@{metrics['n_samples']} {100 * metrics['mean']:.1f}%, "
               f"Token #N {metrics['tokens_mean']:.0f}, Think #R {100 * metrics['think_ratio']:.1f}%, "
               f"mean λ {metrics['routing']['lambda_mean']:.2f} ({shares}); run in {run}")


__all__ = ["route_command"]
