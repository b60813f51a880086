"""The paper's comparison (its Table 2) on any triple: MI against Task Arithmetic and TIES.

A triple is an Instruct model, a Thinking model and their common ancestor (the paper: Qwen3-4B
-Instruct-2507, -Thinking-2507 and the hybrid Qwen3-4B), optionally with a pre-trained ancestor
for the "-Base" baselines (Qwen3-4B-Base). Its rows, each a run folder of the same name:

- ``instruct``: the Instruct model as it is, with its own chat template and the paper's Instruct
  decoding (temperature 0.7, top_p 0.8, top_k 20);
- ``thinking``: the Thinking model as it is (λ = 1 of the MI curve), Thinking decoding;
- ``ta``, ``ties`` (and ``ta_base``, ``ties_base`` on the pre-trained ancestor): the paper's
  baselines (:mod:`mi_mergekit.merge.baselines`: TA scales both task vectors by 0.7; TIES keeps the
  top 80% of each, elects signs, scales the disjoint mean by 0.5), stock mergekit methods;
- ``mi_<λ>``: model interpolation at each λ (default: the λ of the paper's Table 2), and
  optionally its layer windows and module ablations (``mi_0.8_last2of3``, ``mi_0.8_nomlp``).

Every merge is a recipe in ``OUT/recipes/`` run by the real ``mergekit-yaml`` console script
into a hidden staging folder that is renamed into ``OUT/models/<row>`` when it finishes (with
``merged.json``, the recipe's hash), so a killed merge is done again and a finished one never.
Merged models are decoded as the paper decodes them: with the Thinking model's decoding
(temperature 0.6, top_p 0.95, top_k 20; the experimental setup of arXiv 2510.10977,
as DESIGN.md §1 records it) and its chat template (the authors' MI script copies the Thinking
model's tokenizer files into every merge). MI merges carry the Thinking template themselves; the
baseline recipes set mergekit's ``chat_template`` to it (stock mergekit would give them the
ancestor's). Every row is then evaluated (:func:`mi_mergekit.eval.evaluate`, any backend;
``OUT/runs/<row>``, resumed sample by sample after a kill) and the report is written to
``OUT/report``: the Table-2 layout (:mod:`mi_mergekit.eval.comparison`), the usual report, and the
accuracy-against-tokens frontier with TA and TIES set against the MI curve at equal tokens.

``mi-mergekit compare`` runs it for a user's triple; ``mi-mergekit demo`` for the shipped ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from mi_mergekit.errors import MiMergekitError

if TYPE_CHECKING:
    from mi_mergekit.eval.task import EvalTask

#: the MI rows of the paper's Table 2
PAPER_LAMBDAS = (0.2, 0.4, 0.45, 0.5, 0.55, 0.6, 0.8)
#: the λ of the window and module variants (the paper's Table 3 and Figure 5)
VARIANT_LAMBDA = 0.8
MODULE_ABLATIONS = ("nomlp", "noattention")
BASELINES = ("ta", "ties")
MERGED_FILE = "merged.json"
#: what each run folder's settings file is called (a run is reused only with the same settings)
SETTINGS_FILE = "demo.json"


@dataclass(frozen=True)
class Triple:
    """The models of a comparison: folders (absolute) or hub ids."""

    instruct: str
    thinking: str
    base: Optional[str] = None
    pretrained: Optional[str] = None


@dataclass(frozen=True)
class Row:
    """One row of the comparison: a model evaluated as it is (``side``), an MI merge (``lam``
    with window/module ``parameters``) or a baseline merge (``baseline`` on ``ancestor``)."""

    name: str
    description: str
    lam: Optional[float] = None
    parameters: Dict[str, object] = field(default_factory=dict)
    baseline: Optional[str] = None
    ancestor: Optional[str] = None
    side: Optional[str] = None

    @property
    def decoding(self) -> str:
        return "instruct" if self.side == "instruct" else "thinking"

    @property
    def curve_lambda(self) -> Optional[float]:
        """λ as a point of the MI curve (whole-model merges and the Thinking model), else None."""
        if self.side == "thinking":
            return 1.0
        return self.lam if self.lam is not None and not self.parameters else None

    def key(self) -> dict:
        """What the row is, for the settings its run is reused with."""
        return {k: v for k, v in (("lambda", self.lam), ("parameters", self.parameters), ("baseline", self.baseline),
                                  ("side", self.side)) if v not in (None, {})}


def choose(value: Optional[str], known: Sequence[str], option: str) -> Optional[List[str]]:
    """A comma list of names from ``known`` (``none`` for the empty list); None when not given."""
    from mi_mergekit.merge.recipes import RecipeOptionError

    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise RecipeOptionError(f"unknown name(s) {unknown}; choose from {list(known)} or 'none'", option=option)
    return names


def paper_windows(num_layers: int) -> List[Tuple[str, int, int]]:
    """The paper's windows (thirds of the decoder: first, middle, last, first two, last two), as
    ``(name, start, end)``, from the one definition the recipes use
    (:func:`mi_mergekit.merge.recipes.third_bounds`); for 36 layers they are the paper's [0,11] … [12,35]."""
    from mi_mergekit.merge.recipes import THIRDS, third_bounds

    return [(name, *third_bounds(name, num_layers)) for name in THIRDS]


