"""Layer windows, module groups and depth placement, checked tensor by tensor.

The oracle is this file's own table of the checkpoints' tensor names (written from
the Qwen3 / Qwen3-MoE layouts, independently of mi_mergekit.merge.selection): where
each tensor sits (decoder layer, or depth for the tensors outside the layers) and
which sub-layer it belongs to. Every tensor of the test checkpoints must be in it.
"""

import re

import pytest
import torch

from common import load_model, merge, mi_config, oracle

LAM = 0.8

# name inside a decoder layer -> (sub-layer, part)
IN_LAYER = {
    **{f"self_attn.{p}_proj.weight": ("attention", "proj") for p in "qkvo"},
    "self_attn.q_norm.weight": ("attention", "qk_norm"),
    "self_attn.k_norm.weight": ("attention", "qk_norm"),
    "input_layernorm.weight": ("attention", "norm"),
    **{f"mlp.{p}_proj.weight": ("mlp", "proj") for p in ("gate", "up", "down")},
    "mlp.gate.weight": ("mlp", "router"),
    "post_attention_layernorm.weight": ("mlp", "norm"),
}
EXPERT = re.compile(r"mlp\.experts\.\d+\.(gate|up|down)_proj\.weight")
# tensors outside the decoder layers -> default depth (-1: the last layer)
OUTSIDE = {"model.embed_tokens.weight": 0, "model.norm.weight": -1, "lm_head.weight": -1}


def where(name: str, num_layers: int = 4):
    """(depth, layer or None, sub-layer or None, part) of a tensor, from the table above."""
    if name in OUTSIDE:
        depth = OUTSIDE[name] % num_layers
        return depth, None, None, name
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    assert match, f"{name} is not in the test's table of tensor names"
    layer, inner = int(match.group(1)), match.group(2)
    if EXPERT.fullmatch(inner):
        return layer, layer, "mlp", "expert"
    assert inner in IN_LAYER, f"{name} is not in the test's table of tensor names"
    return (layer, layer) + IN_LAYER[inner]


def _check(out, i, t, expect_interpolated):
    merged = kept = 0
    for name in i:
        if expect_interpolated(name):
            assert torch.equal(out[name], oracle(i[name], t[name], LAM)), name
            merged += 1
        else:
            assert torch.equal(out[name], i[name].float()), name  # Instruct, bit for bit
            kept += 1
    return merged, kept


@pytest.mark.parametrize("window", [(1, 2), (0, 1), (2, 3), (3, 3)])
def test_window_keeps_outside_layers_bitwise(untied_pair, tmp_path, window):
    instruct, thinking = untied_pair
    i, t = load_model(instruct), load_model(thinking)
    a, b = window
    out = merge(mi_config(instruct, thinking, LAM, layer_start=a, layer_end=b), tmp_path / "w")

    def inside(name):
        return a <= where(name)[0] <= b

    merged, kept = _check(out, i, t, inside)
    assert merged and (kept or window == (0, 3))


def test_full_window_equals_whole_model_bitwise(untied_pair, tmp_path):
    instruct, thinking = untied_pair
    whole = merge(mi_config(instruct, thinking, LAM), tmp_path / "whole")
    window = merge(mi_config(instruct, thinking, LAM, layer_start=0, layer_end=3), tmp_path / "win")
    assert set(whole) == set(window)
    for name in whole:
        assert torch.equal(whole[name], window[name]), name


def test_negative_window_bounds_count_from_the_end(untied_pair, tmp_path):
    instruct, thinking = untied_pair
    a = merge(mi_config(instruct, thinking, LAM, layer_start=-2), tmp_path / "neg")
    b = merge(mi_config(instruct, thinking, LAM, layer_start=2, layer_end=3), tmp_path / "pos")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_depth_placement_is_overridable(untied_pair, tmp_path):
    """Window [0, 1] with embeddings moved out of it and lm_head moved into it."""
    instruct, thinking = untied_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(
        mi_config(instruct, thinking, LAM, layer_start=0, layer_end=1, embed_layer=3, lm_head_layer=1),
        tmp_path / "p",
    )
    assert torch.equal(out["model.embed_tokens.weight"], i["model.embed_tokens.weight"].float())
    assert torch.equal(
        out["lm_head.weight"], oracle(i["lm_head.weight"], t["lm_head.weight"], LAM)
    )
    assert torch.equal(out["model.norm.weight"], i["model.norm.weight"].float())


