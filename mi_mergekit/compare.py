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

``mi-mergekit compare`` runs it for a user's triple; ``mi-mergekit demo`` for the shipped ones. The
rows: :mod:`mi_mergekit.compare_rows`; a row's recipe and merge: :mod:`mi_mergekit.compare_merges`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple

from mi_mergekit.compare_merges import drop_weights, merge, thinking_template
from mi_mergekit.compare_rows import PAPER_LAMBDAS, Row, Triple, baseline_rows, mi_rows, side_rows
from mi_mergekit.errors import MiMergekitError

if TYPE_CHECKING:
    from mi_mergekit.eval.task import EvalTask

#: what each run folder's settings file is called (a run is reused only with the same settings)
SETTINGS_FILE = "demo.json"


def finished(run_dir: Path, settings: dict) -> bool:
    """True if ``run_dir`` holds a graded run made with exactly ``settings``."""
    try:
        return (json.loads((run_dir / SETTINGS_FILE).read_text()) == json.loads(json.dumps(settings))
                and (run_dir / "metrics.json").exists())
    except (OSError, ValueError):
        return False


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
    and Thinking rows); ``backend`` / ``backend_options``: what generates
    (:func:`mi_mergekit.eval.evaluate`'s); ``settings``: what a reused run must have been made with,
    besides the row (:data:`SETTINGS_FILE`). A row whose run is finished is not merged again,
    unless it is in ``keep`` (its model is needed later);
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


__all__ = ["SETTINGS_FILE", "finished", "RowsResult", "run_rows", "write_table", "model_reference", "run_compare"]
