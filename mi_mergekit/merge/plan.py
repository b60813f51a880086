"""Pre-flight checks and the resolved per-tensor λ plan of a model_interpolation merge.

The plan is resolved by mergekit's own planner (same parameter filters, gradients
and defaults as the real merge) over the checkpoint-layout architecture, then each
tensor's parameters go through the same :class:`~mi_mergekit.merge.selection.Selection`
the kernel uses. What ``mi-mergekit plan`` prints is what the merge does.

Every check here runs before mergekit creates the output folder, so bad input
never leaves anything behind.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration, evaluate_setting
from mergekit.options import MergeOptions

from mi_mergekit.errors import CheckpointFileError, MergeInputError, SelectionError
from mi_mergekit.merge.layout import (
    CheckpointIndex,
    checkpoint_architecture,
    compare_indexes,
    model_config,
)
from mi_mergekit.merge.checks import check_lambda
from mi_mergekit.methods.interpolation import METHOD_NAME, PARAMETERS, SELECTION_PARAMETERS
from mi_mergekit.merge.selection import PARTS, Selection, classify

LOG = logging.getLogger(__name__)

TEMPLATE_SOURCES = ("thinking", "instruct")
_KNOWN = {p.name for p in PARAMETERS}


@dataclass
class TensorPlan:
    name: str
    part: str
    depth: int
    layer: Optional[int]
    interpolated: bool
    lam: float  # effective λ: the configured value if interpolated, else 0.0


@dataclass
class MergePlan:
    method: str
    instruct: str
    thinking: str
    num_layers: int
    architecture: str
    template_from: str
    lam: Optional[float]  # the top-level λ when it is a plain number
    tensors: List[TensorPlan] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["lambda"] = data.pop("lam")
        data["tensors"] = [
            {**{k: v for k, v in t.items() if k != "lam"}, "lambda": t["lam"]}
            for t in data["tensors"]
        ]
        data["whole_model"] = self.whole_model
        data["summary"] = self.grid()
        return data

    @property
    def whole_model(self) -> bool:
        """True when every tensor is interpolated with one λ (no window, no module selection)."""
        return all(t.interpolated for t in self.tensors) and len({t.lam for t in self.tensors}) == 1

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.write("\n")

    def grid(self) -> Dict[str, Dict[str, Any]]:
        """λ per row (decoder layer or non-layer tensor) × module part."""
        cells: Dict[str, Dict[str, set]] = {}
        for tensor in self.tensors:
            row = str(tensor.layer) if tensor.layer is not None else tensor.part
            cells.setdefault(row, {}).setdefault(tensor.part, set()).add(tensor.lam)
        return {
            row: {part: (min(v) if len(v) == 1 else sorted(v)) for part, v in parts.items()}
            for row, parts in cells.items()
        }

    def table(self) -> str:
        """Human-readable grid; consecutive identical layers are folded together."""
        present = [p for p in PARTS if any(t.part == p for t in self.tensors)]
        layer_parts = [p for p in present if p not in ("embed_tokens", "final_norm", "lm_head")]
        grid = self.grid()

        def cell(value) -> str:
            if value is None:
                return "-"
            if isinstance(value, list):
                return "/".join(f"{v:g}" for v in value)
            return f"{value:g}"

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
        lines = [
            f"model_interpolation: Instruct={self.instruct}  Thinking={self.thinking}",
            f"{self.architecture}, {self.num_layers} decoder layers, "
            f"{len(self.tensors)} tensors, {sum(t.interpolated for t in self.tensors)} interpolated;"
            f" λ shown per tensor group (0 = kept at Instruct weights)",
            fmt.format(*header),
        ]
        lines += [fmt.format(*r) for r in rows]
        for part in ("embed_tokens", "final_norm", "lm_head"):
            if part in grid:
                lines.append(f"{part}: λ={cell(grid[part][part])}")
        if "lm_head" not in grid:
            lines.append("lm_head: tied to embed_tokens (no tensor of its own)")
        lines.append(f"tokenizer / chat template / generation_config from: {self.template_from}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def split_models(config: MergeConfiguration) -> Tuple[ModelReference, ModelReference]:
    """(Instruct, Thinking) from a recipe, or a MergeInputError saying what is wrong."""
    if config.slices or config.modules:
        raise MergeInputError(
            f"{METHOD_NAME} takes `models:` and `base_model:`; slices/modules are not "
            "supported — select layers with the layer_start / layer_end parameters"
        )
    if config.base_model is None:
        raise MergeInputError(
            f"{METHOD_NAME} needs `base_model:` set to the Instruct checkpoint (the λ=0 end)"
        )
    others = [m for m in (config.models or []) if m.model != config.base_model]
    if len(others) != 1:
        raise MergeInputError(
            f"{METHOD_NAME} needs exactly one model besides base_model (the Thinking "
            f"checkpoint, the λ=1 end); this recipe lists {len(others)}: "
            f"{[str(m.model) for m in others]}"
        )
    for entry in config.models or []:
        if entry.parameters:
            raise MergeInputError(
                f"per-model parameters ({sorted(entry.parameters)} on {entry.model}) are "
                f"ignored by {METHOD_NAME}; put them under the top-level `parameters:`"
            )
    return config.base_model, others[0].model


def check_parameters(config: MergeConfiguration) -> str:
    """Reject unknown or malformed top-level parameters; return ``template_from``."""
    params = config.parameters or {}
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise MergeInputError(
            f"unknown parameter(s) for {METHOD_NAME}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    if "lambda" not in params:
        raise MergeInputError(f"{METHOD_NAME} needs `parameters: {{lambda: <float>}}`")
    template_from = "thinking"
    if "template_from" in params:
        template_from = evaluate_setting("", params["template_from"], validate=str)
        if template_from not in TEMPLATE_SOURCES:
            raise MergeInputError(
                f"template_from must be one of {TEMPLATE_SOURCES}, got {template_from!r}"
            )
    return template_from


#: any one of these makes a folder's tokenizer loadable
TOKENIZER_MAIN_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_tokenizer_files(donor: ModelReference, role: str) -> None:
    """The output takes its tokenizer from ``donor``: refuse a local donor without one."""
    folder = donor.model.path
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
    """Check a recipe against its checkpoints and resolve λ for every tensor.

    Returns ``(plan, architecture)``; raises :class:`MergeInputError` on bad input.
    """
    from mi_mergekit.mergekit_compat import planned_saves
    from mi_mergekit.methods import register_all

    register_all()
    options = options or MergeOptions()
    if config.merge_method != METHOD_NAME:
        raise MergeInputError(f"not a {METHOD_NAME} recipe (merge_method: {config.merge_method})")
    instruct, thinking = split_models(config)
    template_from = check_parameters(config)

    (cfg_i, text_i), (cfg_t, text_t) = (_text_config(m, options) for m in (instruct, thinking))
    if cfg_i.architectures != cfg_t.architectures:
        raise MergeInputError(
            f"architectures differ: Instruct {cfg_i.architectures} vs Thinking {cfg_t.architectures}"
        )
    if text_i.num_hidden_layers != text_t.num_hidden_layers:
        raise MergeInputError(
            f"layer counts differ: Instruct has {text_i.num_hidden_layers} decoder layers, "
            f"Thinking has {text_t.num_hidden_layers}"
        )
    num_layers = int(text_i.num_hidden_layers)

    donor = thinking if template_from == "thinking" else instruct
    rebuilt = bool(config.tokenizer_source or config.tokenizer or config.chat_template)
    if options.copy_tokenizer and not rebuilt:
        check_tokenizer_files(donor, template_from)

    index_i = CheckpointIndex.read(instruct, options)
    compare_indexes(index_i, CheckpointIndex.read(thinking, options))
    arch = checkpoint_architecture(
        index_i, num_layers, list(cfg_i.architectures or []), cfg_i.model_type
    )

    # Resolve parameters exactly as the merge will (mergekit's own planner).
    saves = planned_saves(config, arch, options, cfg_i)

    lam_setting = (config.parameters or {}).get("lambda")
    plan = MergePlan(
        method=METHOD_NAME,
        instruct=str(instruct),
        thinking=str(thinking),
        num_layers=num_layers,
        architecture=(cfg_i.architectures or [cfg_i.model_type])[0],
        template_from=template_from,
        lam=float(lam_setting) if isinstance(lam_setting, (int, float)) else None,
    )
    for save in saves:
        name = save.tensor_name
        params = dict(save.tensor_task.parameters.items())
        lam = params["lambda"]
        check_lambda(lam)
        try:
            selection = Selection(
                num_layers=params["num_layers"] or num_layers,
                **{k: params[k] for k in SELECTION_PARAMETERS},
            )
            tensor = classify(name)
            interpolated = selection.selects(name)
        except SelectionError as exc:
            raise MergeInputError(f"{exc} (while planning {name})") from None
        plan.tensors.append(
            TensorPlan(
                name=name,
                part=tensor.part,
                depth=selection.depth(tensor),
                layer=tensor.layer,
                interpolated=interpolated,
                lam=float(lam) if interpolated else 0.0,
            )
        )
    lams = {t.lam for t in plan.tensors if t.interpolated}
    if not lams:
        plan.warnings.append("no tensor is interpolated: the output equals the Instruct model")
    if any(not 0.0 <= v <= 1.0 for v in lams):
        plan.warnings.append(f"λ outside [0, 1] (extrapolation): {sorted(lams)}")
    return plan, arch
