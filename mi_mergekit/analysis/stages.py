"""The paper's three stages, found in a λ sweep: ``mi-mergekit stages RUNS...``.

Input points are ``(λ, Think #R, mean tokens, accuracy)``, one per evaluated
model, from any mix of:

- eval run directories written by ``mi-mergekit eval`` (their ``metrics.json``:
  ``lambda``, ``think_ratio``, ``tokens_mean`` and accuracy ``mean`` = Mean@n),
  or a directory whose immediate sub-directories are such runs;
- a ``metrics.json`` file;
- a CSV file with a header, or a JSON / JSONL file of rows (a list, or
  ``{"rows": [...]}``), with columns ``lambda``, ``think_ratio``,
  ``mean_tokens`` (or ``tokens_mean``), ``accuracy`` (or ``mean``), and
  optionally ``benchmark``.

Fractions are in [0, 1]; a think-ratio or accuracy column whose values exceed 1
is read as percent and divided by 100. Points are grouped by benchmark and
analysed separately; several points at one λ are averaged.

A **routed** run (λ per question, :mod:`mi_mergekit.routing`: its ``metrics.json`` has a
``routing`` block) is not a point of the λ curve: it is read at its mean λ, listed under
``routed`` beside the stages (and drawn as a star in the plot), and never moves a boundary.

Boundaries (grid points of the sweep, the way the paper writes its stages,
"Stage 1 λ ∈ [0, 0.4), Stage 2 [0.4, 0.6], Stage 3 (0.6, 1]"):

- ``stage1_end`` (1→2): the largest swept λ such that Think #R ≤ ``think_low``
  (default 0.05) at that λ and at every smaller swept λ — the end of the "no
  explicit thinking" prefix. None if the first point already thinks.
- ``stage3_start`` (2→3): the smallest swept λ such that Think #R ≥
  ``think_high`` (default 0.95) there and at every larger swept λ — where
  thinking saturates. None if the last point is below ``think_high``.
- Stage 1 = [λ_min, stage1_end), Stage 2 = [stage1_end, stage3_start],
  Stage 3 = (stage3_start, λ_max].
- ``accuracy_plateau``: the smallest swept λ from which accuracy never improves
  by more than ``accuracy_tolerance`` (default 0.01 absolute) at any larger λ;
  ``diminishing_returns`` is true when, past it, mean tokens still grow by at
  least ``token_growth`` (default 0.05 = 5 %) — "accuracy stops improving while
  tokens keep growing".
- Also reported, by linear interpolation between neighbouring points: the λ
  where Think #R first crosses ``think_low``, 0.5 and ``think_high``.

Outputs: JSON (points, thresholds, boundaries, stage intervals per benchmark)
and a PNG with Think #R, tokens and accuracy against λ, stages shaded.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from mi_mergekit.errors import AnalysisInputError


@dataclass(frozen=True)
class Thresholds:
    think_low: float = 0.05
    think_high: float = 0.95
    accuracy_tolerance: float = 0.01
    token_growth: float = 0.05

    def __post_init__(self):
        if not 0 <= self.think_low < self.think_high <= 1:
            raise AnalysisInputError(
                f"need 0 <= think_low < think_high <= 1, got {self.think_low}, {self.think_high}")
        if self.accuracy_tolerance < 0 or self.token_growth < 0:
            raise AnalysisInputError("accuracy_tolerance and token_growth must be >= 0")


@dataclass
class Point:
    lam: float
    think_ratio: float
    mean_tokens: float
    accuracy: Optional[float] = None
    benchmark: str = "default"
    source: str = ""
    #: a routed run (λ per question) read at its mean λ: reported beside the curve, not on it
    routed: bool = False


# ---------------------------------------------------------------- reading


_ALIASES = {
    "lambda": ("lambda", "lam", "λ"),
    "think_ratio": ("think_ratio", "think", "think_r", "think_#r"),
    "mean_tokens": ("mean_tokens", "tokens_mean", "tokens", "token_n"),
    "accuracy": ("accuracy", "mean", "acc", "mean@k"),
    "benchmark": ("benchmark",),
}


def _get(row: dict, key: str):
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    for alias in _ALIASES[key]:
        if alias in lowered and lowered[alias] not in (None, ""):
            return lowered[alias]
    return None


def _row_point(row: dict, source: str) -> Point:
    lam, think, tokens = _get(row, "lambda"), _get(row, "think_ratio"), _get(row, "mean_tokens")
    missing = [k for k, v in (("lambda", lam), ("think_ratio", think), ("mean_tokens", tokens)) if v is None]
    if missing:
        raise AnalysisInputError(f"row {row} lacks {', '.join(missing)}", path=source)
    acc = _get(row, "accuracy")
    if isinstance(acc, dict):  # e.g. a mean@k map; use the largest k
        acc = acc[max(acc, key=lambda k: int(k))]
    return Point(lam=float(lam), think_ratio=float(think), mean_tokens=float(tokens),
                 accuracy=None if acc is None else float(acc),
                 benchmark=str(_get(row, "benchmark") or "default"), source=source)


def _metrics_point(metrics: dict, source: str, run_json: Optional[dict] = None) -> Optional[Point]:
    """The run's point on the λ curve; None for a run without a λ (a layer-window or
    module variant, whose model's mi_plan.json says it is not a whole-model merge)."""
    lam = metrics.get("lambda")
    routing = metrics.get("routing")
    if routing is not None:
        lam = routing["lambda_mean"]
    if lam is None and run_json:
        lam = run_json.get("lambda")
    if lam is None:
        return None
    return Point(lam=float(lam), think_ratio=float(metrics["think_ratio"]),
                 mean_tokens=float(metrics["tokens_mean"]),
                 accuracy=None if metrics.get("mean") is None else float(metrics["mean"]),
                 benchmark=str(metrics.get("benchmark") or "default"), source=source, routed=routing is not None)


