"""Which tensors a recipe interpolates: a window of decoder layers and a set of module groups.

The paper interpolates a window of decoder layers ("[12, 35]") and ablates whole
sub-layers ("not interpolating the FFN"). A :class:`Selection` answers, for each placed
tensor (:mod:`mi_mergekit.merge.placement`: its side of the decoder layers, its layer,
its role), whether it is interpolated or keeps the Instruct weights.

A window needs each tensor's depth: layer i for the tensors of layer i; ``embed_layer``
(default 0) for the tensors before the layers (embeddings, a vision tower); the
``final_norm_layer`` / ``lm_head_layer`` (default: the last layer) for those after them,
so the window [0, L-1] is the whole model. A module selection needs each tensor's role
(:mod:`mi_mergekit.merge.roles`): ``modules`` / ``exclude_modules`` name groups or parts,
and a tensor is interpolated when ``modules`` names one of its groups or its part and
``exclude_modules`` names none (so ``exclude_modules: mlp_proj,router,experts,shared_expert``
keeps the norm in front of the MLP interpolated while ``exclude_modules: mlp`` does not).

The whole-model form (no window, no module selection) needs neither and works for every
tensor; a form that needs what the architecture does not say about some tensors is refused
before anything is computed (:meth:`Selection.check`), naming every such tensor pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Tuple

from mi_mergekit.errors import PlacementError, SelectionError, did_you_mean
from mi_mergekit.merge.placement import LAYER, POST, PRE, ModelLayout, Placement
from mi_mergekit.merge.roles import CROSS_GROUPS, GROUP_NAMES, PARTS, SUBLAYER_PARTS

__all__ = ["GROUP_NAMES", "PARTS", "Selection", "parse_modules", "resolve_index"]

#: what a filter on λ looks like, for the messages that offer it
FILTER_HINT = "lambda: [{filter: <part of the tensor name>, value: 0}, {value: <λ>}]"


def parse_modules(spec: str, *, what: str = "modules") -> FrozenSet[str]:
    """The group and part names of a comma/space separated list."""
    names = set()
    for token in re.split(r"[,\s]+", spec.strip()):
        if not token:
            continue
        if token not in GROUP_NAMES:
            hint = did_you_mean(token, sorted(GROUP_NAMES))
            raise SelectionError(
                f"unknown module group {token!r} in {what}{hint}: choose from groups "
                f"{', '.join(['all', *SUBLAYER_PARTS, *CROSS_GROUPS, 'vision'])} or parts {', '.join(PARTS)}")
        names.add(token)
    return frozenset(names)


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
    """Which tensors are interpolated: a layer window, module groups, depth placements.

    ``layer_start``/``layer_end`` are 0-based and inclusive, as the paper writes its
    windows; negative values count from the end.
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
        include = parse_modules(self.modules, what="modules")
        exclude = parse_modules(self.exclude_modules, what="exclude_modules")
        object.__setattr__(self, "_window", (start, end))
        object.__setattr__(self, "_include", include)
        object.__setattr__(self, "_exclude", exclude)
        object.__setattr__(self, "_depths", {
            PRE: resolve_index(self.embed_layer, self.num_layers, "embed_layer"),
            POST: resolve_index(self.final_norm_layer, self.num_layers, "final_norm_layer"),
            "lm_head": resolve_index(self.lm_head_layer, self.num_layers, "lm_head_layer"),
        })

    @property
    def window(self) -> Tuple[int, int]:
        return self._window

    @property
    def whole_window(self) -> bool:
        """The window is every layer: every depth is inside it."""
        return self._window == (0, self.num_layers - 1)

    @property
    def all_modules(self) -> bool:
        return "all" in self._include and not self._exclude

    def depth(self, tensor: Placement) -> Optional[int]:
        """The layer the window compares: the tensor's layer, or its side's depth; None
        where the architecture does not place it."""
        if tensor.side == LAYER:
            return tensor.layer
        if tensor.side == POST and tensor.part == "lm_head":
            return self._depths["lm_head"]
        return self._depths.get(tensor.side) if tensor.side else None

    def selects(self, tensor: Placement) -> bool:
        """True if the tensor is interpolated, False if it keeps the Instruct weights."""
        if not self.whole_window:
            depth = self.depth(tensor)
            if depth is None:
                raise SelectionError("a layer window needs the depth of every tensor; run the plan's check first")
            start, end = self.window
            if not start <= depth <= end:
                return False
        if self.all_modules:
            return True
        if tensor.role is None:
            raise SelectionError("a module selection needs the role of every tensor; run the plan's check first")
        tags = tensor.role.tags
        return bool(tags & self._include) and not tags & self._exclude

    def unmatched(self, layout: ModelLayout) -> List[str]:
        """Names in ``modules`` / ``exclude_modules`` that select no tensor of ``layout``."""
        present = set().union(*(p.role.tags for p in layout.placements.values() if p.role))
        return sorted((self._include | self._exclude) - present - {"all"})

    def check(self, layout: ModelLayout) -> None:
        """Refuse a window or module selection that needs what ``layout`` does not say about
        some tensors, naming every such tensor pattern and the forms that still work."""
        no_side = layout.patterns(layout.unplaced("side"))
        no_role = layout.patterns(layout.unplaced("role"))
        problems: List[str] = []
        if no_side and not self.whole_window:
            problems.append(
                f"the layer window [{self.window[0]}, {self.window[1]}] needs the depth of every tensor, and "
                f"neither {layout.source} nor transformers' model places {len(no_side)} name pattern(s) of this "
                f"{layout.architecture} checkpoint (N: the layer): {', '.join(no_side)}")
        if no_role and not self.all_modules:
            asked = "; ".join(f"{key}: {value}" for key, value in
                              (("modules", self.modules), ("exclude_modules", self.exclude_modules))
                              if value and not (key == "modules" and value.strip() == "all"))
            problems.append(
                f"the module selection ({asked}) needs the role of every tensor, and no rule names the role of "
                f"{len(no_role)} name pattern(s) of this {layout.architecture} checkpoint (N: the layer, "
                f"E: the expert): {', '.join(no_role)}")
        if not problems:
            return
        still = ["the whole-model form (no window, no modules/exclude_modules)"]
        if not no_side:
            still.append("a layer window without modules/exclude_modules")
        if not no_role:
            still.append("modules/exclude_modules without a layer window")
        raise PlacementError(
            "; ".join(problems) + f". Still works: {'; '.join(still)}. To set these tensors by name, use a "
            f"mergekit filter on lambda ({FILTER_HINT})")
