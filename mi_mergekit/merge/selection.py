"""Tensor name -> (decoder layer index, module part); module groups; depth placement.

The paper interpolates a window of decoder layers ("[12, 35]") and ablates whole
sub-layers ("not interpolating the FFN"). Both need every checkpoint tensor to be
classified. Classification is by name, for Qwen3 / Qwen3-MoE and Llama / Mistral /
Qwen2 / Mixtral-style checkpoints, in both the per-expert checkpoint layout and the
fused transformers-5 layout. A tensor that no rule classifies is an error.

Parts (the leaves) and the groups they belong to::

    attention: attn_proj (q/k/v/o, biases), qk_norm (q_norm/k_norm),
               input_layernorm              <- norm follows the sub-layer it feeds
    mlp:       mlp_proj (dense gate/up/down), router (MoE gate), experts,
               shared_expert (incl. shared_expert_gate),
               post_attention_layernorm     <- norm follows the sub-layer it feeds
    norms:     input_layernorm, post_attention_layernorm, qk_norm, final_norm
    embeddings = embed_tokens; final_norm; lm_head

A recipe selects groups or parts with ``modules`` / ``exclude_modules``; naming a
part overrides the default norm placement (e.g. exclude ``mlp`` but keep
``post_attention_layernorm`` interpolated by adding it back to ``modules``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

from mi_mergekit.errors import SelectionError, UnclassifiedTensorError

PARTS: Tuple[str, ...] = (
    "embed_tokens",
    "attn_proj",
    "qk_norm",
    "input_layernorm",
    "mlp_proj",
    "router",
    "experts",
    "shared_expert",
    "post_attention_layernorm",
    "final_norm",
    "lm_head",
)

GROUPS: Dict[str, FrozenSet[str]] = {
    "all": frozenset(PARTS),
    "attention": frozenset({"attn_proj", "qk_norm", "input_layernorm"}),
    "mlp": frozenset(
        {"mlp_proj", "router", "experts", "shared_expert", "post_attention_layernorm"}
    ),
    "moe": frozenset({"router", "experts", "shared_expert"}),
    "norms": frozenset(
        {"input_layernorm", "post_attention_layernorm", "qk_norm", "final_norm"}
    ),
    "embeddings": frozenset({"embed_tokens"}),
    **{part: frozenset({part}) for part in PARTS},
}

_LAYER = r"(?:model\.|transformer\.)?(?:layers|h|blocks)\.(?P<layer>\d+)\."
_RULES: Tuple[Tuple[str, "re.Pattern[str]"], ...] = tuple(
    (part, re.compile(pattern))
    for part, pattern in (
        ("embed_tokens", r"^(?:model\.)?(?:embed_tokens|tok_embeddings|wte)\.weight$"),
        ("final_norm", r"^(?:model\.)?(?:norm|final_layernorm|ln_f)\.(?:weight|bias)$"),
        ("lm_head", r"^(?:lm_head|output)\.weight$"),
        ("attn_proj", _LAYER + r"self_attn\.(?:q|k|v|o)_proj\.(?:weight|bias)$"),
        ("qk_norm", _LAYER + r"self_attn\.(?:q|k)_norm\.weight$"),
        ("input_layernorm", _LAYER + r"input_layernorm\.(?:weight|bias)$"),
        ("post_attention_layernorm", _LAYER + r"post_attention_layernorm\.(?:weight|bias)$"),
        ("mlp_proj", _LAYER + r"mlp\.(?:gate|up|down)_proj\.(?:weight|bias)$"),
        # MoE router: Qwen3-MoE / Qwen2-MoE `mlp.gate`, Mixtral `block_sparse_moe.gate`
        ("router", _LAYER + r"(?:mlp|block_sparse_moe)\.gate\.(?:weight|bias|e_score_correction_bias)$"),
        # per-expert checkpoint layout and transformers-5 fused layout
        ("experts", _LAYER + r"(?:mlp|block_sparse_moe)\.experts\.\d+\.(?:gate_proj|up_proj|down_proj|w1|w2|w3)\.weight$"),
        ("experts", _LAYER + r"(?:mlp|block_sparse_moe)\.experts\.(?:gate_up_proj|down_proj)(?:\.weight)?$"),
        ("shared_expert", _LAYER + r"mlp\.shared_experts?\.(?:gate|up|down)_proj\.weight$"),
        ("shared_expert", _LAYER + r"mlp\.shared_expert_gate\.weight$"),
    )
)


@dataclass(frozen=True)
class TensorClass:
    part: str
    layer: Optional[int]  # decoder layer index; None for embeddings / final norm / lm_head


def classify(name: str) -> TensorClass:
    """Classify one checkpoint tensor name, or raise :class:`UnclassifiedTensorError`."""
    for part, pattern in _RULES:
        match = pattern.match(name)
        if match:
            layer = match.groupdict().get("layer")
            return TensorClass(part=part, layer=int(layer) if layer is not None else None)
    raise UnclassifiedTensorError(
        f"tensor {name!r} does not belong to any known module group "
        f"({', '.join(PARTS)}); mi_mergekit refuses to guess where it goes. "
        "Supported layouts: Qwen3, Qwen3-MoE, Qwen2, Llama, Mistral, Mixtral."
    )


def parse_modules(spec: str, *, what: str = "modules") -> FrozenSet[str]:
    """Parse a comma/space separated list of group or part names into parts."""
    parts: set = set()
    for token in re.split(r"[,\s]+", spec.strip()):
        if not token:
            continue
        if token not in GROUPS:
            raise SelectionError(
                f"unknown module group {token!r} in {what}: choose from "
                f"{', '.join(sorted(GROUPS))}"
            )
        parts |= GROUPS[token]
    return frozenset(parts)


def resolve_index(value: int, num_layers: int, what: str) -> int:
    """Resolve a 0-based layer index; negative values count from the end (-1 = last)."""
    resolved = value + num_layers if value < 0 else value
    if not 0 <= resolved < num_layers:
        raise SelectionError(
            f"{what}={value} is outside the model's decoder layers "
            f"[0, {num_layers - 1}] ({num_layers} layers)"
        )
    return resolved


@dataclass(frozen=True)
class Selection:
    """Which tensors are interpolated: a layer window, a part set, depth placements.

    ``layer_start``/``layer_end`` are 0-based and inclusive, as the paper writes
    its windows. Embeddings sit at depth ``embed_layer`` (default: layer 0), the final
    norm and an untied lm_head at ``final_norm_layer`` / ``lm_head_layer`` (default:
    the last layer), so the window [0, L-1] selects every tensor. A tied lm_head has
    no tensor of its own and follows ``embed_tokens``.
    """

    num_layers: int
    layer_start: int = 0
    layer_end: int = -1
    modules: str = "all"
    exclude_modules: str = ""
    embed_layer: int = 0
    final_norm_layer: int = -1
    lm_head_layer: int = -1

    def __post_init__(self):
        if self.num_layers <= 0:
            raise SelectionError(f"num_layers must be positive, got {self.num_layers}")
        start = resolve_index(self.layer_start, self.num_layers, "layer_start")
        end = resolve_index(self.layer_end, self.num_layers, "layer_end")
        if start > end:
            raise SelectionError(
                f"empty layer window: layer_start={self.layer_start} > "
                f"layer_end={self.layer_end} (bounds are 0-based and inclusive)"
            )
        parts = parse_modules(self.modules, what="modules") - parse_modules(
            self.exclude_modules, what="exclude_modules"
        )
        object.__setattr__(self, "_window", (start, end))
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(
            self,
            "_depth",
            {
                "embed_tokens": resolve_index(self.embed_layer, self.num_layers, "embed_layer"),
                "final_norm": resolve_index(
                    self.final_norm_layer, self.num_layers, "final_norm_layer"
                ),
                "lm_head": resolve_index(self.lm_head_layer, self.num_layers, "lm_head_layer"),
            },
        )

    @property
    def window(self) -> Tuple[int, int]:
        return self._window

    @property
    def parts(self) -> FrozenSet[str]:
        return self._parts

    def depth(self, tensor: TensorClass) -> int:
        if tensor.layer is not None:
            if tensor.layer >= self.num_layers:
                raise SelectionError(
                    f"layer index {tensor.layer} >= num_layers={self.num_layers}"
                )
            return tensor.layer
        return self._depth[tensor.part]

    def selects(self, name: str) -> bool:
        """True if the tensor called ``name`` is interpolated, False if it keeps Instruct."""
        tensor = classify(name)
        start, end = self.window
        return tensor.part in self.parts and start <= self.depth(tensor) <= end

