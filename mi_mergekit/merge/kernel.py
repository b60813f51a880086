"""The formulas, and nothing else: Θ(λ) = Θ_I + λ·(Θ_T − Θ_I) and Θ = Σᵢ wᵢ·Θᵢ.

This is the one place the arithmetic lives. The mergekit merge methods
(:mod:`mi_mergekit.methods`), the streaming engine (:mod:`mi_mergekit.merge.engine`,
merge and sweep) and the λ search (:mod:`mi_mergekit.analysis.lambda_search`)
all call these functions, so they agree bit for bit.

Precision: float32 (float64 inputs stay float64), one rounding to the output
dtype at the end. The end points are the inputs themselves: λ = 0 gives Θ_I and
λ = 1 gives Θ_T bit for bit (rounded to the output dtype), as the method defines
them; Θ_I + 1·(Θ_T − Θ_I) would not be Θ_T in float32 arithmetic (it is off by
rounding wherever Θ_T − Θ_I is inexact, e.g. for float32 checkpoints). Between
them, the operation order (delta, scale, add base — no fused multiply-add) is the
order of mergekit's stock ``task_arithmetic``, so the two agree bit for bit. Every
function is element-wise, so any slice of a tensor can be computed on its own and
gives the same bits as the whole tensor.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

#: elements per block on the CPU: 4 MiB of float32 scratch stays in cache
BLOCK = 1 << 20


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def task_vector(instruct: torch.Tensor, thinking: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Θ_T − Θ_I in float32 (float64 stays float64), in ``out`` or a new tensor."""
    if out is None:
        delta = thinking.to(compute_dtype(instruct.dtype), copy=True)
    else:
        delta = out.copy_(thinking)
    delta.sub_(instruct)  # a lower-precision operand is upcast exactly
    return delta


def apply_task_vector(instruct: torch.Tensor, delta: torch.Tensor, lam: float,
                      out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Θ_I + λ·δ in δ's precision; ``out`` may be δ itself or a scratch buffer."""
    merged = torch.mul(delta, lam, out=out) if out is not None else delta * lam
    merged.add_(instruct)
    return merged


def blocks(numel: int, device: torch.device) -> List[Tuple[int, int]]:
    """(start, stop) element ranges: cache-sized on the CPU, one range elsewhere."""
    size = BLOCK if device.type == "cpu" else max(numel, 1)
    return [(start, min(start + size, numel)) for start in range(0, numel, size)]


def _blocked(instruct: torch.Tensor, lams: Sequence[float], out_dtype: Optional[torch.dtype],
             delta_of, out: Optional[Sequence[torch.Tensor]] = None,
             thinking: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """Θ_I + λ·δ for every λ, block by block; ``delta_of(start, stop, scratch)`` gives δ.
    λ = 0 copies Θ_I and, when ``thinking`` is given, λ = 1 copies Θ_T."""
    compute = compute_dtype(instruct.dtype)
    device = instruct.device
    if out is None:
        out_dtype = out_dtype or compute
        outs = [torch.empty(instruct.shape, dtype=out_dtype, device=device) for _ in lams]
    else:
        outs = list(out)
        out_dtype = outs[0].dtype
    flat_i = instruct.reshape(-1)
    flat_t = None if thinking is None else thinking.reshape(-1)
    ends = {0.0: flat_i, 1.0: flat_t}
    flat_outs = [out.view(-1) for out in outs]
    ranges = blocks(instruct.numel(), device)
    size = max((stop - start for start, stop in ranges), default=0)
    delta_buf = torch.empty(size, dtype=compute, device=device)
    merged_buf = None if out_dtype == compute else torch.empty(size, dtype=compute, device=device)
    for start, stop in ranges:
        n = stop - start
        base = flat_i[start:stop]
        delta = delta_of(start, stop, delta_buf[:n])
        for flat_out, lam in zip(flat_outs, lams):
            end = ends.get(lam)
            if end is not None:  # an end point: the input itself
                flat_out[start:stop].copy_(end[start:stop])
            elif merged_buf is None:
                apply_task_vector(base, delta, lam, out=flat_out[start:stop])
            else:  # the one rounding to out_dtype
                flat_out[start:stop].copy_(apply_task_vector(base, delta, lam, out=merged_buf[:n]))
    return outs


def interpolate_many(instruct: torch.Tensor, thinking: torch.Tensor, lams: Sequence[float],
                     out_dtype: Optional[torch.dtype] = None,
                     out: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
    """[Θ_I + λ·(Θ_T − Θ_I) for λ in lams], each rounded once to ``out_dtype``
    (or written into the tensors ``out``, one per λ, all of one dtype).

    Θ_T − Θ_I is computed once per block and shared by every λ (a sweep pays
    for the delta once). On the CPU the work goes block by block through
    cache-sized float32 scratch buffers: the same element-wise operations as a
    whole-tensor computation, so the same bits, without whole-tensor float32
    temporaries.
    """
    flat_t = thinking.reshape(-1)
    flat_i = instruct.reshape(-1)
    return _blocked(instruct, lams, out_dtype,
                    lambda start, stop, scratch: task_vector(flat_i[start:stop], flat_t[start:stop], out=scratch),
                    out, thinking)


def interpolate_from_delta(instruct: torch.Tensor, delta: torch.Tensor, lam: float,
                           out_dtype: Optional[torch.dtype] = None,
                           out: Optional[torch.Tensor] = None,
                           thinking: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`interpolate` with Θ_T − Θ_I (from :func:`task_vector`) already computed
    (a sweep computes it once for all its λ); pass ``thinking`` so that λ = 1 is Θ_T exactly."""
    flat_d = delta.reshape(-1)
    return _blocked(instruct, (lam,), out_dtype, lambda start, stop, scratch: flat_d[start:stop],
                    None if out is None else (out,), thinking)[0]


def interpolate(instruct: torch.Tensor, thinking: torch.Tensor, lam: float,
                out_dtype: Optional[torch.dtype] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Θ_I + λ·(Θ_T − Θ_I), computed in float32, rounded once to ``out_dtype``
    (default: the compute dtype) or to ``out``'s dtype, into ``out``."""
    return interpolate_many(instruct, thinking, (lam,), out_dtype, None if out is None else (out,))[0]


def weighted_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ wᵢ·Θᵢ in float32 (float64 stays float64), zero weights skipped, input order."""
    compute = compute_dtype(tensors[0].dtype)
    terms = [(t, w) for t, w in zip(tensors, weights) if w != 0]
    if not terms:
        return torch.zeros_like(tensors[0], dtype=compute)
    first, w0 = terms[0]
    result = first.to(compute, copy=True)
    if w0 != 1:
        result.mul_(w0)
    for tensor, w in terms[1:]:
        result.add_(tensor.to(compute) * w)
    return result
