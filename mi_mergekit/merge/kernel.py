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

#: elements per block on the CPU: 1 MiB of float32 per scratch buffer stays in the core's
#: cache beside the engine's reader and writer (1M-element blocks: ~30% more CPU there)
BLOCK = 1 << 18


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _upcast(block: torch.Tensor, scratch: Optional[torch.Tensor]) -> torch.Tensor:
    """``block`` in the compute dtype: itself, or copied (exactly) into ``scratch``."""
    return block if scratch is None else scratch[: block.numel()].copy_(block)


def _scratch(like: torch.Tensor, size: int) -> Optional[torch.Tensor]:
    """A compute-dtype block buffer for the upcast of ``like`` (None: no upcast needed)."""
    compute = compute_dtype(like.dtype)
    return None if like.dtype == compute else torch.empty(size, dtype=compute, device=like.device)


def task_vector(instruct: torch.Tensor, thinking: torch.Tensor,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Θ_T − Θ_I in float32 (float64 stays float64), in ``out`` or a new tensor."""
    if out is None:
        out = torch.empty(instruct.shape, dtype=compute_dtype(instruct.dtype), device=instruct.device)
    delta = out
    flat_d, flat_i, flat_t = delta.view(-1), instruct.reshape(-1), thinking.reshape(-1)
    ranges = blocks(instruct.numel(), instruct.device)
    base_buf = _scratch(instruct, max((stop - start for start, stop in ranges), default=0))
    for start, stop in ranges:
        # both operands in float32 first (exact), so the subtraction is a float32 op
        flat_d[start:stop].copy_(flat_t[start:stop]).sub_(_upcast(flat_i[start:stop], base_buf))
    return delta


def apply_task_vector(instruct: torch.Tensor, delta: torch.Tensor, lam: float,
                      out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Θ_I + λ·δ in δ's precision; ``out`` may be δ itself (scaled in place) or a scratch
    buffer; ``instruct`` in δ's dtype."""
    if out is delta:
        merged = delta.mul_(lam)
    else:
        merged = torch.mul(delta, lam, out=out) if out is not None else delta * lam
    merged.add_(instruct)
    return merged


def blocks(numel: int, device: torch.device) -> List[Tuple[int, int]]:
    """(start, stop) element ranges: cache-sized on the CPU, one range elsewhere."""
    size = BLOCK if device.type == "cpu" else max(numel, 1)
    return [(start, min(start + size, numel)) for start in range(0, numel, size)]


def _blocked(instruct: torch.Tensor, lams: Sequence[float], out_dtype: Optional[torch.dtype],
             delta_of, out: Optional[Sequence[torch.Tensor]] = None,
             thinking: Optional[torch.Tensor] = None, owns_delta: bool = False) -> List[torch.Tensor]:
    """Θ_I + λ·δ for every λ, block by block; ``delta_of(start, stop, scratch, base)`` gives δ
    (``base``: the Θ_I block in the compute dtype; ``owns_delta``: δ is written into
    ``scratch``, so a single λ may scale it in place). λ = 0 copies Θ_I and, when
    ``thinking`` is given, λ = 1 copies Θ_T.

    Every operation is float32 × float32 (Θ_I is upcast once per block): a bf16 operand in a
    float32 op is upcast element by element on a slow path (measured in
    ``benchmarks/bench_kernel.py``), with the same bits."""
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
    base_buf = _scratch(instruct, size)
    direct = out_dtype == compute  # λ·δ and + Θ_I straight into the output
    # one λ (besides the end points) and δ in our scratch: λ·δ in place, no third buffer
    scale_in_place = not direct and owns_delta and sum(lam not in ends for lam in lams) == 1
    merged_buf = None if direct or scale_in_place else torch.empty(size, dtype=compute, device=device)
    for start, stop in ranges:
        n = stop - start
        base = _upcast(flat_i[start:stop], base_buf)
        delta = delta_of(start, stop, delta_buf[:n], base)
        for flat_out, lam in zip(flat_outs, lams):
            end = ends.get(lam)
            if end is not None:  # an end point: the input itself
                flat_out[start:stop].copy_(end[start:stop])
            elif direct:
                apply_task_vector(base, delta, lam, out=flat_out[start:stop])
            else:  # the one rounding to out_dtype
                merged = apply_task_vector(base, delta, lam, out=delta if scale_in_place else merged_buf[:n])
                flat_out[start:stop].copy_(merged)
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
    return _blocked(instruct, lams, out_dtype,
                    lambda start, stop, scratch, base: scratch.copy_(flat_t[start:stop]).sub_(base),
                    out, thinking, owns_delta=True)


def interpolate_from_delta(instruct: torch.Tensor, delta: torch.Tensor, lam: float,
                           out_dtype: Optional[torch.dtype] = None,
                           out: Optional[torch.Tensor] = None,
                           thinking: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`interpolate` with Θ_T − Θ_I (from :func:`task_vector`) already computed
    (a sweep computes it once for all its λ); pass ``thinking`` so that λ = 1 is Θ_T exactly."""
    flat_d = delta.reshape(-1)
    return _blocked(instruct, (lam,), out_dtype, lambda start, stop, scratch, base: flat_d[start:stop],
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
