"""`mi-mergekit demo --pair smollm2` with the routing experiment, on a reduced grid, and its resume
(a file of its own: it runs on another pytest-xdist worker than test_smollm2_demo.py's run)."""

import json
import os

from common import console, run


def test_reduced_routing_experiment_resumes_and_drops_weights(tmp_path, smollm2_pair):
    """The λ sweep plus the routing experiment (λ per question) on a grid of two λ, 2 test and 2
    calibration questions. Without --keep-models the 0.5 GB weights go once evaluated (the grid's once
    routed); a re-run reuses every sample. Relative --pair-dir / --out of the "dir/name" shape, as the
    README's default ones, and no hub at all (the offline flag unset, so a hub lookup would fail)."""
    out = tmp_path / "demo"
    os.symlink(smollm2_pair["out"], tmp_path / "pair")  # so the sides are "pair/instruct", "pair/thinking"
    args = [console("mi-mergekit"), "demo", "--pair", "smollm2", "--pair-dir", "pair",
            "--out", "demo", "--lambdas", "0.8,1", "--windows", "none", "--modules", "none",
            "--route-grid", "0.8,1", "--limit", "2", "--calibration-limit", "2", "--n-samples", "1",
            "--max-new-tokens", "32", "--slots", "8", "--route-signals", "divergence", "--baselines", "none"]
    # both runs: 88 s alone on 2 cores (the disagreement signal, 20 s more here, is run on the
    # tiny pair in tests/eval/test_routing.py and in the full demo)
    first = run(args, cwd=tmp_path, env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("mi_0.8", "mi_1"):
        assert not list((out / "models" / name).glob("*.safetensors"))
        assert (out / "models" / name / "mi_plan.json").exists()
    test_ids = {json.loads(line)["id"] for line in (out / "heldout.jsonl").read_text().splitlines()}
    calibration_ids = {json.loads(line)["id"] for line in (out / "calibration.jsonl").read_text().splitlines()}
    assert len(test_ids) == len(calibration_ids) == 2 and not test_ids & calibration_ids
    for lam in ("0.8", "1"):
        assert json.loads((out / "runs" / "calibration" / f"mi_{lam}" / "metrics.json").read_text())["n_questions"] == 2
    routed = sorted(p.name for p in (out / "runs").glob("route_*"))
    assert routed and all(name.startswith(("route_divergence", "route_difficulty")) for name in routed)
    for name in routed:
        rows = [json.loads(line) for line in (out / "runs" / name / "samples.jsonl").read_text().splitlines()]
        assert {r["question_id"] for r in rows} == test_ids and all(r["lambda"] in (0.8, 1.0) for r in rows)
    assert (out / "routing" / "route_divergence_fewest_tokens.json").exists()
    assert not list((out / "routing").glob("route_disagreement_*"))
    report = out / "report"
    for name in ("frontier.md", "frontier.csv", "frontier.png", "routing.md", "task.md"):
        assert (report / name).stat().st_size > 0, name
    frontier = (report / "frontier.md").read_text()
    assert "Thinking side (λ = 1)" in frontier and "routed" in frontier
    samples = {name: (out / "runs" / name / "samples.jsonl").read_text() for name in ["mi_1"] + routed}
    second = run(args, cwd=tmp_path, env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert second.returncode == 0, second.stderr[-3000:]
    assert {name: (out / "runs" / name / "samples.jsonl").read_text() for name in samples} == samples
    assert not (report / "variants.md").exists()
