"""The README's main command, `mi-mergekit demo`, end to end on a reduced grid."""

import json

from common import console, run


def test_demo_reduced_grid(tmp_path):
    out = tmp_path / "demo"
    result = run([
        console("mi-mergekit"), "demo", "--out", str(out), "--lambdas", "0,0.5,1",
        "--limit", "21", "--n-samples", "2", "--skip-variants",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("mi_0", "mi_0.5", "mi_1"):
        plan = json.loads((out / "models" / name / "mi_plan.json").read_text())
        assert plan["lambda"] == float(name[3:]) and plan["whole_model"]
        assert "| " + name + " |" in result.stdout
    metrics = {name: json.loads((out / "runs" / name / "metrics.json").read_text())
               for name in ("mi_0", "mi_0.5", "mi_1")}
    assert metrics["mi_0"]["think_ratio"] <= 0.05
    assert metrics["mi_1"]["think_ratio"] >= 0.95
    assert metrics["mi_1"]["tokens_mean"] > 2 * metrics["mi_0"]["tokens_mean"]
    assert metrics["mi_1"]["mean"] > metrics["mi_0"]["mean"]
    for name in ("report.md", "report.csv", "lambda_boxed.png", "stages.png", "stages.json"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert "Think #R crosses 50%" in result.stdout
