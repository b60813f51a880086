"""The routing experiment of ``mi-mergekit demo``: λ per question, measured against every static λ.

Given the merges of a λ grid, the two endpoint models, a **calibration** split and a disjoint
**test** split (the demo's held-out questions):

1. each grid λ's merge is evaluated on the calibration split (ordinary eval runs,
   ``runs/calibration/mi_<λ>``);
2. every zero-shot signal (:mod:`.signals`) is computed for both splits from the endpoints
   (``routing/signals_<split>.json``, with their cost in seconds);
3. for each signal and objective a router is fitted on the calibration runs only
   (``routing/router_<signal>_<objective>.json``); with ``oracle``, also a router on the
   questions' true difficulty — a reference for what routing could gain, not a zero-shot signal;
4. each router routes the test split and the routed run is evaluated
   (``runs/route_<signal>_<objective>``) with the grid's merges loaded once. A router that
   assigns the test questions exactly as an earlier one did is not run twice: the table says so.

Same decoding, budget, seeds and chunking as the static runs, so a question routed to λ in a
prompt batch that went wholly to λ gets the very samples of the static run at λ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence

from mi_mergekit.routing.policy import OBJECTIVES, Router, RouterError, fit, outcomes_of_runs, question_hash
from mi_mergekit.routing.signals import SIGNALS, compute_signals, signal_values

ORACLE = "difficulty"


@dataclass(frozen=True)
class RoutingPlan:
    grid: tuple = (0.4, 0.6, 0.8, 1.0)
    signals: tuple = SIGNALS
    objectives: tuple = OBJECTIVES
    oracle: bool = True
    tolerance: float = 1.0
    quantiles: int = 10
    samples: int = 4  # disagreement: Instruct samples per question
    signal_tokens: int = 48


def _signals(path: Path, dataset: Path, plan: RoutingPlan, instruct, thinking, seed: int, log) -> dict:
    settings = {"dataset": str(dataset), "signals": list(plan.signals), "samples": plan.samples,
                "max_new_tokens": plan.signal_tokens, "seed": seed, "instruct": str(instruct),
                "thinking": str(thinking)}
    if path.exists():  # computed before with these settings: reuse
        doc = json.loads(path.read_text(encoding="utf-8"))
        if all(doc.get("settings", {}).get(key) == value for key, value in settings.items()):
            return doc
    log(f"signals of {dataset.name}: {', '.join(plan.signals)}")
    doc = compute_signals(str(dataset), instruct=str(instruct), thinking=str(thinking), signals=plan.signals,
                          samples=plan.samples, max_new_tokens=plan.signal_tokens, seed=seed)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def run_experiment(plan: RoutingPlan, *, instruct: Path, thinking: Path, grid_models: Mapping[float, Path],
                   calibration: Path, calibration_records: Sequence[dict], test_records: Sequence[dict],
                   out: Path, task, backend_options: dict, log: Callable[[str], None] = print) -> dict:
    """Run steps 1–4 (module docstring); returns ``{"runs", "calibration_runs", "routers", "markdown"}``.
    ``task``: the static runs' :class:`~mi_mergekit.eval.task.EvalTask` (its dataset the test split);
    the calibration runs are the same task on ``calibration``. ``backend_options``: the transformers
    backend's (``batch_size``, ``prompt_batch`` and the decode loop, ``compact`` or ``slots``), the same
    for the calibration runs and the grid of the routed ones."""
    from mi_mergekit.eval import evaluate
    from mi_mergekit.routing.run import GridBackends, routed_evaluate

    shared = {question_hash(r["question"]) for r in calibration_records} & {
        question_hash(r["question"]) for r in test_records}
    if shared:
        raise RouterError(f"{len(shared)} questions are in both the calibration and the test split")
    routing_dir = out / "routing"
    routing_dir.mkdir(parents=True, exist_ok=True)
    calibration_runs: Dict[float, Path] = {}
    for lam in plan.grid:
        log(f"calibration run of mi_{lam:g} on {len(calibration_records)} calibration questions")
        calibration_runs[lam] = evaluate(str(grid_models[lam]), task.replace(dataset=calibration),
                                         out / "runs" / "calibration" / f"mi_{lam:g}", backend_options=backend_options,
                                         label=f"calibration_mi_{lam:g}", lambda_=lam)
    outcomes = outcomes_of_runs(calibration_runs)
    test, seed = Path(task.dataset), task.seed
    docs = {split: _signals(routing_dir / f"signals_{split}.json", path, plan, instruct, thinking, seed, log)
            for split, path in (("calibration", calibration), ("test", test))}
    values = {split: {s: signal_values(doc, s) for s in plan.signals} for split, doc in docs.items()}
    if plan.oracle:
        for split, records in (("calibration", calibration_records), ("test", test_records)):
            values[split][ORACLE] = {r["id"]: float(r["difficulty"]) for r in records}
    hashes = [question_hash(r["question"]) for r in calibration_records]
    routers: List[Router] = []
    for signal in list(plan.signals) + ([ORACLE] if plan.oracle else []):
        for objective in plan.objectives if signal != ORACLE else plan.objectives[:1]:
            name = f"route_{signal}_{objective.replace('-', '_')}"
            router = fit(signal, values["calibration"][signal], outcomes, objective=objective,
                         tolerance=plan.tolerance, quantiles=plan.quantiles, calibration_questions=hashes, name=name)
            router.save(routing_dir / f"{name}.json")
            routers.append(router)
    runs: List[Path] = []
    rows = []
    seen: Dict[tuple, str] = {}
    with GridBackends({lam: str(grid_models[lam]) for lam in plan.grid}, **backend_options) as grid:
        for router in routers:
            name = router.fit["name"]
            assignment = router.assign(values["test"][router.signal])
            key = tuple(sorted(assignment.items()))
            calib = router.fit["calibration"]
            shares = ", ".join(f"{lam:g}×{sum(1 for v in assignment.values() if v == lam)}" for lam in router.grid)
            row = [name, router.signal + (" (oracle)" if router.signal == ORACLE else ""), router.fit["objective"],
                   f"{router.direction:+d}", ", ".join(_number(t) for t in router.thresholds),
                   f"{100 * calib['mean']:.1f} ± {100 * (calib['mean_se'] or 0):.1f}", f"{calib['tokens_mean']:.1f}",
                   f"{calib['lambda_mean']:.2f}", shares]
            if key in seen:
                rows.append(row + [f"same test routing as {seen[key]}: not run again"])
                continue
            seen[key] = name
            log(f"routed run {name}: test λ shares {shares}")
            runs.append(routed_evaluate(router, grid, task, out / "runs" / name, values=values["test"][router.signal],
                                        label=name))
            rows.append(row + [""])
    from mi_mergekit.eval.report import markdown

    header = ["Router", "Signal", "Objective", "Direction", "Thresholds", "Calib. Mean@n", "Calib. Token #N",
              "Calib. mean λ", "Test questions per λ", "Note"]
    top = routers[0].fit["calibration_top"] if routers else None
    static = routers[0].fit["calibration_static"] if routers else {}
    intro = ("Routers fitted on the calibration split only "
             f"({len(calibration_records)} questions, none in the test split); calibration accuracy of each grid λ: "
             + ", ".join(f"λ={lam} {100 * r['mean']:.1f} at {r['tokens_mean']:.1f} tokens" for lam, r in static.items())
             + ".")
    seconds = {split: doc["seconds"] for split, doc in docs.items()}
    text = (intro + "\n\n" + markdown(header, rows)
            + f"\nSignal cost (seconds, both endpoint models on this machine): {json.dumps(seconds)}.\n")
    (routing_dir / "routing.md").write_text(text, encoding="utf-8")
    return {"runs": runs, "calibration_runs": calibration_runs, "routers": routers, "markdown": text, "top": top}


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) != float("inf") else ("∞" if value > 0 else "−∞")
