"""Roles and selection rules (pure functions, no models): the expected roles are this file's
own table, written from the layouts of the families named."""

import pytest

from mi_mergekit.errors import SelectionError
from mi_mergekit.merge.placement import LAYER, POST, PRE, ModelLayout, Placement, name_pattern
from mi_mergekit.merge.roles import PARTS, Role, layer_role, outside_role
from mi_mergekit.merge.selection import Selection, parse_modules

LLAMA = ["self_attn.q_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
         "mlp.gate_proj.weight"]
GEMMA2 = LLAMA + ["pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"]
OLMO2 = ["self_attn.q_proj.weight", "post_attention_layernorm.weight", "post_feedforward_layernorm.weight"]
MAMBA = ["mixer.in_proj.weight", "norm.weight"]
JAMBA_MAMBA = ["mamba.in_proj.weight", "input_layernorm.weight", "pre_ff_layernorm.weight"]
FALCON_H1 = ["mamba.in_proj.weight", "self_attn.q_proj.weight", "input_layernorm.weight"]


@pytest.mark.parametrize(
    "suffix, siblings, part, sublayer",
    [
        ("self_attn.q_proj.weight", LLAMA, "attn_proj", "attention"),
        ("self_attn.k_proj.bias", LLAMA, "attn_proj", "attention"),
        ("self_attn.q_norm.weight", LLAMA, "qk_norm", "attention"),
        ("self_attn.qkv_proj.weight", LLAMA, "attn_proj", "attention"),  # Phi-3 fused
        ("attn.c_attn.weight", LLAMA, "attn_proj", "attention"),  # GPT-2
        ("attention.query_key_value.weight", LLAMA, "attn_proj", "attention"),  # GPT-NeoX
        ("self_attn.kv_a_proj_with_mqa.weight", LLAMA, "attn_proj", "attention"),  # DeepSeek MLA
        ("self_attn.kv_a_layernorm.weight", LLAMA, "qk_norm", "attention"),
        ("self_attn.sinks", LLAMA, "attn_proj", "attention"),  # GPT-OSS
        ("linear_attn.in_proj_qkvz.weight", LLAMA, "linear_attn", "attention"),  # Qwen3-Next
        ("linear_attn.norm.weight", LLAMA, "linear_attn", "attention"),
        ("mixer.A_log", MAMBA, "mixer", "mixer"),
        ("conv.in_proj.weight", ["conv.in_proj.weight"], "mixer", "mixer"),  # LFM2
        ("mlp.gate_proj.weight", LLAMA, "mlp_proj", "mlp"),
        ("mlp.gate_up_proj.weight", LLAMA, "mlp_proj", "mlp"),  # Phi-3 fused
        ("mlp.c_fc.weight", LLAMA, "mlp_proj", "mlp"),
        ("feed_forward.w1.weight", LLAMA, "mlp_proj", "mlp"),
        ("mlp.gate.weight", LLAMA, "router", "mlp"),
        ("mlp.gate.e_score_correction_bias", LLAMA, "router", "mlp"),
        ("mlp.router.bias", LLAMA, "router", "mlp"),
        ("block_sparse_moe.gate.weight", LLAMA, "router", "mlp"),
        ("mlp.experts.127.gate_proj.weight", LLAMA, "experts", "mlp"),
        ("mlp.experts.gate_up_proj", LLAMA, "experts", "mlp"),
        ("mlp.experts.gate_up_proj_bias", LLAMA, "experts", "mlp"),
        ("block_sparse_moe.experts.7.w2.weight", LLAMA, "experts", "mlp"),
        ("block_sparse_moe.input_linear.weight", LLAMA, "experts", "mlp"),  # Granite 4 fused
        ("mlp.shared_expert.up_proj.weight", LLAMA, "shared_expert", "mlp"),
        ("mlp.shared_experts.up_proj.weight", LLAMA, "shared_expert", "mlp"),
        ("mlp.shared_expert_gate.weight", LLAMA, "shared_expert", "mlp"),
        ("shared_mlp.input_linear.weight", LLAMA, "shared_expert", "mlp"),
        # norms follow their sub-layer
        ("input_layernorm.weight", LLAMA, "input_layernorm", "attention"),
        ("post_attention_layernorm.weight", LLAMA, "post_attention_layernorm", "mlp"),
        ("post_attention_layernorm.weight", GEMMA2, "post_attention_layernorm", "attention"),
        ("post_attention_layernorm.weight", OLMO2, "post_attention_layernorm", "attention"),
        ("pre_feedforward_layernorm.weight", GEMMA2, "pre_feedforward_layernorm", "mlp"),
        ("post_feedforward_layernorm.weight", GEMMA2, "post_feedforward_layernorm", "mlp"),
        ("ln_1.weight", LLAMA, "input_layernorm", "attention"),
        ("ln_2.bias", LLAMA, "pre_feedforward_layernorm", "mlp"),
        ("norm.weight", MAMBA, "input_layernorm", "mixer"),
        ("input_layernorm.weight", JAMBA_MAMBA, "input_layernorm", "mixer"),
        ("pre_ff_layernorm.weight", JAMBA_MAMBA, "pre_feedforward_layernorm", "mlp"),
        ("input_layernorm.weight", FALCON_H1, "input_layernorm", "attention"),
        ("operator_norm.weight", ["conv.in_proj.weight"], "input_layernorm", "mixer"),
        ("ffn_norm.weight", LLAMA, "pre_feedforward_layernorm", "mlp"),
    ],
)
def test_layer_roles(suffix, siblings, part, sublayer):
    assert layer_role(suffix, siblings + [suffix]) == Role(part, sublayer)


