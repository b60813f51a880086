"""Runs side by side in the paper's Table 2 / Table 5 layout, a details table, and
metrics against λ.

``report.md`` starts with the **paper layout** (the columns of Tables 2 and 5): one row
per model (run ``label``), and per benchmark, in the paper's order (AIME'25, IFEval,
GPQA-Diamond, then any other benchmark):

    ``<benchmark> Mean/<second>@k`` | ``Token #N`` | ``Think #R``

where ``<second>`` is Pass@k, except for GPQA-Diamond, where the paper reports
**Vote@k** ("Since questions from GPQA-Diamond are multiple-choice, we report Vote@8
instead of Pass@8"). Accuracies and Think #R are percentages, Token #N the mean
generated tokens. ``paper_reference="4b"`` / ``"30b"`` appends the paper's own rows of
Table 2 / Table 5 (from :mod:`mi_mergekit.eval.paper`, as printed) under the runs,
labelled ``paper: <method>``; accuracies of the runs are then printed with the
reference's decimals (Table 2: one, Table 5: two). When the runs of a benchmark (and
the reference) do not share one sample count, the header says ``@n`` and each cell
carries its own ``(@k)``. Under the table, one line names each benchmark's grading
mode(s) and the runs graded in each (``paper`` / ``strict``, ``paper (raw)`` where the
paper's Instruct-side rule skipped the post-processor, :mod:`mi_mergekit.eval.grading`),
and one line per run whose samples deviate from its decoding settings (a sampling field
the server did not take, ``--drop-unsupported``; :mod:`mi_mergekit.eval.backends.openai_http`).

``thinking_run=LABEL`` adds the **Length Ratio** of the paper's Figure 5: each run's
Token #N relative to that of the run labelled ``LABEL`` (the Thinking model) on the
same benchmark, in %, as a column of the details table.

The **details** table follows: ``Mean@n``, ``Pass@n`` (``± SE``, the standard error
over questions), ``Vote@n``, ``#N``, ``#R``, ``Trunc`` (% of responses cut by the token
budget), the Length Ratio when asked, and the grading mode, with λ. ``report.csv``
holds the details (standard errors in columns of their own), ``paper_table.csv`` the
paper layout (with each benchmark's grading mode). Rows keep the order of the runs given.

When runs carry λ (``--lambda`` at eval time, or the model's ``mi_plan.json``),
``lambda_<benchmark>.png`` plots Mean@n / Pass@n, Think #R and Token #N against λ for
each benchmark (matplotlib, Agg backend; no display needed).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.benchmarks import BENCHMARKS, get_benchmark, paper_benchmarks
from mi_mergekit.eval.frontier import write_frontier
from mi_mergekit.eval.run_folder import RunFolderError
from mi_mergekit.eval.runner import grade_run, load_run
from mi_mergekit.eval.store import METRICS_FILE
from mi_mergekit.eval.tables import markdown

COLUMNS = ("Mean", "Pass", "Vote", "#N", "#R", "Trunc")
#: columns that carry a standard error
SE_COLUMNS = ("Mean", "Pass")


def load_runs(run_dirs: Sequence[Union[str, Path]]) -> List[dict]:
    """Load graded runs, grading (never generating) those that have no metrics yet."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not path.is_dir():
            raise RunFolderError(f"run directory not found ({path})")
        if not (path / METRICS_FILE).is_file():
            grade_run(path)
        runs.append(load_run(path))
    return runs


def _cells(metrics: dict) -> Dict[str, Optional[float]]:
    n = metrics["n_samples"]
    stderr = metrics.get("stderr", {})  # absent in runs graded before standard errors
    return {
        "Mean": 100 * metrics["mean@k"][n],
        "Pass": 100 * metrics["pass@k"][n],
        "Vote": _percent(metrics["vote@k"].get(n)),  # empty where the grader does not vote (IFEval)
        "Mean SE": _percent(stderr.get("mean@k", {}).get(n)),
        "Pass SE": _percent(stderr.get("pass@k", {}).get(n)),
        "#N": metrics["tokens_mean"],
        "#R": 100 * metrics["think_ratio"],
        "Trunc": 100 * metrics["truncation_rate"],
    }


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100 * value


