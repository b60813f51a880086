"""``mergekit-multi``: a multi-stage file whose stages use our methods."""

import torch
import yaml

from common import console, load_model
from warm import run_warm


def test_mergekit_multi_runs_our_methods_in_stages(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    stages = [
        {"name": "half", "merge_method": "model_interpolation", "base_model": instruct,
         "models": [{"model": thinking}], "parameters": {"lambda": 0.5}, "dtype": "float32"},
        {"merge_method": "nway_interpolation", "dtype": "float32",
         "models": [{"model": instruct, "parameters": {"weight": 0.25}},
                    {"model": "half", "parameters": {"weight": 0.75}}]},
    ]
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump_all(stages))
    # a relative intermediate folder: stage 2 reads "work/half" (a path mergekit's model card
    # would otherwise ask the hub about)
    result = run_warm([console("mergekit-multi"), "multi.yaml", "--out-path", "out", "-I", "work"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    i, t = load_model(instruct), load_model(thinking)
    half, out = load_model(str(tmp_path / "work" / "half")), load_model(str(tmp_path / "out"))
    assert out.keys() == i.keys()
    for name in i:
        a, b = i[name].float(), t[name].float()
        assert torch.equal(half[name], (b - a) * 0.5 + a), name
        assert torch.equal(out[name], a * 0.25 + half[name] * 0.75), name
    for folder in (tmp_path / "work" / "half", tmp_path / "out"):
        assert (folder / "mi_plan.json").exists() and (folder / ".mi_mergekit_output.json").exists()
