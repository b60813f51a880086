"""``mi-mergekit recipes``: write families of model_interpolation recipes (see
:mod:`mi_mergekit.merge.recipes` for the naming scheme and the generator)."""

from __future__ import annotations

from typing import List

import click

from mi_mergekit.cli.options import lambdas_option, usage_errors
from mi_mergekit.merge.recipes import (
    MODEL_PAIRS,
    THIRDS,
    Recipe,
    family,
    read_families,
    write,
)


@click.command("recipes")
@lambdas_option(help="λ values", name="lambdas")
@click.option("--window", "windows", multiple=True, metavar="A,B|NAME",
              help="Layer window, 0-based inclusive (12,35) or a thirds name "
              f"({', '.join(THIRDS)}); repeatable. Default: whole model.")
@click.option("--modules", help="Interpolate only these module groups (e.g. attention).")
@click.option("--exclude-modules", help="Keep these module groups at Instruct weights (e.g. mlp).")
@click.option("--model-pair", type=click.Choice(sorted(MODEL_PAIRS)),
              help="4b = Qwen3-4B-Instruct/Thinking-2507 (default), 30b = Qwen3-30B-A3B-Instruct/Thinking-2507, "
                   "4b-mix / 4b-base = Qwen3-4B / Qwen3-4B-Base (λ=0 end) × Qwen3-4B-Thinking-2507 (Table 4).")
@click.option("--instruct", help="Custom pair: the Instruct model (base_model, λ=0).")
@click.option("--thinking", help="Custom pair: the Thinking model (λ=1).")
@click.option("--num-layers", type=click.IntRange(min=1), help="Custom pair: decoder layer count (for thirds windows and names).")
@click.option("--suffix", help="Custom pair: file-name suffix, e.g. 8b -> mi_0.5_8b.yaml.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16",
              show_default=True, help="dtype written into the recipes (the kernel computes in float32).")
@click.option("--families", "families_file", type=click.Path(dir_okay=False, exists=True),
              help="Run every family listed in this file (one argument line each) instead.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the recipes into.")
def recipes_command(**options):
    """Write model_interpolation recipes: every λ × every window, one YAML each.

    Names follow mi_<λ>[_<window>][_<modules>][_<model>].yaml (see recipes/README.md).
    Examples:

      mi-mergekit recipes --lambdas 0.1:0.9:0.1 -o recipes/

      mi-mergekit recipes --lambdas 0.8 --window last2of3 --model-pair 30b -o recipes/
    """
    with usage_errors():
        _write_recipes(**options)


def _write_recipes(lambdas, windows, modules, exclude_modules, model_pair, instruct, thinking,
                   num_layers, suffix, dtype, families_file, out_dir):
    if families_file:
        if (lambdas or windows or modules or exclude_modules or model_pair or instruct or thinking
                or num_layers or suffix is not None or dtype != "bfloat16"):
            raise click.UsageError("--families replaces the per-family options")
        recipes: List[Recipe] = []
        for args in read_families(families_file):
            context = recipes_command.make_context("recipes", args + ["-o", out_dir])
            params = dict(context.params)
            if params.pop("families_file"):
                raise click.UsageError("a families file cannot include another one")
            params.pop("out_dir")
            recipes += _family_from_params(**params)
    else:
        if not lambdas:
            raise click.UsageError("--lambdas is required (or --families FILE)")
        recipes = family(lambdas, windows, modules, exclude_modules, model_pair, instruct,
                         thinking, num_layers, suffix, dtype)
    names = [r.name for r in recipes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise click.UsageError(f"two recipes would get the same name: {', '.join(duplicates)}")
    for path in write(recipes, out_dir):
        click.echo(path)


def _family_from_params(lambdas, windows, modules, exclude_modules, model_pair, instruct,
                        thinking, num_layers, suffix, dtype) -> List[Recipe]:
    if not lambdas:
        raise click.UsageError("every family line needs --lambdas")
    return family(lambdas, windows, modules, exclude_modules, model_pair, instruct, thinking,
                  num_layers, suffix, dtype)
