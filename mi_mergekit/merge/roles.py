"""What a checkpoint tensor does: its module part and the sub-layer it belongs to.

*Where* a tensor sits (before the first decoder layer, in layer i, after the last) is the
architecture's business (:mod:`mi_mergekit.merge.placement`, from mergekit's definitions);
this module only names roles, which is what the paper's module ablations select ("not
interpolating the FFN"). A decoder layer is a set of sub-modules, and the role of a tensor
follows from the sub-module it lives in, whatever the family calls it:

==========================  =========================================================
sub-layer (group)           parts
==========================  =========================================================
``attention``               ``attn_proj`` (q/k/v/o, fused ``qkv_proj``, ``c_attn``,
                            ``query_key_value``, MLA's ``q_a/q_b/kv_a/kv_b`` projections,
                            attention sinks, biases), ``qk_norm`` (q/k norms, MLA's
                            ``q_a_layernorm``/``kv_a_layernorm``), ``linear_attn``
                            (linear attention: Qwen3-Next's gated delta net)
``mlp``                     ``mlp_proj`` (dense gate/up/down, fused ``gate_up_proj``,
                            ``c_fc``/``c_proj``, ``fc1``/``fc2``, ``w1``/``w2``/``w3``),
                            ``router``, ``experts`` (per-expert, fused, with biases),
                            ``shared_expert``
``mixer``                   ``mixer``: state-space and convolution mixers (Mamba,
                            Jamba, Granite-4 hybrid, Falcon-H1, LFM2's short convolutions)
==========================  =========================================================

Norms follow the sub-layer they belong to: the norm in front of a layer's token mixer
(``input_layernorm``) goes with attention, or with the state-space/convolution mixer in
a mixer layer; the norm in front of the feed-forward block (``post_attention_layernorm``
in Llama-style layers, ``pre_feedforward_layernorm`` and its spellings) and the one after
it (``post_feedforward_layernorm``) go with ``mlp``. Where a layer has its own
feed-forward norms (Gemma 2/3, OLMo 2/3, EXAONE 4), ``post_attention_layernorm``
normalises the attention output and goes with ``attention``.

Outside the layers: ``embed_tokens`` (token and position embeddings), ``final_norm``,
``lm_head``, and ``vision`` (a vision tower and its projector). The groups ``moe``
(router, experts, shared expert), ``norms`` (every norm) and ``embeddings`` cut across.
A tensor that no rule places has no role (``None``); only a recipe that selects modules
needs roles, and it is refused then, with every such name listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

#: every part, in the order tables show them
PARTS: Tuple[str, ...] = (
    "embed_tokens",
    "vision",
    "attn_proj",
    "qk_norm",
    "linear_attn",
    "mixer",
    "input_layernorm",
    "mlp_proj",
    "router",
    "experts",
    "shared_expert",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
    "final_norm",
    "lm_head",
)

#: parts whose sub-layer is fixed
SUBLAYER_PARTS: Dict[str, FrozenSet[str]] = {
    "attention": frozenset({"attn_proj", "qk_norm", "linear_attn"}),
    "mlp": frozenset({"mlp_proj", "router", "experts", "shared_expert"}),
    "mixer": frozenset({"mixer"}),
}
NORM_PARTS = frozenset({"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                        "post_feedforward_layernorm", "qk_norm", "final_norm"})
#: groups that cut across sub-layers
CROSS_GROUPS: Dict[str, FrozenSet[str]] = {
    "moe": frozenset({"router", "experts", "shared_expert"}),
    "norms": NORM_PARTS,
    "embeddings": frozenset({"embed_tokens"}),
}
#: every name a recipe may use in ``modules`` / ``exclude_modules``
GROUP_NAMES: FrozenSet[str] = frozenset({"all", *SUBLAYER_PARTS, *CROSS_GROUPS, *PARTS})


@dataclass(frozen=True)
class Role:
    """A tensor's part and the sub-layer (``attention``, ``mlp``, ``mixer``) it belongs to;
    ``sublayer`` is None outside the decoder layers."""

    part: str
    sublayer: Optional[str] = None

    @property
    def tags(self) -> FrozenSet[str]:
        """Every group or part name that selects this tensor."""
        groups = {g for g, parts in CROSS_GROUPS.items() if self.part in parts}
        return frozenset({"all", self.part, *groups, *([self.sublayer] if self.sublayer else [])})


# --------------------------------------------------------------------------- inside a layer

#: sub-module names (the first component after ``layers.<i>.``) by what they contain
ATTENTION = frozenset({"self_attn", "attn", "attention", "self_attention"})
LINEAR_ATTENTION = frozenset({"linear_attn", "linear_attention"})
MIXERS = frozenset({"mixer", "mamba", "conv", "short_conv", "ssm"})
MLPS = frozenset({"mlp", "feed_forward", "ffn", "block_sparse_moe", "moe"})
MOE_BLOCKS = frozenset({"block_sparse_moe", "moe"})  # everything but the router is experts
SHARED = frozenset({"shared_mlp", "shared_expert", "shared_experts"})
ROUTERS = frozenset({"gate", "router"})

_NORM = re.compile(r"norm|^ln(?:_?\d+|_[a-z]+)?$")


def is_norm(module: str) -> bool:
    return bool(_NORM.search(module))


def _norm_kind(module: str) -> Optional[str]:
    """``input`` (in front of the token mixer), ``post_attention``, ``pre_ff`` or
    ``post_ff`` for a layer-level norm's module name; None if it says nothing."""
    name = module.lower()
    feed_forward = re.search(r"ff|mlp|feed_?forward", name) or name in ("ln_2", "ln2")
    if "post" in name:
        return "post_ff" if feed_forward else "post_attention" if "att" in name else None
    if feed_forward:
        return "pre_ff"
    if re.search(r"input|att|operator|^ln_?1$|^norm$|^layer_?norm$", name):
        return "input"
    return None


