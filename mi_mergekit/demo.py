"""``mi-mergekit demo``: the paper's experiments end to end, offline, on a real merge.

For each configuration of a pair — whole-model λ over a grid, layer windows at λ = 0.8, both
module ablations at λ = 0.8, and the paper's baselines, Task Arithmetic and TIES on the pair's
common ancestor — it writes a recipe, merges it with the real ``mergekit-yaml`` console script,
evaluates the merged model with the harness (Thinking chat template and decoding, as the paper
does for merged models) on the pair's held-out set, evaluates the Instruct model as it is
(its own template, Instruct decoding), then writes the paper's Table 2 layout (Instruct,
Thinking, TA, TIES, MI at the paper's λ: ``comparison.md``), the report, the window / module
table, the λ plots, the frontier (TA and TIES as points beside the MI curve) and the three
stages found in the sweep. The rows, merges and runs are :mod:`mi_mergekit.compare`'s, which
``mi-mergekit compare`` runs on any triple.

Pairs (``--pair``):

* ``toy`` (default): the shipped 4-layer toy pair (:mod:`mi_mergekit.toy`) with its ``base/``;
  λ ∈ {0, 0.1, …, 1}, the last-two-thirds window, both ablations, TA and TIES. Minutes.
* ``smollm2``: the SmolLM2 triple (:mod:`mi_mergekit.real`): SmolLM2-135M-Instruct as the
  ancestor, an Instruct side that answers directly and the over-thinking Thinking side, each a
  LoRA of it, built first if ``--pair-dir`` does not hold it (the PyPI wheel, no hub);
  λ ∈ {0, 0.1, …, 1}, the paper's five windows scaled to 30 layers ([0,9], [10,19], [20,29],
  [0,19], [10,29]), both ablations, TA and TIES; then the routing experiment (λ per question,
  :mod:`mi_mergekit.routing.experiment`) over the grid ``--route-grid`` (default 0.4, 0.6, 0.8,
  1), fitted on the pair's calibration split and run on the held-out questions. Generation
  decodes 128 samples at once by default (``--slots``), a stopped sample's slot going to the next;
  with ``--slots 0`` / ``--compact`` the held-out questions go in prompt batches of 25, sorted by
  difficulty (the easy half, then the hard half).
* ``smollm2-raw``: the pair measured before the triple — the raw SmolLM2-135M-Instruct (the
  build's ``base/``) as the Instruct side and the same Thinking side; no ancestor, so no TA or TIES.

The demo's own tables (windows and ablations, per difficulty) are :mod:`mi_mergekit.demo_tables`'s.

Everything lands in ``--out``: ``recipes/``, ``models/``, ``runs/`` (samples.jsonl +
metrics per model), ``routing/`` (signals, routers, routing.md) and ``report/`` (comparison.md/csv,
report.md/csv, paper_table.csv, variants.md/csv/png, task.md/csv, frontier.md/csv/png,
lambda_boxed.png, stages.json/png, timings.json). Re-running resumes: finished merges and samples
are reused. ``--keep-models`` keeps the merged folders (by default each is deleted once evaluated
when the pair is a SmolLM2 one, the routing grid's once the routed runs are done: 0.5 GB each).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from mi_mergekit.compare import run_rows, write_table
from mi_mergekit.compare_merges import drop_weights
from mi_mergekit.compare_rows import (BASELINES, MODULE_ABLATIONS, PAPER_LAMBDAS, Triple, baseline_rows, choose,
                                      mi_rows, paper_windows, side_rows)
from mi_mergekit.errors import MiMergekitError
from mi_mergekit.demo_tables import variants_table, work_table

#: the λ sweep of both pairs, and the routing grid of the smollm2 pair (the toy has no calibration split)
DEFAULT_LAMBDAS = "0:1:0.1"
ROUTE_GRID = {"toy": "none", "smollm2": "0.4,0.6,0.8,1", "smollm2-raw": "0.4,0.6,0.8,1"}
PAIRS = tuple(ROUTE_GRID)


@dataclass
class DemoPair:
    """What the demo runs on: the folders, the held-out records and the eval defaults."""

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
    #: the common ancestor of both sides (TA and TIES merge on it), and a pre-trained one ("-Base")
    base: Optional[Path] = None
    pretrained: Optional[Path] = None
    #: the decode loop's slots when neither --slots nor --compact is given (0: generate)
    slots: int = 0

    def triple(self) -> Triple:
        def absolute(path: Optional[Path]) -> Optional[str]:
            # absolute: a recipe works from any folder, and mergekit's model card would take a
            # relative "dir/name" for a hub repo id and ask the hub about it (fatal offline)
            return None if path is None else str(Path(path).resolve())

        return Triple(absolute(self.instruct), absolute(self.thinking), absolute(self.base), absolute(self.pretrained))


#: the SmolLM2 demo's default decode loop: continuous batching, 128 samples at once (README,
#: "Generation speed on a CPU": 2.2× the compacting loop on its workload; every shipped triple
#: result was generated this way)
SMOLLM2_SLOTS = 128


def toy_pair() -> DemoPair:
    from mi_mergekit.toy import BASE_DIR, HELDOUT_PATH, INSTRUCT_DIR, THINKING_DIR, task

    if not (THINKING_DIR / "config.json").exists():
        raise MiMergekitError("the toy pair is missing", path=THINKING_DIR.parent)
    layers = json.loads((THINKING_DIR / "config.json").read_text())["num_hidden_layers"]
    windows = [w for w in paper_windows(layers) if w[0] == "last2of3"]
    records = task.load_heldout(HELDOUT_PATH)
    return DemoPair("toy", INSTRUCT_DIR, THINKING_DIR, records, windows, n_samples=4,
                    max_new_tokens=task.MAX_NEW_TOKENS, prompt_batch=70, base=BASE_DIR)


def smollm2_pair(pair_dir: Path, wheel: Optional[Path], raw: bool = False,
                 log: Callable[[str], None] = lambda message: None) -> DemoPair:
    """The SmolLM2 triple built in ``pair_dir`` (built there first if missing); ``raw``: the pair
    measured before it, the raw ancestor as the Instruct side."""
    from mi_mergekit import real
    from mi_mergekit.real import task
    from mi_mergekit.real.build import build_pair, built_pair

    record = built_pair(pair_dir)  # any finished build (e.g. one with a retrained adapter) is used as is
    if record is None:
        record = build_pair(pair_dir, wheel=wheel, log=lambda m: log(f"[smollm2] {m}"))
    elif "base" not in record["digests"]:
        raise MiMergekitError(f"{pair_dir} holds a pair built before the triple (no base/); build the triple "
                              f"into a new folder (mi-mergekit smollm2 build --out DIR) and pass --pair-dir DIR")
    elif not record["verified"]:
        log(f"[smollm2] using the pair in {pair_dir} (adapter {record['adapter']}; not the shipped one)")
    instruct, base = (pair_dir / "base", None) if raw else (pair_dir / "instruct", pair_dir / "base")
    return DemoPair("smollm2-raw" if raw else "smollm2", instruct, pair_dir / "thinking", task.load_heldout(),
                    paper_windows(real.NUM_LAYERS), n_samples=4, max_new_tokens=task.MAX_NEW_TOKENS,
                    prompt_batch=25, limit=50, provenance=record, calibration=task.load_heldout(task.CALIBRATION_PATH),
                    base=base, slots=SMOLLM2_SLOTS)


def run_demo(pair: str = "toy", out_dir: Optional[str] = None, pair_dir: Optional[str] = None,
             wheel: Optional[str] = None, lambdas: Optional[str] = None, n_samples: Optional[int] = None,
             limit: Optional[int] = None, max_new_tokens: Optional[int] = None, seed: int = 0,
             prompt_batch: Optional[int] = None, windows: Optional[str] = None, modules: Optional[str] = None,
             skip_variants: bool = False, keep_models: bool = False, route_grid: Optional[str] = None,
             route_signals: Optional[str] = None, calibration_limit: Optional[int] = None,
             compact: bool = False, slots: Optional[int] = None, baselines: Optional[str] = None,
             say: Callable[[str], None] = print, log: Callable[[str], None] = lambda message: None) -> Path:
    """Merge a pair over a λ grid, windows, module ablations and the TA / TIES baselines with
    mergekit-yaml, evaluate, report (``mi-mergekit demo``); returns the output folder. ``say``
    gets the tables and the plots' paths, ``log`` the progress."""
    from mi_mergekit.eval import EvalTask, write_report
    from mi_mergekit.merge.lambdas import parse_lambdas
    from mi_mergekit.runlock import hold

    window_names = choose(windows, [w[0] for w in paper_windows(3)], "--windows")
    module_names = choose(modules, MODULE_ABLATIONS, "--modules")
    baseline_names = choose(baselines, BASELINES, "--baselines")
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
                                                         Path(wheel) if wheel else None, raw=pair == "smollm2-raw", log=log)
    build_seconds = time.perf_counter() - started
    records = spec.records
    if pair != "toy":
        from mi_mergekit.real.task import balanced_questions

        records = balanced_questions(records, limit if limit is not None else spec.limit)
    elif limit:
        records = records[:limit]
    dataset = out / "heldout.jsonl"
    _write_records(dataset, records)

    chosen = spec.windows
    if window_names is not None:
        layers = json.loads((spec.thinking / "config.json").read_text())["num_hidden_layers"]
        chosen = [w for w in paper_windows(layers) if w[0] in window_names]
    configs = mi_rows(sweep, [] if skip_variants else chosen,
                      () if skip_variants else (MODULE_ABLATIONS if module_names is None else module_names))
    triple = spec.triple()
    wanted = BASELINES if baseline_names is None else baseline_names
    extra = side_rows(thinking=1.0 not in sweep) + [row for row in baseline_rows(triple) if row.baseline in wanted]
    rows = extra[:1] + configs + extra[1:]
    n = n_samples or spec.n_samples
    batch = prompt_batch or spec.prompt_batch
    timings = {"build_seconds": round(build_seconds, 1), "configs": {}}
    timings_path = out / "report" / "timings.json"
    try:  # a resumed run keeps the times measured when each config was made
        before = json.loads(timings_path.read_text()).get("configs", {})
    except (OSError, ValueError):
        before = {}
    budget = max_new_tokens or spec.max_new_tokens
    loop = decode_loop(spec, compact, slots)
    task = EvalTask(dataset, benchmark="boxed", grader="math", grading="strict", decoding="thinking", n_samples=n,
                    max_new_tokens=budget, seed=seed)
    settings = {"pair": spec.name, "pair_provenance": spec.provenance.get("digests"),
                "dataset": [r["id"] for r in records], "n_samples": n, "max_new_tokens": budget, "seed": seed,
                "prompt_batch": batch, **loop}
    keep = [c.name for c in configs if plan is not None and not c.parameters and c.lam in plan.grid]
    backend = {"batch_size": n, "prompt_batch": batch, **loop}
    done = run_rows(rows, triple, out, task, settings, backend_options=backend, keep=keep,
                    drop=pair != "toy" and not keep_models, timings_before=before, log=log)
    timings["configs"] = done.timings
    runs = [done.runs[row.name] for row in rows]
    grid_models = {c.lam: done.models[c.name] for c in configs if c.name in keep}
    routed: List[Path] = []
    routing_text = None
    if plan is not None:
        from mi_mergekit.real.task import balanced_questions
        from mi_mergekit.routing.experiment import run_experiment

        calibration = balanced_questions(spec.calibration, calibration_limit or spec.limit)
        calibration_path = out / "calibration.jsonl"
        _write_records(calibration_path, calibration)
        t0 = time.perf_counter()
        experiment = run_experiment(plan, instruct=spec.instruct, thinking=spec.thinking, grid_models=grid_models,
                                    calibration=calibration_path, calibration_records=calibration,
                                    test_records=records, out=out, task=task, backend_options=backend,
                                    log=lambda m: log(f"[route] {m}"))
        routed = experiment["runs"]
        routing_text = experiment["markdown"]
        timings["routing_seconds"] = round(time.perf_counter() - t0, 1)
        if pair != "toy" and not keep_models:
            for model in grid_models.values():
                drop_weights(model)
    report_dir = out / "report"
    report = write_report(runs + routed, report_dir, frontier=True,
                          baselines=[row.name for row in rows if row.baseline])
    say(report["markdown"])
    thinking = "mi_1" if 1.0 in sweep else "thinking"
    say(write_table(rows, done.runs, report_dir, thinking, PAPER_LAMBDAS)["markdown"])
    if any(c.parameters for c in configs):
        say(variants_table(configs, [done.runs[c.name] for c in configs], report_dir))
    say(work_table([r.name for r in rows] + [r.name for r in routed], runs + routed, records, report_dir))
    if routing_text:
        (report_dir / "routing.md").write_text(routing_text, encoding="utf-8")
        say(routing_text)
    for png in report.get("plots", []):
        say(f"plot: {png}")
    sweep_runs = [str(done.runs[c.name]) for c in configs if not c.parameters]
    if len(sweep_runs) >= 3:
        from mi_mergekit.analysis import stages

        result = stages.analyse(sweep_runs + [str(r) for r in routed])
        with open(report_dir / "stages.json", "w") as handle:
            json.dump(result, handle, indent=1)
        say(stages.describe(result))
        say(f"plot: {stages.plot(result, str(report_dir / 'stages.png'))}")
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    timings_path.write_text(json.dumps(timings, indent=1) + "\n")
    log(f"done in {timings['total_seconds']:.0f} s (pair ready in {build_seconds:.0f} s); "
        f"everything is under {out}/")
    return out


def decode_loop(spec: DemoPair, compact: bool, slots: Optional[int]) -> dict:
    """The transformers backend's decode-loop options: ``--compact``, ``--slots N`` (0: generate),
    or, with neither, the pair's default (``DemoPair.slots``)."""
    if slots is None:
        slots = 0 if compact else spec.slots
    return {**({"compact": True} if compact else {}), **({"slots": slots} if slots else {})}


def _write_records(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _routing_plan(grid: Sequence[float], sweep: Sequence[float], signals: Optional[str]):
    """The routing experiment's plan, or None without a grid; each grid λ must be a swept λ."""
    if not grid:
        return None
    from mi_mergekit.routing.experiment import RoutingPlan
    from mi_mergekit.routing.signals import SIGNALS

    missing = sorted(set(grid) - set(sweep))
    if missing:
        raise MiMergekitError(f"--route-grid: λ {missing} of the routing grid are not in the sweep {list(sweep)}")
    names = choose(signals, SIGNALS, "--route-signals") if signals else list(SIGNALS)
    if not names:
        raise MiMergekitError("--route-signals: give at least one signal")
    return RoutingPlan(grid=tuple(sorted(grid)), signals=tuple(names))
