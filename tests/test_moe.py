"""Qwen3-MoE: the output keeps the checkpoint's per-expert layout; router included."""

import json
import os

import torch
from transformers import AutoModelForCausalLM

from common import load_model, merge, mi_config, oracle


def test_output_keeps_per_expert_names(moe_pair, tmp_path):
    instruct, thinking = moe_pair
    i, t = load_model(instruct), load_model(thinking)
    assert any(".mlp.experts.3.gate_proj.weight" in n for n in i)  # per-expert input
    out = merge(mi_config(instruct, thinking, 0.6, dtype=None), tmp_path / "moe")
    assert sorted(out) == sorted(i)
    assert not any("gate_up_proj" in n for n in out)
    for name in i:
        assert out[name].dtype == i[name].dtype == torch.bfloat16
        assert torch.equal(out[name], oracle(i[name], t[name], 0.6).to(torch.bfloat16)), name
    router = "model.layers.2.mlp.gate.weight"
    assert not torch.equal(out[router], i[router])


def test_stock_mergekit_would_fuse_experts(moe_pair, tmp_path):
    """Documents why we plan in checkpoint layout: stock methods write fused experts."""
    instruct, thinking = moe_pair
    stock = merge(
        {
            "merge_method": "linear",
            "models": [
                {"model": instruct, "parameters": {"weight": 0.5}},
                {"model": thinking, "parameters": {"weight": 0.5}},
            ],
            "dtype": "float32",
        },
        tmp_path / "stock",
    )
    assert any("mlp.experts.gate_up_proj" in n for n in stock)


def test_merged_moe_loads_in_transformers(moe_pair, tmp_path):
    instruct, thinking = moe_pair
    merge(mi_config(instruct, thinking, 0.5, dtype=None), tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    logits = model(torch.tensor([[1, 5, 9]])).logits
    assert torch.isfinite(logits).all()
    with open(os.path.join(tmp_path / "m", "mi_plan.json")) as handle:
        plan = json.load(handle)
    parts = {t["part"] for t in plan["tensors"]}
    assert {"router", "experts", "attn_proj", "lm_head"} <= parts
