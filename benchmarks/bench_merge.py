"""Wall time and peak RSS of model_interpolation vs stock mergekit and the raw I/O floor.

    python benchmarks/bench_merge.py [--root /tmp/mi-bench] [--repeat 3]

Builds (once) a random Qwen3-shaped bf16 Instruct/Thinking pair of ~1.2 GB per model,
then times, each as a fresh subprocess measured with /usr/bin/time-like rusage:

* raw floor      read both inputs tensor by tensor with safetensors, write one output
* passthrough    stock mergekit `passthrough` of the Instruct model alone
* linear         stock mergekit `linear`, weights (0.2, 0.8)
* task_arith     stock mergekit `task_arithmetic`, base Instruct, weight 0.8
* mi             `model_interpolation`, λ = 0.8 (the paper's recommended point)

and prints a Markdown table of median wall time, ratio to stock linear and to the
raw floor, and peak RSS. Not a test: numbers depend on the machine and its load,
which is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _measure import ensure_pair, measure  # noqa: E402
from synthetic import PairSpec  # noqa: E402

BENCH_SPEC = PairSpec(
    num_layers=10, hidden_size=2048, intermediate_size=5632, num_attention_heads=16,
    num_key_value_heads=16, head_dim=128, vocab_size=32000, tie_word_embeddings=True,
    dtype="bfloat16", noise=0.02,
)

RAW_FLOOR = r"""
import sys, torch
from safetensors import safe_open
from safetensors.torch import save_file
a, b, out = sys.argv[1:4]
tensors = {}
with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
    for name in fa.keys():
        x = fa.get_tensor(name); y = fb.get_tensor(name)
        tensors[name] = x  # the output has to come from somewhere; no arithmetic
        del y
save_file(tensors, out, metadata={"format": "pt"})
"""


def recipes(instruct: str, thinking: str):
    import yaml

    def dump(d):
        return yaml.safe_dump(d, sort_keys=False)

    return {
        "passthrough": dump({"merge_method": "passthrough", "models": [{"model": instruct}], "dtype": "bfloat16"}),
        "linear": dump({
            "merge_method": "linear", "dtype": "bfloat16",
            "models": [{"model": instruct, "parameters": {"weight": 0.2}},
                       {"model": thinking, "parameters": {"weight": 0.8}}],
        }),
        "task_arith": dump({
            "merge_method": "task_arithmetic", "base_model": instruct, "dtype": "bfloat16",
            "models": [{"model": thinking, "parameters": {"weight": 0.8}}],
        }),
        "mi": dump({
            "merge_method": "model_interpolation", "base_model": instruct, "dtype": "bfloat16",
            "models": [{"model": thinking}], "parameters": {"lambda": 0.8},
        }),
    }




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "mi-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="subset of: raw passthrough linear task_arith mi")
    args = parser.parse_args()

    instruct, thinking, size = ensure_pair(args.root, BENCH_SPEC)
    bindir = os.path.dirname(sys.executable)
    work = os.path.join(args.root, "runs")
    os.makedirs(work, exist_ok=True)
    cases = {"raw": [sys.executable, "-c", RAW_FLOOR,
                     os.path.join(instruct, "model.safetensors"),
                     os.path.join(thinking, "model.safetensors"),
                     os.path.join(work, "raw.safetensors")]}
    for name, text in recipes(instruct, thinking).items():
        path = os.path.join(work, f"{name}.yaml")
        with open(path, "w") as handle:
            handle.write(text)
        cases[name] = [os.path.join(bindir, "mergekit-yaml"), path, os.path.join(work, f"out-{name}")]
    selected = args.only or list(cases)

    results = {}
    for name in selected:
        runs = []
        for _ in range(args.repeat):
            runs.append(measure(cases[name]))
            print(f"  {name}: {runs[-1]['wall']:.2f} s, {runs[-1]['rss_mib']:.0f} MiB", flush=True)
        results[name] = {
            "wall": statistics.median(r["wall"] for r in runs),
            "rss_mib": max(r["rss_mib"] for r in runs),
        }

    load = os.getloadavg()
    print(f"\npair: 2 × {size / 2**30:.2f} GiB bf16 ({BENCH_SPEC.num_layers} layers, hidden "
          f"{BENCH_SPEC.hidden_size}); {os.cpu_count()} cores; load avg {load[0]:.2f} {load[1]:.2f}; "
          f"median of {args.repeat}\n")
    print("| run | wall (s) | × stock linear | × raw floor | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        lin = r["wall"] / results["linear"]["wall"] if "linear" in results else float("nan")
        raw = r["wall"] / results["raw"]["wall"] if "raw" in results else float("nan")
        print(f"| {name} | {r['wall']:.2f} | {lin:.2f} | {raw:.2f} | {r['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
