"""Random Qwen3 / Qwen3-MoE Instruct+Thinking pairs, built offline in code.

Used by the tests (tiny widths, real layer counts where it matters) and by the
benchmarks (≥ 1 GB per model). Both members of a pair share a random "base" plus
their own perturbation, like two fine-tunes of one pre-trained model. Each folder is
a complete Hugging Face model: config.json, safetensors in checkpoint layout
(per-expert names for MoE), tokenizer, chat template and generation_config — the
Thinking one with a template that pre-inserts ``<think>`` like Qwen3-Thinking-2507.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

INSTRUCT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
THINKING_TEMPLATE = INSTRUCT_TEMPLATE.replace(
    "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}"
)
GENERATION = {
    "instruct": {"temperature": 0.7, "top_p": 0.8, "top_k": 20},
    "thinking": {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


@dataclass(frozen=True)
class PairSpec:
    num_layers: int = 4
    hidden_size: int = 32
    intermediate_size: int = 64
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 8
    vocab_size: int = 128
    tie_word_embeddings: bool = True
    moe: bool = False
    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 16
    dtype: str = "bfloat16"
    seed: int = 0
    noise: float = 0.05


def build_tokenizer(vocab_size: int):
    """A word-level tokenizer with Qwen-style special tokens; no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS) - 1)]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + ["<unk>"] + words)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )


def _config(spec: PairSpec):
    common = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        tie_word_embeddings=spec.tie_word_embeddings,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    if spec.moe:
        from transformers import Qwen3MoeConfig

        return Qwen3MoeConfig(
            num_experts=spec.num_experts,
            num_experts_per_tok=spec.num_experts_per_tok,
            moe_intermediate_size=spec.moe_intermediate_size,
            **common,
        )
    from transformers import Qwen3Config

    return Qwen3Config(**common)


def _random_model(spec: PairSpec, seed: int):
    """A randomly initialised model and a float32 copy of its state dict."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(spec))
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_pair(root: str, spec: PairSpec = PairSpec()) -> Tuple[str, str]:
    """Write ``root/instruct`` and ``root/thinking``; return their paths."""
    import torch

    model, base = _random_model(spec, spec.seed)
    tokenizer = build_tokenizer(spec.vocab_size)
    dtype = getattr(torch, spec.dtype)
    paths = []
    for offset, role in enumerate(("instruct", "thinking"), start=1):
        generator = torch.Generator().manual_seed(spec.seed * 1000 + offset)
        with torch.no_grad():
            for name, param in model.state_dict().items():
                noise = torch.randn(base[name].shape, generator=generator) * spec.noise
                param.copy_(base[name] + noise * base[name].abs().mean().clamp(min=1e-3))
        path = os.path.join(root, role)
        model.to(dtype).save_pretrained(path)
        model.to(torch.float32)
        _write_side_files(path, role, tokenizer)
        paths.append(path)
    return paths[0], paths[1]


def _write_side_files(path: str, role: str, tokenizer) -> None:
    """Tokenizer, the role's chat template and generation_config."""
    tokenizer.chat_template = THINKING_TEMPLATE if role == "thinking" else INSTRUCT_TEMPLATE
    tokenizer.save_pretrained(path)
    with open(os.path.join(path, "generation_config.json"), "w") as handle:
        json.dump({"eos_token_id": 2, "pad_token_id": 0, "do_sample": True,
                   **GENERATION[role]}, handle, indent=1)


def checkpoint_shapes(spec: PairSpec) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape of the checkpoint ``save_pretrained`` writes for ``spec``
    (the model is built on the meta device: no memory, no arithmetic)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_config(spec))
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if spec.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def build_pair_streaming(root: str, spec: PairSpec, shard_bytes: int = 4_000_000_000,
                         chunk: int = 1 << 24, progress: bool = False, device: str = "cpu") -> Tuple[str, str]:
    """Like :func:`build_pair`, for pairs that do not fit in memory (Qwen3-4B-sized and up).

    Every tensor is written in slices of ``chunk`` elements straight into pre-sized
    safetensors shards of at most ``shard_bytes`` (mergekit's / transformers' file
    names and index), so memory stays at a few slices. Values: a shared random base
    (N(0, 0.02²)) plus each side's own perturbation of relative size ``spec.noise`` —
    the same statistics as :func:`build_pair`, not the same numbers (``device``: where the
    random numbers are drawn; a GPU draws them much faster).
    """
    import torch

    from mi_mergekit.merge.layout import natural_key
    from mi_mergekit.merge.safetensors_io import OutputSpec, StreamingWriter, shard_by_size

    dtype = getattr(torch, spec.dtype)
    shapes = checkpoint_shapes(spec)
    specs = [OutputSpec(name, dtype, shapes[name]) for name in sorted(shapes, key=natural_key)]
    files = shard_by_size(specs, shard_bytes)
    config = _config(spec)
    config.architectures = ["Qwen3MoeForCausalLM" if spec.moe else "Qwen3ForCausalLM"]
    config.dtype = spec.dtype
    tokenizer = build_tokenizer(spec.vocab_size)
    roles = ("instruct", "thinking")
    paths = [os.path.join(root, role) for role in roles]
    writers = []
    for path in paths:
        os.makedirs(path, exist_ok=True)
        writers.append(StreamingWriter(path, files, index=len(files) > 1))
    base_gen = torch.Generator(device).manual_seed(spec.seed)
    role_gens = [torch.Generator(device).manual_seed(spec.seed * 1000 + k) for k in (1, 2)]
    total = sum(s.nbytes for s in specs)
    done = 0
    try:
        for out in specs:
            numel = out.nbytes // dtype.itemsize
            for start in range(0, numel, chunk):
                n = min(chunk, numel - start)
                base = torch.randn(n, generator=base_gen, device=device).mul_(0.02)
                for writer, gen in zip(writers, role_gens):
                    value = torch.randn(n, generator=gen, device=device).mul_(0.02 * spec.noise).add_(base)
                    writer.write(out.name, start, value.to(dtype).cpu())
            if progress and (done + out.nbytes) * 10 // total > done * 10 // total:  # every 10%
                print(f"  {(done + out.nbytes) / 2**30:.1f} / {total / 2**30:.1f} GiB per model", flush=True)
            done += out.nbytes
    finally:
        for writer in writers:
            writer.close()
    for writer, path, role in zip(writers, paths, roles):
        writer.finish()
        config.save_pretrained(path)
        _write_side_files(path, role, tokenizer)
    return paths[0], paths[1]


def recipe_data(instruct: str, thinking: str, lam=0.8, dtype: Optional[str] = "bfloat16",
                out_dtype: Optional[str] = None, **parameters) -> dict:
    """A model_interpolation recipe for a pair (as a dict, ready for MergeConfiguration)."""
    data = {
        "merge_method": "model_interpolation",
        "base_model": instruct,
        "models": [{"model": thinking}],
        "parameters": {"lambda": lam, **parameters},
    }
    if dtype:
        data["dtype"] = dtype
    if out_dtype:
        data["out_dtype"] = out_dtype
    return data


def recipe(instruct: str, thinking: str, lam=0.8, dtype: Optional[str] = "bfloat16",
           **parameters) -> str:
    """A model_interpolation YAML recipe for a pair (as text)."""
    import yaml

    return yaml.safe_dump(recipe_data(instruct, thinking, lam, dtype, **parameters), sort_keys=False)
