"""``mi-mergekit diverge``, ``stages`` and ``find-lambda``: the analysis commands
(the work is in :mod:`mi_mergekit.analysis`)."""

from __future__ import annotations

import json
import logging
import os

import click

from mi_mergekit.analysis.divergence import DEFAULT_CHUNK
from mi_mergekit.analysis.stages import Thresholds
from mi_mergekit.cli.options import check_plausible, device_options, eval_options, evaluation, model_option
from mi_mergekit.errors import MiMergekitError


@click.command("diverge")
@click.argument("models", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--sigma", "sigma_mode", is_flag=True,
              help="Table 1's weight similarity σ (Shadow-FT's definition: mean over decoder-layer tensors of "
                   "Σ|A−B| / (Σ|A|+Σ|B|)) for every pair of MODELS, or for the --pair pairs.")
@click.option("--pair", "pair_args", nargs=2, multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="A B", help="With --sigma: compare these two models (repeatable) instead of every pair.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON document here.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Write the heatmap PNG here.")
@click.option("--metric", type=click.Choice(["relative_distance", "cosine"]), default="relative_distance",
              show_default=True, help="What the heatmap shows.")
@click.option("--chunk-elements", type=int, default=DEFAULT_CHUNK, show_default=True,
              help="Values reduced at a time (memory knob).")
@device_options(default="cpu", what="compute")
def diverge_command(models, sigma_mode, pair_args, json_path, png_path, metric, chunk_elements, device):
    """Per-layer × per-module weight distance between INSTRUCT and THINKING (MODELS: two
    local folders); or, with --sigma, the paper's Table 1 σ for pairs of models.

    Streams one tensor at a time; prints a per-layer table, optionally writes JSON and a PNG.

    \b
    mi-mergekit diverge /data/instruct /data/thinking --png diverge.png
    mi-mergekit diverge --sigma Qwen3-4B-Base Qwen3-4B Qwen3-4B-Instruct-2507 Qwen3-4B-Thinking-2507
    mi-mergekit diverge --sigma --pair /data/base /data/instruct --pair /data/instruct /data/thinking
    """
    from mi_mergekit.analysis import divergence as div

    chunk = chunk_elements
    if sigma_mode:
        if png_path:
            raise click.UsageError("--png draws the distance heatmap; --sigma writes a table (and --json)")
        if pair_args and models:
            raise click.UsageError("give either MODELS (every pair) or --pair A B, not both")
        if pair_args:
            names = list(dict.fromkeys(p for pair in pair_args for p in pair))
            pairs = [(names.index(a), names.index(b)) for a, b in pair_args]
        else:
            names, pairs = list(models), None
            if len(names) < 2:
                raise click.UsageError("--sigma needs two or more MODELS (or --pair A B)")
        doc = div.sigma(names, pairs, chunk_elements=chunk, progress=True, device=device)
        click.echo(div.sigma_table(doc))
    else:
        if pair_args:
            raise click.UsageError("--pair is for --sigma")
        if len(models) != 2:
            raise MiMergekitError(f"diverge compares two models, INSTRUCT and THINKING; got {len(models)} "
                                  "(for σ of several pairs use --sigma)")
        doc = div.divergence(*models, chunk_elements=chunk, progress=True, device=device)
        click.echo(div.summary_table(doc))
    if json_path:
        div.write_json(doc, json_path)
        click.echo(f"JSON written to {json_path}")
    if png_path:
        div.plot_heatmap(doc, png_path, metric=metric)
        click.echo(f"heatmap written to {png_path}")


@click.command("stages")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the result as JSON.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Plot the curves with stages shaded.")
@click.option("--think-low", type=float, default=Thresholds.think_low, show_default=True,
              help="Think #R at or below this is 'no explicit thinking' (stage 1).")
@click.option("--think-high", type=float, default=Thresholds.think_high, show_default=True,
              help="Think #R at or above this is 'saturated' (stage 3).")
@click.option("--accuracy-tolerance", type=float, default=Thresholds.accuracy_tolerance, show_default=True,
              help="Accuracy gains up to this (absolute fraction) count as 'not improving'.")
