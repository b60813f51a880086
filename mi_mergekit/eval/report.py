"""Runs side by side in the paper's Table 2 layout, and metrics against λ.

One row per model (run ``label``), one column group per benchmark:
``Mean@n``, ``Pass@n`` (accuracy, %), ``#N`` (mean generated tokens),
``#R`` (Think ratio, % of responses with ``</think>``), and, reported
separately, ``Trunc`` (% of responses cut by the token budget). Rows keep
the order of the runs given. Written as ``report.md`` and ``report.csv``.

When runs carry λ (``--lambda`` at eval time, or the model's
``mi_plan.json``), ``lambda_<benchmark>.png`` plots Mean@n / Pass@n, Think #R
and Token #N against λ for each benchmark (matplotlib, Agg backend; no display
needed).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from mi_mergekit.eval.benchmarks import get_benchmark
from mi_mergekit.eval.runner import grade_run, load_run
from mi_mergekit.eval.store import METRICS_FILE

COLUMNS = ("Mean", "Pass", "#N", "#R", "Trunc")
#: columns that carry a standard error
SE_COLUMNS = ("Mean", "Pass")


def load_runs(run_dirs: Sequence[Union[str, Path]]) -> List[dict]:
    """Load graded runs, grading (never generating) those that have no metrics yet."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory not found ({path})")
        if not (path / METRICS_FILE).is_file():
            grade_run(path)
        runs.append(load_run(path))
    return runs


def _cells(metrics: dict) -> Dict[str, float]:
    n = metrics["n_samples"]
    stderr = metrics.get("stderr", {})  # absent in runs graded before standard errors
    return {
        "Mean": 100 * metrics["mean@k"][n],
        "Pass": 100 * metrics["pass@k"][n],
        "Mean SE": _percent(stderr.get("mean@k", {}).get(n)),
        "Pass SE": _percent(stderr.get("pass@k", {}).get(n)),
        "#N": metrics["tokens_mean"],
        "#R": 100 * metrics["think_ratio"],
        "Trunc": 100 * metrics["truncation_rate"],
    }


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100 * value


def table(runs: Sequence[dict], separate_se: bool = False) -> tuple:
    """(header, rows) with rows as lists of strings; a missing (model, benchmark) pair is blank.

    Mean and Pass carry ``± SE`` (standard error over questions, when the run has it);
    ``separate_se`` puts the SE in columns of their own instead (for the CSV).
    """
    benchmarks: List[str] = []
    ks: Dict[str, set] = {}
    rows: Dict[str, dict] = {}
    lambdas: Dict[str, object] = {}
    for run in runs:
        m = run["metrics"]
        bench = m["benchmark"]
        if bench not in benchmarks:
            benchmarks.append(bench)
        ks.setdefault(bench, set()).add(m["n_samples"])
        row = rows.setdefault(m["label"], {})
        if bench in row:
            raise ValueError(f"two runs of {m['label']!r} on {bench}; give them different --label")
        row[bench] = _cells(m)
        lambdas[m["label"]] = m.get("lambda")
    header = ["Model", "λ"]
    for bench in benchmarks:
        title = get_benchmark(bench).title
        k = f"@{next(iter(ks[bench]))}" if len(ks[bench]) == 1 else "@n"
        for column in COLUMNS:
            name = f"{title} {column}{k if column in SE_COLUMNS else ''}"
            header += [name, f"{name} SE"] if separate_se and column in SE_COLUMNS else [name]
    body = []
    for label, row in rows.items():
        lam = lambdas[label]
        line = [label, "" if lam is None else f"{lam:g}"]
        for bench in benchmarks:
            cells = row.get(bench)
            for column in COLUMNS:
                se = None if cells is None else cells.get(f"{column} SE")
                if cells is None:
                    line.append("")
                elif column == "#N":
                    line.append(f"{cells[column]:.0f}")
                elif se is not None and not separate_se:
                    line.append(f"{cells[column]:.1f} ± {se:.1f}")
                else:
                    line.append(f"{cells[column]:.1f}")
                if separate_se and column in SE_COLUMNS:
                    line.append("" if se is None else f"{se:.1f}")
        body.append(line)
    return header, body


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_lambda(runs: Sequence[dict], out_dir: Path) -> List[Path]:
    """One PNG per benchmark whose runs carry λ; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_bench: Dict[str, list] = {}
    for run in runs:
        m = run["metrics"]
        if m.get("lambda") is not None:
            by_bench.setdefault(m["benchmark"], []).append(m)
    for bench, items in by_bench.items():
        items.sort(key=lambda m: m["lambda"])
        lam = [m["lambda"] for m in items]
        cells = [_cells(m) for m in items]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        axes[0].plot(lam, [c["Mean"] for c in cells], "o-", label="Mean@n")
        axes[0].plot(lam, [c["Pass"] for c in cells], "s--", label="Pass@n")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend()
        axes[1].plot(lam, [c["#R"] for c in cells], "o-", color="tab:green")
        axes[1].set_ylabel("Think #R (%)")
        axes[2].plot(lam, [c["#N"] for c in cells], "o-", color="tab:red")
        axes[2].set_ylabel("Token #N (mean)")
        for ax in axes:
            ax.set_xlabel("λ")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{get_benchmark(bench).title} against λ")
        fig.tight_layout()
        path = out_dir / f"lambda_{bench}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def write_report(run_dirs: Sequence[Union[str, Path]], out_dir: Union[str, Path]) -> dict:
    """Write report.md, report.csv and λ plots for ``run_dirs`` into ``out_dir``; returns the paths and Markdown."""
    runs = load_runs(run_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table(runs)
    text = markdown(header, rows)
    (out / "report.md").write_text(text, encoding="utf-8")
    with (out / "report.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        csv_header, csv_rows = table(runs, separate_se=True)
        writer.writerow(csv_header)
        writer.writerows(csv_rows)
    plots = plot_lambda(runs, out)
    return {"markdown": text, "md": out / "report.md", "csv": out / "report.csv", "plots": plots}
