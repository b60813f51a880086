"""``mi-mergekit profile``: write a λ profile (a λ per layer and module group) as a recipe
(the work is in :mod:`mi_mergekit.analysis.profiles` and :mod:`~mi_mergekit.analysis.estimators`)."""

from __future__ import annotations

import click

from mi_mergekit.analysis.estimators import ESTIMATORS
from mi_mergekit.cli.options import model_option


def _pairs(spec: str, what: str):
    out = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected GROUP=λ, e.g. attention=0.6,mlp=0.9", param_hint=what)
    if not out:
        raise click.BadParameter("no GROUP=λ given", param_hint=what)
    return out


def _read_prompts(path: str, column: str, limit: int):
    from mi_mergekit.errors import AnalysisInputError
    from mi_mergekit.eval.datasets import DatasetError, read_rows

    if path.endswith(".txt"):
        with open(path, encoding="utf-8") as handle:
            prompts = [line.strip() for line in handle if line.strip()]
    else:
        try:
            rows = read_rows(path)
        except DatasetError as exc:
            raise AnalysisInputError(str(exc), path=path) from None
        if rows and column not in rows[0]:
            raise AnalysisInputError(f"the prompts file has no {column!r} column (columns: {sorted(rows[0])}); "
                                     "choose one with --column", path=path)
        prompts = [str(row[column]) for row in rows if str(row.get(column, "")).strip()]
    if not prompts:
        raise AnalysisInputError("the prompts file has no prompts", path=path)
    return prompts[:limit]


def profile_table(profile, table) -> str:
    """Per-layer λ of each group and the rest, and the profile's mean λ."""
    from mi_mergekit.analysis.profiles import mean_lambda

    groups = list(profile.values)
    lines = ["layer  " + "  ".join(f"{g:<9}" for g in groups + ["rest"])]
    for layer in range(profile.num_layers):
        cells = [profile.values[g][layer] for g in groups] + [profile.default[layer]]
        lines.append(f"{layer:<6} " + "  ".join(f"{v:<9.4f}" for v in cells))
    lines.append(f"mean λ (parameter-weighted): {mean_lambda(profile, table):.4f}")
    return "\n".join(lines)


@click.command("profile")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The profile's recipe (YAML) to write.")
@click.option("--estimator", type=click.Choice(ESTIMATORS),
              help="Estimate the shape zero-shot from the two models: acm (activations on --prompts), "
                   "fisher (Fisher information on random tokens), divergence (weights).")
@click.option("--mean-lambda", type=float, help="With --estimator: the profile's parameter-weighted mean λ.")
@click.option("--ramp", metavar="FIRST,LAST", help="λ linear over the layers, from layer 0 to the last.")
@click.option("--modules", "module_spec", metavar="GROUP=λ,…",
              help="One λ per group, e.g. attention=0.6,mlp=0.9 (groups: attention, mlp, mixer).")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False),
              help="With --estimator acm: unlabeled prompts (.jsonl/.csv/.parquet with --column, or .txt lines).")
@click.option("--column", default="prompt", show_default=True, help="The prompts file's column.")
@click.option("--n-prompts", default=16, show_default=True, help="Prompts read (the first N).")
@click.option("--sequences", default=8, show_default=True, help="With fisher: random sequences per model.")
@click.option("--length", default=64, show_default=True, help="With fisher: tokens per random sequence.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random tokens and subsamples.")
@model_option
def profile_command(recipe, out_path, estimator, mean_lambda, ramp, module_spec, prompts, column, n_prompts,
                    sequences, length, seed, models):
    """Write a λ profile of RECIPE's pair as an ordinary model_interpolation recipe: a λ per
    decoder layer and module group, through mergekit filters and per-layer lists, that
    mergekit-yaml, plan, sweep and find-lambda take as they are. RECIPE names the Instruct
    (base_model) and Thinking models; its λ, window and module selection are replaced.

    \b
    mi-mergekit profile recipes/mi_0.8.yaml --ramp 0.5,1 --out ramp.yaml
    mi-mergekit profile recipes/mi_0.8.yaml --modules attention=0.6,mlp=0.9 --out modules.yaml
    mi-mergekit profile recipes/mi_0.8.yaml --estimator divergence --mean-lambda 0.8 --out div.yaml
    mi-mergekit profile recipes/mi_0.8.yaml --estimator acm --mean-lambda 0.8 --prompts calib.jsonl --out acm.yaml
    """
    import yaml
    from mergekit.common import ModelReference
    from mergekit.options import MergeOptions

    from mi_mergekit import register
    from mi_mergekit.analysis import profiles
    from mi_mergekit.analysis.estimators import estimate
    from mi_mergekit.errors import about
    from mi_mergekit.merge.config import load_recipe
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.merge.placement import known_layout
    from mi_mergekit.merge.plan import build_plan

    chosen = [name for name, value in (("--estimator", estimator), ("--ramp", ramp), ("--modules", module_spec))
              if value]
    if len(chosen) != 1:
        raise click.UsageError("choose one of --estimator, --ramp or --modules")
    if estimator and mean_lambda is None:
        raise click.UsageError("--estimator needs --mean-lambda")
    if mean_lambda is not None and not estimator:
        raise click.UsageError("--mean-lambda goes with --estimator")
    register()
    config, _ = load_recipe(recipe, models)
    written = load_recipe(recipe)[0] if models else config  # the recipe's own model names, not --model's paths
    options = MergeOptions(quiet=True)
    with about(recipe):
        config, _ = resolve_models(config, options)  # hub ids from the local cache: no network
        plan, _ = build_plan(config, options)
        base = ModelReference.model_validate(plan.base)
        layout = known_layout(base)
        from mi_mergekit.merge.layout import CheckpointIndex

        table = profiles.cells(layout, CheckpointIndex.read(base, options).shapes)
        if ramp:
            try:
                first, last = (float(v) for v in ramp.split(","))
            except ValueError:
                raise click.BadParameter(f"{ramp!r}: expected FIRST,LAST, e.g. 0.5,1", param_hint="--ramp")
            profile = profiles.Profile.ramp(first, last, layout.num_layers)
        elif module_spec:
            profile = profiles.Profile.modules(_pairs(module_spec, "--modules"), layout.num_layers)
        else:
            from mi_mergekit.analysis.probe_evaluators import endpoint_paths

            instruct, thinking = endpoint_paths(config, options)
            texts = _read_prompts(prompts, column, n_prompts) if prompts else ()
            weights, provenance = estimate(estimator, instruct, thinking, layout, prompts=texts,
                                           sequences=sequences, length=length, seed=seed)
            profile = profiles.scaled(weights, table, mean_lambda, f"{estimator} at mean λ {mean_lambda:g}",
                                      provenance)
        build_plan(type(config).model_validate(profiles.profile_recipe(yaml.safe_load(config.to_yaml()), profile,
                                                                         layout)), options)  # it plans
        data = profiles.profile_recipe(yaml.safe_load(written.to_yaml()), profile, layout)  # names as written
    profiles.write_recipe(out_path, data, profile)
    click.echo(profile_table(profile, table))
    click.echo(f"profile recipe written to {out_path}", err=True)
