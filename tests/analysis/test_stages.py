"""Stage finder on synthetic λ curves whose boundaries are known."""

import json
import math
import sys

import pytest

from warm import run_warm
from mi_mergekit.analysis.stages import Point, Thresholds, analyse, find_stages

GRID = [round(0.1 * i, 1) for i in range(11)]


def logistic(lam, center, k=40.0):
    return 1.0 / (1.0 + math.exp(-k * (lam - center)))


def curve(center=0.5, plateau_at=0.8, benchmark="synthetic"):
    points = []
    for lam in GRID:
        think = logistic(lam, center)
        acc = 0.4 + 0.5 * min(lam, plateau_at) + (0.004 if lam > plateau_at + 0.05 else 0.0)
        tokens = 1000 + 15000 * lam ** 2
        points.append(Point(lam, think, tokens, acc, benchmark))
    return points


def test_known_boundaries_of_a_logistic_sweep():
    result = find_stages(curve())
    b = result["boundaries"]
    assert b["stage1_end"] == 0.4 and b["stage3_start"] == 0.6
    assert result["stages"] == {"stage1": [0.0, 0.4], "stage2": [0.4, 0.6], "stage3": [0.6, 1.0]}
    assert b["think_half_crossing"] == pytest.approx(0.5)
    assert 0.4 < b["think_low_crossing"] < 0.5 < b["think_high_crossing"] < 0.6
    assert b["accuracy_plateau"] == 0.8
    assert b["diminishing_returns"] is True
    assert b["tokens_growth_after_plateau"] == pytest.approx((16000 - (1000 + 15000 * 0.64)) / (1000 + 15000 * 0.64))
    assert result["notes"] == []


@pytest.mark.parametrize("center,stage1_end,stage3_start", [(0.65, 0.5, 0.8), (0.35, 0.2, 0.5)])
def test_boundaries_move_with_the_curve(center, stage1_end, stage3_start):
    b = find_stages(curve(center=center))["boundaries"]
    assert (b["stage1_end"], b["stage3_start"]) == (stage1_end, stage3_start)


def test_thresholds_are_options():
    points = curve()
    loose = find_stages(points, Thresholds(think_low=0.2, think_high=0.8))["boundaries"]
    assert (loose["stage1_end"], loose["stage3_start"]) == (0.4, 0.6)
    strict = find_stages(points, Thresholds(think_low=0.001, think_high=0.999))["boundaries"]
    assert (strict["stage1_end"], strict["stage3_start"]) == (0.3, 0.7)
    with pytest.raises(ValueError):
        Thresholds(think_low=0.9, think_high=0.5)


def test_missing_stages_and_noise_are_reported():
    thinking_everywhere = [Point(l, 0.99, 100 + l, 0.5) for l in GRID]
    r = find_stages(thinking_everywhere)
    assert r["boundaries"]["stage1_end"] is None and r["stages"]["stage1"] is None
    assert r["boundaries"]["stage3_start"] == 0.0 and r["stages"]["stage3"] == [0.0, 1.0]
    never = [Point(l, 0.0, 100, 0.5) for l in GRID]
    r = find_stages(never)
    assert r["boundaries"]["stage3_start"] is None and any("no stage 3" in n for n in r["notes"])
    # a noisy dip after saturation moves stage 3 past it (suffix rule)
    noisy = curve()
    noisy[8] = Point(0.8, 0.9, noisy[8].mean_tokens, noisy[8].accuracy)
    r = find_stages(noisy)
    assert r["boundaries"]["stage3_start"] == 0.9 and any("not monotone" in n for n in r["notes"])
    with pytest.raises(ValueError):
        find_stages([Point(0.5, 0.1, 10, 0.1)])


PAPER_ROWS = [  # Qwen3-4B AIME'25 (Table 2 and the λ figure), percent as printed
    ("lambda", "think_ratio", "mean_tokens", "accuracy"),
    (0.0, 0.0, 15097, 46.6), (0.4, 1.4, 12448, 55.8), (0.5, 59.6, 11189, 62.5),
    (0.6, 100.0, 12681, 71.0), (0.8, 99.9, 17574, 80.5), (1.0, 99.9, 22813, 80.4),
]


def test_paper_numbers_from_csv_give_the_paper_stages(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("\n".join(",".join(map(str, row)) for row in PAPER_ROWS) + "\n")
    (bench,) = analyse([str(path)])["benchmarks"]
    assert bench["stages"] == {"stage1": [0.0, 0.4], "stage2": [0.4, 0.6], "stage3": [0.6, 1.0]}
    assert bench["boundaries"]["accuracy_plateau"] == 0.8
    assert bench["boundaries"]["diminishing_returns"] is True


def _fake_run(root, name, point, benchmark="aime25"):
    d = root / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"lambda": point.lam, "benchmark": benchmark}))
    (d / "metrics.json").write_text(json.dumps({
        "label": name, "lambda": point.lam, "benchmark": benchmark, "mean": point.accuracy,
        "think_ratio": point.think_ratio, "tokens_mean": point.mean_tokens, "n_samples": 4,
        "mean@k": {"1": point.accuracy},
    }))
    return d


def test_stages_command_on_eval_run_dirs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for p in curve():
        _fake_run(runs, f"mi-{p.lam}", p)
    shifted = tmp_path / "shifted.json"  # a second benchmark as JSON rows
    shifted.write_text(json.dumps({"rows": [
        {"lambda": p.lam, "think_ratio": p.think_ratio, "tokens_mean": p.mean_tokens,
         "mean": p.accuracy, "benchmark": "gpqa"} for p in curve(center=0.65)]}))
    result = run_warm([sys.executable, "-m", "mi_mergekit.cli", "stages", str(runs), str(shifted),
                  "--json", str(tmp_path / "s.json"), "--png", str(tmp_path / "s.png")])
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    by = {b["benchmark"]: b for b in doc["benchmarks"]}
    assert by["aime25"]["stages"]["stage2"] == [0.4, 0.6]
    assert by["gpqa"]["stages"]["stage2"] == [0.5, 0.8]
    assert doc["thresholds"]["think_high"] == 0.95
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "stage 2 [0.4, 0.6]" in result.stdout