def _index(runs: Sequence[dict]) -> Tuple[List[str], Dict[str, Dict[str, dict]], Dict[str, object]]:
    """(benchmarks in run order, label -> benchmark -> metrics, label -> λ); one run per pair."""
    benchmarks: List[str] = []
    rows: Dict[str, Dict[str, dict]] = {}
    lambdas: Dict[str, object] = {}
    for run in runs:
        m = run["metrics"]
        bench = m["benchmark"]
        if bench not in benchmarks:
            benchmarks.append(bench)
        row = rows.setdefault(m["label"], {})
        if bench in row:
            raise EvalInputError(f"two runs of {m['label']!r} on {bench}; give them different --label")
        row[bench] = m
        lambdas[m["label"]] = m.get("lambda")
    return benchmarks, rows, lambdas


def length_ratios(runs: Sequence[dict], thinking_run: str) -> Dict[Tuple[str, str], Optional[float]]:
    """(label, benchmark) -> 100 · Token #N / Token #N of the run labelled ``thinking_run`` on that benchmark."""
    _, rows, _ = _index(runs)
    if thinking_run not in rows:
        raise EvalInputError(f"no run is labelled {thinking_run!r} (the Thinking run for the Length Ratio); "
                         f"labels are {sorted(rows)}")
    reference = rows[thinking_run]
    ratios = {}
    for label, row in rows.items():
        for bench, m in row.items():
            base = reference.get(bench)
            ratios[(label, bench)] = (100 * m["tokens_mean"] / base["tokens_mean"]
                                      if base is not None and base["tokens_mean"] > 0 else None)
    return ratios


def table(runs: Sequence[dict], separate_se: bool = False, thinking_run: Optional[str] = None) -> tuple:
    """The details table: (header, rows) with rows as lists of strings; a missing
    (model, benchmark) pair is blank.

    Mean and Pass carry ``± SE`` (standard error over questions, when the run has it);
    ``separate_se`` puts the SE in columns of their own instead (for the CSV).
    """
    benchmarks, rows, lambdas = _index(runs)
    ratios = length_ratios(runs, thinking_run) if thinking_run else {}
    ks: Dict[str, set] = {b: {m["n_samples"] for row in rows.values() for bb, m in row.items() if bb == b}
                          for b in benchmarks}
    columns = COLUMNS + (("Len. Ratio",) if thinking_run else ()) + ("Grading",)
    header = ["Model", "λ"]
    for bench in benchmarks:
        title = get_benchmark(bench).title
        k = f"@{next(iter(ks[bench]))}" if len(ks[bench]) == 1 else "@n"
        for column in columns:
            name = f"{title} {column}{k if column in SE_COLUMNS + ('Vote',) else ''}"
            header += [name, f"{name} SE"] if separate_se and column in SE_COLUMNS else [name]
    body = []
    for label, row in rows.items():
        line = [label, lambda_cell(lambdas[label], next(iter(row.values())).get("routing"))]
        for bench in benchmarks:
            m = row.get(bench)
            cells = None if m is None else _cells(m)
            for column in columns:
                se = None if cells is None else cells.get(f"{column} SE")
                if cells is None:
                    line.append("")
                elif column == "Grading":
                    line.append(grading_text(m))
                elif column == "Len. Ratio":
                    ratio = ratios.get((label, bench))
                    line.append("" if ratio is None else f"{ratio:.2f}")
                elif cells[column] is None:
                    line.append("–")
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


def grading_text(metrics: dict) -> str:
    """The grading mode of a run, with ``raw`` when paper grading skipped OpenCompass's post-processor."""
    mode = metrics.get("grading", "strict")
    return f"{mode} (raw)" if mode == "paper" and metrics.get("postprocess") == "none" else mode


def lambda_cell(lam: Optional[float], routing: Optional[dict] = None) -> str:
    """λ as the details table shows it: the value, ``routed (mean 0.72)`` for a routed run, or blank."""
    if routing is not None:
        return f"routed (mean {routing['lambda_mean']:.2f})"
    return "" if lam is None else f"{lam:g}"


def routing_table(runs: Sequence[dict]) -> Optional[str]:
    """Markdown: per routed run and λ, the questions routed there with their Mean@n, tokens, Think #R."""
    header = ["Run", "λ", "Questions", "Mean@n", "Token #N", "Think #R"]
    body = []
    for run in runs:
        routing = run["metrics"].get("routing")
        for group in (routing or {}).get("by_lambda", []):
            body.append([run["metrics"]["label"], f"{group['lambda']:g}", str(group["questions"]),
                         f"{100 * group['mean']:.1f}", f"{group['tokens_mean']:.0f}",
                         f"{100 * group['think_ratio']:.1f}"])
    if not body:
        return None
    return ("Routed runs (λ per question): the questions each λ got, and how they fared there:\n\n"
            + markdown(header, body))


