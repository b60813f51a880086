"""Tiny random Instruct/Thinking pairs of many architectures, built offline from transformers
configs, with this file's own oracle of where each tensor sits and what it does.

The oracle is written here from the families' layouts, independently of
``mi_mergekit.merge.placement`` / ``roles``: which name prefix numbers the decoder layers,
which tensors outside the layers sit after them (final norm, lm_head), which layer
tensors belong to the feed-forward block (its container and the norms around it) and
which to attention. ``examples`` name released Instruct/Thinking (or instruct/reasoning)
checkpoints of the family, for the README's table.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

SMALL = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)
LAYERS = SMALL["num_hidden_layers"]
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)
#: feed-forward containers inside a decoder layer (the paper's "FFN")
FFN = ("mlp", "feed_forward", "block_sparse_moe", "shared_mlp")
#: token-mixer containers: attention, linear attention, state-space / convolution mixers
ATTENTION = ("self_attn", "attn", "attention", "linear_attn")
MIXER = ("mixer", "mamba", "conv")
#: non-layer tensors that sit after the last layer
AFTER = re.compile(r"(?:^|\.)(?:norm|ln_f|norm_f|final_layer_norm|final_layernorm)\.|^lm_head\.|^embed_out\.")


@dataclass(frozen=True)
class Arch:
    key: str
    model_type: str
    config: Dict = field(default_factory=dict)
    examples: str = ""  # released pairs of this family
    layers: str = r"model\.layers\.(\d+)\."  # the prefix that numbers the decoder layers
    #: layer-level norms that belong to the feed-forward block (in front of it or after it)
    ffn_norms: Tuple[str, ...] = ("post_attention_layernorm",)
    #: non-layer tensors the architecture places before the layers although AFTER matches
    pre_extra: Tuple[str, ...] = ()
    vlm: bool = False

    @property
    def layer_pattern(self):
        return re.compile(self.layers)


GEMMA_NORMS = ("pre_feedforward_layernorm", "post_feedforward_layernorm")
ARCHS = [
    # ---- the paper's own pair, and the families the issue names
    Arch("qwen3", "qwen3", examples="Qwen/Qwen3-4B-Instruct-2507 / -Thinking-2507"),
    Arch("qwen3_moe", "qwen3_moe", MOE, examples="Qwen/Qwen3-30B-A3B-Instruct-2507 / -Thinking-2507"),
    Arch("qwen3_next", "qwen3_next", dict(**MOE, shared_expert_intermediate_size=16, linear_num_value_heads=2,
                                          linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
                                          layer_types=["linear_attention"] * 3 + ["full_attention"]),
         examples="Qwen/Qwen3-Next-80B-A3B-Instruct / -Thinking"),
    Arch("qwen3_vl", "qwen3_vl", vlm=True, layers=r"model\.language_model\.layers\.(\d+)\.",
         examples="Qwen/Qwen3-VL-8B-Instruct / -Thinking"),
    Arch("gemma2", "gemma2", ffn_norms=GEMMA_NORMS, examples="google/gemma-2-9b-it"),
    Arch("gemma3", "gemma3_text", ffn_norms=GEMMA_NORMS, examples="google/gemma-3-1b-it"),
    Arch("phi3", "phi3", examples="microsoft/Phi-4-mini-instruct / Phi-4-mini-reasoning"),
    Arch("olmo2", "olmo2", ffn_norms=("post_feedforward_layernorm",), examples="allenai/OLMo-2-1124-7B-Instruct"),
    Arch("olmo3", "olmo3", ffn_norms=("post_feedforward_layernorm",),
         examples="allenai/Olmo-3-7B-Instruct / Olmo-3-7B-Think"),
    Arch("gpt_oss", "gpt_oss", dict(num_local_experts=4, num_experts_per_tok=2, layer_types=None, sliding_window=16),
         examples="openai/gpt-oss-20b"),
    Arch("deepseek_v3", "deepseek_v3", dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                            first_k_dense_replace=1, n_group=1, topk_group=1, q_lora_rank=16,
                                            kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
                                            n_shared_experts=1),
         examples="deepseek-ai/DeepSeek-V3-0324 / DeepSeek-R1-0528"),
    Arch("mamba", "mamba", dict(state_size=4, expand=2, conv_kernel=4), layers=r"backbone\.layers\.(\d+)\.",
         ffn_norms=(), examples="state-spaces/mamba-130m-hf"),
    Arch("jamba", "jamba", dict(num_experts=2, expert_layer_period=2, attn_layer_period=2, attn_layer_offset=1,
                                expert_layer_offset=1, mamba_d_state=8, mamba_expand=2, mamba_d_conv=4,
                                mamba_dt_rank=4), ffn_norms=("pre_ff_layernorm",),
         examples="ai21labs/AI21-Jamba-Reasoning-3B"),
    Arch("falcon_h1", "falcon_h1", ffn_norms=("pre_ff_layernorm",), examples="tiiuae/Falcon-H1-7B-Instruct"),
    Arch("granitemoehybrid", "granitemoehybrid",
         dict(num_local_experts=4, num_experts_per_tok=2, layer_types=["mamba", "attention"] * 2, mamba_n_heads=4,
              mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=16, shared_intermediate_size=32),
         examples="ibm-granite/granite-4.0-h-tiny"),
    Arch("lfm2", "lfm2", dict(layer_types=["conv", "full_attention"] * 2), ffn_norms=("ffn_norm",),
         pre_extra=("model.embedding_norm.weight",), examples="LiquidAI/LFM2-1.2B"),
    # ---- more families transformers and mergekit both know
    Arch("llama", "llama", examples="meta-llama/Llama-3.1-8B-Instruct / deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
    Arch("mistral", "mistral", examples="mistralai/Mistral-7B-Instruct-v0.3"),
    Arch("qwen2", "qwen2", examples="Qwen/Qwen2.5-7B-Instruct / deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
    Arch("mixtral", "mixtral", dict(num_local_experts=4, num_experts_per_tok=2),
         examples="mistralai/Mixtral-8x7B-Instruct-v0.1"),
    Arch("qwen2_moe", "qwen2_moe", dict(**MOE, shared_expert_intermediate_size=16),
         examples="Qwen/Qwen1.5-MoE-A2.7B-Chat"),
    Arch("glm4_moe", "glm4_moe", dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                      first_k_dense_replace=1, n_group=1, topk_group=1),
         examples="zai-org/GLM-4.5-Air"),
    Arch("olmoe", "olmoe", dict(num_experts=4, num_experts_per_tok=2), examples="allenai/OLMoE-1B-7B-0125-Instruct"),
    Arch("granite", "granite", examples="ibm-granite/granite-3.3-8b-instruct"),
    Arch("gpt2", "gpt2", dict(n_embd=32, n_layer=LAYERS, n_head=4, n_positions=256), layers=r"transformer\.h\.(\d+)\.",
         ffn_norms=("ln_2",), examples="openai-community/gpt2"),
    Arch("gpt_neox", "gpt_neox", examples="EleutherAI/pythia-1b", layers=r"gpt_neox\.layers\.(\d+)\."),
    Arch("phi", "phi", ffn_norms=(), examples="microsoft/phi-2"),
    Arch("stablelm", "stablelm", examples="stabilityai/stablelm-2-1_6b-chat"),
    Arch("starcoder2", "starcoder2", examples="bigcode/starcoder2-3b"),
    Arch("cohere2", "cohere2", ffn_norms=(), examples="CohereLabs/c4ai-command-r7b-12-2024"),
    Arch("apertus", "apertus", ffn_norms=("feedforward_layernorm",), examples="swiss-ai/Apertus-8B-Instruct-2509"),
    Arch("exaone4", "exaone4", ffn_norms=("post_feedforward_layernorm",),
         examples="LGAI-EXAONE/EXAONE-4.0-1.2B (reasoning and non-reasoning modes)"),
    Arch("seed_oss", "seed_oss", examples="ByteDance-Seed/Seed-OSS-36B-Instruct"),
    Arch("smollm3", "smollm3", examples="HuggingFaceTB/SmolLM3-3B (think / no_think)"),
]
BY_KEY = {arch.key: arch for arch in ARCHS}


def make_config(arch: Arch):
    from transformers import AutoConfig

    if arch.vlm:
        from transformers import Qwen3VLConfig

        text = {k: v for k, v in SMALL.items() if k not in ("bos_token_id", "eos_token_id", "pad_token_id")}
        vision = dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=4,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                      deepstack_visual_indexes=[1])
        config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=120, video_token_id=121,
                               vision_start_token_id=122, vision_end_token_id=123, tie_word_embeddings=False)
        config.architectures = ["Qwen3VLForConditionalGeneration"]
        return config
    return AutoConfig.for_model(arch.model_type, **{**SMALL, **arch.config})


def build_arch_pair(root: str, arch: Arch, seed: int = 0) -> Tuple[str, str]:
    """``root/instruct`` and ``root/thinking``: a shared random model plus each side's own
    perturbation, in bfloat16, with a tokenizer, chat templates and generation configs (and,
    for a vision-language model, a preprocessor config that differs between the sides)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from synthetic import build_tokenizer, _write_side_files

    config = make_config(arch)
    torch.manual_seed(seed)
    auto = AutoModelForImageTextToText if arch.vlm else AutoModelForCausalLM
    model = auto.from_config(config)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tokenizer = build_tokenizer(SMALL["vocab_size"])
    paths = []
    for offset, role in enumerate(("instruct", "thinking"), start=1):
        generator = torch.Generator().manual_seed(seed * 1000 + offset)
        with torch.no_grad():
            for name, param in model.state_dict().items():
                if not param.is_floating_point():
                    continue
                noise = torch.randn(base[name].shape, generator=generator) * 0.05
                param.copy_(base[name] + noise * base[name].float().abs().mean().clamp(min=1e-3))
        path = os.path.join(root, role)
        model.to(torch.bfloat16).save_pretrained(path)
        model.to(torch.float32)
        _write_side_files(path, role, tokenizer)
        if arch.vlm:
            with open(os.path.join(path, "preprocessor_config.json"), "w") as handle:
                json.dump({"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 4, "merge_size": 2,
                           "temporal_patch_size": 2, "max_pixels": 1024 * offset, "min_pixels": 16}, handle)
        paths.append(path)
    return paths[0], paths[1]


# --------------------------------------------------------------------------- the oracle


def layer_of(arch: Arch, name: str) -> Optional[int]:
    match = arch.layer_pattern.match(name)
    return int(match.group(1)) if match else None


def after_layers(arch: Arch, name: str) -> bool:
    """A non-layer tensor that sits after the last layer (else before the first)."""
    return bool(AFTER.search(name)) and name not in arch.pre_extra and not name.startswith("model.visual.")


def depth_of(arch: Arch, name: str) -> int:
    layer = layer_of(arch, name)
    if layer is not None:
        return layer
    return LAYERS - 1 if after_layers(arch, name) else 0


def in_ffn(arch: Arch, name: str) -> bool:
    """A layer tensor of the feed-forward block: its container, or a norm around it."""
    match = arch.layer_pattern.match(name)
    if not match:
        return False
    inner = name[match.end():]
    head = inner.split(".", 1)[0]
    return head in FFN or head in arch.ffn_norms
