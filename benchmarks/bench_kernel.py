"""The arithmetic of one engine slice, step by step: Θ_I + λ·(Θ_T − Θ_I) on 32M bf16 elements.

    python benchmarks/bench_kernel.py [--repeat 5] [--threads 1,2]

One slice as the streaming engine computes it (``CHUNK`` = 32M elements, bf16 in,
bf16 out, float32 arithmetic), each formulation timed on its own (best of
``--repeat``, wall and process CPU time) with each torch intra-op thread count, and compared bit for bit with
the float32 formula in stock mergekit's order (``task_arithmetic``: δ = Θ_T − Θ_I,
λ·δ, + Θ_I, one rounding). The steps, each adding one change to the one before:

* ``mixed``     the kernel before issue 22: per 1M-element block, δ = copy(Θ_T) − Θ_I and
                + Θ_I with a bf16 operand on a float32 tensor (mixed-dtype ops), λ·δ into a
                second float32 buffer, a last copy rounds to bf16
* ``upcast``    Θ_I upcast once per block into float32 scratch; every op float32 × float32
* ``in-place``  λ·δ in place (one float32 buffer fewer)
* ``block=N``   the same with other block sizes
* ``add→out``   the final add writes the bf16 output (the cast fused into the add)
* ``kernel``    what ``mi_mergekit.merge.kernel.interpolate`` does now

and two fused single ops that would save passes, with how many elements differ from the
formula: ``torch.lerp`` and ``torch.add(Θ_I, δ, alpha=λ)`` (a fused multiply-add on
vectorised CPUs). Not a test.
"""

import argparse
import time

import torch

from mi_mergekit.merge.kernel import interpolate

N = 1 << 25
LAM = 0.8


def mixed(i, t, out, block=1 << 20):
    delta, merged = torch.empty(block), torch.empty(block)
    for s in range(0, N, block):
        e = min(s + block, N)
        d = delta[: e - s].copy_(t[s:e]).sub_(i[s:e])
        m = torch.mul(d, LAM, out=merged[: e - s]).add_(i[s:e])
        out[s:e].copy_(m)


def upcast(i, t, out, block=1 << 20, in_place=False, fused_out=False):
    delta, base, merged = torch.empty(block), torch.empty(block), torch.empty(block)
    for s in range(0, N, block):
        e = min(s + block, N)
        b = base[: e - s].copy_(i[s:e])
        d = delta[: e - s].copy_(t[s:e]).sub_(b)
        m = d.mul_(LAM) if in_place else torch.mul(d, LAM, out=merged[: e - s])
        if fused_out:
            torch.add(m, b, out=out[s:e])
        else:
            out[s:e].copy_(m.add_(b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(N, generator=g) * 0.02
    i = base.bfloat16()
    t = (base + torch.randn(N, generator=g) * 4e-4).bfloat16()
    fi, ft = i.float(), t.float()
    expected = (fi + (ft - fi) * LAM).bfloat16()  # mergekit's task_arithmetic, in float32
    out = torch.empty(N, dtype=torch.bfloat16)
    steps = {
        "mixed": lambda: mixed(i, t, out),
        "upcast": lambda: upcast(i, t, out),
        "in-place": lambda: upcast(i, t, out, in_place=True),
        **{f"in-place, block={b >> 10}K": (lambda b=b: upcast(i, t, out, block=b, in_place=True))
           for b in (1 << 16, 1 << 18, 1 << 22)},
        "add→out": lambda: upcast(i, t, out, in_place=True, fused_out=True),
        "add→out, block=256K": lambda: upcast(i, t, out, block=1 << 18, in_place=True, fused_out=True),
        "kernel": lambda: interpolate(i, t, LAM, out=out),
        "lerp": lambda: out.copy_(torch.lerp(fi, ft, LAM)),
        "add alpha": lambda: out.copy_(torch.add(fi, ft - fi, alpha=LAM)),
    }
    threads = [int(n) for n in args.threads.split(",")]
    print(f"one slice: {N >> 20}M bf16 elements (64 MiB in per input, 64 MiB out), λ = {LAM}, "
          f"best of {args.repeat}\n")
    print("| step | " + " | ".join(f"{n} thread{'s' * (n > 1)}: wall, CPU (s)" for n in threads)
          + " | differing elements |")
    print("|---|" + "---:|" * len(threads) + "---:|")
    for name, step in steps.items():
        cells = []
        for n in threads:
            torch.set_num_threads(n)
            wall = cpu = float("inf")
            for _ in range(args.repeat):
                out.fill_(0)
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall = min(wall, time.perf_counter() - start)
                cpu = min(cpu, time.process_time() - start_cpu)
            cells.append(f"{wall:.3f}, {cpu:.3f}")
        differ = int((out.view(torch.int16) != expected.view(torch.int16)).sum())
        print(f"| {name} | " + " | ".join(cells) + f" | {differ} |")

if __name__ == "__main__":
    main()