def _heads(siblings: Iterable[str]) -> FrozenSet[str]:
    return frozenset(s.split(".", 1)[0] for s in siblings)


def token_mixer(siblings: Iterable[str]) -> str:
    """The sub-layer that mixes tokens in a layer with these tensor names (``attention``
    where a layer has both, as Falcon-H1's parallel heads)."""
    heads = _heads(siblings)
    if heads & (ATTENTION | LINEAR_ATTENTION) or not heads & MIXERS:
        return "attention"
    return "mixer"


def layer_role(suffix: str, siblings: Iterable[str] = ()) -> Optional[Role]:
    """The role of the tensor ``layers.<i>.<suffix>``; ``siblings`` are the suffixes of the
    same layer's tensors (a norm's sub-layer depends on what else the layer has)."""
    head, _, rest = suffix.partition(".")
    module = rest.rsplit(".", 1)[0].rsplit(".", 1)[-1]  # the sub-module holding the tensor
    if head in ATTENTION:
        return Role("qk_norm" if is_norm(module) else "attn_proj", "attention")
    if head in LINEAR_ATTENTION:
        return Role("linear_attn", "attention")
    if head in MIXERS:
        return Role("mixer", "mixer")
    if head in SHARED:
        return Role("shared_expert", "mlp")
    if head in MLPS:
        first = rest.split(".", 1)[0]
        if first == "experts":
            return Role("experts", "mlp")
        if first.startswith("shared_expert"):
            return Role("shared_expert", "mlp")
        if first in ROUTERS:
            return Role("router", "mlp")
        return Role("experts" if head in MOE_BLOCKS else "mlp_proj", "mlp")
    if is_norm(head):
        kind = _norm_kind(head)
        siblings = list(siblings)
        if kind == "input":
            return Role("input_layernorm", token_mixer(siblings))
        if kind == "post_attention":
            feed_forward_norms = any(_norm_kind(h) in ("pre_ff", "post_ff") for h in _heads(siblings) if is_norm(h))
            return Role("post_attention_layernorm", token_mixer(siblings) if feed_forward_norms else "mlp")
        if kind == "pre_ff":
            return Role("pre_feedforward_layernorm", "mlp")
        if kind == "post_ff":
            return Role("post_feedforward_layernorm", "mlp")
    return None


# --------------------------------------------------------------------------- outside the layers

_EMBEDDING = re.compile(r"emb|(?:^|\.)(?:wte|wpe)\.")
_HEAD = re.compile(r"(?:^|\.)(?:lm_head|embed_out|output|output_layer)\.")


def outside_role(name: str, side: str, vocabulary: bool = False) -> Optional[Role]:
    """The role of a tensor before (``side="pre"``) or after (``"post"``) the decoder
    layers; ``vocabulary``: the architecture says it is indexed by token id."""
    if side == "pre":
        return Role("embed_tokens") if vocabulary or _EMBEDDING.search(name) else None
    if vocabulary or _HEAD.search(name):
        return Role("lm_head")
    module = name.rsplit(".", 2)[-2] if name.count(".") else name
    return Role("final_norm") if is_norm(module) else None
