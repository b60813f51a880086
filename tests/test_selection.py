"""Tensor classification and selection rules (pure functions, no models)."""

import pytest

from mi_mergekit.errors import SelectionError, UnclassifiedTensorError
from mi_mergekit.merge.selection import GROUPS, PARTS, Selection, classify, parse_modules


@pytest.mark.parametrize(
    "name, part, layer",
    [
        ("model.embed_tokens.weight", "embed_tokens", None),
        ("model.norm.weight", "final_norm", None),
        ("lm_head.weight", "lm_head", None),
        ("model.layers.12.self_attn.q_proj.weight", "attn_proj", 12),
        ("model.layers.0.self_attn.k_proj.bias", "attn_proj", 0),  # Qwen2 biases
        ("model.layers.3.self_attn.o_proj.weight", "attn_proj", 3),
        ("model.layers.5.self_attn.q_norm.weight", "qk_norm", 5),
        ("model.layers.5.input_layernorm.weight", "input_layernorm", 5),
        ("model.layers.5.post_attention_layernorm.weight", "post_attention_layernorm", 5),
        ("model.layers.35.mlp.gate_proj.weight", "mlp_proj", 35),
        ("model.layers.35.mlp.down_proj.weight", "mlp_proj", 35),
        # Qwen3-MoE checkpoint layout
        ("model.layers.47.mlp.gate.weight", "router", 47),
        ("model.layers.47.mlp.experts.127.gate_proj.weight", "experts", 47),
        ("model.layers.47.mlp.experts.0.down_proj.weight", "experts", 47),
        # transformers-5 fused layout
        ("model.layers.2.mlp.experts.gate_up_proj", "experts", 2),
        ("model.layers.2.mlp.experts.down_proj", "experts", 2),
        # Qwen2-MoE shared expert, Mixtral
        ("model.layers.1.mlp.shared_expert.up_proj.weight", "shared_expert", 1),
        ("model.layers.1.mlp.shared_expert_gate.weight", "shared_expert", 1),
        ("model.layers.4.block_sparse_moe.gate.weight", "router", 4),
        ("model.layers.4.block_sparse_moe.experts.7.w2.weight", "experts", 4),
    ],
)
def test_classify(name, part, layer):
    c = classify(name)
    assert (c.part, c.layer) == (part, layer)


@pytest.mark.parametrize(
    "name",
    ["model.layers.0.mlp.adapter.weight", "vision_tower.blocks.0.attn.qkv.weight", "model.rotary_emb.inv_freq"],
)
def test_unknown_tensor_is_an_error(name):
    with pytest.raises(UnclassifiedTensorError, match="does not belong to any known module group"):
        classify(name)


def test_router_is_not_confused_with_gate_proj():
    assert classify("model.layers.0.mlp.gate_proj.weight").part == "mlp_proj"
    assert classify("model.layers.0.mlp.gate.weight").part == "router"


def test_groups_cover_every_part_and_norms_follow_their_sublayer():
    assert GROUPS["all"] == frozenset(PARTS)
    assert "input_layernorm" in GROUPS["attention"]
    assert "post_attention_layernorm" in GROUPS["mlp"]
    assert {"router", "experts", "shared_expert"} <= GROUPS["mlp"]
    assert parse_modules("attention, mlp") == GROUPS["attention"] | GROUPS["mlp"]


def test_paper_window_last_two_thirds_of_36_layers():
    sel = Selection(num_layers=36, layer_start=12, layer_end=35)
    assert sel.window == (12, 35)
    assert not sel.selects("model.layers.11.mlp.up_proj.weight")
    assert sel.selects("model.layers.12.mlp.up_proj.weight")
    assert sel.selects("model.layers.35.self_attn.q_proj.weight")
    assert not sel.selects("model.embed_tokens.weight")  # embeddings sit at layer 0
    assert sel.selects("model.norm.weight")  # final norm sits at the last layer
    assert sel.selects("lm_head.weight")


def test_first_third_excludes_head_side():
    sel = Selection(num_layers=36, layer_start=0, layer_end=11)
    assert sel.selects("model.embed_tokens.weight")
    assert not sel.selects("model.norm.weight")
    assert not sel.selects("lm_head.weight")


def test_full_window_selects_everything():
    sel = Selection(num_layers=4)
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
        f"model.layers.{i}.mlp.up_proj.weight" for i in range(4)
    ]
    assert all(sel.selects(n) for n in names)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer_end=36), "layer_end=36 is outside"),
        (dict(layer_start=20, layer_end=10), "empty layer window"),
        (dict(embed_layer=40), "embed_layer=40 is outside"),
        (dict(modules="attention,ffn"), "unknown module group 'ffn' in modules"),
        (dict(exclude_modules="MLP"), "unknown module group 'MLP' in exclude_modules"),
    ],
)
def test_invalid_selection(kwargs, message):
    with pytest.raises(SelectionError, match=message):
        Selection(num_layers=36, **kwargs)


def test_layer_beyond_num_layers_is_an_error():
    with pytest.raises(SelectionError, match="layer index 36"):
        Selection(num_layers=36).selects("model.layers.36.mlp.up_proj.weight")
