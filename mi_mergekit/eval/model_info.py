"""What a merged model's folder says about its λ (its ``mi_plan.json``, written by mi-mergekit
merges): one λ for a whole-model merge, a profile (mean, min, max) for a merge whose λ varies
over the tensors; the report places runs on the λ curve and the frontier with it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Union


def model_lambda(model_path: Union[str, Path]) -> Optional[float]:
    """λ from ``<model_path>/mi_plan.json`` (written by mi-mergekit merges), if present.

    Only whole-model merges count: a layer-window or module-selective merge
    (``"whole_model": false``) is not a point on the λ curve, so it gets None.
    """
    path = Path(model_path) / "mi_plan.json"
    if not path.is_file():
        return None
    plan = json.loads(path.read_text(encoding="utf-8"))
    value = plan.get("lambda")
    if plan.get("whole_model") is False or not isinstance(value, (int, float)):
        return None
    return float(value)


def model_profile(model_path: Union[str, Path]) -> Optional[dict]:
    """The λ profile of a merge whose λ is not one number (``mi_plan.json`` written by
    mi-mergekit): ``{"mean_lambda", "min", "max"}`` over every tensor (kept tensors at λ 0), the
    mean weighted by parameters; None for a plain λ, another method or a folder without a plan.
    Layer windows and module ablations are profiles too (λ on some tensors, 0 on the rest)."""
    path = Path(model_path) / "mi_plan.json"
    if not path.is_file():
        return None
    plan = json.loads(path.read_text(encoding="utf-8"))
    values = [t.get("lambda") for t in plan.get("tensors", [])]
    if plan.get("whole_model") or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    mean = plan.get("mean_lambda")
    if mean is None:  # a plan written before the mean was recorded: weigh by the first input's shapes
        mean = mean_from_inputs(plan)
    if mean is None:
        return None
    return {"mean_lambda": float(mean), "min": float(min(values)), "max": float(max(values))}


def mean_from_inputs(plan: dict) -> Optional[float]:
    """The parameter-weighted mean λ of an older ``mi_plan.json``, with the tensor shapes read from
    the header of its first input checkpoint where that is still there; None otherwise."""
    from mergekit.common import ModelReference
    from mergekit.options import MergeOptions

    from mi_mergekit.errors import MiMergekitError
    from mi_mergekit.merge.layout import CheckpointIndex
    from mi_mergekit.merge.plan import weighted_mean

    inputs = plan.get("inputs") or []
    if not inputs or not Path(str(inputs[0][1])).is_dir():
        return None
    try:
        shapes = CheckpointIndex.read(ModelReference.model_validate(str(inputs[0][1])), MergeOptions()).shapes
    except (MiMergekitError, ValueError, OSError):  # the input changed or is unreadable: no mean, not a wrong one
        return None
    sizes = {name: math.prod(shape) for name, shape in shapes.items() if shape is not None}
    tensors = plan.get("tensors", [])
    if not all(t.get("name") in sizes for t in tensors):
        return None
    return weighted_mean((t["lambda"], sizes[t["name"]]) for t in tensors)
