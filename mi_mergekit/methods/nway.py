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
  (within 1e-6); otherwise the merge fails before anything is written, with an
  error naming the tensor and the sum. ``normalize: true`` instead divides the
  weights by their sum (which must not be 0) — then they are affine weights.
- Weights may be negative or above 1 (extrapolation off the simplex); that is
  allowed and logged once, like λ outside [0, 1] in ``model_interpolation``.
- Computed in float32 (float64 inputs stay float64), summed in input order,
  rounded once to the inputs' dtype. Inputs with weight exactly 0 are skipped,
  so at a vertex of the simplex (one weight 1, the rest 0) the output is that
  model's tensor bit for bit. Agrees with stock ``linear`` to float32 rounding.
- With two models and weights (1−λ, λ) this is model interpolation written as
  a weighted sum (equal to ``model_interpolation`` up to float32 rounding).
- NaN/inf in an input or the result is an error.

Like every method in this package it gets the pre-flight checks, the safe output
folder, the streaming engine (:mod:`mi_mergekit.merge.method`) and the checkpoint's own
layout (every tensor of the inputs, under its own name, on every architecture:
:mod:`mi_mergekit.merge.placement`); unlike ``model_interpolation`` the output takes the
base model's (or the first model's) tokenizer, as stock mergekit does.
"""

from __future__ import annotations

import logging
import math
from typing import List, Tuple

import torch

from mergekit.merge_methods.base import (
    BasePolicy,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
)
from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.kernel import weighted_sum
from mi_mergekit.merge.method import ElementwiseMethod, ResolvedTensor

LOG = logging.getLogger(__name__)

#: |Σ w − 1| allowed without ``normalize: true``
SUM_TOLERANCE = 1e-6

_warned: set = set()


class NWayInterpolation(ElementwiseMethod):
    """``merge_method: nway_interpolation`` — Σ wᵢ Θᵢ with Σ wᵢ = 1."""

    spec = MergeMethodSpec(
        name="nway_interpolation",
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
    value_name = "weights"
    value_label = "weights"

    def setting(self, tensor: ResolvedTensor) -> Tuple[float, ...]:
        """The validated per-input weights of the tensor, in input order."""
        weights = []
        for model, params in zip(tensor.inputs, tensor.per_input):
            if params.get("weight") is None:
                raise MergeInputError(f"{self.spec.name}: model {model} has no `weight` for {tensor.name!r}")
            weights.append(float(params["weight"]))
        return tuple(self.simplex_weights(weights, bool(tensor.shared["normalize"]), tensor.name))

    def simplex_weights(self, weights: List[float], normalize: bool, name: str = "") -> List[float]:
        """Validate (and optionally normalise) the per-input weights of one tensor."""
        for w in weights:
            if not math.isfinite(w):
                raise MergeInputError(f"{self.spec.name}: weight {w} of {name!r} is not finite")
        total = math.fsum(weights)
        if normalize:
            if total == 0:
                raise MergeInputError(f"{self.spec.name}: weights of {name!r} sum to 0; cannot normalize")
            weights = [w / total for w in weights]
        elif abs(total - 1.0) > SUM_TOLERANCE:
            raise MergeInputError(
                f"{self.spec.name}: the weights of {name!r} sum to {total:.9g}, not 1 "
                f"({weights}); fix them or set `normalize: true` to divide by their sum"
            )
        key = tuple(weights)
        if any(w < 0 or w > 1 for w in weights) and key not in _warned:
            _warned.add(key)
            LOG.warning("%s weights %s leave the simplex (extrapolation)", self.spec.name, weights)
        return weights

    def plan_value(self, setting) -> List[float]:
        return list(setting)

    def compute(self, inputs, setting, state=None, out=None) -> torch.Tensor:
        if not all(t.is_floating_point() for t in inputs):
            raise MergeInputError(f"{self.spec.name} needs floating-point tensors")
        return weighted_sum(inputs, setting).to(inputs[0].dtype)


nway_interpolation = NWayInterpolation()
