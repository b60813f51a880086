"""The paper's Table 2 layout for one benchmark: Instruct, Thinking, TA, TIES and MI at the paper's λ.

From graded runs of the same questions (``(method, run)`` pairs, loaded with
:func:`mi_mergekit.eval.load_run`), one row per method in the paper's order (Instruct, Thinking,
TA, TA-Base, TIES, TIES-Base, MI-λ by λ):

    Method | λ | Mean@n ± SE | Pass@n | Token #N | Think #R | Tokens vs Thinking | Δ vs Thinking (paired) ± SE

- Mean@n ± SE: the standard error over questions; Pass@n the unbiased estimator;
- Tokens vs Thinking: Token #N as a % of the Thinking run's (the paper's Length Ratio, Figure 5);
- Δ vs Thinking: the paired difference of Mean@n over the shared questions, with its standard
  error (:func:`mi_mergekit.eval.frontier.paired_difference`).

Under the table, each baseline is set against the MI curve at equal tokens: the most accurate
whole-model MI λ with no more tokens, and the paired difference to it
(:func:`mi_mergekit.eval.frontier.frontier_rows`). ``write_comparison`` writes
``comparison.md`` and ``comparison.csv`` (standard errors in columns of their own).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from mi_mergekit.eval.frontier import frontier_rows, paired_difference

ORDER = ("Instruct", "Thinking", "TA", "TA-Base", "TIES", "TIES-Base")
HEADER = ["Method", "λ", "Mean@n", "± SE", "Pass@n", "Token #N", "Think #R", "Tokens vs Thinking (%)",
          "Δ vs Thinking (paired)", "± SE"]


def _order(method: str) -> Tuple[int, float]:
    if method in ORDER:
        return ORDER.index(method), 0.0
    return len(ORDER), float(method.split("-", 1)[1]) if method.startswith("MI-") else 2.0


def comparison_rows(entries: Sequence[Tuple[str, dict]], thinking: dict) -> List[List[str]]:
    """The table's rows (CSV form: every number in a column of its own) for ``(method, run)`` entries;
    ``thinking``: the Thinking run the last three columns are relative to."""
    reference = thinking["metrics"]["tokens_mean"]
    rows = []
    for method, run in sorted(entries, key=lambda e: _order(e[0])):
        m = run["metrics"]
        n = m["n_samples"]
        se = m.get("stderr", {}).get("mean@k", {}).get(n)
        same = run["path"] == thinking["path"]
        delta, delta_se = (0.0, None) if same else paired_difference(run, thinking)[:2]
        rows.append([method, "" if m.get("lambda") is None or not method.startswith("MI") else f"{m['lambda']:g}",
                     f"{100 * m['mean']:.1f}", "" if se is None else f"{100 * se:.1f}",
                     f"{100 * m['pass@k'][n]:.1f}", f"{m['tokens_mean']:.1f}", f"{100 * m['think_ratio']:.1f}",
                     f"{100 * m['tokens_mean'] / reference:.1f}" if reference > 0 else "",
                     "" if same else f"{100 * delta:+.1f}", "" if delta_se is None else f"{100 * delta_se:.1f}"])
    return rows


def against_curve(runs: Sequence[dict], baselines: Sequence[str]) -> List[str]:
    """One Markdown line per baseline: where it lands against the MI curve at equal tokens."""
    lines = []
    for row in frontier_rows(runs, baselines):
        if row["kind"] != "baseline":
            continue
        best = row["best_static"]
        head = (f"- **{row['label']}**: {100 * row['mean']:.1f}"
                + ("" if row["mean_se"] is None else f" ± {100 * row['mean_se']:.1f}")
                + f" at {row['tokens']:.1f} tokens (Think #R {100 * row['think_ratio']:.1f}%); ")
        if best is None:
            lines.append(head + "no MI λ uses as few tokens.")
            continue
        delta, delta_se = best["delta"], best["delta_se"]
        se = "" if delta_se is None else f" ± {100 * delta_se:.1f}"
        if not delta_se:
            verdict = "on the curve" if delta == 0 else ("above" if delta > 0 else "below") + " the curve"
        elif abs(delta) <= delta_se:
            verdict = "within one SE of the curve"
        else:
            verdict = f"{abs(delta) / delta_se:.1f} SE {'above' if delta > 0 else 'below'} the curve"
        lines.append(head + f"the most accurate MI λ with no more tokens is λ = {best['lambda']:g} "
                     f"({100 * best['mean']:.1f} at {best['tokens']:.1f} tokens): Δ {100 * delta:+.1f}{se} "
                     f"points (paired), {verdict}.")
    return lines


def write_comparison(entries: Sequence[Tuple[str, dict]], thinking: dict, out_dir, benchmark: str = "",
                     curve_runs: Sequence[dict] = (), baselines: Sequence[str] = ()) -> dict:
    """``comparison.md`` and ``comparison.csv`` in ``out_dir``; ``curve_runs``: the runs of the MI curve
    (and the baselines) to set each baseline against; returns the Markdown and the paths."""
    from mi_mergekit.eval.tables import markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(entries, thinking)
    with (out / "comparison.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    shown = [[r[0], r[1], r[2] + (f" ± {r[3]}" if r[3] else ""), *r[4:8], r[8] + (f" ± {r[9]}" if r[9] else "")]
             for r in rows]
    header = [h for h in HEADER if h != "± SE"]
    ks = sorted({run["metrics"]["n_samples"] for _, run in entries})
    k = f"@{ks[0]}" if len(ks) == 1 else "@n"
    header = [h.replace("@n", k) for h in header]
    text = (f"The paper's Table 2 layout{' on ' + benchmark if benchmark else ''} (± standard errors over "
            f"questions; Δ: paired difference over the same questions against the Thinking run, "
            f"{thinking['metrics']['label']}):\n\n" + markdown(header, shown))
    lines = against_curve(list(curve_runs), baselines) if curve_runs and baselines else []
    if lines:
        text += "\nThe baselines against the MI curve at equal tokens:\n\n" + "\n".join(lines) + "\n"
    (out / "comparison.md").write_text(text, encoding="utf-8")
    return {"markdown": text, "md": out / "comparison.md", "csv": out / "comparison.csv"}


def method_title(row_name: str, lam: Optional[float] = None) -> Optional[str]:
    """The paper's name of a comparison row (``ta_base`` → ``TA-Base``, ``mi_0.8`` → ``MI-0.8``)."""
    from mi_mergekit.merge.baselines import TITLES

    if row_name in TITLES:
        return TITLES[row_name]
    if row_name in ("instruct", "thinking"):
        return row_name.capitalize()
    return None if lam is None else f"MI-{lam:g}"


__all__ = ["comparison_rows", "against_curve", "write_comparison", "method_title", "HEADER"]
