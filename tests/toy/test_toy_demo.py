"""The README's main command, `mi-mergekit demo`, end to end on a reduced grid."""

import json

from common import console
from warm import run_warm


def test_demo_reduced_grid(tmp_path):
    out = tmp_path / "demo"
    result = run_warm([
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
    for name in ("report.md", "report.csv", "lambda_boxed.png", "stages.png", "stages.json", "comparison.md",
                 "comparison.csv", "frontier.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert "Think #R crosses 50%" in result.stdout
    # the paper's baselines on the toy's base/, and the Instruct model as it is
    assert {p.name for p in (out / "runs").iterdir()} == {"mi_0", "mi_0.5", "mi_1", "instruct", "ta", "ties"}
    for method, merge_method in (("ta", "task_arithmetic"), ("ties", "ties")):
        recipe = (out / "recipes" / f"{method}.yaml").read_text()
        assert f"merge_method: {merge_method}" in recipe and "toy/pair/base" in recipe
    assert "| TA |" in result.stdout and "| MI-0.5 |" in result.stdout


def test_the_demo_decode_loop_follows_the_pair_unless_asked():
    """The SmolLM2 pairs decode with --slots 128 by default (their shipped results were made so), the toy
    pair with generate; --compact or --slots N chooses the loop, --slots 0 is generate."""
    from pathlib import Path

    from mi_mergekit.demo import SMOLLM2_SLOTS, DemoPair, decode_loop

    def pair(slots):
        return DemoPair("p", Path("i"), Path("t"), [], [], n_samples=4, max_new_tokens=8, prompt_batch=1, slots=slots)

    smollm2, toy = pair(SMOLLM2_SLOTS), pair(0)
    assert decode_loop(smollm2, False, None) == {"slots": 128} and decode_loop(toy, False, None) == {}
    assert decode_loop(smollm2, True, None) == {"compact": True} == decode_loop(toy, True, None)
    assert decode_loop(smollm2, False, 0) == {} and decode_loop(toy, False, 8) == {"slots": 8}
    assert decode_loop(smollm2, True, 8) == {"compact": True, "slots": 8}  # the backend refuses both in one line
