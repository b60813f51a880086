"""N-way interpolation: Θ = Σᵢ wᵢ·Θᵢ over the simplex of three (or more) checkpoints.

The paper's open question — Base + Instruct + Thinking at once — as a mergekit
merge method, ``merge_method: nway_interpolation``::

    merge_method: nway_interpolation
    base_model: Qwen/Qwen3-4B-Instruct-2507        # optional: config/tokenizer donor
    models:
      - model: Qwen/Qwen3-4B-Base
        parameters: {weight: 0.2}
      - model: Qwen/Qwen3-4B-Instruct-2507
        parameters: {weight: 0.3}
      - model: Qwen/Qwen3-4B-Thinking-2507
        parameters: {weight: 0.5}
    dtype: bfloat16

Semantics (fixed here):

- Every input carries a ``weight`` (per model; mergekit's filter/gradient syntax
  works, so weights may vary by tensor). The weights of a tensor must sum to 1
  (within 1e-6); otherwise the merge fails with an error naming the tensor and
  the sum. ``normalize: true`` instead divides the weights by their sum
  (which must not be 0) — then they are affine weights, not an error.
- Weights may be negative or above 1 (extrapolation off the simplex); that is
  allowed and logged once, like λ outside [0, 1] in ``model_interpolation``.
- Computed in float32 (float64 inputs stay float64), summed in input order,
  rounded once to the output dtype. Inputs with weight exactly 0 are skipped,
  so at a vertex of the simplex (one weight 1, the rest 0) the output is that
  model's tensor bit for bit. Agrees with stock ``linear`` to float32 rounding.
- With two models and weights (1−λ, λ) this is model interpolation written as
  a weighted sum (equal to ``model_interpolation`` up to float32 rounding).
- NaN/inf in an input or the result is an error.

It is registered in mergekit's registry (``METHODS``) but deliberately *not* in
``mi_mergekit.METHOD_NAMES``: the run_merge wrapper's pre-flight plan is the
two-model, λ-parameterised plan of ``model_interpolation`` (Instruct/Thinking
roles, windows, module groups) and would reject any other recipe. N-way merges
therefore run through unmodified mergekit: its standard architecture tables,
its output folder handling and the base model's (or first model's) tokenizer.
"""

from __future__ import annotations

import logging
import math
from typing import Any, List

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
from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.checks import all_finite, check_finite
from mi_mergekit.merge.kernel import weighted_sum

LOG = logging.getLogger(__name__)

METHOD_NAME = "nway_interpolation"
#: |Σ w − 1| allowed without ``normalize: true``
SUM_TOLERANCE = 1e-6

_warned: set = set()


def simplex_weights(weights: List[float], normalize: bool, name: str = "") -> List[float]:
    """Validate (and optionally normalise) the per-input weights of one tensor."""
    for w in weights:
        if not math.isfinite(w):
            raise MergeInputError(f"{METHOD_NAME}: weight {w} of {name!r} is not finite")
    total = math.fsum(weights)
    if normalize:
        if total == 0:
            raise MergeInputError(f"{METHOD_NAME}: weights of {name!r} sum to 0; cannot normalize")
        weights = [w / total for w in weights]
    elif abs(total - 1.0) > SUM_TOLERANCE:
        raise MergeInputError(
            f"{METHOD_NAME}: the weights of {name!r} sum to {total:.9g}, not 1 "
            f"({weights}); fix them or set `normalize: true` to divide by their sum"
        )
    key = tuple(weights)
    if any(w < 0 or w > 1 for w in weights) and key not in _warned:
        _warned.add(key)
        LOG.warning("%s weights %s leave the simplex (extrapolation)", METHOD_NAME, weights)
    return weights