def _read_run_dir(path: str, skipped: List[str]) -> List[Point]:
    metrics = os.path.join(path, "metrics.json")
    if os.path.isfile(metrics):
        run_json = os.path.join(path, "run.json")
        run = json.load(open(run_json, encoding="utf-8")) if os.path.isfile(run_json) else None
        point = _metrics_point(json.load(open(metrics, encoding="utf-8")), path, run)
        if point is None:
            skipped.append(path)
        return [] if point is None else [point]
    points = []
    found = False
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if os.path.isfile(os.path.join(sub, "metrics.json")):
            found = True
            points.extend(_read_run_dir(sub, skipped))
    if not found:
        raise AnalysisInputError("no metrics.json here or in its sub-directories", path=path)
    return points


def read_points(paths: Iterable[str], skipped: Optional[List[str]] = None) -> List[Point]:
    """Points from run directories, metrics.json files, CSV, JSON or JSONL row files.

    Runs without a λ (layer-window and module variants of a sweep) are left out and
    listed in ``skipped``."""
    points: List[Point] = []
    skipped = [] if skipped is None else skipped
    for path in paths:
        if os.path.isdir(path):
            points.extend(_read_run_dir(path, skipped))
            continue
        if not os.path.isfile(path):
            raise AnalysisInputError("no such file or directory", path=path)
        lower = path.lower()
        if lower.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as handle:
                points.extend(_row_point(row, path) for row in csv.DictReader(handle))
        elif lower.endswith(".jsonl"):
            with open(path, encoding="utf-8") as handle:
                points.extend(_row_point(json.loads(line), path) for line in handle if line.strip())
        else:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if isinstance(data, dict) and "think_ratio" in data and "tokens_mean" in data:
                point = _metrics_point(data, path)
                if point is None:
                    skipped.append(path)
                else:
                    points.append(point)
            else:
                rows = data.get("rows", data.get("points")) if isinstance(data, dict) else data
                if not isinstance(rows, list):
                    raise AnalysisInputError("expected a list of rows or {'rows': [...]}", path=path)
                points.extend(_row_point(row, path) for row in rows)
    return points


def _normalise_percent(points: List[Point]) -> None:
    for field in ("think_ratio", "accuracy"):
        values = [getattr(p, field) for p in points if getattr(p, field) is not None]
        if values and max(values) > 1.0:
            for p in points:
                if getattr(p, field) is not None:
                    setattr(p, field, getattr(p, field) / 100.0)


def _merge_same_lambda(points: List[Point]) -> List[Point]:
    by_lam: Dict[float, List[Point]] = {}
    for p in points:
        by_lam.setdefault(p.lam, []).append(p)
    merged = []
    for lam in sorted(by_lam):
        group = by_lam[lam]
        accs = [p.accuracy for p in group if p.accuracy is not None]
        merged.append(Point(
            lam=lam,
            think_ratio=sum(p.think_ratio for p in group) / len(group),
            mean_tokens=sum(p.mean_tokens for p in group) / len(group),
            accuracy=sum(accs) / len(accs) if accs else None,
            benchmark=group[0].benchmark,
            source=";".join(p.source for p in group),
        ))
    return merged


