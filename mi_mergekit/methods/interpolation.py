"""Model interpolation (MI): Θ(λ) = Θ_I + λ·(Θ_T − Θ_I).

Wu et al., "Revisiting Model Interpolation for Efficient Reasoning" (arXiv 2510.10977).
``base_model`` is the Instruct checkpoint (λ = 0), the one other model is the Thinking
checkpoint (λ = 1). The merge is computed in float32 and returned in the input dtype;
λ outside [0, 1] extrapolates (allowed, logged once).

The layer window and module selection of the paper are parameters of the same
method: tensors that the :class:`~mi_mergekit.merge.selection.Selection` does not select
are returned unchanged, i.e. bit for bit the Instruct tensor.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

import torch

from mergekit.merge_methods.base import (
    BasePolicy,
    GroupMergeMethod,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
    TensorGroup,
)
from mi_mergekit.merge.checks import all_finite, check_finite, check_lambda
from mi_mergekit.merge.kernel import interpolate
from mi_mergekit.merge.selection import Selection

METHOD_NAME = "model_interpolation"

#: Parameters a recipe may set under ``parameters:`` (all shared, i.e. not per model).
PARAMETERS = (
    ParameterSpec(
        "lambda", float, ParameterScope.SHARED,
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


@lru_cache(maxsize=None)
def _num_layers_of(model: Any) -> Optional[int]:
    """Decoder layer count of a mergekit ModelReference (None for other input IDs)."""
    config_of = getattr(model, "config", None)
    if not callable(config_of):
        return None
    config = config_of(trust_remote_code=False)
    config = getattr(config, "text_config", None) or config
    return int(config.num_hidden_layers)


@lru_cache(maxsize=256)
def _selection(num_layers: int, **parameters: Any) -> Selection:
    return Selection(num_layers=num_layers, **parameters)


def selection_for(group: TensorGroup, parameters: dict) -> Selection:
    """The Selection for this tensor's resolved parameters (cached across tensors)."""
    num_layers = parameters["num_layers"]
    if not num_layers:
        counts = {_num_layers_of(entry.id) for entry in group.entries}
        counts.discard(None)
        if len(counts) != 1:
            raise ValueError(
                "model_interpolation needs the decoder layer count: set the "
                "'num_layers' parameter when calling it outside mergekit's planner"
                if not counts
                else f"models have different numbers of layers: {sorted(counts)}"
            )
        (num_layers,) = counts
    return _selection(num_layers, **{key: parameters[key] for key in SELECTION_PARAMETERS})


class ModelInterpolationMerge(GroupMergeMethod):
    """``merge_method: model_interpolation`` — whole model, layer window, module groups."""

    spec = MergeMethodSpec(
        name=METHOD_NAME,
        pretty_name="Model Interpolation",
        reference_url="https://arxiv.org/abs/2510.10977",
        parameters=PARAMETERS,
        contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2, max_inputs=2),
    )

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        instruct = group.base.tensor
        (thinking,) = (entry.tensor for entry in group.non_base)
        name = group.metadata.name
        lam = parameters["lambda"]
        check_lambda(lam)

        if not selection_for(group, parameters).selects(name):
            check_finite(name, Instruct=instruct, Thinking=thinking)
            return instruct  # kept bit for bit

        merged = interpolate(instruct, thinking, lam, out_dtype=instruct.dtype)
        if not all_finite(merged):
            check_finite(name, Instruct=instruct, Thinking=thinking)
            check_finite(name, merged=merged)
        return merged


model_interpolation = ModelInterpolationMerge()
