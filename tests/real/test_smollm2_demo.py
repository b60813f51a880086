"""`mi-mergekit demo --pair smollm2` on a reduced grid: one run of 3 λ, one window, one ablation, TA
and TIES, 5 problems (the reproduction and the paper's comparison, checked by two tests). The
routing experiment is test_smollm2_routing.py (a file of its own, so it runs beside this one)."""

import csv
import json

import pytest
import torch

from common import console, load_model, run

CONFIGS = ("mi_0", "mi_0.8", "mi_1", "mi_0.8_last2of3", "mi_0.8_nomlp")


@pytest.fixture(scope="module")
def reduced_demo(tmp_path_factory, smollm2_pair):
    """One reduced demo run, shared by the reproduction and comparison tests."""
    out = tmp_path_factory.mktemp("smollm2_demo") / "demo"
    result = run([
        console("mi-mergekit"), "demo", "--pair", "smollm2", "--pair-dir", str(smollm2_pair["out"]),
        "--out", str(out), "--lambdas", "0,0.8,1", "--windows", "last2of3", "--modules", "nomlp",
        "--route-grid", "none", "--limit", "5", "--n-samples", "1", "--max-new-tokens", "64", "--keep-models",
        "--compact",
    ], env={"HF_HUB_OFFLINE": "1"}, timeout=1800)  # about 2 min alone on 2 cores; over 10 min when they are busy
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_reduced_reproduction(reduced_demo, smollm2_pair):
    out, result = reduced_demo

    # every output file
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 5
    difficulties = {json.loads(line)["difficulty"] for line in (out / "heldout.jsonl").read_text().splitlines()}
    assert difficulties == {2, 3, 4, 5, 6}  # balanced over difficulties
    assert sorted(p.stem for p in (out / "recipes").glob("*.yaml")) == sorted(CONFIGS + ("ta", "ties"))
    for name in CONFIGS:
        assert (out / "models" / name / "mi_plan.json").exists(), name
        assert (out / "models" / name / "model.safetensors").stat().st_size > 500e6, name
        run_dir = out / "runs" / name
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["n_questions"] == 5 and metrics["n_samples"] == 1 and metrics["label"] == name
        assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 5
    report = out / "report"
    for name in ("report.md", "report.csv", "paper_table.csv", "variants.md", "variants.csv",
                 "variants.png", "lambda_boxed.png", "timings.json", "stages.json", "stages.png"):
        assert (report / name).stat().st_size > 0, name
    with (report / "variants.csv").open() as handle:
        rows = {row["Config"]: row for row in csv.DictReader(handle)}
    assert rows["mi_0.8_last2of3"]["Layers"] == "[10,29]" and rows["mi_0.8_last2of3"]["Modules"] == "all"
    assert rows["mi_0.8_nomlp"]["Layers"] == "all" and rows["mi_0.8_nomlp"]["Modules"] == "attention only"
    assert rows["mi_0.8"]["Layers"] == "all" and rows["mi_0.8"]["Modules"] == "all"  # the whole model beside them
    assert set(rows) == {"mi_0.8", "mi_0.8_last2of3", "mi_0.8_nomlp"}
    timings = json.loads((report / "timings.json").read_text())
    assert set(timings["configs"]) == set(CONFIGS) | {"instruct", "ta", "ties"}  # the Instruct model as it is, too
    for name in CONFIGS:
        assert "| " + name + " |" in result.stdout

    # λ = 0 is the Instruct side bit for bit, λ = 1 the Thinking side
    for name, side in (("mi_0", "instruct"), ("mi_1", "thinking")):
        merged, reference = load_model(str(out / "models" / name)), load_model(str(smollm2_pair[side]))
        assert merged.keys() == reference.keys()
        for key in reference:
            assert merged[key].dtype == reference[key].dtype and torch.equal(merged[key], reference[key]), key
    # the window keeps layers 0..9 Instruct; the ablation keeps every MLP Instruct
    window = load_model(str(out / "models" / "mi_0.8_last2of3"))
    nomlp = load_model(str(out / "models" / "mi_0.8_nomlp"))
    instruct = load_model(str(smollm2_pair["instruct"]))
    for key, tensor in instruct.items():
        layer = int(key.split(".")[2]) if key.startswith("model.layers.") else None
        if layer is not None and layer < 10:
            assert torch.equal(window[key], tensor), key
        if ".mlp." in key:
            assert torch.equal(nomlp[key], tensor), key
        if ".self_attn." in key and key.endswith("_proj.weight"):
            assert not torch.equal(nomlp[key], tensor), key


def test_reduced_comparison_with_the_baselines(reduced_demo, smollm2_pair):
    """The triple's Table 2 rows from the same run: the Instruct side as it is, the Thinking side
    (λ = 1), TA and TIES on the ancestor (stock mergekit through mergekit-yaml, the paper's
    settings), MI at the paper's λ 0.8; the window and the ablation on the frontier as λ profiles."""
    from mi_mergekit.demo import smollm2_pair as pair_spec

    out, result = reduced_demo
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(CONFIGS + ("instruct", "ta", "ties"))
    base, instruct, thinking = (load_model(str(smollm2_pair[side])) for side in ("base", "instruct", "thinking"))
    ta = load_model(str(out / "models" / "ta"))
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight",
                "model.embed_tokens.weight"):
        b = base[key]
        torch.testing.assert_close(ta[key], b + 0.7 * (instruct[key] - b) + 0.7 * (thinking[key] - b),
                                   rtol=1e-6, atol=1e-7)
    template = (smollm2_pair["thinking"] / "chat_template.jinja").read_text()
    assert (out / "models" / "ties" / "chat_template.jinja").read_text() == template
    with (out / "report" / "comparison.csv").open() as handle:
        table = {row["Method"]: row for row in csv.DictReader(handle)}
    assert list(table) == ["Instruct", "Thinking", "TA", "TIES", "MI-0.8"]
    assert json.loads((out / "runs" / "instruct" / "run.json").read_text())["decoding"]["name"] == "instruct"
    with (out / "report" / "frontier.csv").open() as handle:
        assert {row["Run"]: row["Kind"] for row in csv.DictReader(handle)} == {
            "mi_0": "static", "mi_0.8": "static", "mi_1": "static", "ta": "baseline", "ties": "baseline",
            "mi_0.8_last2of3": "profile", "mi_0.8_nomlp": "profile"}
    assert "| TIES |" in result.stdout
    # the pair measured before the triple: the ancestor as the Instruct side, no ancestor of its own
    raw = pair_spec(smollm2_pair["out"], None, raw=True)
    assert (raw.instruct, raw.thinking, raw.base) == (smollm2_pair["base"], smollm2_pair["thinking"], None)


def test_unknown_window_is_a_usage_error(tmp_path):
    result = run([console("mi-mergekit"), "demo", "--pair", "smollm2", "--out", str(tmp_path / "d"),
                  "--windows", "last3of3"])
    assert result.returncode == 2 and "last3of3" in result.stderr
    assert not (tmp_path / "d").exists()