# ---------------------------------------------------------------- analysis


def _crossing(points: Sequence[Point], level: float) -> Optional[float]:
    """First λ where Think #R reaches ``level`` going up, linearly interpolated."""
    for a, b in zip(points, points[1:]):
        if a.think_ratio < level <= b.think_ratio:
            return a.lam + (level - a.think_ratio) * (b.lam - a.lam) / (b.think_ratio - a.think_ratio)
    if points and points[0].think_ratio >= level:
        return points[0].lam
    return None


def find_stages(points: Sequence[Point], thresholds: Thresholds = Thresholds()) -> dict:
    """Stage boundaries of one benchmark's λ curve (see the module docstring)."""
    pts = _merge_same_lambda(list(points))
    if len(pts) < 2:
        raise AnalysisInputError("need points at two or more distinct λ values")
    lams = [p.lam for p in pts]
    think = [p.think_ratio for p in pts]
    notes = []

    stage1_end = None
    for p in pts:
        if p.think_ratio <= thresholds.think_low:
            stage1_end = p.lam
        else:
            break
    stage3_start = None
    for p in reversed(pts):
        if p.think_ratio >= thresholds.think_high:
            stage3_start = p.lam
        else:
            break
    if stage1_end is None:
        notes.append(f"Think #R exceeds {thresholds.think_low} already at λ={lams[0]}: no stage 1 in range")
    if stage3_start is None:
        notes.append(f"Think #R never stays >= {thresholds.think_high}: no stage 3 in range")
    if stage1_end is not None and stage1_end == lams[-1]:
        notes.append("Think #R stays ~0 over the whole range")
    if any(b < a - thresholds.think_low for a, b in zip(think, think[1:])):
        notes.append("Think #R is not monotone in λ (beyond think_low); boundaries use prefix/suffix rules")

    plateau, growth, diminishing = None, None, None
    if all(p.accuracy is not None for p in pts):
        acc = [p.accuracy for p in pts]
        for i in range(len(pts)):
            if max(acc[i:]) - acc[i] <= thresholds.accuracy_tolerance:
                plateau = lams[i]
                base = pts[i].mean_tokens
                growth = (max(p.mean_tokens for p in pts[i:]) - base) / base if base > 0 else None
                diminishing = bool(growth is not None and growth >= thresholds.token_growth and i < len(pts) - 1)
                break
    else:
        notes.append("no accuracy for some points: accuracy plateau not computed")

    stages = {
        "stage1": [lams[0], stage1_end] if stage1_end is not None and stage1_end > lams[0] else None,
        "stage2": [stage1_end if stage1_end is not None else lams[0],
                   stage3_start if stage3_start is not None else lams[-1]],
        "stage3": [stage3_start, lams[-1]] if stage3_start is not None and stage3_start < lams[-1] else None,
    }
    if stage1_end is not None and stage3_start is not None and stage3_start < stage1_end:
        notes.append("Think #R jumps from ~0 to saturated between two swept points: refine λ there")
        stages["stage2"] = [stage1_end, stage1_end]
    return {
        "benchmark": pts[0].benchmark,
        "points": [{k: v for k, v in asdict(p).items() if k not in ("benchmark", "routed")} for p in pts],
        "boundaries": {
            "stage1_end": stage1_end,
            "stage3_start": stage3_start,
            "think_low_crossing": _crossing(pts, max(thresholds.think_low, 1e-12)),
            "think_half_crossing": _crossing(pts, 0.5),
            "think_high_crossing": _crossing(pts, thresholds.think_high),
            "accuracy_plateau": plateau,
            "tokens_growth_after_plateau": growth,
            "diminishing_returns": diminishing,
        },
        "stages": stages,
        "intervals": {
            "stage1": "[lo, hi)", "stage2": "[lo, hi]", "stage3": "(lo, hi]",
        },
        "notes": notes,
    }


def analyse(paths: Iterable[str], thresholds: Thresholds = Thresholds()) -> dict:
    skipped: List[str] = []
    points = read_points(paths, skipped)
    if not points:
        raise AnalysisInputError(
            "no run carries a λ (evaluate with --lambda, or a model with mi_plan.json)",
            path=skipped[0] if skipped else None)
    _normalise_percent(points)
    by_bench: Dict[str, List[Point]] = {}
    for p in points:
        by_bench.setdefault(p.benchmark, []).append(p)
    results = []
    for bench in sorted(by_bench):
        static = [p for p in by_bench[bench] if not p.routed]
        routed = [p for p in by_bench[bench] if p.routed]
        if not static:
            raise AnalysisInputError(f"{bench}: only routed runs; the stages need runs at fixed λ values")
        result = find_stages(static, thresholds)
        if routed:
            result["routed"] = [{"source": p.source, "lambda_mean": p.lam, "think_ratio": p.think_ratio,
                                 "mean_tokens": p.mean_tokens, "accuracy": p.accuracy} for p in routed]
        results.append(result)
    return {"thresholds": asdict(thresholds), "benchmarks": results, "skipped": skipped}