def _paper_order(benchmarks: Sequence[str]) -> List[str]:
    paper = paper_benchmarks()
    return [b for b in paper if b in benchmarks] + [b for b in benchmarks if b not in paper]


def paper_table(runs: Sequence[dict], paper_reference: Optional[str] = None,
                with_grading: bool = False) -> tuple:
    """The paper-layout table (Tables 2 / 5): (header, rows, notes).

    ``paper_reference``: ``4b`` / ``30b`` appends the paper's rows. ``with_grading``
    adds a grading column per benchmark (for the CSV). ``notes`` are Markdown lines
    naming the grading of each benchmark's runs and the reference's source.
    """
    from mi_mergekit.eval import paper

    run_benchmarks, rows, _ = _index(runs)
    reference: Dict[str, dict] = {}
    decimals = 1
    if paper_reference is not None:
        if paper_reference not in paper.REFERENCES:
            raise EvalInputError(f"unknown paper reference {paper_reference!r}; choose from {sorted(paper.REFERENCES)}")
        reference = paper.REFERENCES[paper_reference][0]
        decimals = paper.DECIMALS[paper_reference]
    benchmarks = _paper_order(list(run_benchmarks) + (list(paper_benchmarks()) if reference else []))
    ks: Dict[str, set] = {}
    for bench in benchmarks:
        ks[bench] = {m["n_samples"] for row in rows.values() for b, m in row.items() if b == bench}
        if reference and BENCHMARKS[bench].paper_k:
            ks[bench].add(BENCHMARKS[bench].paper_k)
    header = ["Method"]
    for bench in benchmarks:
        spec = BENCHMARKS[bench]
        k = f"@{next(iter(ks[bench]))}" if len(ks[bench]) == 1 else "@n"
        second = "Vote" if spec.second == "vote" else "Pass"
        header += [f"{spec.title} Mean/{second}{k}", f"{spec.title} Token #N", f"{spec.title} Think #R"]
        if with_grading:
            header.append(f"{spec.title} Grading")
    body = []
    for label, row in rows.items():
        line = [label]
        for bench in benchmarks:
            m = row.get(bench)
            if m is None:
                line += ["", "", ""] + ([""] if with_grading else [])
                continue
            n = m["n_samples"]
            mean = 100 * m["mean@k"][n]
            second_map = m["vote@k"] if BENCHMARKS[bench].second == "vote" else m["pass@k"]
            second = second_map.get(n)
            acc = f"{mean:.{decimals}f}/" + ("–" if second is None else f"{100 * second:.{decimals}f}")
            if len(ks[bench]) > 1:
                acc += f" (@{n})"
            line += [acc, f"{m['tokens_mean']:.0f}", f"{100 * m['think_ratio']:.1f}"]
            if with_grading:
                line.append(grading_text(m))
        body.append(line)
    for method, cells in reference.items():
        line = [f"paper: {method}"]
        for bench in benchmarks:
            if bench not in cells:
                line += ["", "", ""] + ([""] if with_grading else [])
                continue
            mean, second, tokens, think = cells[bench]
            acc = f"{mean}/{second}" + (f" (@{BENCHMARKS[bench].paper_k})" if len(ks[bench]) > 1 else "")
            line += [acc, tokens, think] + (["paper"] if with_grading else [])
        body.append(line)
    notes = []
    for bench in benchmarks:
        modes: Dict[str, List[str]] = {}
        for label, row in rows.items():
            if bench in row:
                modes.setdefault(grading_text(row[bench]), []).append(label)
        if modes:
            parts = [f"{mode} ({', '.join(labels)})" for mode, labels in modes.items()]
            notes.append(f"- {BENCHMARKS[bench].title} grading: " + "; ".join(parts))
    for label, row in rows.items():
        for bench, m in row.items():
            if m.get("decoding_deviations"):
                notes.append(f"- **decoding deviation** of {label} on {BENCHMARKS[bench].title} from its "
                             f"{m['decoding']} settings: " + "; ".join(m["decoding_deviations"]))
    if reference:
        notes.append(f"- `paper:` rows: arXiv 2510.10977, {paper.REFERENCES[paper_reference][1]}, as printed; "
                     "graded by the paper with OpenCompass (= `--grading paper`); 64 samples on AIME'25, 8 on the others")
    return header, body, notes


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
        if all(c["Vote"] is not None for c in cells):
            axes[0].plot(lam, [c["Vote"] for c in cells], "^:", label="Vote@n")
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