class NWayInterpolationMerge(GroupMergeMethod):
    """``merge_method: nway_interpolation`` — Σ wᵢ Θᵢ with Σ wᵢ = 1."""

    spec = MergeMethodSpec(
        name=METHOD_NAME,
        pretty_name="N-way Model Interpolation",
        reference_url="https://arxiv.org/abs/2510.10977",
        parameters=(
            ParameterSpec("weight", float, ParameterScope.INPUT,
                          description="Simplex weight of this model (weights sum to 1)."),
            ParameterSpec("normalize", bool, ParameterScope.SHARED, default=False,
                          description="Divide the weights by their sum instead of requiring sum 1."),
        ),
        contract=InputContract(base=BasePolicy.OPTIONAL, min_inputs=2),
    )

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        name = group.metadata.name
        tensors = [entry.tensor for entry in group.entries]
        per_input = parameters["weight"]
        weights = simplex_weights([float(per_input[e.id]) for e in group.entries],
                                  parameters["normalize"], name or "")
        if not all(t.is_floating_point() for t in tensors):
            raise MergeInputError(f"{METHOD_NAME} needs floating-point tensors ({name})")
        merged = weighted_sum(tensors, weights)
        if not all_finite(merged):
            check_finite(name, **{f"input {i}": t for i, t in enumerate(tensors)})
            check_finite(name, merged=merged)
        return merged.to(tensors[0].dtype)


nway_interpolation = NWayInterpolationMerge()


def check_nway(config, options) -> None:
    """Pre-flight of an nway_interpolation recipe, before anything is written.

    Every input must load, share the architecture, layer count, tensor names and
    shapes of the first, and every tensor's resolved weights must pass
    :func:`simplex_weights` — a bad weight sum fails here, not at some tensor
    halfway through the output.
    """
    from mergekit.architecture import get_architecture_info
    from mi_mergekit.merge.layout import CheckpointIndex, compare_indexes, model_config
    from mi_mergekit.mergekit_compat import planned_saves

    if config.slices or config.modules:
        raise MergeInputError(f"{METHOD_NAME} takes `models:`; slices/modules are not supported")
    models = config.referenced_models()
    if len(models) < 2:
        raise MergeInputError(f"{METHOD_NAME} needs at least two models, got {len(models)}")
    configs = [model_config(m, options) for m in models]
    first, first_cfg = models[0], configs[0]
    first_index = CheckpointIndex.read(first, options)
    for model, cfg in zip(models[1:], configs[1:]):
        if cfg.architectures != first_cfg.architectures:
            raise MergeInputError(
                f"architectures differ: {first} is {first_cfg.architectures}, "
                f"{model} is {cfg.architectures}")
        layers = (getattr(first_cfg, "num_hidden_layers", None), getattr(cfg, "num_hidden_layers", None))
        if layers[0] != layers[1]:
            raise MergeInputError(
                f"layer counts differ: {first} has {layers[0]} decoder layers, {model} has {layers[1]}")
        compare_indexes(first_index, CheckpointIndex.read(model, options), (str(first), str(model)))

    arch = get_architecture_info(config, options)
    # every tensor's parameters, resolved exactly as the merge will
    for save in planned_saves(config, arch, options, first_cfg):
        resolved_weights(save.tensor_task, save.tensor_name)


def resolved_weights(task, name: str) -> List[float]:
    """The validated per-input weights of one planned tensor task, in model order."""
    per_input = task.input_parameters
    weights = []
    for model in task.model_order:
        value = per_input[model]["weight"] if model in per_input else None
        if value is None:
            raise MergeInputError(f"{METHOD_NAME}: model {model} has no `weight` for {name!r}")
        weights.append(float(value))
    return simplex_weights(weights, bool(task.parameters["normalize"]), name)


def stream_nway(config, folder: str, options, source: str, name: str) -> bool:
    """Write an nway merge with the streaming engine (False: mergekit's engine must)."""
    from mergekit.architecture import get_architecture_info

    from mi_mergekit import mergekit_compat
    from mi_mergekit.merge.engine import NotStreamable, Output, engine_name, write_weights

    if engine_name() != "stream":
        return False
    arch = get_architecture_info(config, options)
    out_config = mergekit_compat.output_config(config, arch, options)
    donor = config.base_model or config.referenced_models()[0]
    try:
        write_weights(config, arch, [Output(folder)], options, out_config=out_config,
                      donor=donor, nway_weights=resolved_weights)
    except NotStreamable as why:
        LOG.info("running mergekit's executor: the streaming engine does not do this merge (%s)", why)
        return False
    mergekit_compat.write_model_files(config, arch, out_config, folder, options, source, name, log=LOG)
    return True