# ---------------------------------------------------------------- output


STAGE_COLORS = {"stage1": "tab:blue", "stage2": "tab:orange", "stage3": "tab:green"}


def plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = result["benchmarks"]
    fig, axes = plt.subplots(len(benches), 3, figsize=(13, 3.6 * len(benches)), squeeze=False)
    th = result["thresholds"]
    for row, bench in zip(axes, benches):
        pts = bench["points"]
        lam = [p["lam"] for p in pts]
        series = [
            ("Think #R (%)", [100 * p["think_ratio"] for p in pts], "tab:green"),
            ("Token #N (mean)", [p["mean_tokens"] for p in pts], "tab:red"),
            ("accuracy (%)", [None if p["accuracy"] is None else 100 * p["accuracy"] for p in pts], "tab:blue"),
        ]
        for ax, (label, ys, color) in zip(row, series):
            for stage, span in bench["stages"].items():
                if span:
                    ax.axvspan(span[0], span[1], color=STAGE_COLORS[stage], alpha=0.12,
                               label=stage.replace("stage", "stage "))
            xs = [x for x, y in zip(lam, ys) if y is not None]
            if xs:
                ax.plot(xs, [y for y in ys if y is not None], "o-", color=color)
            routed = [(r["lambda_mean"], {"Think": 100 * r["think_ratio"], "Token": r["mean_tokens"],
                                          "accur": None if r["accuracy"] is None else 100 * r["accuracy"]})
                      for r in bench.get("routed", [])]
            for i, (x, values) in enumerate(routed):
                y = values[label[:5]]
                if y is not None:
                    ax.plot([x], [y], "*", color="black", markersize=10,
                            label="routed (at its mean λ)" if i == 0 else None)
            plateau = bench["boundaries"]["accuracy_plateau"]
            if plateau is not None and label.startswith(("accuracy", "Token")):
                ax.axvline(plateau, color="gray", ls="--", lw=1, label="accuracy plateau")
            if label.startswith("Think"):
                for level in (th["think_low"], th["think_high"]):
                    ax.axhline(100 * level, color="gray", ls=":", lw=1)
            ax.set_xlabel("λ")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        row[0].set_title(bench["benchmark"], loc="left", fontsize=10)
        row[0].legend(fontsize=7, loc="upper left")
        row[2].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def describe(result: dict) -> str:
    lines = []
    if result.get("skipped"):
        names = ", ".join(os.path.basename(os.path.normpath(p)) for p in result["skipped"])
        lines.append(f"not on the λ curve, left out: {names} (no λ: layer-window or module variants)")
    for bench in result["benchmarks"]:
        b, s = bench["boundaries"], bench["stages"]

        def span(x, brackets):
            return "-" if not x else f"{brackets[0]}{x[0]:g}, {x[1]:g}{brackets[1]}"

        lines.append(f"{bench['benchmark']}: stage 1 {span(s['stage1'], '[)')}  "
                     f"stage 2 {span(s['stage2'], '[]')}  stage 3 {span(s['stage3'], '(]')}")
        if b["accuracy_plateau"] is not None:
            growth = b["tokens_growth_after_plateau"]
            lines.append(f"  accuracy plateaus from λ={b['accuracy_plateau']:g}"
                         + (f"; tokens grow {100 * growth:.1f}% after it" if growth is not None else "")
                         + (" (diminishing returns)" if b["diminishing_returns"] else ""))
        if b["think_half_crossing"] is not None:
            lines.append(f"  Think #R crosses 50% at λ≈{b['think_half_crossing']:.3g}")
        for r in bench.get("routed", []):
            accuracy = "" if r["accuracy"] is None else f", accuracy {100 * r['accuracy']:.1f}%"
            lines.append(f"  routed {r['source']}: mean λ {r['lambda_mean']:.2f}, Think #R "
                         f"{100 * r['think_ratio']:.1f}%, {r['mean_tokens']:.1f} tokens{accuracy} (not on the λ curve)")
        lines += [f"  note: {n}" for n in bench["notes"]]
    return "\n".join(lines)
