"""Pre-flight checks and the resolved per-tensor plan of a merge with one of our methods.

For any :class:`~mi_mergekit.merge.method.ElementwiseMethod` (it reads the method's
roles, parameters and per-tensor setting; it names none): the recipe's form
(``models:`` or ``slices:``), its parameters, the checkpoints (configs, tensor names
and shapes), then the plan resolved by mergekit's own planner (same parameter
filters, gradients and defaults as the real merge) over the checkpoint-layout
architecture, each tensor's parameters turned into the method's setting. What
``mi-mergekit plan`` prints is what the merge does.

Every check here runs before mergekit creates the output folder, so bad input
never leaves anything behind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Hashable, Iterable, List, Optional, Tuple

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration
from mergekit.merge_methods.base import ParameterScope
from mergekit.options import MergeOptions

from mi_mergekit.errors import CheckpointFileError, MergeInputError, MiMergekitError, PlacementError, did_you_mean
from mi_mergekit.merge.layout import (
    CheckpointIndex,
    checkpoint_architecture,
    compare_indexes,
    model_config,
)
from mi_mergekit.merge.method import ElementwiseMethod, method_named
from mi_mergekit.merge.placement import layout_of
from mi_mergekit.merge.roles import PARTS

def weighted_mean(values: Iterable[Tuple[float, int]]) -> Optional[float]:
    """The mean of ``(value, parameters)`` pairs weighted by each tensor's parameter count: a
    merge's mean λ (every λ profile, plan and run is averaged this way); None without parameters."""
    pairs = list(values)
    total = sum(parameters for _, parameters in pairs)
    return sum(value * parameters for value, parameters in pairs) / total if total else None


#: parts that live outside the decoder layers: one row each in the plan table
OUTSIDE_PARTS = ("embed_tokens", "vision", "final_norm", "lm_head")

LOG = logging.getLogger(__name__)


def _elements(shape: Optional[Tuple[int, ...]]) -> Optional[int]:
    if shape is None:
        return None
    count = 1
    for size in shape:
        count *= int(size)
    return count


@dataclass
class TensorPlan:
    name: str
    part: str  # the role's part; "other" where no rule names one
    layer: Optional[int]
    computed: bool  # computed by the method (False: the base tensor, bit for bit); "interpolated" in mi_plan.json
    value: Any  # the method's per-tensor value (model_interpolation: λ, 0.0 where kept)
    setting: Hashable = None  # what the method computes it with
    fields: Dict[str, Any] = field(default_factory=dict)  # the method's extra fields
    side: Optional[str] = None  # "pre", "layer", "post"; None where nothing places it
    parameters: Optional[int] = None  # elements of the tensor, where the checkpoint's header gives its shape

    @property
    def row(self) -> str:
        """Its row of the plan table: the layer, or an outside part, or side:part."""
        if self.layer is not None:
            return str(self.layer)
        return self.part if self.part in OUTSIDE_PARTS else f"{self.side or 'unplaced'}:{self.part}"