def test_tied_embedding_follows_the_input_side(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    assert "lm_head.weight" not in i  # tied, like Qwen3-4B
    last = merge(mi_config(instruct, thinking, LAM, layer_start=2), tmp_path / "last")
    first = merge(mi_config(instruct, thinking, LAM, layer_end=1), tmp_path / "first")
    name = "model.embed_tokens.weight"
    assert torch.equal(last[name], i[name].float())
    assert torch.equal(first[name], oracle(i[name], t[name], LAM))
    assert "lm_head.weight" not in last  # output keeps the checkpoint's own tensors


# The oracle for module selection: the FFN sub-layer is the dense projections, the MoE
# router and experts, plus the norm in front of it; attention is the projections and
# q/k norms, plus its norm (the table's sub-layer).
def is_ffn(name: str) -> bool:
    return where(name, 4)[2] == "mlp"


def is_attention(name: str) -> bool:
    return where(name, 4)[2] == "attention"


# the test pairs (conftest.py): dense 4 layers; MoE 3 layers, 4 experts
LAYERS = {"dense_pair": 4, "moe_pair": 3}
# tensors per decoder layer
FFN_PER_LAYER = {"dense_pair": 3 + 1, "moe_pair": 1 + 4 * 3 + 1}  # (router +) projections + norm
ATTENTION_PER_LAYER = 4 + 2 + 1  # q/k/v/o, q_norm/k_norm, input_layernorm


@pytest.mark.parametrize("pair_name", ["dense_pair", "moe_pair"])
def test_excluding_mlp_keeps_every_mlp_tensor(request, tmp_path, pair_name):
    instruct, thinking = request.getfixturevalue(pair_name)
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, LAM, exclude_modules="mlp"), tmp_path / "nomlp")
    merged, kept = _check(out, i, t, lambda n: not is_ffn(n))
    assert kept == LAYERS[pair_name] * FFN_PER_LAYER[pair_name]
    assert merged == len(i) - kept and merged > LAYERS[pair_name] * ATTENTION_PER_LAYER  # + embeddings, norm


@pytest.mark.parametrize("pair_name", ["dense_pair", "moe_pair"])
def test_excluding_attention_keeps_every_attention_tensor(request, tmp_path, pair_name):
    instruct, thinking = request.getfixturevalue(pair_name)
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, LAM, exclude_modules="attention"), tmp_path / "noattn")
    merged, kept = _check(out, i, t, lambda n: not is_attention(n))
    assert kept == LAYERS[pair_name] * ATTENTION_PER_LAYER


def test_only_attention_selected(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, LAM, modules="attention"), tmp_path / "attn")
    merged, _ = _check(out, i, t, is_attention)
    assert merged == LAYERS["dense_pair"] * ATTENTION_PER_LAYER


def test_norm_placement_overridden_by_naming_parts(dense_pair, tmp_path):
    """Exclude the MLP but keep its pre-norm interpolated."""
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(
        mi_config(instruct, thinking, LAM, exclude_modules="mlp_proj,router,experts,shared_expert"),
        tmp_path / "n",
    )
    _check(out, i, t, lambda n: where(n)[2:] != ("mlp", "proj"))


def test_window_and_modules_combine(moe_pair, tmp_path):
    instruct, thinking = moe_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(
        mi_config(instruct, thinking, LAM, layer_start=1, modules="mlp"), tmp_path / "c"
    )
    _check(out, i, t, lambda n: where(n, 3)[1] is not None and where(n, 3)[1] >= 1 and is_ffn(n))
