"""Model interpolation (MI): Θ(λ) = Θ_I + λ·(Θ_T − Θ_I).

Wu et al., "Revisiting Model Interpolation for Efficient Reasoning" (arXiv 2510.10977).
``base_model`` is the Instruct checkpoint (λ = 0), the one other model is the Thinking
checkpoint (λ = 1). The merge is computed in float32 and returned in the input dtype;
λ outside [0, 1] extrapolates (allowed, said once); λ beyond [-1, 2] — almost surely a
percentage or a typo — is refused unless the recipe sets ``extrapolate: true``.

The layer window and module selection of the paper are parameters of the same
method: tensors that the :class:`~mi_mergekit.merge.selection.Selection` does not select
are returned unchanged, i.e. bit for bit the Instruct tensor.

``lambda`` is set under the top-level ``parameters:``, a slice's ``parameters:`` or the
Thinking model's (source's) ``parameters:``, with mergekit's filters and gradients; the
other parameters are shared (top level or per slice).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence

import torch

from mergekit.merge_methods.base import (
    BasePolicy,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
)
from mi_mergekit.errors import MergeInputError, did_you_mean
from mi_mergekit.merge.checks import check_lambda, extrapolation_note, implausible_lambda
from mi_mergekit.merge.kernel import compute_dtype, interpolate, interpolate_from_delta, task_vector
from mi_mergekit.merge.method import ElementwiseMethod, ResolvedTensor, parameter_values
from mi_mergekit.merge.placement import ModelLayout, known_layout
from mi_mergekit.merge.selection import Selection, parse_modules

#: Parameters a recipe may set: ``lambda`` per model (the Thinking side), per slice or at
#: the top level; the rest shared (top level or per slice).
PARAMETERS = (
    ParameterSpec(
        "lambda", float, ParameterScope.NON_BASE,
        description="Interpolation weight λ: 0 = Instruct (base_model), 1 = Thinking.",
    ),
    ParameterSpec(
        "layer_start", int, ParameterScope.SHARED, default=0,
        description="First decoder layer interpolated (0-based, inclusive; negative counts from the end).",
    ),
    ParameterSpec(
        "layer_end", int, ParameterScope.SHARED, default=-1,
        description="Last decoder layer interpolated (0-based, inclusive; -1 = last layer).",
    ),
    ParameterSpec(
        "modules", str, ParameterScope.SHARED, default="all",
        description="Module groups/parts interpolated (comma separated), e.g. 'attention'.",
    ),
    ParameterSpec(
        "exclude_modules", str, ParameterScope.SHARED, default="",
        description="Module groups/parts kept at Instruct weights, e.g. 'mlp'.",
    ),
    ParameterSpec(
        "embed_layer", int, ParameterScope.SHARED, default=0,
        description="Depth at which embed_tokens (and a tied lm_head) counts for the window.",
    ),
    ParameterSpec(
        "final_norm_layer", int, ParameterScope.SHARED, default=-1,
        description="Depth at which the final norm counts for the window (-1 = last layer).",
    ),
    ParameterSpec(
        "lm_head_layer", int, ParameterScope.SHARED, default=-1,
        description="Depth at which an untied lm_head counts for the window (-1 = last layer).",
    ),
    ParameterSpec(
        "num_layers", int, ParameterScope.SHARED, default=0,
        description="Decoder layer count; 0 = read num_hidden_layers from the models' config.",
    ),
    ParameterSpec(
        "template_from", str, ParameterScope.SHARED, default="thinking",
        description="Whose tokenizer, chat template and generation_config the output carries: 'thinking' or 'instruct'.",
    ),
    ParameterSpec(
        "extrapolate", bool, ParameterScope.SHARED, default=False,
        description="Allow λ beyond [-1, 2]; without it such a λ is refused as a likely percentage or typo.",
    ),
)

SELECTION_PARAMETERS = (
    "layer_start",
    "layer_end",
    "modules",
    "exclude_modules",
    "embed_layer",
    "final_norm_layer",
    "lm_head_layer",
)
TEMPLATE_SOURCES = ("thinking", "instruct")


def layout_for(tensor: ResolvedTensor) -> ModelLayout:
    """Where the Instruct checkpoint's tensors sit (:mod:`mi_mergekit.merge.placement`): the
    layout the plan computed, else computed now from the model's files."""
    instruct = tensor.inputs[0]
    if not callable(getattr(instruct, "config", None)):
        raise MergeInputError(
            "model_interpolation places tensors by the Instruct model's architecture: call it with "
            "mergekit ModelReference inputs (through mergekit's planner)")
    return known_layout(instruct)


@lru_cache(maxsize=256)
def _selection(num_layers: int, **parameters: Any) -> Selection:
    return Selection(num_layers=num_layers, **parameters)


