"""``mi-mergekit plan`` and ``mi-mergekit merge``: recipes in, audited merges out."""

from __future__ import annotations

import logging
import sys
from typing import Any, Dict, Tuple

import click
import yaml

from mi_mergekit.errors import MergeInputError, about, explain, validation_summary
from mi_mergekit.safety import allow_overwrite, overwrite_option


def load_recipe(path: str, substitutions: Tuple[str, ...] = ()) -> Tuple[Any, str]:
    """Read a YAML recipe, apply ``NAME=PATH`` model substitutions, validate it.

    Returns ``(MergeConfiguration, yaml_text_after_substitution)``.
    """
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise MergeInputError(f"cannot read the recipe: {explain(exc)}", path=path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MergeInputError(explain(exc), path=path) from None
    if not isinstance(data, dict):
        raise MergeInputError("a recipe must be a YAML mapping (merge_method: …, models: …)", path=path)
    mapping = parse_substitutions(substitutions)
    used = set()
    data = _substitute(data, mapping, used)
    unused = sorted(set(mapping) - used)
    if unused:
        raise MergeInputError(
            f"--model names not found in the recipe: {', '.join(unused)} "
            "(use the model name exactly as the recipe writes it)", path=path
        )
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as exc:
        raise MergeInputError(validation_summary(exc), path=path) from None
    return config, yaml.safe_dump(data, sort_keys=False)


def parse_substitutions(items: Tuple[str, ...]) -> Dict[str, str]:
    mapping = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise click.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--model")
        mapping[name] = target
    return mapping


def _substitute(value: Any, mapping: Dict[str, str], used: set) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, mapping, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping, used) for v in value]
    if isinstance(value, str) and value in mapping:
        used.add(value)
        return mapping[value]
    return value


model_option = click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME=PATH",
    help="Use a local copy of a model named in the recipe (repeatable), e.g. "
    "--model Qwen/Qwen3-4B-Instruct-2507=/data/instruct",
)


@click.command("plan")
@click.argument("recipe", type=click.Path(dir_okay=False))
@model_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the plan as JSON.")
def plan_command(recipe: str, models: Tuple[str, ...], json_path: str):
    """Dry run: check RECIPE against its checkpoints and print the per-tensor λ plan.

    Reads only configs and tensor indexes (no weights); nothing is written
    except the optional JSON file.
    """
    from mi_mergekit.plan import build_plan

    config, _ = load_recipe(recipe, models)
    with about(recipe):
        plan, _ = build_plan(config)
    click.echo(plan.table())
    if json_path:
        plan.write_json(json_path)
        click.echo(f"plan written to {json_path}")


def _merge_options(function):
    from mergekit.options import add_merge_options

    return add_merge_options(function)


@click.command("merge")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out_path", type=click.Path(file_okay=False))
@model_option
@overwrite_option
@_merge_options
def merge_command(merge_options, recipe: str, out_path: str, models: Tuple[str, ...], overwrite: bool):
    """Run RECIPE with mergekit's engine into OUT_PATH (same options as mergekit-yaml).

    Unlike ``mergekit-yaml``, models can be pointed at local copies with
    ``--model NAME=PATH`` without editing the recipe.
    """
    import mergekit.merge

    from mi_mergekit import register

    register()
    merge_options.apply_global_options()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    config, source = load_recipe(recipe, models)
    with about(recipe), allow_overwrite(overwrite):
        mergekit.merge.run_merge(config, out_path, options=merge_options, config_source=source)
    click.echo(f"merged model written to {out_path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(plan_command())