@pytest.mark.parametrize("suffix", ["adapter.weight", "layer_scalar", "mtp_block.proj.weight"])
def test_no_rule_no_role(suffix):
    assert layer_role(suffix, LLAMA) is None


@pytest.mark.parametrize(
    "name, side, vocabulary, part",
    [
        ("model.embed_tokens.weight", PRE, True, "embed_tokens"),
        ("transformer.wpe.weight", PRE, False, "embed_tokens"),
        ("model.norm.weight", POST, False, "final_norm"),
        ("transformer.ln_f.bias", POST, False, "final_norm"),
        ("lm_head.weight", POST, True, "lm_head"),
        ("embed_out.weight", POST, False, "lm_head"),
        ("model.rotary_emb.inv_freq", POST, False, None),
    ],
)
def test_outside_roles(name, side, vocabulary, part):
    role = outside_role(name, side, vocabulary)
    assert (role.part if role else None) == part


def test_groups_select_by_role():
    assert "mlp" in Role("post_attention_layernorm", "mlp").tags
    assert "attention" in Role("post_attention_layernorm", "attention").tags
    assert {"moe", "mlp", "experts", "all"} <= Role("experts", "mlp").tags
    assert "norms" in Role("qk_norm", "attention").tags
    assert parse_modules("attention, mlp") == {"attention", "mlp"}
    assert set(PARTS) <= parse_modules(",".join(PARTS))


def _layout(num_layers=36, **extra):
    placements = {
        "model.embed_tokens.weight": Placement(PRE, None, Role("embed_tokens"), True),
        "model.norm.weight": Placement(POST, None, Role("final_norm")),
        "lm_head.weight": Placement(POST, None, Role("lm_head"), True),
    }
    for i in range(num_layers):
        placements[f"model.layers.{i}.mlp.up_proj.weight"] = Placement(LAYER, i, Role("mlp_proj", "mlp"))
        placements[f"model.layers.{i}.self_attn.q_proj.weight"] = Placement(LAYER, i, Role("attn_proj", "attention"))
    placements.update(extra)
    return ModelLayout(architecture="Test", num_layers=num_layers, source="this test", placements=placements)


def test_paper_window_last_two_thirds_of_36_layers():
    sel, lay = Selection(num_layers=36, layer_start=12, layer_end=35), _layout()
    assert sel.window == (12, 35)
    assert not sel.selects(lay["model.layers.11.mlp.up_proj.weight"])
    assert sel.selects(lay["model.layers.12.mlp.up_proj.weight"])
    assert sel.selects(lay["model.layers.35.self_attn.q_proj.weight"])
    assert not sel.selects(lay["model.embed_tokens.weight"])  # embeddings sit at layer 0
    assert sel.selects(lay["model.norm.weight"])  # final norm sits at the last layer
    assert sel.selects(lay["lm_head.weight"])


def test_first_third_excludes_head_side():
    sel, lay = Selection(num_layers=36, layer_start=0, layer_end=11), _layout()
    assert sel.selects(lay["model.embed_tokens.weight"])
    assert not sel.selects(lay["model.norm.weight"])
    assert not sel.selects(lay["lm_head.weight"])


def test_full_window_selects_everything_even_unplaced():
    lay = _layout(4, **{"model.mystery": Placement(None)})
    sel = Selection(num_layers=4)
    sel.check(lay)
    assert all(sel.selects(p) for p in lay.placements.values())


def test_unplaced_tensors_refuse_only_the_forms_that_need_them():
    lay = _layout(4, **{f"model.layers.{i}.odd.weight": Placement(LAYER, i, None) for i in range(4)},
                  **{"model.mystery": Placement(None)})
    Selection(num_layers=4).check(lay)  # whole model
    with pytest.raises(SelectionError) as info:
        Selection(num_layers=4, exclude_modules="mlp").check(lay)
    message = info.value.message
    assert "model.layers.N.odd.weight" in message and "model.mystery" in message
    assert "exclude_modules: mlp" in message and "filter" in message and "whole-model form" in message
    with pytest.raises(SelectionError, match=r"window \[1, 2\].*model\.mystery"):
        Selection(num_layers=4, layer_start=1, layer_end=2).check(lay)


def test_name_pattern():
    assert name_pattern("model.layers.12.mlp.experts.3.w1.weight") == "model.layers.N.mlp.experts.E.w1.weight"
    assert name_pattern("lm_head.weight") == "lm_head.weight"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer_end=36), "layer_end=36 is outside"),
        (dict(layer_start=20, layer_end=10), "empty layer window"),
        (dict(embed_layer=40), "embed_layer=40 is outside"),
        (dict(modules="attention,ffn"), "unknown module group 'ffn' in modules"),
        (dict(exclude_modules="MLP"), "unknown module group 'MLP' in exclude_modules — did you mean 'mlp'"),
    ],
)
def test_invalid_selection(kwargs, message):
    with pytest.raises(SelectionError, match=message):
        Selection(num_layers=36, **kwargs)