def mi_rows(lambdas: Sequence[float], windows: Sequence[Tuple[str, int, int]] = (),
            modules: Sequence[str] = ()) -> List[Row]:
    """The λ sweep, then the windows and the module ablations (``nomlp``, ``noattention``) at λ = 0.8."""
    rows = [Row(f"mi_{lam:g}", f"whole model, λ={lam:g}", lam) for lam in lambdas]
    rows += [Row(f"mi_{VARIANT_LAMBDA:g}_{name}", f"layers [{start},{end}] only, λ={VARIANT_LAMBDA:g}",
                 VARIANT_LAMBDA, {"layer_start": start, "layer_end": end}) for name, start, end in windows]
    ablations = {
        "nomlp": Row(f"mi_{VARIANT_LAMBDA:g}_nomlp", f"attention only (MLP kept Instruct), λ={VARIANT_LAMBDA:g}",
                     VARIANT_LAMBDA, {"exclude_modules": "mlp"}),
        "noattention": Row(f"mi_{VARIANT_LAMBDA:g}_noattention",
                           f"MLP only (attention kept Instruct), λ={VARIANT_LAMBDA:g}", VARIANT_LAMBDA,
                           {"exclude_modules": "attention"}),
    }
    return rows + [ablations[name] for name in MODULE_ABLATIONS if name in modules]


def baseline_rows(triple: Triple) -> List[Row]:
    """TA and TIES on the ancestor, and on the pre-trained ancestor where there is one."""
    from mi_mergekit.merge.baselines import TITLES

    rows = []
    for suffix, ancestor, what in (("", triple.base, "the ancestor"), ("_base", triple.pretrained,
                                                                       "the pre-trained ancestor")):
        if ancestor:
            rows += [Row(f"{method}{suffix}", f"{TITLES[method + suffix]}: stock {method} on {what}",
                         baseline=method, ancestor=ancestor) for method in ("ta", "ties")]
    return rows


def side_rows(thinking: bool = True) -> List[Row]:
    """The Instruct model (its own template and decoding) and, unless λ = 1 stands for it, the Thinking model."""
    rows = [Row("instruct", "the Instruct model as it is (its template, Instruct decoding)", side="instruct")]
    if thinking:
        rows.append(Row("thinking", "the Thinking model as it is (λ = 1)", side="thinking"))
    return rows


def thinking_template(thinking: str) -> str:
    """The Thinking model's chat template (the tokenizer's, as transformers loads it)."""
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(thinking).chat_template
    if not isinstance(template, str) or not template:
        raise MiMergekitError("the Thinking model has no chat template to decode the baselines with", path=thinking)
    return template


def recipe_of(row: Row, triple: Triple, chat_template: Optional[str] = None) -> dict:
    """The mergekit recipe of a merged row, as a mapping (what :func:`recipe_text` writes)."""
    import yaml

    return yaml.safe_load(recipe_text(row, triple, chat_template))