@click.option("--token-growth", type=float, default=Thresholds.token_growth, show_default=True,
              help="Relative token growth past the plateau that counts as 'tokens keep growing'.")
def stages_command(runs, json_path, png_path, think_low, think_high, accuracy_tolerance, token_growth):
    """Find the three stages in the eval runs (or CSV/JSON rows) of a λ sweep.

    RUNS are eval run directories (or folders of them), metrics.json files, or
    CSV/JSON/JSONL files with columns lambda, think_ratio, mean_tokens, accuracy.
    Runs without a λ (layer-window and module variants) are listed and left out.
    """
    from mi_mergekit.analysis import stages

    result = stages.analyse(runs, stages.Thresholds(think_low, think_high, accuracy_tolerance, token_growth))
    click.echo(stages.describe(result))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
            handle.write("\n")
        click.echo(f"JSON written to {json_path}")
    if png_path:
        stages.plot(result, png_path)
        click.echo(f"plot written to {png_path}")


def _target(ctx, param, value):
    from mi_mergekit.analysis.lambda_search import Target

    try:
        return Target.parse(value)
    except MiMergekitError as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


@click.command("find-lambda")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--target", default="think_ratio>=0.95", show_default=True, callback=_target,
              help="think_ratio>=X (bisection), tokens<=N or accuracy>=X (grid, then refine).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for probes.jsonl, result.json and the eval runs.")
@click.option("--lo", type=float, default=0.0, show_default=True,
              help="Lowest λ searched (with --profile: lowest value of either parameter; with --route: the "
                   "lowest knob value, 0 = every question to the grid's lowest λ).")
@click.option("--hi", type=float, default=1.0, show_default=True,
              help="Highest λ searched (above 1 extrapolates beyond the Thinking model; with --profile: highest "
                   "value of either parameter; with --route: the highest knob value, at most 1).")
@click.option("--profile", "profile_family", type=click.Choice(["ramp", "modules"]),
              help="Search a λ profile instead of one λ: ramp (the first and last layer's λ, linear between) "
                   "or modules (attention's λ, the MLP's λ), on a --grid × --grid grid, then refined.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=0.02, show_default=True,
              help="Stop when λ is bracketed this tightly.")
@click.option("--max-probes", type=click.IntRange(min=1), default=10, show_default=True,
              help="At most this many evaluations.")
@click.option("--grid", type=click.IntRange(min=2), default=5, show_default=True,
              help="Grid points for tokens/accuracy targets.")
@click.option("--materialize", type=click.Choice(["auto", "memory", "disk"]), default="auto", show_default=True,
              help="memory: set the live transformers model's weights per λ; disk: merge to OUT/models "
                   "(any backend; an openai server must load each model).")
@click.option("--keep-models", is_flag=True, help="disk: keep the merged candidates.")
@click.option("--route", "router_path", type=click.Path(dir_okay=False),
              help="Target a routed grid: search the knob (0..1) of this router (`mi-mergekit route fit`) "
                   "instead of λ; the grid's merges are made once from RECIPE (transformers backend).")
