"""``mi-mergekit demo``: the paper's λ sweep, end to end, offline, on the shipped toy pair.

For each configuration — whole-model λ ∈ {0, 0.1, …, 1}, the last-two-thirds layer
window at λ = 0.8 and both module ablations at λ = 0.8 — it writes a recipe, merges
it with the real ``mergekit-yaml`` console script, evaluates the merged model with
the harness (Thinking chat template and decoding, as the paper does for merged
models) on the held-out synthetic set, then prints the Table-2-style report and
writes a PNG of Think #R, Token #N and accuracy against λ, and finds the three
stages in the sweep (``mi-mergekit stages``), shaded in a second PNG.

Everything lands in ``--out`` (default ``./mi-demo``): ``recipes/``, ``models/``,
``runs/`` (samples.jsonl + metrics per model) and ``report/`` (report.md, report.csv,
PNG). Re-running resumes: finished merges and samples are reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import click

from mi_mergekit.cli.options import check_lambdas


@dataclass(frozen=True)
class DemoConfig:
    name: str
    lam: float
    parameters: Dict[str, object]
    description: str


def demo_configs(num_layers: int, lambdas: List[float]) -> List[DemoConfig]:
    """The demo's grid: a λ sweep plus the paper's λ=0.8 window and module variants."""
    configs = [
        DemoConfig(f"mi_{lam:g}", lam, {}, f"whole model, λ={lam:g}") for lam in lambdas
    ]
    start = num_layers // 3
    configs += [
        DemoConfig("mi_0.8_last2of3", 0.8, {"layer_start": start, "layer_end": num_layers - 1},
                   f"layers [{start},{num_layers - 1}] only, λ=0.8"),
        DemoConfig("mi_0.8_attention", 0.8, {"exclude_modules": "mlp"},
                   "attention only (MLP kept Instruct), λ=0.8"),
        DemoConfig("mi_0.8_mlp", 0.8, {"exclude_modules": "attention"},
                   "MLP only (attention kept Instruct), λ=0.8"),
    ]
    return configs


def merge_one(config: DemoConfig, instruct: Path, thinking: Path, out: Path) -> Path:
    """Write the recipe and run the real ``mergekit-yaml`` on it (skipped if already done)."""
    import yaml

    recipe_dir, model_dir = out / "recipes", out / "models" / config.name
    recipe_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_dir / f"{config.name}.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "model_interpolation",
        "base_model": str(instruct),
        "models": [{"model": str(thinking)}],
        "parameters": {"lambda": config.lam, **config.parameters},
        "dtype": "float32",
    }, sort_keys=False))
    if (model_dir / "mi_plan.json").exists():
        return model_dir
    script = Path(sys.executable).with_name("mergekit-yaml")
    command = [str(script)] if script.exists() else [
        sys.executable, "-m", "mergekit.scripts.run_yaml"]
    result = subprocess.run(
        command + [str(recipe), str(model_dir), "--quiet"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise click.ClickException(f"mergekit-yaml failed on {recipe}:\n{result.stderr[-2000:]}")
    return model_dir


@click.command("demo")
@click.option("--out", "out_dir", default="mi-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for recipes, merged models, eval runs and the report.")
@click.option("--lambdas", default="0:1:0.1", show_default=True, callback=check_lambdas,
              help="λ grid: start:stop:step or a comma list.")
@click.option("--n-samples", default=4, show_default=True, help="Samples per question.")
@click.option("--limit", default=None, type=int, help="Use only the first N held-out questions.")
@click.option("--max-new-tokens", default=None, type=int, help="Generation budget (default: the toy task's).")
@click.option("--seed", default=0, show_default=True)
@click.option("--prompt-batch", default=70, show_default=True, help="Questions per generate call.")
@click.option("--skip-variants", is_flag=True, help="Only the λ sweep (no window / module variants).")
def demo_command(out_dir, lambdas, n_samples, limit, max_new_tokens, seed, prompt_batch, skip_variants):
    """Merge the shipped toy pair over a λ grid with mergekit-yaml, evaluate, report."""
    from mi_mergekit.eval import evaluate, write_report
    from mi_mergekit.merge.lambdas import parse_lambdas
    from mi_mergekit.toy import HELDOUT_PATH, INSTRUCT_DIR, THINKING_DIR

    if not (THINKING_DIR / "config.json").exists():
        raise click.ClickException(f"the toy pair is missing from {THINKING_DIR.parent}")
    with open(THINKING_DIR / "config.json") as handle:
        num_layers = json.load(handle)["num_hidden_layers"]
    out = Path(out_dir)
    dataset = out / "heldout.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    lines = HELDOUT_PATH.read_text().splitlines()
    dataset.write_text("\n".join(lines[:limit] if limit else lines) + "\n")

    configs = demo_configs(num_layers, [float(v) for v in parse_lambdas(lambdas)])
    if skip_variants:
        configs = [c for c in configs if not c.parameters]
    runs = []
    started = time.perf_counter()
    for index, config in enumerate(configs, start=1):
        click.echo(f"[{index}/{len(configs)}] {config.name}: {config.description}", err=True)
        model = merge_one(config, INSTRUCT_DIR, THINKING_DIR, out)
        runs.append(evaluate(
            str(model), str(dataset), grader="math", decoding="thinking", n_samples=n_samples,
            max_new_tokens=max_new_tokens or _default_budget(), seed=seed,
            out_dir=str(out / "runs" / config.name), benchmark="boxed",
            backend_options={"batch_size": n_samples, "prompt_batch": prompt_batch},
            lambda_=None if config.parameters else config.lam, label=config.name,
        ))
    report = write_report(runs, out / "report")
    click.echo(report["markdown"])
    for png in report.get("plots", []):
        click.echo(f"plot: {png}")
    sweep_runs = [str(r) for r, c in zip(runs, configs) if not c.parameters]
    if len(sweep_runs) >= 3:
        from mi_mergekit.analysis import stages

        result = stages.analyse(sweep_runs)
        with open(out / "report" / "stages.json", "w") as handle:
            json.dump(result, handle, indent=1)
        click.echo(stages.describe(result))
        click.echo(f"plot: {stages.plot(result, str(out / 'report' / 'stages.png'))}")
    click.echo(f"done in {time.perf_counter() - started:.0f} s; everything is under {out}/", err=True)


def _default_budget() -> int:
    from mi_mergekit.toy import task

    return getattr(task, "MAX_NEW_TOKENS", 256)