def recipe_text(row: Row, triple: Triple, chat_template: Optional[str] = None) -> str:
    """The recipe file of a merged row: an MI row through the recipe generator (the text that
    ``mi-mergekit recipes`` writes for this pair, λ, window and modules, in float32), a baseline
    as its stock mergekit config."""
    import yaml

    if row.baseline:
        from mi_mergekit.merge.baselines import baseline_recipe

        return yaml.safe_dump(baseline_recipe(row.baseline, row.ancestor, triple.instruct, triple.thinking,
                                              dtype="float32", out_dtype=None, chat_template=chat_template),
                              sort_keys=False)
    from decimal import Decimal

    from mi_mergekit.merge.recipes import ModelPair, Recipe

    unknown = set(row.parameters) - {"layer_start", "layer_end", "modules", "exclude_modules"}
    if unknown:
        raise MiMergekitError(f"row {row.name}: no recipe form for the parameter(s) {sorted(unknown)}")
    window = ((int(row.parameters["layer_start"]), int(row.parameters["layer_end"]))
              if "layer_start" in row.parameters else None)
    pair = ModelPair(None, triple.instruct, triple.thinking, None, "", f"{triple.instruct} + {triple.thinking}")
    return Recipe(Decimal(repr(row.lam)), pair, window, row.parameters.get("modules"),
                  row.parameters.get("exclude_modules"), dtype="float32").render(
        origin=f"Row {row.name} of mi-mergekit's comparison (demo / compare): {row.description}.")


