"""``mi-mergekit plan``, ``merge`` and ``sweep``: recipes in, audited merges out."""

from __future__ import annotations

import logging
from typing import Tuple

import click

from mi_mergekit.cli.options import lambdas_option, merge_options, model_option, overwrite_option
from mi_mergekit.errors import about
from mi_mergekit.merge.config import load_recipe


@click.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False))
@model_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the plan as JSON.")
@merge_options
def plan_command(merge_options, recipe: str, models: Tuple[str, ...], json_path: str):
    """Dry run: check RECIPE against its checkpoints and print the per-tensor λ plan.

    Reads only configs and tensor indexes (no weights); nothing is written
    except the optional JSON file (and, for a LoRA reference, the merged model in
    --lora-merge-cache, as mergekit-yaml would). Takes mergekit-yaml's options.
    """
    from mi_mergekit import register
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.merge.plan import build_plan

    register()
    merge_options.apply_global_options()
    config, _ = load_recipe(recipe, models)
    with about(recipe):
        config, _ = resolve_models(config, merge_options)
        plan, _ = build_plan(config, merge_options)
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
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@lambdas_option(required=True, help="λ values")
@model_option
@overwrite_option
@merge_options
def sweep_command(merge_options, recipe: str, out_dir: str, lambdas_spec: str, models, overwrite: bool):
    """Write one model folder per λ (OUT_DIR/lambda_<λ>/) reading each input tensor once.

    RECIPE is a model_interpolation recipe; its window / module selection is kept
    and its `lambda` is replaced by each value of --lambdas. Each output equals
    `mergekit-yaml` of the recipe at that λ, bit for bit. Takes mergekit's
    options (--cuda, --device, --out-shard-size, ...).
    """
    from mi_mergekit import register
    from mi_mergekit.merge.lambdas import parse_lambdas
    from mi_mergekit.merge.sweep import run_sweep
    from mi_mergekit.safety import allow_overwrite

    register()
    merge_options.apply_global_options()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    config, source = load_recipe(recipe, models)
    with about(recipe), allow_overwrite(overwrite):
        outputs = run_sweep(config, parse_lambdas(lambdas_spec), out_dir, merge_options,
                            config_source=source)
    for output in outputs:
        click.echo(output.path)