def selection_for(tensor: ResolvedTensor) -> Selection:
    """The Selection for this tensor's resolved parameters (cached across tensors), checked
    once against the checkpoint's layout: a window or module selection that needs what the
    architecture does not say is refused with every such tensor named."""
    layout = layout_for(tensor)
    num_layers = tensor.shared["num_layers"] or layout.num_layers
    selection = _selection(num_layers, **{key: tensor.shared[key] for key in SELECTION_PARAMETERS})
    if selection not in layout.checked:
        selection.check(layout)
        layout.checked.add(selection)
    return selection


class ModelInterpolation(ElementwiseMethod):
    """``merge_method: model_interpolation`` — whole model, layer window, module groups."""

    spec = MergeMethodSpec(
        name="model_interpolation",
        pretty_name="Model Interpolation",
        reference_url="https://arxiv.org/abs/2510.10977",
        parameters=PARAMETERS,
        contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2, max_inputs=2),
    )
    roles = ("Instruct", "Thinking")
    value_name = "lambda"
    value_label = "λ"
    sweep_parameter = "lambda"

    def setting(self, tensor: ResolvedTensor) -> Optional[float]:
        """λ where the tensor is interpolated, None where it keeps the Instruct tensor."""
        lam = float(tensor.per_input[1]["lambda"])
        check_lambda(lam)
        return lam if selection_for(tensor).selects(layout_for(tensor)[tensor.name]) else None

    def keeps_base(self, setting) -> bool:
        return setting is None

    def compute(self, inputs, setting, state=None, out=None) -> torch.Tensor:
        instruct, thinking = inputs
        if state is not None:  # Θ_T − Θ_I, shared by the λ of a sweep
            return interpolate_from_delta(instruct, state, setting, out_dtype=instruct.dtype, out=out,
                                          thinking=thinking)
        return interpolate(instruct, thinking, setting, out_dtype=instruct.dtype, out=out)

    def shared_state(self, inputs, settings, workspace=None):
        if sum(s is not None for s in settings) < 2:
            return None
        instruct, thinking = inputs
        scratch = None if workspace is None else workspace(instruct.numel(), compute_dtype(instruct.dtype), instruct)
        return task_vector(instruct, thinking, out=scratch)

    def plan_value(self, setting) -> float:
        return 0.0 if setting is None else setting

    def plan_fields(self, tensor: ResolvedTensor, setting) -> Dict[str, Any]:
        return {"depth": selection_for(tensor).depth(layout_for(tensor)[tensor.name])}

    def plan_warnings(self, settings: Sequence[Optional[float]]) -> List[str]:
        note = extrapolation_note(settings)
        return [note] if note else []

    def layout_warnings(self, layout) -> List[str]:
        warnings = []
        for selection in sorted(layout.checked, key=repr):
            unmatched = selection.unmatched(layout)
            if unmatched:
                names = ", ".join(repr(n) for n in unmatched)
                warnings.append(f"{names} select{'s' if len(unmatched) == 1 else ''} no tensor of this "
                                f"{layout.architecture} checkpoint")
        return warnings

    def check_recipe(self, config) -> None:
        """Types of every value, the tokenizer donor, module names and λ, each named by its
        key path, before any tensor is planned."""
        super().check_recipe(config)
        self.tokenizer_donor(config)
        for name in ("modules", "exclude_modules"):
            for path, value in parameter_values(config, name):
                parse_modules(str(value), what=path)
        for where, params in (("parameters", config.parameters or {}),
                              *((f"slices[{k}].parameters", s.parameters or {}) for k, s in enumerate(config.slices or []))):
            start, end = params.get("layer_start"), params.get("layer_end")
            if isinstance(start, int) and isinstance(end, int) and 0 <= end < start:
                raise MergeInputError(f"{where}: layer_start={start} > layer_end={end} is an empty layer window "
                                      "(bounds are 0-based and inclusive)")
        if any(value is True for _, value in parameter_values(config, "extrapolate")):
            return
        for path, value in parameter_values(config, "lambda"):
            why = implausible_lambda(float(value))
            if why:
                raise MergeInputError(f"{path}: {why} To extrapolate this far on purpose, add `extrapolate: true` "
                                      "under the recipe's parameters.")

    def tokenizer_donor(self, config):
        from mergekit.config import evaluate_setting

        params = config.parameters or {}
        template_from = "thinking"
        if "template_from" in params:
            template_from = evaluate_setting("", params["template_from"], validate=str)
            if template_from not in TEMPLATE_SOURCES:
                raise MergeInputError(
                    f"parameters.template_from: {template_from!r} is not one of {', '.join(TEMPLATE_SOURCES)}"
                    f"{did_you_mean(template_from, TEMPLATE_SOURCES)}")
        base = config.base_model
        if template_from == "instruct":
            return template_from, base
        others = [m for m in config.referenced_models() if m != base]
        return template_from, others[0] if others else base


model_interpolation = ModelInterpolation()