@dataclass
class MergePlan:
    method: str
    inputs: List[Tuple[str, str]]  # (role, model), base first
    num_layers: int
    architecture: str
    layers_from: str  # where the tensors' depths come from (mergekit's definition or inference)
    template_from: Optional[str]  # whose tokenizer/chat template/generation_config (None: mergekit's)
    tokenizer_donor: Optional[str]  # that model (the shard layout comes from the base: ``base``)
    value_name: str = "value"
    value_label: str = "value"
    tensors: List[TensorPlan] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The base model (model_interpolation: Instruct), else the first model."""
        return self.inputs[0][1]

    @property
    def value(self) -> Any:
        """The one value every computed tensor has, if there is one (a plain λ)."""
        values = {json.dumps(t.value) for t in self.tensors if t.computed}
        return json.loads(values.pop()) if len(values) == 1 else None

    @property
    def mean_value(self) -> Optional[float]:
        """The parameter-weighted mean of the per-tensor value over every tensor (kept ones at
        their value, λ = 0 for model_interpolation): a λ profile's mean λ, as
        :func:`mi_mergekit.analysis.profiles.mean_lambda` defines it. None where a value is not
        a number or a shape is unknown."""
        if not self.tensors or any(isinstance(t.value, bool) or not isinstance(t.value, (int, float))
                                   or not t.parameters for t in self.tensors):
            return None
        return weighted_mean((t.value, t.parameters) for t in self.tensors)

    @property
    def settings(self) -> Dict[str, Hashable]:
        """tensor name -> the method's setting (what the engines compute with)."""
        return {t.name: t.setting for t in self.tensors}

    def to_json(self) -> Dict[str, Any]:
        data = {
            "method": self.method,
            **({role.lower(): model for role, model in self.inputs}
               if len({role for role, _ in self.inputs}) == len(self.inputs) else {}),
            "inputs": [list(pair) for pair in self.inputs],
            "num_layers": self.num_layers,
            "architecture": self.architecture,
            "layers_from": self.layers_from,
            "template_from": self.template_from,
            self.value_name: self.value,
            f"mean_{self.value_name}": None if self.mean_value is None else round(self.mean_value, 6),
            # "interpolated" is TensorPlan.computed: the key keeps the name that the mi_plan.json
            # files of earlier merges on disk were written with (a file format; eval reads them back)
            "tensors": [
                {"name": t.name, "part": t.part, "layer": t.layer, "side": t.side, **t.fields,
                 "interpolated": t.computed, self.value_name: t.value}
                for t in self.tensors
            ],
            "warnings": self.warnings,
            "whole_model": self.whole_model,
            "summary": self.grid(),
        }
        return data

    @property
    def whole_model(self) -> bool:
        """True when every tensor is interpolated with one λ (no window, no module selection)."""
        return all(t.computed for t in self.tensors) and self.value is not None

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.write("\n")

    def grid(self) -> Dict[str, Dict[str, Any]]:
        """λ per row (decoder layer or non-layer tensor) × module part."""
        cells: Dict[str, Dict[str, set]] = {}
        for tensor in self.tensors:
            cells.setdefault(tensor.row, {}).setdefault(tensor.part, set()).add(json.dumps(tensor.value))
        return {
            row: {part: (json.loads(min(v)) if len(v) == 1 else sorted(json.loads(x) for x in v))
                  for part, v in parts.items()}
            for row, parts in cells.items()
        }

    def table(self) -> str:
        """Human-readable grid; consecutive identical layers are folded together."""
        layer_parts = [p for p in (*PARTS, "other") if any(t.part == p and t.layer is not None for t in self.tensors)]
        grid = self.grid()

        def cell(value) -> str:
            if value is None:
                return "-"
            if isinstance(value, list):
                return "/".join(cell(v) for v in value)
            return f"{value:g}" if isinstance(value, (int, float)) else str(value)

        header = ["layers"] + layer_parts
        rows: List[List[str]] = []
        layer = 0
        while layer < self.num_layers:
            values = [cell(grid.get(str(layer), {}).get(p)) for p in layer_parts]
            end = layer
            while end + 1 < self.num_layers and [
                cell(grid.get(str(end + 1), {}).get(p)) for p in layer_parts
            ] == values:
                end += 1
            rows.append([f"{layer}" if end == layer else f"{layer}-{end}"] + values)
            layer = end + 1
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        fmt = "  ".join("{:<%d}" % w for w in widths)
        base_role = self.inputs[0][0]
        lines = [
            f"{self.method}: " + "  ".join(f"{role}={model}" for role, model in self.inputs),
            f"{self.architecture}, {self.num_layers} decoder layers (placed by {self.layers_from}), "
            f"{len(self.tensors)} tensors, {sum(t.computed for t in self.tensors)} interpolated;"
            f" {self.value_label} shown per tensor group (0 = kept at {base_role} weights)",
            fmt.format(*header),
        ]
        lines += [fmt.format(*r) for r in rows]
        for row in sorted((r for r in grid if not r.isdigit()), key=_outside_order):
            for part, value in grid[row].items():
                label = row if row == part else f"{row.split(':')[0]} {part}"
                lines.append(f"{label}: {self.value_label}={cell(value)}")
        if "lm_head" not in grid:
            lines.append("lm_head: tied to embed_tokens (no tensor of its own)")
        if self.value is None and self.mean_value is not None:
            lines.append(f"mean {self.value_label} (parameter-weighted, every tensor): {self.mean_value:.4g}")
        if self.template_from:
            lines.append(f"tokenizer / chat template / generation_config from: {self.template_from}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _outside_order(row: str):
    """embeddings, vision first; final norm, lm_head last; the rest between."""
    order = {"embed_tokens": 0, "vision": 1, "final_norm": 8, "lm_head": 9}
    return order.get(row, 5), row


def method_of(config: MergeConfiguration) -> ElementwiseMethod:
    """The recipe's merge method, which must be one of ours (an ElementwiseMethod registered
    with mergekit: by the autoload hook, or ``mi_mergekit.register()``)."""
    method = method_named(config.merge_method)
    if method is None:
        raise MergeInputError(
            f"merge_method {config.merge_method!r} is not an element-wise mi-mergekit method "
            "(stock mergekit methods are run by mergekit-yaml as they are)")
    return method


def _input_scoped(method: ElementwiseMethod, is_base: bool) -> set:
    return {p.name for p in method.spec.parameters
            if p.scope == ParameterScope.INPUT or (p.scope == ParameterScope.NON_BASE and not is_base)}


def recipe_models(method: ElementwiseMethod, config: MergeConfiguration) -> List[Tuple[str, ModelReference]]:
    """(role, model) of every input, base first, or a MergeInputError saying what is wrong
    with the recipe's form (``models:`` / ``slices:``), its models or its parameters."""
    name = method.spec.name
    if config.modules:
        raise MergeInputError(f"{name} takes `models:` or `slices:`; `modules:` sections are not supported")
    base = config.base_model
    entries = [(entry.model, entry.parameters, "model") for entry in config.models or []]
    for k, out_slice in enumerate(config.slices or []):
        if out_slice.base_model is not None and out_slice.base_model != base:
            raise MergeInputError(
                f"slice {k} sets base_model {out_slice.base_model}; {name} takes one base_model for "
                "the whole recipe (set it at the top level)")
        entries += [(source.model, source.parameters, "source") for source in out_slice.sources]
    models = list(dict.fromkeys(model for model, _, _ in entries))
    if method.roles:
        first, second = method.roles
        if base is None:
            raise MergeInputError(f"{name} needs `base_model:` set to the {first} checkpoint")
        others = [m for m in models if m != base]
        if len(others) != 1:
            raise MergeInputError(
                f"{name} needs exactly one model besides base_model (the {second} checkpoint); "
                + (f"this recipe lists {len(others)}: {[str(m) for m in others]}" if others else
                   "its `models:` list holds only base_model itself"))
        inputs = [(first, base), (second, others[0])]
    else:
        if base is not None and base not in models:
            models.insert(0, base)
        minimum = method.spec.contract.min_inputs
        if len(models) < minimum:
            raise MergeInputError(f"{name} needs at least {minimum} models, got {len(models)}")
        inputs = [("base" if m == base else "input", m) for m in models]
        inputs.sort(key=lambda pair: pair[0] != "base")
    known = {p.name for p in method.spec.parameters}
    for model, params, what in entries:
        misplaced = sorted(set(params or {}) - _input_scoped(method, model == base))
        if misplaced:
            raise MergeInputError(
                f"per-{what} parameters ({misplaced} on {model}) are ignored by {name}; put them "
                "under the top-level `parameters:`" + (" (or the slice's)" if config.slices else ""))
    for where, params in [("", config.parameters)] + [(f" in slice {k}", s.parameters)
                                                      for k, s in enumerate(config.slices or [])]:
        unknown = sorted(set(params or {}) - known)
        if unknown:
            raise MergeInputError(f"unknown parameter(s) for {name}{where}: {', '.join(unknown)}"
                                  f"{did_you_mean(unknown[0], known)}; "
                                  f"known: {', '.join(sorted(known))}")
    for parameter in method.spec.parameters:
        if parameter.required and not _is_set(parameter.name, config):
            raise MergeInputError(f"{name} needs `parameters: {{{parameter.name}: <value>}}`")
    method.check_recipe(config)
    return inputs


def _is_set(parameter: str, config: MergeConfiguration) -> bool:
    """True if every tensor can resolve ``parameter`` from some level of the recipe."""
    if parameter in (config.parameters or {}):
        return True
    if config.slices:
        return all(parameter in (s.parameters or {})
                   or any(parameter in (src.parameters or {}) for src in s.sources) for s in config.slices)
    return any(parameter in (m.parameters or {}) for m in config.models or [])


def check_slices(method: ElementwiseMethod, config: MergeConfiguration, models: List[ModelReference],
                 num_layers: int) -> None:
    """A ``slices:`` recipe must mean the merge of the inputs layer by layer: every slice
    takes the same layers from each input once, and the slices cover every decoder layer
    once, in order. Anything else (layer stacking, unequal ranges, dropped layers) builds
    a different model and is refused with the reason."""
    name = method.spec.name
    roles = " and ".join(method.roles) if method.roles else "the models"
    expected = 0
    for k, out_slice in enumerate(config.slices or []):
        refs = [source.model for source in out_slice.sources]
        if len(refs) != len(models) or set(refs) != set(models):
            raise MergeInputError(
                f"slice {k} takes layers from {[str(m) for m in refs]}; every slice of a {name} recipe "
                f"takes the same layers from each of {roles}, once")
        ranges = sorted({tuple(source.layer_range) for source in out_slice.sources})
        if len(ranges) != 1:
            raise MergeInputError(
                f"slice {k}: the sources' layer ranges differ ({', '.join(str(list(r)) for r in ranges)}); "
                f"{name} merges each layer with the same layer of the other model")
        start, end = ranges[0]
        if start != expected:
            raise MergeInputError(
                f"slice {k} starts at layer {start}, not {expected}: slices that repeat, skip or reorder "
                f"layers (layer stacking) build a different model, not a {name} of {roles}")
        expected = end
    if config.slices and expected != num_layers:
        raise MergeInputError(
            f"the slices end at layer {expected} but the models have {num_layers} decoder layers: a "
            f"{name} output keeps every layer (choose the interpolated layers with parameters instead)")


#: any one of these makes a folder's tokenizer loadable
TOKENIZER_MAIN_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_tokenizer_files(tokenizer_donor: ModelReference, role: str) -> None:
    """The output takes its tokenizer from ``tokenizer_donor``: refuse a local one without one."""
    folder = tokenizer_donor.model.path
    if os.path.isdir(folder) and not any(
        os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_MAIN_FILES
    ):
        raise CheckpointFileError(
            f"the output's tokenizer comes from the {role.capitalize()} model, which has no "
            f"tokenizer files ({', '.join(TOKENIZER_MAIN_FILES)}) — add them, set "
            "template_from, or pass --no-copy-tokenizer", path=folder)


def _text_config(model: ModelReference, options: MergeOptions):
    config = model_config(model, options)
    return config, getattr(config, "text_config", None) or config


def build_plan(config: MergeConfiguration, options: Optional[MergeOptions] = None):
    """Check a recipe against its checkpoints and resolve every tensor's setting.

    Returns ``(plan, architecture)``; raises :class:`MergeInputError` on bad input.
    """
    from mi_mergekit.mergekit_compat import planned_tensors

    options = options or MergeOptions()
    method = method_of(config)
    inputs = recipe_models(method, config)
    models = [model for _, model in inputs]
    labels = [role if method.roles else str(model) for role, model in inputs]

    configs = [_text_config(m, options) for m in models]
    first_cfg, first_text = configs[0]
    for label, (cfg, text) in zip(labels[1:], configs[1:]):
        if cfg.architectures != first_cfg.architectures:
            raise MergeInputError(
                f"architectures differ: {labels[0]} {first_cfg.architectures} vs {label} {cfg.architectures}")
        if text.num_hidden_layers != first_text.num_hidden_layers:
            raise MergeInputError(
                f"layer counts differ: {labels[0]} has {first_text.num_hidden_layers} decoder layers, "
                f"{label} has {text.num_hidden_layers}")
    num_layers = int(first_text.num_hidden_layers)
    check_slices(method, config, models, num_layers)

    tokenizer_donor = method.tokenizer_donor(config)
    rebuilt = bool(config.tokenizer_source or config.tokenizer or config.chat_template)
    if tokenizer_donor is not None and options.copy_tokenizer and not rebuilt:
        check_tokenizer_files(tokenizer_donor[1], tokenizer_donor[0])

    first_index = CheckpointIndex.read(models[0], options)
    for label, model in zip(labels[1:], models[1:]):
        compare_indexes(first_index, CheckpointIndex.read(model, options), (labels[0], label))
    layout = layout_of(models[0], options, names=list(first_index.shapes), config=first_cfg)
    if method.checkpoint_layout:
        arch = checkpoint_architecture(layout)
    else:
        from mergekit.architecture import get_architecture_info

        arch = get_architecture_info(config, options)

    plan = MergePlan(
        method=method.spec.name,
        inputs=[(role, str(model)) for role, model in inputs],
        num_layers=num_layers,
        architecture=layout.architecture,
        layers_from=layout.source,
        template_from=tokenizer_donor[0] if tokenizer_donor else None,
        tokenizer_donor=str(tokenizer_donor[1]) if tokenizer_donor else None,
        value_name=method.value_name,
        value_label=method.value_label,
    )
    # Resolve parameters exactly as the merge will (mergekit's own planner).
    for planned in planned_tensors(config, arch, options, first_cfg):
        tensor = method.resolved(planned.name, planned.models, planned.base, planned.shared, planned.per_input)
        try:
            setting = method.setting(tensor)
            fields = method.plan_fields(tensor, setting)
        except PlacementError:
            raise  # about the whole checkpoint, not this tensor
        except MiMergekitError as exc:
            raise type(exc)(f"{exc.message} (while planning {planned.name})", path=exc.path) from None
        placed = layout.placements.get(planned.name)
        plan.tensors.append(TensorPlan(
            name=planned.name, part=(placed and placed.part) or "other", layer=placed and placed.layer,
            computed=not method.keeps_base(setting), value=method.plan_value(setting), setting=setting,
            fields=fields, side=placed and placed.side, parameters=_elements(first_index.shapes.get(planned.name))))
    if method.checkpoint_layout:  # nothing dropped, nothing invented: refuse before writing otherwise
        planned_names = {t.name for t in plan.tensors}
        lost, extra = sorted(set(first_index.shapes) - planned_names), sorted(planned_names - set(first_index.shapes))
        if lost or extra:
            raise MergeInputError(
                f"the plan would drop {len(lost)} and add {len(extra)} of the {labels[0]} checkpoint's tensors "
                f"({', '.join((lost + extra)[:5])}); this is a bug in mi-mergekit's placement, please report it")
    if not any(t.computed for t in plan.tensors):
        plan.warnings.append(f"no tensor is interpolated: the output equals the {labels[0]} model")
    plan.warnings += method.plan_warnings([t.setting for t in plan.tensors])
    plan.warnings += method.layout_warnings(layout)
    return plan, arch
