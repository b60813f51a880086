"""``mi-mergekit plan``, ``merge`` and ``sweep``: recipes in, audited merges out."""

from __future__ import annotations

import logging
import os
from typing import Tuple

import click

from mi_mergekit.cli.options import (PLAN_OPTIONS, check_plausible, lambdas_option, merge_options, model_option,
                                     overwrite_option)
from mi_mergekit.errors import MergeInputError, about, os_problem
from mi_mergekit.merge.config import load_recipe


@click.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False))
@model_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the plan as JSON (its folder is created if missing).")
@merge_options(only=PLAN_OPTIONS)
def plan_command(merge_options, recipe: str, models: Tuple[str, ...], json_path: str):
    """Dry run: check RECIPE against its checkpoints and print the per-tensor λ plan.

    Makes every check the merge makes before it writes — models found, recipe names,
    types and values, layer windows, module groups, tensor names and shapes, the
    tokenizer donor — reading only configs and tensor indexes (no weights; NaN/inf in
    the weights is found by the merge). Nothing is written except the optional JSON file
    (and, for a LoRA reference, the merged model in --lora-merge-cache, as mergekit-yaml
    would). Takes the mergekit-yaml options that change what is read or checked.
    """
    from mi_mergekit import register
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.merge.plan import build_plan

    register()  # before anything imports mergekit's merge methods (the engine does)
    merge_options.apply_global_options()
    config, _ = load_recipe(recipe, models)
    if json_path:  # a folder that cannot be made fails now, not after the plan is printed
        folder = os.path.dirname(os.path.abspath(json_path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise MergeInputError(f"cannot create the folder of --json: {os_problem(exc)}", path=folder) from None
    with about(recipe):
        config, _ = resolve_models(config, merge_options)
        plan, _ = build_plan(config, merge_options)
    from mi_mergekit.merge.engine import engine_name

    engine_name()  # as the merge: a bad MI_MERGEKIT_ENGINE is an error here too
    click.echo(plan.table())
    if json_path:
        plan.write_json(json_path)
        click.echo(f"plan written to {json_path}")


@click.command("merge")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out_path", type=click.Path(file_okay=False))
@model_option
@overwrite_option
@merge_options
def merge_command(merge_options, recipe: str, out_path: str, models: Tuple[str, ...], overwrite: bool):
    """Run RECIPE into OUT_PATH (same options as mergekit-yaml).

    Unlike ``mergekit-yaml``, models can be pointed at local copies with
    ``--model NAME=PATH`` without editing the recipe.
    """
    import mergekit.merge

    from mi_mergekit import register
    from mi_mergekit.safety import allow_overwrite

    register()
    merge_options.apply_global_options()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    config, source = load_recipe(recipe, models)
    with about(recipe), allow_overwrite(overwrite):
        mergekit.merge.run_merge(config, out_path, options=merge_options, config_source=source)
    click.echo(f"merged model written to {out_path}", err=True)


@click.command("sweep")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(), metavar="RECIPE... OUT_DIR")
@lambdas_option(help="λ values (one RECIPE)", plausible=False)
@model_option
@overwrite_option
@merge_options
def sweep_command(merge_options, recipes, lambdas_spec: str, models, overwrite: bool):
    """Write many model folders reading each input tensor once.

    With one RECIPE and --lambdas: one folder per λ (OUT_DIR/lambda_<λ>/); the recipe's
    window / module selection is kept and its `lambda` replaced by each value. With several
    RECIPEs over the same two models (λ profiles from `mi-mergekit profile`, windows, module
    selections): one folder per recipe, OUT_DIR/<recipe file name>/. Each output equals
    `mergekit-yaml` of its recipe, bit for bit. Takes mergekit's options (--cuda, --device,
    --out-shard-size, ...).

    \b
    mi-mergekit sweep recipes/mi_0.8.yaml sweep/ --lambdas 0:1:0.1
    mi-mergekit sweep ramp.yaml modules.yaml acm.yaml profiles/
    """
    from mi_mergekit import register
    from mi_mergekit.merge.lambdas import parse_lambdas
    from mi_mergekit.merge.sweep import run_family, run_sweep
    from mi_mergekit.safety import allow_overwrite

    if len(recipes) < 2:
        raise click.UsageError("give RECIPE... and OUT_DIR")
    *recipes, out_dir = recipes
    for path in recipes:
        if os.path.isdir(path):
            raise click.BadParameter(f"{path} is a folder; RECIPE is a YAML file (OUT_DIR comes last)",
                                     param_hint="RECIPE")
    if lambdas_spec and len(recipes) > 1:
        raise click.UsageError("--lambdas sweeps one RECIPE; several RECIPEs are a family written as they are")
    if not lambdas_spec and len(recipes) == 1:
        raise click.UsageError("one RECIPE needs --lambdas (or give several RECIPEs)")
    register()
    merge_options.apply_global_options()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    loaded = [(os.path.splitext(os.path.basename(path))[0], *load_recipe(path, models)) for path in recipes]
    with about(recipes[0]), allow_overwrite(overwrite):
        if lambdas_spec:
            _, config, source = loaded[0]
            from mi_mergekit.merge.method import parameter_values  # after register(): it imports mergekit's methods

            if not any(value is True for _, value in parameter_values(config, "extrapolate")):
                check_plausible(parse_lambdas(lambdas_spec))
            outputs = run_sweep(config, parse_lambdas(lambdas_spec), out_dir, merge_options, config_source=source)
        else:
            outputs = run_family(loaded, out_dir, merge_options)
    for output in outputs:
        click.echo(output.path)