@model_option
@eval_options(n_samples=4, dataset_required=True)
@device_options(default=None, what="merge candidates (and generate)")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def find_lambda_command(recipe, target, out_dir, lo, hi, profile_family, tol, max_probes, grid, materialize,
                        keep_models, router_path, models, device, no_progress, **opts):
    """Search λ for RECIPE (model_interpolation) that meets --target on a calibration set
    (the evaluation options are `mi-mergekit eval`'s).

    Alternates merge and eval; every probe is logged to OUT/probes.jsonl and the
    answer written to OUT/result.json. With --route, the searched value is the knob of a
    routed λ grid (λ per question) and OUT/router.json the router at the answer. With
    --profile, the two parameters of a λ-profile family (OUT/profile.yaml: the answer's recipe).
    """
    import tqdm
    from mergekit.options import MergeOptions

    from mi_mergekit import register
    from mi_mergekit.analysis.lambda_search import ProfileFamily, find_lambda, find_profile
    from mi_mergekit.analysis.probe_evaluators import HarnessEvaluator
    from mi_mergekit.merge.config import load_recipe
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.runlock import hold

    if not lo < hi:
        raise click.BadParameter(f"--lo {lo:g} must be below --hi {hi:g}", param_hint="'--lo' / '--hi'")
    if router_path and not 0 <= lo < hi <= 1:
        raise click.BadParameter("with --route the knob runs from 0 to 1", param_hint="'--lo' / '--hi'")
    if not router_path:
        check_plausible((lo, hi), param_hint="'--lo' / '--hi'")
    register()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    if not router_path:
        from mi_mergekit.merge.checks import extrapolation_note

        note = extrapolation_note((lo, hi))
        if note:
            logging.getLogger("mi_mergekit").warning("%s (--lo/--hi)", note)
    if no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    options = MergeOptions(quiet=True, device=device or "cpu")
    config, _ = load_recipe(recipe, models)
    config, _ = resolve_models(config, options)
    task, backend, backend_options = evaluation(opts, device)
    if router_path and profile_family:
        raise click.UsageError("--route searches a routing knob; --profile a λ profile: choose one")
    if router_path and (backend != "transformers" or materialize == "memory"):
        raise click.UsageError("--route runs the grid's merges with the transformers backend, from disk")
    if materialize == "auto":
        materialize = "memory" if backend == "transformers" and not router_path else "disk"
    router = None
    if router_path:
        from mi_mergekit.routing.policy import Router

        router = Router.load(router_path)  # a missing or unreadable file: one Error line, before any work
    hold(out_dir, "mi-mergekit find-lambda")  # one search per folder at a time (mi_mergekit.runlock)
    if router is not None:
        from mi_mergekit.analysis.probe_evaluators import RoutedEvaluator

        evaluator = RoutedEvaluator(config, router, out_dir, task, options=options,
                                    backend_options=backend_options, keep_models=keep_models)
    else:
        family = ProfileFamily.of(profile_family, config, options) if profile_family else None
        evaluator = HarnessEvaluator(config, out_dir, task, materialize=materialize, backend=backend,
                                     backend_options={k: v for k, v in backend_options.items() if v is not None},
                                     options=options, keep_models=keep_models, family=family)
    with tqdm.tqdm(total=max_probes, desc="find-lambda probes", unit="probe", disable=no_progress) as bar:
        def probe(lam: float):
            shown = ",".join(f"{v:g}" for v in lam) if isinstance(lam, tuple) else f"{lam:g}"
            bar.set_postfix_str(f"{'knob' if router else profile_family or 'λ'}={shown}")
            metrics = evaluator(lam)
            bar.update(1)
            return metrics

        try:
            log_path = os.path.join(out_dir, "probes.jsonl")
            if profile_family:  # from the recipe's static λ, so the answer never ranks below it
                result = find_profile(probe, target, lo=lo, hi=hi, tol=tol, max_probes=max_probes, grid=grid,
                                      log_path=log_path, start=family.static())
            else:
                result = find_lambda(probe, target, lo=lo, hi=hi, tol=tol, max_probes=max_probes, grid=grid,
                                     log_path=log_path)
        finally:
            if router is not None:
                evaluator.close()
    doc = result.to_json()
    if profile_family and result.best is not None:
        from mi_mergekit.analysis.profiles import profile_recipe, write_recipe

        best = tuple(result.best.params)
        write_recipe(os.path.join(out_dir, "profile.yaml"),
                     profile_recipe(family.base, family.profile(best), family.layout), family.profile(best))
        doc["searched"], doc["profile_recipe"] = f"{profile_family} profile", "profile.yaml"
    if router is not None:
        doc["searched"] = "routing knob"
        if result.best is not None:
            doc["router"] = router.shifted(result.best.lam).save(os.path.join(out_dir, "router.json")).name
    with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1, default=str)
        handle.write("\n")
    click.echo(result.table("knob" if router is not None else "profile" if profile_family else "λ"))
