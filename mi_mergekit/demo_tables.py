"""The demo's own tables, beside the report's: the window / module table at λ = 0.8
(``variants.md`` / ``.csv`` / ``.png``: what each layer window and module ablation keeps of the
Thinking side's accuracy and tokens) and the per-difficulty table (``task.md`` / ``.csv``:
accuracy and tokens by number of terms) of :func:`mi_mergekit.demo.run_demo`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence

from mi_mergekit.compare_rows import VARIANT_LAMBDA, Row


def write_table_files(out: Path, stem: str, intro: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``out/<stem>.csv`` and ``out/<stem>.md`` (``intro`` above the table); returns the Markdown."""
    from mi_mergekit.eval.report import markdown

    with (out / f"{stem}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    text = f"{intro}\n\n" + markdown(header, rows)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    return text


def variants_table(configs: Sequence[Row], runs: Sequence[Path], out: Path) -> str:
    """``variants.md`` / ``variants.csv``: the λ=0.8 whole model, each window and each ablation."""
    from mi_mergekit.eval.runner import load_run

    header = ["Config", "Layers", "Modules", "Mean@n", "Pass@n", "Token #N", "Think #R"]
    rows = []
    for config, run in zip(configs, runs):
        if config.lam != VARIANT_LAMBDA or config.baseline or config.side:
            continue
        m = load_run(run)["metrics"]
        params = config.parameters
        layers = (f"[{params['layer_start']},{params['layer_end']}]" if "layer_start" in params else "all")
        modules = {"mlp": "attention only", "attention": "MLP only"}.get(params.get("exclude_modules"), "all")
        rows.append([config.name, layers, modules, f"{100 * m['mean']:.1f}", f"{100 * m['pass@k'][m['n_samples']]:.1f}",
                     f"{m['tokens_mean']:.1f}", f"{100 * m['think_ratio']:.1f}"])
    text = write_table_files(out, "variants", f"Layer windows and module ablations at λ = {VARIANT_LAMBDA:g} "
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
    return write_table_files(out, "task", "Work #R: % of responses whose thinking writes the whole running sum "
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
