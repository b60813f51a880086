"""``mi-mergekit demo``: the paper's experiments end to end, offline, on a real merge.

For each configuration of a pair — whole-model λ over a grid, layer windows at
λ = 0.8 and both module ablations at λ = 0.8 — it writes a recipe, merges it with
the real ``mergekit-yaml`` console script, evaluates the merged model with the
harness (Thinking chat template and decoding, as the paper does for merged models)
on the pair's held-out set, then writes the Table-2-style report, the window /
module table, the λ plots, and the three stages found in the sweep.

Pairs (``--pair``):

* ``toy`` (default): the shipped 4-layer toy pair (:mod:`mi_mergekit.toy`); λ ∈ {0, 0.1, …, 1},
  the last-two-thirds window and both ablations. Minutes.
* ``smollm2``: SmolLM2-135M-Instruct and its LoRA-trained, over-thinking Thinking side
  (:mod:`mi_mergekit.real`), built first if ``--pair-dir`` does not hold it (the PyPI
  wheel, no hub); λ ∈ {0, 0.1, …, 1}, the paper's five windows scaled to 30 layers
  ([0,9], [10,19], [20,29], [0,19], [10,29]) and both ablations; then the routing
  experiment (λ per question, :mod:`mi_mergekit.routing.experiment`) over the grid
  ``--route-grid`` (default 0.4, 0.6, 0.8, 1), fitted on the pair's calibration split and
  run on the held-out questions. The held-out questions are evaluated sorted by difficulty
  (25 a batch: the easy half, then the hard half), so the short traces of easy problems are
  not held up by the longest ones.

Everything lands in ``--out``: ``recipes/``, ``models/``, ``runs/`` (samples.jsonl +
metrics per model), ``routing/`` (signals, routers, routing.md) and ``report/`` (report.md/csv,
paper_table.csv, variants.md/csv/png, task.md/csv, frontier.md/csv/png, lambda_boxed.png,
stages.json/png, timings.json). Re-running resumes: finished merges and samples are reused.
``--keep-models`` keeps the merged folders (by default each is deleted once evaluated when the
pair is ``smollm2``, the routing grid's once the routed runs are done: 18 × 0.5 GB).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click

from mi_mergekit.errors import MiMergekitError
from mi_mergekit.merge.recipes import RecipeOptionError

VARIANT_LAMBDA = 0.8
#: the λ sweep of both pairs, and the routing grid of the smollm2 pair (the toy has no calibration split)
DEFAULT_LAMBDAS = "0:1:0.1"
ROUTE_GRID = {"toy": "none", "smollm2": "0.4,0.6,0.8,1"}


@dataclass(frozen=True)
class DemoConfig:
    name: str
    lam: float
    parameters: Dict[str, object]
    description: str


@dataclass
class DemoPair:
    """What the demo runs on: the two folders, the held-out records and the eval defaults."""

    name: str
    instruct: Path
    thinking: Path
    records: List[dict]
    windows: List[Tuple[str, int, int]]
    n_samples: int
    max_new_tokens: int
    prompt_batch: int
    limit: Optional[int] = None
    provenance: dict = field(default_factory=dict)
    #: questions to calibrate per-question routing on, none of them in ``records``
    calibration: List[dict] = field(default_factory=list)


def paper_windows(num_layers: int) -> List[Tuple[str, int, int]]:
    """The paper's windows (thirds of the decoder: first, middle, last, first two, last two), as
    ``(name, start, end)``; for 36 layers they are the paper's [0,11] … [12,35]."""
    t = num_layers // 3
    return [("first1of3", 0, t - 1), ("mid1of3", t, 2 * t - 1), ("last1of3", 2 * t, num_layers - 1),
            ("first2of3", 0, 2 * t - 1), ("last2of3", t, num_layers - 1)]


MODULE_ABLATIONS = ("nomlp", "noattention")


def demo_configs(lambdas: Sequence[float], windows: Sequence[Tuple[str, int, int]],
                 modules: Sequence[str] = MODULE_ABLATIONS) -> List[DemoConfig]:
    """The λ sweep, then the windows and the module ablations (``nomlp``, ``noattention``) at λ = 0.8."""
    configs = [DemoConfig(f"mi_{lam:g}", lam, {}, f"whole model, λ={lam:g}") for lam in lambdas]
    configs += [DemoConfig(f"mi_{VARIANT_LAMBDA:g}_{name}", VARIANT_LAMBDA,
                           {"layer_start": start, "layer_end": end},
                           f"layers [{start},{end}] only, λ={VARIANT_LAMBDA:g}")
                for name, start, end in windows]
    ablations = {
        "nomlp": DemoConfig(f"mi_{VARIANT_LAMBDA:g}_nomlp", VARIANT_LAMBDA, {"exclude_modules": "mlp"},
                            f"attention only (MLP kept Instruct), λ={VARIANT_LAMBDA:g}"),
        "noattention": DemoConfig(f"mi_{VARIANT_LAMBDA:g}_noattention", VARIANT_LAMBDA,
                                  {"exclude_modules": "attention"},
                                  f"MLP only (attention kept Instruct), λ={VARIANT_LAMBDA:g}"),
    }
    return configs + [ablations[name] for name in MODULE_ABLATIONS if name in modules]


