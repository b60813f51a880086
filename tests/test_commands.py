"""Console scripts as users run them: mergekit-yaml, mi-mergekit plan, mi-mergekit merge."""

import filecmp
import json
import os

import torch

from common import load_model
from common import console
from warm import run_warm
from synthetic import recipe


def test_mergekit_yaml_runs_model_interpolation(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8, layer_start=1, layer_end=3))
    out = tmp_path / "out"
    result = run_warm([console("mergekit-yaml"), str(path), str(out)])
    assert result.returncode == 0, result.stderr
    # the Thinking model's chat template and generation settings, byte for byte
    for name in ("chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert filecmp.cmp(out / name, os.path.join(thinking, name), shallow=False), name
    assert "<think>" in (out / "chat_template.jinja").read_text()
    assert json.loads((out / "generation_config.json").read_text())["temperature"] == 0.6
    plan = json.loads((out / "mi_plan.json").read_text())
    assert plan["lambda"] == 0.8 and plan["num_layers"] == 4
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []

    # what the plan says is what the merge did
    i, o = load_model(instruct), load_model(str(out))
    for tensor in plan["tensors"]:
        changed = not torch.equal(i[tensor["name"]], o[tensor["name"]])
        assert changed == tensor["interpolated"], tensor["name"]


def test_template_from_instruct(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.5, template_from="instruct"))
    result = run_warm([console("mergekit-yaml"), str(path), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    for name in ("chat_template.jinja", "generation_config.json"):
        assert filecmp.cmp(tmp_path / "out" / name, os.path.join(instruct, name), shallow=False)


def test_plan_command_prints_table_and_json(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8, exclude_modules="mlp", layer_start=2))
    result = run_warm([console("mi-mergekit"), "plan", str(path), "--json", str(tmp_path / "plan.json")])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["0-1"] and set(line.split()[1:]) == {"0"} for line in lines)
    row = next(line.split() for line in lines if line.startswith("2-3"))
    assert row[1:] == ["0.8", "0.8", "0.8", "0", "0"]  # attention parts merged, mlp parts kept
    assert "embed_tokens: λ=0" in result.stdout
    assert "final_norm: λ=0.8" in result.stdout
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["summary"]["3"]["mlp_proj"] == 0.0
    assert data["summary"]["3"]["attn_proj"] == 0.8
    assert not os.path.exists(tmp_path / "out")


def test_plan_flags_a_typo(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8, layer_star=12))
    result = run_warm([console("mi-mergekit"), "plan", str(path)])
    assert result.returncode == 1
    assert "unknown parameter(s) for model_interpolation: layer_star" in result.stderr


def test_merge_command_substitutes_local_models(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe("Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507", 0.6))
    out = tmp_path / "out"
    result = run_warm([
        console("mi-mergekit"), "merge", str(path), str(out),
        "--model", f"Qwen/Qwen3-4B-Instruct-2507={instruct}",
        "--model", f"Qwen/Qwen3-4B-Thinking-2507={thinking}",
    ], env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "attn_proj" in result.stderr  # the resolved plan is shown
    o, i = load_model(str(out)), load_model(instruct)
    assert sorted(o) == sorted(i)

    bad = run_warm([console("mi-mergekit"), "merge", str(path), str(tmp_path / "x"), "--model", "Qwen/Other=/nowhere"])
    assert bad.returncode != 0
    assert "--model names not found" in bad.stderr


def test_existing_output_folder_is_replaced_only_when_ours_or_allowed(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.3))

    refused = run_warm([console("mergekit-yaml"), str(path), str(out)])
    assert refused.returncode == 1
    assert "holds files mi-mergekit did not write (model-00001-of-00002.safetensors, notes.txt)" in refused.stderr
    assert sorted(os.listdir(out)) == ["model-00001-of-00002.safetensors", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"

    allowed = run_warm([console("mergekit-yaml"), str(path), str(out)], env={"MI_MERGEKIT_OVERWRITE": "1"})
    assert allowed.returncode == 0, allowed.stderr
    names = set(os.listdir(out))
    assert "notes.txt" not in names and "model-00001-of-00002.safetensors" not in names
    assert {"config.json", "mi_plan.json", ".mi_mergekit_output.json"} <= names
    first = load_model(str(out))

    # Our own output may be re-made without the opt-in; it is swapped in whole.
    path.write_text(recipe(instruct, thinking, 0.7))
    again = run_warm([console("mi-mergekit"), "merge", str(path), str(out)])
    assert again.returncode == 0, again.stderr
    second = load_model(str(out))
    assert sorted(second) == sorted(first)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".out.")] == []
