"""λ profiles: a λ per decoder layer and per module group, as an ordinary mergekit recipe.

The paper gives every tensor one λ and studies layers and modules only by switching them
off (windows, "no FFN"). A *profile* sets a λ for each decoder layer of each sub-layer group
(``attention``, ``mlp``, ``mixer``; :mod:`mi_mergekit.merge.roles`) and writes it as a plain
``model_interpolation`` recipe that ``mergekit-yaml`` runs unchanged, with mergekit's own
parameter syntax:

* a **filter** per group: the sub-modules of a layer that belong to the group, written
  ``.self_attn.``, ``.mlp.``, ``.post_attention_layernorm.`` … (mergekit matches a filter
  as a substring of the tensor name, first match wins);
* a **gradient list** of L values per filter: mergekit evaluates it at t = i / (L − 1) for
  layer i, so L values give layer i exactly its value;
* the tensors outside the layers by name, at the λ of the layer they sit with
  (embeddings and a vision tower with layer 0, the final norm and lm_head with the last), as
  the window semantics place them; mergekit itself would evaluate a gradient at t = 0 for
  both ends.

The **mean λ** of a profile is the parameter-weighted mean of λ over every tensor: the share
of the way from Instruct to Thinking the merge has gone, 0.8 for the static λ = 0.8.
:func:`scaled` rescales a shape (any positive weights per layer × group) to a chosen mean,
keeping every λ in [0, 1].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mi_mergekit.errors import AnalysisInputError

#: the sub-layer groups a profile sets; tensors of other roles get the layer's ``default``
GROUPS = ("attention", "mlp", "mixer")


@dataclass
class Profile:
    """λ per decoder layer, per sub-layer group (``values[group][layer]``), ``default`` per
    layer for the rest of a layer; ``name`` and ``provenance`` say how it was made."""

    num_layers: int
    values: Dict[str, List[float]] = field(default_factory=dict)
    default: Optional[List[float]] = None
    name: str = "profile"
    provenance: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        for group, values in list(self.values.items()) + [("default", self.default or [0.0] * self.num_layers)]:
            if len(values) != self.num_layers:
                raise AnalysisInputError(f"profile {self.name!r}: {group} has {len(values)} values for "
                                         f"{self.num_layers} layers")
            for value in values:
                if not math.isfinite(value):
                    raise AnalysisInputError(f"profile {self.name!r}: {group} has a non-finite λ {value}")
        if self.default is None:
            groups = list(self.values.values())
            self.default = [sum(v[i] for v in groups) / len(groups) if groups else 0.0
                            for i in range(self.num_layers)]

    def at(self, group: Optional[str], layer: int) -> float:
        """λ of ``group``'s tensors in ``layer`` (the layer's default for other tensors)."""
        values = self.values.get(group) if group else None
        return (values if values is not None else self.default)[layer]

    @classmethod
    def uniform(cls, lam: float, num_layers: int, name: str = "") -> "Profile":
        return cls(num_layers, {}, [lam] * num_layers, name or f"static {lam:g}")

    @classmethod
    def ramp(cls, first: float, last: float, num_layers: int) -> "Profile":
        """λ linear over the layers from ``first`` (layer 0) to ``last`` (layer L − 1)."""
        span = max(1, num_layers - 1)
        values = [first + (last - first) * i / span for i in range(num_layers)]
        return cls(num_layers, {}, values, f"ramp {first:g}->{last:g}",
                   {"family": "ramp", "params": [first, last]})

    @classmethod
    def modules(cls, lambdas: Dict[str, float], num_layers: int, default: Optional[float] = None) -> "Profile":
        """One λ per group (e.g. ``{"attention": 0.6, "mlp": 0.9}``), the rest at ``default``
        (the mean of the groups' λ when not given)."""
        unknown = sorted(set(lambdas) - set(GROUPS))
        if unknown:
            raise AnalysisInputError(f"unknown group(s) {unknown} in a module profile: choose from {GROUPS}")
        rest = default if default is not None else sum(lambdas.values()) / len(lambdas)
        name = ", ".join(f"{g} {v:g}" for g, v in lambdas.items())
        return cls(num_layers, {g: [v] * num_layers for g, v in lambdas.items()}, [rest] * num_layers, name,
                   {"family": "modules", "params": [lambdas[g] for g in lambdas], "groups": list(lambdas)})


# --------------------------------------------------------------------------- tensors of a layout


@dataclass(frozen=True)
class Cell:
    """A (layer or side, group) cell of a checkpoint and what falls in it."""

    layer: Optional[int]  # None outside the layers
    group: Optional[str]  # sub-layer group; None for the rest
    parameters: int


def cells(layout, shapes: Dict[str, Optional[Tuple[int, ...]]]) -> Dict[str, Cell]:
    """tensor name -> its cell (the λ a profile gives it: layer i's λ of its group, or the λ
    of the layer it sits with)."""
    out = {}
    last = layout.num_layers - 1
    for name, placement in layout.placements.items():
        numel = math.prod(shapes.get(name) or (1,))
        group = placement.role.sublayer if placement.role and placement.role.sublayer in GROUPS else None
        if placement.side == "layer":
            out[name] = Cell(placement.layer, group, numel)
        else:
            out[name] = Cell(0 if placement.side == "pre" else last, None, numel)
    return out


def mean_lambda(profile: Profile, table: Dict[str, Cell]) -> float:
    """The parameter-weighted mean λ of ``profile`` over the tensors of ``table``."""
    from mi_mergekit.merge.plan import weighted_mean

    return weighted_mean((profile.at(c.group, c.layer), c.parameters) for c in table.values())


def scaled(weights: Dict[str, List[float]], table: Dict[str, Cell], mean: float, name: str,
           provenance: Dict[str, object]) -> Profile:
    """A profile shaped like ``weights`` (group -> per-layer positive weights; ``"default"`` for
    the rest) with parameter-weighted mean λ ``mean``, every λ in [0, 1]: λ = min(1, c·w), c
    found by bisection (water-filling: clipped cells give their excess to the others)."""
    if not 0.0 <= mean <= 1.0:
        raise AnalysisInputError(f"a profile's mean λ must be in [0, 1], got {mean}")
    num_layers = len(next(iter(weights.values())))
    for key, values in weights.items():
        if any(v < 0 or not math.isfinite(v) for v in values):
            raise AnalysisInputError(f"{name}: weights must be finite and non-negative ({key}: {values})")

    def build(c: float) -> Profile:
        values = {g: [min(1.0, c * w) for w in ws] for g, ws in weights.items() if g != "default"}
        default = weights.get("default")
        rest = [min(1.0, c * w) for w in default] if default else None
        return Profile(num_layers, values, rest, name, provenance)

    low, high = 0.0, 1.0
    while mean_lambda(build(high), table) < mean and high < 1e12:
        high *= 2
    if mean_lambda(build(high), table) < mean - 1e-9:
        raise AnalysisInputError(f"{name}: no profile of this shape reaches mean λ {mean} (too many zero weights)")
    for _ in range(100):
        middle = (low + high) / 2
        if mean_lambda(build(middle), table) < mean:
            low = middle
        else:
            high = middle
    profile = build(high)
    profile.provenance = {**provenance, "mean_lambda": round(mean_lambda(profile, table), 6)}
    return profile


# --------------------------------------------------------------------------- as a recipe


def _heads(layout) -> Dict[str, Optional[str]]:
    """sub-module head (``self_attn``) -> its group, or None where layers disagree (a hybrid's
    ``input_layernorm``) or it has no group."""
    seen: Dict[str, set] = {}
    for name, placement in layout.placements.items():
        if placement.side != "layer":
            continue
        from mi_mergekit.merge.placement import name_pattern

        pattern = name_pattern(name)
        head = pattern.split(".N.", 1)[1].split(".", 1)[0] if ".N." in pattern else None
        if head is None:
            continue
        group = placement.role.sublayer if placement.role and placement.role.sublayer in GROUPS else None
        seen.setdefault(head, set()).add(group)
    return {head: (groups.pop() if len(groups) == 1 else None) for head, groups in seen.items()}


def _outside(profile: Profile, layout) -> List[Tuple[str, float]]:
    """(filter, λ) for the tensors outside the layers: each by name, or a module's prefix where
    more than eight share one that no layer tensor has (a vision tower)."""
    last = layout.num_layers - 1
    inside = [n for n, p in layout.placements.items() if p.side == "layer"]
    outside = [(n, 0 if p.side == "pre" else last) for n, p in layout.placements.items() if p.side != "layer"]
    by_prefix: Dict[Tuple[str, int], List[str]] = {}
    for name, layer in outside:
        prefix = ".".join(name.split(".")[:2]) + "."
        by_prefix.setdefault((prefix, layer), []).append(name)
    found = []
    sides = {}
    for prefix, layer in by_prefix:
        sides.setdefault(prefix, set()).add(layer)
    for (prefix, layer), names in by_prefix.items():
        if len(names) > 8 and len(sides[prefix]) == 1 and not any(prefix in n for n in inside):
            found.append((prefix, profile.default[layer]))
        else:
            found += [(name, profile.default[layer]) for name in names]
    return found


def _round(value: float) -> float:
    return round(float(value), 6)


def _per_layer(values: Sequence[float]):
    """A per-layer list for mergekit (one value where every layer has it)."""
    rounded = [_round(v) for v in values]
    return rounded[0] if len(set(rounded)) == 1 else rounded


def lambda_setting(profile: Profile, layout) -> List[dict]:
    """The recipe's ``lambda:`` for ``profile`` on a checkpoint of ``layout``: filters for the
    tensors outside the layers, one per sub-module of a group (per layer where the layers of a
    hybrid disagree), then the per-layer default."""
    if profile.num_layers != layout.num_layers:
        raise AnalysisInputError(f"profile {profile.name!r} has {profile.num_layers} layers, the model "
                                 f"{layout.num_layers}")
    entries = [{"filter": prefix, "value": _round(value)} for prefix, value in _outside(profile, layout)]
    for head, group in sorted(_heads(layout).items()):
        if group is not None and group in profile.values:
            entries.append({"filter": f".{head}.", "value": _per_layer(profile.values[group])})
        elif group is None:  # layers disagree: per layer
            for name, placement in layout.placements.items():
                if placement.side != "layer" or f".{placement.layer}.{head}." not in name:
                    continue
                value = profile.at(placement.role.sublayer if placement.role else None, placement.layer)
                prefix = name[: name.index(f".{placement.layer}.{head}.") + len(f".{placement.layer}.{head}.")]
                if all(e.get("filter") != prefix for e in entries):
                    entries.append({"filter": prefix, "value": _round(value)})
    entries.append({"value": _per_layer(profile.default)})
    return entries


def profile_recipe(base: dict, profile: Profile, layout) -> dict:
    """``base`` (a model_interpolation recipe as data) with ``lambda`` set to ``profile`` and any
    window / module selection removed (a profile sets every tensor's λ itself)."""
    data = {k: v for k, v in base.items()}
    parameters = {k: v for k, v in (base.get("parameters") or {}).items()
                  if k not in ("lambda", "layer_start", "layer_end", "modules", "exclude_modules")}
    models = [{k: v for k, v in m.items() if k != "parameters"} for m in base.get("models") or []]
    data.update(models=models, parameters={"lambda": lambda_setting(profile, layout), **parameters})
    return data


def write_recipe(path: str, data: dict, profile: Profile) -> None:
    """The recipe, headed by comments that say what the profile is and how it was made."""
    import yaml

    lines = [f"# λ profile: {profile.name}"]
    for key, value in profile.provenance.items():
        lines.append(f"# {key}: {value}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False, width=120))