def write_report(run_dirs: Sequence[Union[str, Path]], out_dir: Union[str, Path],
                 paper_reference: Optional[str] = None, thinking_run: Optional[str] = None,
                 frontier: Optional[bool] = None, baselines: Sequence[str] = ()) -> dict:
    """Write report.md, report.csv, paper_table.csv and λ plots for ``run_dirs`` into
    ``out_dir``; returns the paths and the Markdown.

    ``paper_reference``: ``"4b"`` (Table 2) or ``"30b"`` (Table 5) reference rows;
    ``thinking_run``: the label of the Thinking run the Length Ratio is relative to.
    When a run is routed (λ per question), or with ``frontier=True``, the report also holds
    the routed runs' λ table and the accuracy-against-tokens frontier (``frontier.*``), on which
    the runs labelled in ``baselines`` (other merges of the pair: TA, TIES) are points set against
    the MI curve at equal tokens.
    """
    runs = load_runs(run_dirs)
    header, rows, notes = paper_table(runs, paper_reference)
    details_header, details_rows = table(runs, thinking_run=thinking_run)  # checks thinking_run before writing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(header, rows) + "\n" + "\n".join(notes) + "\n\nDetails (± standard error over questions):\n\n"
    text += markdown(details_header, details_rows)
    routed = routing_table(runs)
    frontiers = []
    if routed is not None:
        text += "\n" + routed
    profiles = any(r["metrics"].get("profile") for r in runs)  # λ profiles: set against the static λ
    if routed is not None or frontier or profiles:
        frontiers = write_frontiers(runs, out, every=bool(frontier) or profiles, points=baselines)
        text += "".join(f"\n{f['markdown']}" for f in frontiers)
    (out / "report.md").write_text(text, encoding="utf-8")
    with (out / "report.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        csv_header, csv_rows = table(runs, separate_se=True, thinking_run=thinking_run)
        writer.writerow(csv_header)
        writer.writerows(csv_rows)
    with (out / "paper_table.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        paper_header, paper_rows, _ = paper_table(runs, paper_reference, with_grading=True)
        writer.writerow(paper_header)
        writer.writerows(paper_rows)
    plots = plot_lambda(runs, out) + [f["png"] for f in frontiers]
    return {"markdown": text, "md": out / "report.md", "csv": out / "report.csv",
            "paper_csv": out / "paper_table.csv", "plots": plots, "without_lambda": without_lambda(runs)}


def without_lambda(runs: Sequence[dict]) -> Dict[str, List[str]]:
    """{benchmark: labels of its runs left out of its λ plot (no λ)}, for benchmarks that have a plot."""
    left: Dict[str, List[str]] = {}
    for bench in {run["metrics"]["benchmark"] for run in runs}:
        items = [run["metrics"] for run in runs if run["metrics"]["benchmark"] == bench]
        if any(m.get("lambda") is not None for m in items):
            missing = [m["label"] for m in items if m.get("lambda") is None and not m.get("routing")]
            if missing:
                left[bench] = missing
    return left


def write_frontiers(runs: Sequence[dict], out: Path, every: bool = False, points: Sequence[str] = ()) -> List[dict]:
    """The accuracy-against-tokens frontier (:mod:`mi_mergekit.eval.frontier`) of each benchmark
    with a routed run (``every``: with a static-λ, routed or baseline run; ``points``: the baseline
    runs' labels): ``frontier.*``, or ``<benchmark>/frontier.*`` for several benchmarks."""
    by_bench: Dict[str, List[dict]] = {}
    for run in runs:
        m = run["metrics"]
        if m.get("routing") or (every and (m.get("lambda") is not None or m.get("profile") or m["label"] in points)):
            by_bench.setdefault(m["benchmark"], []).append(run)
    chosen = [b for b, items in by_bench.items() if every or any(r["metrics"].get("routing") for r in items)]
    return [write_frontier(by_bench[b], out if len(chosen) == 1 else out / b, get_benchmark(b).title, points)
            for b in chosen]
