"""The accuracy-against-tokens frontier of a λ sweep and of routed (λ per question) runs.

From graded eval runs of one benchmark on the same questions:

- **static** runs are whole-model merges at one λ (``metrics.json`` ``lambda``); **routed**
  runs carry a ``routing`` block (:mod:`mi_mergekit.routing`);
- every row: Mean@n ± SE, Token #N ± SE (standard errors over questions) and Think #R; a
  static row is *on the frontier* when no other static λ is at least as accurate with fewer
  tokens;
- **baseline** runs are other merges of the same pair named by the caller (``points``: the
  paper's Task Arithmetic and TIES, :mod:`mi_mergekit.compare`), drawn as points beside the curve;
- **profile** runs are merges whose λ is not one number (``metrics.json`` ``profile``: per-layer
  or per-module λ from ``mi-mergekit profile`` or ``find-lambda --profile``, and the paper's
  layer windows and module ablations, which are λ on some tensors and 0 on the rest), placed by
  their parameter-weighted mean λ;
- every routed, baseline or profile row is set against the **best static λ at equal or fewer tokens** (the
  most accurate static run whose Token #N is not above that row's): the paired difference
  of Mean@n over the shared questions, with the standard error of that paired difference;
- :func:`headline` answers the paper's question on the static sweep: is there a λ < 1 whose
  accuracy is within one standard error of the λ = 1 (Thinking) run's, at fewer tokens —
  and how many fewer.

``write_frontier`` writes ``frontier.md``, ``frontier.csv`` and ``frontier.png``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.metrics import stderr_of_mean
from mi_mergekit.eval.tables import markdown


def _per_question(run: dict) -> Dict[str, Tuple[float, float]]:
    """``{question_id: (Mean@n, mean tokens)}`` of a loaded run."""
    return {q["question_id"]: (q["mean@k"][q["n"]], q["tokens_mean"]) for q in run["questions"]}


def paired_difference(a: dict, b: dict) -> Tuple[float, Optional[float], int]:
    """Mean over shared questions of Mean@n(a) − Mean@n(b), its standard error, and the count."""
    qa, qb = _per_question(a), _per_question(b)
    shared = sorted(set(qa) & set(qb))
    if not shared:
        raise EvalInputError(f"runs {a['metrics']['label']!r} and {b['metrics']['label']!r} share no question")
    diffs = [qa[q][0] - qb[q][0] for q in shared]
    return sum(diffs) / len(diffs), stderr_of_mean(diffs), len(shared)


def frontier_rows(runs: Sequence[dict], points: Sequence[str] = ()) -> List[dict]:
    """One row per static, routed or baseline run (loaded with :func:`mi_mergekit.eval.load_run`);
    ``points``: the labels of the baseline runs."""
    rows = []
    for run in runs:
        m = run["metrics"]
        routing, profile = m.get("routing"), m.get("profile")
        baseline = m["label"] in points
        kind = ("routed" if routing else "baseline" if baseline else "static" if m.get("lambda") is not None
                else "profile" if profile else None)
        if kind is None:
            continue
        tokens = [t for _, t in _per_question(run).values()]
        n = m["n_samples"]
        rows.append({
            "label": m["label"], "kind": kind,
            "lambda": {"routed": routing and routing["lambda_mean"], "baseline": None,
                       "profile": profile and profile["mean_lambda"]}.get(kind, m.get("lambda")),
            "range": profile and (profile["min"], profile["max"]),
            "mean": m["mean"], "mean_se": m.get("stderr", {}).get("mean@k", {}).get(n),
            "tokens": m["tokens_mean"], "tokens_se": stderr_of_mean(tokens),
            "think_ratio": m["think_ratio"], "questions": m["n_questions"], "run": run,
            "shares": {f"{b['lambda']:g}": b["questions"] for b in routing["by_lambda"]} if routing else None,
        })
    static = [r for r in rows if r["kind"] == "static"]
    for row in static:
        row["on_frontier"] = not any(o is not row and o["mean"] >= row["mean"] and o["tokens"] < row["tokens"]
                                     for o in static)
    for row in rows:
        if row["kind"] == "static":
            continue
        cheaper = [s for s in static if s["tokens"] <= row["tokens"]]
        row["best_static"] = None
        if cheaper:
            best = max(cheaper, key=lambda s: (s["mean"], -s["tokens"]))
            delta, se, _ = paired_difference(row["run"], best["run"])
            row["best_static"] = {"label": best["label"], "lambda": best["lambda"], "mean": best["mean"],
                                  "tokens": best["tokens"], "delta": delta, "delta_se": se}
    return rows


def headline(rows: Sequence[dict]) -> Optional[dict]:
    """The paper's question on the static rows (None without a λ = 1 run): every λ < 1 at fewer tokens
    whose Mean@n ≥ Mean@n(λ=1) − SE(λ=1), and among them the one with the fewest tokens."""
    static = [r for r in rows if r["kind"] == "static"]
    top = next((r for r in static if r["lambda"] == 1.0), None)
    if top is None:
        return None
    floor = top["mean"] - (top["mean_se"] or 0.0)
    candidates = []
    for r in sorted(static, key=lambda r: r["lambda"]):
        if r["lambda"] >= 1.0 or r["tokens"] >= top["tokens"]:
            continue
        delta, se, _ = paired_difference(r["run"], top["run"])
        candidates.append({"label": r["label"], "lambda": r["lambda"], "mean": r["mean"], "mean_se": r["mean_se"],
                           "tokens": r["tokens"], "tokens_saved": top["tokens"] - r["tokens"],
                           "tokens_saved_pct": 100 * (top["tokens"] - r["tokens"]) / top["tokens"],
                           "delta": delta, "delta_se": se, "within_one_se": r["mean"] >= floor})
    within = [c for c in candidates if c["within_one_se"]]
    return {"thinking": {"label": top["label"], "mean": top["mean"], "mean_se": top["mean_se"],
                         "tokens": top["tokens"]},
            "floor": floor, "candidates": candidates,
            "answer": min(within, key=lambda c: c["tokens"]) if within else None}


def describe_headline(result: Optional[dict]) -> str:
    if result is None:
        return "No λ = 1 run: the headline question needs the Thinking side."
    t = result["thinking"]
    se = "" if t["mean_se"] is None else f" ± {100 * t['mean_se']:.1f}"
    lead = (f"Thinking side (λ = 1): {100 * t['mean']:.1f}{se} at {t['tokens']:.1f} tokens; "
            f"one SE below is {100 * result['floor']:.1f}.")
    answer = result["answer"]
    if answer is None:
        fewer = ", ".join(f"λ={c['lambda']:g} {100 * c['mean']:.1f}" for c in result["candidates"]) or "none"
        return (f"{lead} **No**: no λ < 1 is within one SE of it at fewer tokens "
                f"(λ < 1 with fewer tokens: {fewer}).")
    delta_se = "" if answer["delta_se"] is None else f" ± {100 * answer['delta_se']:.1f}"
    return (f"{lead} **Yes**: λ = {answer['lambda']:g} reaches {100 * answer['mean']:.1f} at "
            f"{answer['tokens']:.1f} tokens, {answer['tokens_saved']:.1f} fewer ({answer['tokens_saved_pct']:.1f}%); "
            f"paired difference to λ = 1: {100 * answer['delta']:+.1f}{delta_se} points.")


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{100 * value:.1f}"


TABLE_HEADER = ["Run", "Kind", "λ", "Mean@n", "± SE", "Token #N", "± SE", "Think #R", "Frontier",
                "Best static at ≤ tokens", "Δ Mean (paired)", "± SE"]


def table(rows: Sequence[dict]) -> List[List[str]]:
    body = []
    for r in sorted(rows, key=lambda r: (r["kind"] != "static", r["tokens"])):
        lam = (f"{r['lambda']:g}" if r["kind"] == "static" else "" if r["kind"] == "baseline" else
               f"mean {r['lambda']:.2f} ({r['range'][0]:.2f}–{r['range'][1]:.2f})" if r["kind"] == "profile" else
               f"mean {r['lambda']:.2f} (" + ", ".join(f"{k}×{v}" for k, v in r["shares"].items()) + ")")
        best = r.get("best_static")
        body.append([r["label"], r["kind"], lam, _pct(r["mean"]), _pct(r["mean_se"]), f"{r['tokens']:.1f}",
                     "" if r["tokens_se"] is None else f"{r['tokens_se']:.1f}", _pct(r["think_ratio"]),
                     ("yes" if r["on_frontier"] else "") if r["kind"] == "static" else "",
                     "" if r["kind"] == "static" else (
                         "none" if best is None else f"{best['label']} ({_pct(best['mean'])}, {best['tokens']:.1f} tok)"),
                     "" if not best else f"{100 * best['delta']:+.1f}",
                     "" if not best or best["delta_se"] is None else f"{100 * best['delta_se']:.1f}"])
    return body


def plot(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    static = sorted((r for r in rows if r["kind"] == "static"), key=lambda r: r["lambda"])
    if static:
        ax.errorbar([r["tokens"] for r in static], [100 * r["mean"] for r in static],
                    yerr=[100 * (r["mean_se"] or 0) for r in static], fmt="o-", color="tab:blue", capsize=3,
                    label="static λ (whole model)")
    markers = iter("*PXDvs^<>" * 4)
    colors = iter(["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                   "tab:cyan", "tab:gray"] * 4)  # not the curve's blue
    others = [r for r in rows if r["kind"] != "static"]
    for r in others:
        name = f"{r['label']} (mean λ {r['lambda']:.2f})" if r["kind"] in ("routed", "profile") else r["label"]
        ax.errorbar([r["tokens"]], [100 * r["mean"]], yerr=[100 * (r["mean_se"] or 0)], fmt=next(markers),
                    color=next(colors), markersize=10, capsize=3, label=name)
    ax.set_xlabel("Token #N (mean generated tokens)")
    ax.set_ylabel("Mean@n (%)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.08)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "Accuracy against tokens: the MI curve and other runs", fontsize=10)
    fig.tight_layout()
    place_labels(ax, [(r["tokens"], 100 * r["mean"]) for r in static], [f"λ={r['lambda']:g}" for r in static],
                 avoid=[(r["tokens"], 100 * r["mean"]) for r in static + others], color="tab:blue")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: where a point's label may go, in points from the point, tried in this order; the far ones
#: (past :data:`LEADER_FROM`) are drawn with a line to their point
LABEL_OFFSETS = ((5, -11), (5, 4), (-5, 4), (-5, -11), (8, -3), (-8, -3), (0, 9), (0, -15), (12, -18), (-12, 12),
                 (14, 10), (-14, -20), (24, 22), (-24, 22), (24, -30), (-24, -30), (36, 4), (-36, 4), (0, 30),
                 (0, -36))
LEADER_FROM = 16


def place_labels(ax, points, texts, avoid=(), color=None, fontsize=7, marker_px=7) -> None:
    """Label ``points`` with ``texts`` where no label overlaps another label, a marker of
    ``avoid`` (data points) or the edge of the axes, and where no other point is nearer to the
    label than its own (so a label never reads as another point's): each label takes the first
    such spot of :data:`LABEL_OFFSETS` (a far one with a line to its point), else the one that
    breaks these the least."""
    import math

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    from matplotlib.transforms import Bbox

    markers = [tuple(ax.transData.transform((x, y))) for x, y in avoid]
    blocked = [Bbox.from_extents(px - marker_px, py - marker_px, px + marker_px, py + marker_px) for px, py in markers]

    def overlap(a, b):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return w * h if w > 0 and h > 0 else 0.0

    def distance(box, point):  # from a point to the nearest point of a box, in pixels
        return math.hypot(max(box.x0 - point[0], 0, point[0] - box.x1), max(box.y0 - point[1], 0, point[1] - box.y1))

    for (x, y), text in zip(points, texts):
        own = tuple(ax.transData.transform((x, y)))
        best = None
        for dx, dy in LABEL_OFFSETS:
            far = math.hypot(dx, dy) > LEADER_FROM
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                                color=color, ha="left" if dx >= 0 else "right", va="bottom",
                                arrowprops=dict(arrowstyle="-", color=color, lw=0.6, alpha=0.7) if far else None)
            box = label.get_window_extent(renderer).expanded(1.08, 1.15)
            cost = sum(overlap(box, other) for other in blocked)
            cost += 0 if (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1) \
                else 1e6
            if not far and any(distance(box, m) < distance(box, own) for m in markers if m != own):
                cost += 400  # nearer another point than its own: it would read as that point's label
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        blocked.append(best[2])


def write_frontier(runs: Sequence[dict], out_dir, title: str = "", points: Sequence[str] = ()) -> dict:
    """``frontier.md``/``.csv``/``.png`` of the static, routed and baseline (``points``) ``runs``
    (loaded); returns the rows, the headline and the Markdown."""
    rows = frontier_rows(runs, points)
    if not rows:
        raise EvalInputError("no static-λ or routed run to draw a frontier from")
    benchmarks = {r["run"]["metrics"]["benchmark"] for r in rows}
    if len(benchmarks) > 1:
        raise EvalInputError(f"a frontier is drawn for one benchmark at a time, got {sorted(benchmarks)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = table(rows)
    with (out / "frontier.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_HEADER)
        writer.writerows(body)
    result = headline(rows)
    text = ("Accuracy against tokens (± standard errors over questions; Δ: paired difference over the same "
            "questions against the most accurate static λ with no more tokens):\n\n"
            + markdown(TABLE_HEADER, body) + "\n" + describe_headline(result) + "\n")
    (out / "frontier.md").write_text(text, encoding="utf-8")
    plot(rows, out / "frontier.png", title)
    return {"rows": [{k: v for k, v in r.items() if k != "run"} for r in rows], "headline": result,
            "markdown": text, "png": out / "frontier.png"}