def _names(value: Optional[str], known: Sequence[str], option: str) -> Optional[List[str]]:
    """A comma list of names from ``known`` (``none`` for the empty list); None when not given."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise RecipeOptionError(f"unknown name(s) {unknown}; choose from {list(known)} or 'none'", option=option)
    return names


def merge_one(config: DemoConfig, instruct: Path, thinking: Path, out: Path) -> Path:
    """Write the recipe and run the real ``mergekit-yaml`` on it (skipped if already done)."""
    import yaml

    recipe_dir, model_dir = out / "recipes", out / "models" / config.name
    recipe_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_dir / f"{config.name}.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "model_interpolation",
        # absolute: the recipe works from any folder, and mergekit's model card would take a
        # relative "dir/name" for a hub repo id and ask the hub about it (fatal offline)
        "base_model": str(Path(instruct).resolve()),
        "models": [{"model": str(Path(thinking).resolve())}],
        "parameters": {"lambda": config.lam, **config.parameters},
        "dtype": "float32",
    }, sort_keys=False))
    if (model_dir / "mi_plan.json").exists() and any(model_dir.glob("*.safetensors")):
        return model_dir
    if model_dir.exists():  # a folder whose weights the demo dropped after evaluating it
        shutil.rmtree(model_dir)
    script = Path(sys.executable).with_name("mergekit-yaml")
    command = [str(script)] if script.exists() else [
        sys.executable, "-m", "mergekit.scripts.run_yaml"]
    result = subprocess.run(
        command + [str(recipe), str(model_dir), "--quiet"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise MiMergekitError(f"mergekit-yaml failed on the recipe: {result.stderr.strip()[-2000:]}", path=recipe)
    return model_dir


DEMO_FILE = "demo.json"


def _finished(run_dir: Path, settings: dict) -> bool:
    """True if ``run_dir`` holds a graded run the demo made with exactly ``settings``."""
    try:
        return (json.loads((run_dir / DEMO_FILE).read_text()) == json.loads(json.dumps(settings))
                and (run_dir / "metrics.json").exists())
    except (OSError, ValueError):
        return False


def toy_pair() -> DemoPair:
    from mi_mergekit.toy import HELDOUT_PATH, INSTRUCT_DIR, THINKING_DIR, task

    if not (THINKING_DIR / "config.json").exists():
        raise MiMergekitError("the toy pair is missing", path=THINKING_DIR.parent)
    layers = json.loads((THINKING_DIR / "config.json").read_text())["num_hidden_layers"]
    windows = [w for w in paper_windows(layers) if w[0] == "last2of3"]
    records = task.load_heldout(HELDOUT_PATH)
    return DemoPair("toy", INSTRUCT_DIR, THINKING_DIR, records, windows, n_samples=4,
                    max_new_tokens=task.MAX_NEW_TOKENS, prompt_batch=70)


def smollm2_pair(pair_dir: Path, wheel: Optional[Path]) -> DemoPair:
    from mi_mergekit import real
    from mi_mergekit.real import task
    from mi_mergekit.real.build import build_pair, built_pair

    record = built_pair(pair_dir)  # any finished build (e.g. one with a retrained adapter) is used as is
    if record is None:
        record = build_pair(pair_dir, wheel=wheel, log=lambda m: click.echo(f"[smollm2] {m}", err=True))
    elif not record["verified"]:
        click.echo(f"[smollm2] using the pair in {pair_dir} (adapter {record['adapter']}; not the shipped one)",
                   err=True)
    return DemoPair("smollm2", pair_dir / "instruct", pair_dir / "thinking", task.load_heldout(),
                    paper_windows(real.NUM_LAYERS), n_samples=4, max_new_tokens=task.MAX_NEW_TOKENS,
                    prompt_batch=25, limit=50, provenance=record, calibration=task.load_heldout(task.CALIBRATION_PATH))


def _write_table(out: Path, stem: str, intro: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``out/<stem>.csv`` and ``out/<stem>.md`` (``intro`` above the table); returns the Markdown."""
    from mi_mergekit.eval.report import markdown

    with (out / f"{stem}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    text = f"{intro}\n\n" + markdown(header, rows)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    return text


def variants_table(configs: Sequence[DemoConfig], runs: Sequence[Path], out: Path) -> str:
    """``variants.md`` / ``variants.csv``: the λ=0.8 whole model, each window and each ablation."""
    from mi_mergekit.eval.runner import load_run

    header = ["Config", "Layers", "Modules", "Mean@n", "Pass@n", "Token #N", "Think #R"]
    rows = []
    for config, run in zip(configs, runs):
        if config.lam != VARIANT_LAMBDA:
            continue
        m = load_run(run)["metrics"]
        params = config.parameters
        layers = (f"[{params['layer_start']},{params['layer_end']}]" if "layer_start" in params else "all")
        modules = {"mlp": "attention only", "attention": "MLP only"}.get(params.get("exclude_modules"), "all")
        rows.append([config.name, layers, modules, f"{100 * m['mean']:.1f}", f"{100 * m['pass@k'][m['n_samples']]:.1f}",
                     f"{m['tokens_mean']:.1f}", f"{100 * m['think_ratio']:.1f}"])
    text = _write_table(out, "variants", f"Layer windows and module ablations at λ = {VARIANT_LAMBDA:g} "
                        "(n = samples per question):", header, rows)
    plot_variants(rows, out / "variants.png")
    return text


def work_table(names: Sequence[str], runs: Sequence[Path], records: Sequence[dict], out: Path) -> str:
    """``task.md`` / ``task.csv``: per run, Work #R (% of responses whose thinking holds the full
    running sum), Verify #R and rechecks per response (:func:`mi_mergekit.real.task.habits_shown`),
    and accuracy and tokens per difficulty."""
    from mi_mergekit.eval.store import GRADES_FILE, SAMPLES_FILE, SampleStore, read_jsonl
    from mi_mergekit.real.task import habits_shown

    difficulty = {r["id"]: int(r["difficulty"]) for r in records}
    levels = sorted(set(difficulty.values()))
    header = (["Config", "Work #R", "Verify #R", "Rechecks"] + [f"Acc k={k}" for k in levels]
              + [f"Tok k={k}" for k in levels])
    rows = []
    for name, run in zip(names, runs):
        samples, grades = SampleStore(run / SAMPLES_FILE).samples(), read_jsonl(run / GRADES_FILE)
        habits = [habits_shown(s["text"]) for s in samples]
        shown = [h["steps"] >= difficulty[s["question_id"]] - 1 for h, s in zip(habits, samples)]
        by_level: Dict[int, List[bool]] = {}
        tokens: Dict[int, List[int]] = {}
        for grade in grades:
            by_level.setdefault(difficulty[grade["question_id"]], []).append(bool(grade["correct"]))
            tokens.setdefault(difficulty[grade["question_id"]], []).append(grade["n_tokens"])
        rows.append([name, f"{100 * sum(shown) / len(shown):.1f}",
                     f"{100 * sum(h['verified'] for h in habits) / len(habits):.1f}",
                     f"{sum(h['rechecks'] for h in habits) / len(habits):.2f}"]
                    + [f"{100 * sum(by_level[k]) / len(by_level[k]):.1f}" if by_level.get(k) else "" for k in levels]
                    + [f"{sum(tokens[k]) / len(tokens[k]):.0f}" if tokens.get(k) else "" for k in levels])
    return _write_table(out, "task", "Work #R: % of responses whose thinking writes the whole running sum "
                        "(k−1 lines a+b=c); Verify #R: % with a verification pass (\"Let me verify by adding in "
                        "another order.\"); Rechecks: \"Wait, let me recheck\" lines per response; accuracy "
                        "(% of samples) and mean tokens by number of terms k:", header, rows)


def variant_label(layers: str, modules: str) -> str:
    """A bar's name: ``whole model``, ``layers [0,9]``, ``attention only``, ``layers [0,9], MLP only``."""
    parts = ([] if layers == "all" else [f"layers {layers}"]) + ([] if modules == "all" else [modules])
    return ", ".join(parts) or "whole model"


def plot_variants(rows: Sequence[Sequence[str]], path: Path) -> Path:
    """Bars of Mean@n, Think #R and Token #N per variant (``variants.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [variant_label(row[1], row[2]) for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, column, title, color in ((axes[0], 3, "Mean@n (%)", "tab:blue"), (axes[1], 6, "Think #R (%)", "tab:green"),
                                     (axes[2], 5, "Token #N (mean)", "tab:red")):
        ax.bar(range(len(rows)), [float(row[column]) for row in rows], color=color)
        ax.set_xticks(range(len(rows)), labels, fontsize=8, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Layer windows and module ablations at λ = {VARIANT_LAMBDA:g}: each bar names what is "
                 "interpolated; everything else keeps the Instruct weights", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_demo(pair: str = "toy", out_dir: Optional[str] = None, pair_dir: Optional[str] = None,
             wheel: Optional[str] = None, lambdas: Optional[str] = None, n_samples: Optional[int] = None,
             limit: Optional[int] = None, max_new_tokens: Optional[int] = None, seed: int = 0,
             prompt_batch: Optional[int] = None, windows: Optional[str] = None, modules: Optional[str] = None,
             skip_variants: bool = False, keep_models: bool = False, route_grid: Optional[str] = None,
             route_signals: Optional[str] = None, calibration_limit: Optional[int] = None,
             compact: bool = False, slots: int = 0) -> Path:
    """Merge a pair over a λ grid, windows and module ablations with mergekit-yaml, evaluate, report
    (``mi-mergekit demo``); returns the output folder."""
    from mi_mergekit.eval import evaluate, write_report
    from mi_mergekit.merge.lambdas import parse_lambdas
    from mi_mergekit.runlock import hold

    window_names = _names(windows, [w[0] for w in paper_windows(3)], "--windows")
    module_names = _names(modules, MODULE_ABLATIONS, "--modules")
    started = time.perf_counter()
    out = Path(out_dir or ("mi-demo" if pair == "toy" else "smollm2-demo"))
    sweep = [float(v) for v in parse_lambdas(lambdas or DEFAULT_LAMBDAS)]
    grid_spec = route_grid or ROUTE_GRID[pair]
    grid = [] if grid_spec == "none" else [float(v) for v in parse_lambdas(grid_spec)]
    if route_grid is None:  # the default grid: those of its λ the sweep has, if two or more
        grid = [lam for lam in grid if lam in sweep]
        grid = grid if len(grid) >= 2 else []
    plan = _routing_plan(grid, sweep, route_signals)
    if grid and pair == "toy":
        raise MiMergekitError("--route-grid: the toy pair has no calibration split; route on --pair smollm2")
    hold(out, "mi-mergekit demo")  # one demo per folder at a time (mi_mergekit.runlock)
    spec = toy_pair() if pair == "toy" else smollm2_pair(Path(pair_dir) if pair_dir else out / "pair",
                                                         Path(wheel) if wheel else None)
    build_seconds = time.perf_counter() - started
    records = spec.records
    if pair == "smollm2":
        from mi_mergekit.routing.experiment import calibration_records_of

        records = calibration_records_of(records, limit if limit is not None else spec.limit)
    elif limit:
        records = records[:limit]
    dataset = out / "heldout.jsonl"
    _write_records(dataset, records)

    chosen = spec.windows
    if window_names is not None:
        layers = json.loads((spec.thinking / "config.json").read_text())["num_hidden_layers"]
        chosen = [w for w in paper_windows(layers) if w[0] in window_names]
    configs = demo_configs(sweep, [] if skip_variants else chosen,
                           () if skip_variants else (MODULE_ABLATIONS if module_names is None else module_names))
    n = n_samples or spec.n_samples
    batch = prompt_batch or spec.prompt_batch
    runs: List[Path] = []
    timings = {"build_seconds": round(build_seconds, 1), "configs": {}}
    timings_path = out / "report" / "timings.json"
    try:  # a resumed run keeps the times measured when each config was made
        before = json.loads(timings_path.read_text()).get("configs", {})
    except (OSError, ValueError):
        before = {}
    budget = max_new_tokens or spec.max_new_tokens
    loop = {**({"compact": True} if compact else {}), **({"slots": slots} if slots else {})}  # the decode loop
    eval_options = dict(grader="math", decoding="thinking", n_samples=n, max_new_tokens=budget, seed=seed,
                        benchmark="boxed", grading="strict")
    grid_models: Dict[float, Path] = {}
    for index, config in enumerate(configs, start=1):
        click.echo(f"[{index}/{len(configs)}] {config.name}: {config.description}", err=True)
        run_dir = out / "runs" / config.name
        settings = {"pair": spec.name, "pair_provenance": spec.provenance.get("digests"), "lambda": config.lam,
                    "parameters": config.parameters, "dataset": [r["id"] for r in records], "n_samples": n,
                    "max_new_tokens": budget, "seed": seed, "prompt_batch": batch, **loop}
        routed_later = plan is not None and not config.parameters and config.lam in plan.grid
        if _finished(run_dir, settings) and not routed_later:
            click.echo("  already evaluated with these settings", err=True)
            runs.append(run_dir)
            timings["configs"][config.name] = {**before.get(config.name, {}), "reused": True}
            continue
        t0 = time.perf_counter()
        model = merge_one(config, spec.instruct, spec.thinking, out)
        t1 = time.perf_counter()
        if routed_later:
            grid_models[config.lam] = model
        if _finished(run_dir, settings):
            runs.append(run_dir)
            timings["configs"][config.name] = {**before.get(config.name, {}), "reused": True}
            continue
        runs.append(evaluate(
            str(model), str(dataset), out_dir=str(run_dir),
            backend_options={"batch_size": n, "prompt_batch": batch, **loop},
            lambda_=None if config.parameters else config.lam, label=config.name, **eval_options,
        ))
        (run_dir / DEMO_FILE).write_text(json.dumps(settings, indent=1) + "\n")
        timings["configs"][config.name] = {"merge_seconds": round(t1 - t0, 1),
                                           "eval_seconds": round(time.perf_counter() - t1, 1)}
        if pair == "smollm2" and not keep_models and not routed_later:
            _drop_weights(model)
    routed: List[Path] = []
    routing_text = None
    if plan is not None:
        from mi_mergekit.routing.experiment import calibration_records_of, run_experiment

        calibration = calibration_records_of(spec.calibration, calibration_limit or spec.limit)
        calibration_path = out / "calibration.jsonl"
        _write_records(calibration_path, calibration)
        t0 = time.perf_counter()
        experiment = run_experiment(plan, instruct=spec.instruct, thinking=spec.thinking, grid_models=grid_models,
                                    calibration=calibration_path, calibration_records=calibration, test=dataset,
                                    test_records=records, out=out, eval_options={**eval_options, "progress": True},
                                    batch_size=n, prompt_batch=batch, compact=compact, slots=slots,
                                    log=lambda m: click.echo(f"[route] {m}", err=True))
        routed = experiment["runs"]
        routing_text = experiment["markdown"]
        timings["routing_seconds"] = round(time.perf_counter() - t0, 1)
        if pair == "smollm2" and not keep_models:
            for model in grid_models.values():
                _drop_weights(model)
    report_dir = out / "report"
    report = write_report(runs + routed, report_dir, frontier=True)
    click.echo(report["markdown"])
    if any(c.parameters for c in configs):
        click.echo(variants_table(configs, runs, report_dir))
    click.echo(work_table([c.name for c in configs] + [r.name for r in routed], runs + routed, records, report_dir))
    if routing_text:
        (report_dir / "routing.md").write_text(routing_text, encoding="utf-8")
        click.echo(routing_text)
    for png in report.get("plots", []):
        click.echo(f"plot: {png}")
    sweep_runs = [str(r) for r, c in zip(runs, configs) if not c.parameters]
    if len(sweep_runs) >= 3:
        from mi_mergekit.analysis import stages

        result = stages.analyse(sweep_runs + [str(r) for r in routed])
        with open(report_dir / "stages.json", "w") as handle:
            json.dump(result, handle, indent=1)
        click.echo(stages.describe(result))
        click.echo(f"plot: {stages.plot(result, str(report_dir / 'stages.png'))}")
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    timings_path.write_text(json.dumps(timings, indent=1) + "\n")
    click.echo(f"done in {timings['total_seconds']:.0f} s (pair ready in {build_seconds:.0f} s); "
               f"everything is under {out}/", err=True)
    return out


def _write_records(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _drop_weights(model: Path) -> None:
    """Keep a merged folder's plan and config, drop its 0.5 GB of weights."""
    for item in model.iterdir():
        if item.suffix == ".safetensors" or item.name == "model.safetensors.index.json":
            item.unlink()


def _routing_plan(grid: Sequence[float], sweep: Sequence[float], signals: Optional[str]):
    """The routing experiment's plan, or None without a grid; each grid λ must be a swept λ."""
    if not grid:
        return None
    from mi_mergekit.routing.experiment import RoutingPlan
    from mi_mergekit.routing.signals import SIGNALS

    missing = sorted(set(grid) - set(sweep))
    if missing:
        raise MiMergekitError(f"--route-grid: λ {missing} of the routing grid are not in the sweep {list(sweep)}")
    names = _names(signals, SIGNALS, "--route-signals") if signals else list(SIGNALS)
    if not names:
        raise MiMergekitError("--route-signals: give at least one signal")
    return RoutingPlan(grid=tuple(sorted(grid)), signals=tuple(names))