def merge(row: Row, triple: Triple, out: Path, chat_template: Optional[str] = None) -> Path:
    """Write ``OUT/recipes/<row>.yaml`` and run the real ``mergekit-yaml`` on it into
    ``OUT/models/<row>`` (published when finished; skipped when a finished merge of the same
    recipe is there)."""
    recipe_dir, model_dir = out / "recipes", out / "models" / row.name
    recipe_dir.mkdir(parents=True, exist_ok=True)
    text = recipe_text(row, triple, chat_template)
    recipe = recipe_dir / f"{row.name}.yaml"
    recipe.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if merged_with(model_dir) == digest and any(model_dir.glob("*.safetensors")):
        return model_dir
    staging = model_dir.parent / f".{row.name}.partial"
    for stale in (staging, model_dir):
        if stale.exists():  # a killed merge, another recipe, or weights the demo dropped after evaluating
            shutil.rmtree(stale)
    script = Path(sys.executable).with_name("mergekit-yaml")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mergekit.scripts.run_yaml"]
    result = subprocess.run(command + [str(recipe), str(staging), "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise MiMergekitError(f"mergekit-yaml failed on the recipe: {result.stderr.strip()[-2000:]}", path=recipe)
    (staging / MERGED_FILE).write_text(json.dumps({"recipe_sha256": digest}) + "\n")
    os.replace(staging, model_dir)
    return model_dir


def merged_with(model_dir: Path) -> Optional[str]:
    """The recipe hash of a finished merge in ``model_dir``, else None."""
    try:
        return json.loads((model_dir / MERGED_FILE).read_text())["recipe_sha256"]
    except (OSError, ValueError, KeyError):
        return None


def finished(run_dir: Path, settings: dict) -> bool:
    """True if ``run_dir`` holds a graded run made with exactly ``settings``."""
    try:
        return (json.loads((run_dir / SETTINGS_FILE).read_text()) == json.loads(json.dumps(settings))
                and (run_dir / "metrics.json").exists())
    except (OSError, ValueError):
        return False


def drop_weights(model: Path) -> None:
    """Keep a merged folder's plan and config, drop its weights."""
    for item in model.iterdir():
        if item.suffix == ".safetensors" or item.name == "model.safetensors.index.json":
            item.unlink()


@dataclass
class RowsResult:
    runs: Dict[str, Path]
    models: Dict[str, Path]
    timings: Dict[str, dict]


def run_rows(rows: Sequence[Row], triple: Triple, out: Path, task: EvalTask, settings: dict, *,
             backend: str = "transformers", backend_options: Optional[dict] = None, progress: bool = True,
             keep: Sequence[str] = (), drop: bool = False, merge_only: bool = False,
             timings_before: Optional[Dict[str, dict]] = None, served_models: Optional[Dict[str, str]] = None,
             log: Callable[[str], None] = lambda m: None) -> RowsResult:
    """Merge (where the row is a merge) and evaluate every row on ``task`` into ``OUT/runs/<row>``.

    The decoding is the row's: Instruct for ``instruct``, the task's for the others (the merged
    and Thinking rows); ``backend`` / ``backend_options``: what generates (:func:`mi_mergekit.eval.evaluate`'s); ``settings``:
    what a reused run must have been made with, besides the row (:data:`SETTINGS_FILE`). A row whose
    run is finished is not merged again, unless it is in ``keep`` (its model is needed later);
    ``drop`` deletes each merged model's weights once it is evaluated (not those in ``keep``);
    ``served_models``: the model name the ``openai`` backend asks for, by row (default: the folder).
    """
    from mi_mergekit.eval import evaluate
    from mi_mergekit.eval.decoding import resolve_decoding

    template = None
    result = RowsResult({}, {}, {})
    before = timings_before or {}
    for index, row in enumerate(rows, start=1):
        log(f"[{index}/{len(rows)}] {row.name}: {row.description}")
        run_dir = out / "runs" / row.name
        row_task = task.replace(decoding=resolve_decoding("instruct")) if row.side == "instruct" else task
        row_settings = {**settings, "row": row.key()}
        done = finished(run_dir, row_settings)
        if done and row.name not in keep:
            log("  already evaluated with these settings")
            result.runs[row.name] = run_dir
            result.timings[row.name] = {**before.get(row.name, {}), "reused": True}
            continue
        t0 = time.perf_counter()
        model = None
        if row.side:
            model_ref = getattr(triple, row.side)
        else:
            if row.baseline and template is None:
                template = thinking_template(triple.thinking)
            model = merge(row, triple, out, template if row.baseline else None)
            model_ref = str(model)
            result.models[row.name] = model
        t1 = time.perf_counter()
        if merge_only or done:
            if done:
                result.runs[row.name] = run_dir
                result.timings[row.name] = {**before.get(row.name, {}), "reused": True}
            continue
        options = dict(backend_options or {})
        if (served_models or {}).get(row.name):
            options["served_model"] = served_models[row.name]
        result.runs[row.name] = evaluate(model_ref, row_task, run_dir, backend, backend_options=options,
                                         label=row.name, lambda_=row.curve_lambda, progress=progress)
        (run_dir / SETTINGS_FILE).write_text(json.dumps(row_settings, indent=1) + "\n")
        result.timings[row.name] = {"merge_seconds": round(t1 - t0, 1),
                                    "eval_seconds": round(time.perf_counter() - t1, 1)}
        if drop and model is not None and row.name not in keep:
            drop_weights(model)
    return result


__all__ = ["PAPER_LAMBDAS", "VARIANT_LAMBDA", "MODULE_ABLATIONS", "Triple", "Row", "paper_windows", "mi_rows",
           "baseline_rows", "side_rows", "merge", "run_rows", "finished", "drop_weights", "thinking_template"]


def write_table(rows: Sequence[Row], runs: Dict[str, Path], report_dir: Path, thinking: str,
                mi_lambdas: Optional[Sequence[float]] = None) -> dict:
    """``comparison.md``/``.csv`` (:mod:`mi_mergekit.eval.comparison`) of the evaluated ``rows``: the
    Instruct and Thinking runs, the baselines and the whole-model MI rows (those at ``mi_lambdas``
    if given); ``thinking``: the row that is the Thinking side (``thinking`` or ``mi_1``)."""
    from mi_mergekit.eval.comparison import method_title, write_comparison
    from mi_mergekit.eval.runner import load_run

    loaded = {row.name: load_run(runs[row.name]) for row in rows if row.name in runs}
    entries, curve = [], []
    for row in rows:
        run = loaded.get(row.name)
        if run is None or row.parameters:
            continue
        if row.curve_lambda is not None or row.baseline:
            curve.append(run)
        if row.name == thinking:
            entries.append(("Thinking", run))
        elif row.side or row.baseline or mi_lambdas is None or row.lam in mi_lambdas:
            entries.append((method_title(row.name, row.lam), run))
    benchmark = loaded[thinking]["metrics"]["benchmark"]
    from mi_mergekit.eval.benchmarks import get_benchmark

    return write_comparison(entries, loaded[thinking], report_dir, get_benchmark(benchmark).title, curve,
                            [row.name for row in rows if row.baseline and row.name in loaded])


_HUB_ID = r"^[\w.-]+/[\w.-]+(@[\w.-]+)?$"


def model_reference(value: str, role: str) -> str:
    """A local folder (made absolute) or a hub id (left to mergekit and the backend, which read it from
    the local cache), else an error naming the option."""
    import re

    path = Path(value)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MiMergekitError(f"--{role}: the model folder has no config.json", path=path)
        return str(path.resolve())
    if path.exists() or not re.match(_HUB_ID, value):
        raise MiMergekitError(f"--{role}: not a model folder nor a hub id (ORG/NAME)", path=path)
    return value


def run_compare(triple: Triple, task: EvalTask, out: Path, *, backend: str = "transformers",
                backend_options: Optional[dict] = None, progress: bool = True,
                lambdas: Sequence[float] = PAPER_LAMBDAS, windows: Sequence[Tuple[str, int, int]] = (),
                modules: Sequence[str] = (),
                baselines: Sequence[str] = ("ta", "ties"), served_models: Optional[Dict[str, str]] = None,
                merge_only: bool = False, drop: bool = False, log: Callable[[str], None] = lambda m: None) -> dict:
    """The whole comparison for a user's triple (module docstring): rows, merges, runs and the report in
    ``out``, every row evaluated on ``task`` (its decoding for the merged and Thinking rows) with
    ``backend`` and ``backend_options`` (:func:`mi_mergekit.eval.evaluate`'s);
    ``served_models``: with the ``openai`` backend, the name each row's server knows its model by
    (default: the row's model folder or hub id). Returns ``{"rows", "runs", "models", "report"}``."""
    from mi_mergekit.eval.datasets import dataset_fingerprint
    from mi_mergekit.runlock import hold

    rows = side_rows() + [r for r in baseline_rows(triple) if r.baseline in baselines] + mi_rows(lambdas, windows,
                                                                                                  modules)
    unknown = sorted(set(served_models or {}) - {r.name for r in rows})
    if unknown:
        raise MiMergekitError(f"--served-model names rows the comparison does not have: {', '.join(unknown)}; "
                              f"its rows are {', '.join(r.name for r in rows)}")
    if baselines and not triple.base:
        raise MiMergekitError("TA and TIES need the common ancestor of both models: pass --base (or --baselines none)")
    out.mkdir(parents=True, exist_ok=True)
    hold(out, "mi-mergekit compare")
    evaluation = {**{k: v for k, v in task.to_dict().items() if k != "dataset"}, "backend": backend,
                  "backend_options": backend_options or {}}
    settings = {"triple": {k: v for k, v in vars(triple).items() if v}, "dataset": str(task.dataset),
                "dataset_fingerprint": dataset_fingerprint(str(task.dataset)),
                "evaluation": json.loads(json.dumps(evaluation, default=str))}
    done = run_rows(rows, triple, out, task, settings, backend=backend, backend_options=backend_options,
                    progress=progress, drop=drop, merge_only=merge_only, served_models=served_models, log=log)
    if merge_only:
        return {"rows": rows, "runs": {}, "models": done.models, "report": None}
    from mi_mergekit.eval import write_report

    report_dir = out / "report"
    report = write_report([done.runs[r.name] for r in rows], report_dir, thinking_run="thinking", frontier=True,
                          baselines=[r.name for r in rows if r.baseline])
    table = write_table(rows, done.runs, report_dir, "thinking")
    (report_dir / "timings.json").write_text(json.dumps(done.timings, indent=1) + "\n")
    return {"rows": rows, "runs": done.runs, "models": done.models, "report": report, "table": table}
