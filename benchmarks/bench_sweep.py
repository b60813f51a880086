"""A 5-λ sweep against 5 separate ``mergekit-yaml`` runs (wall time, peak RSS).

    python benchmarks/bench_sweep.py [--root /tmp/mi-bench-sweep] [--repeat 1] [--keep]

Builds (once) a random Qwen3-shaped bf16 Instruct/Thinking pair of ≥ 1 GB per
model with :func:`synthetic.build_pair`, then runs, each as a fresh
subprocess whose peak RSS is read from ``getrusage(RUSAGE_CHILDREN)`` of a wrapper:

* one merge    ``mergekit-yaml`` of the model_interpolation recipe at λ = 0.5
               (also with THP_MEM_ALLOC_ENABLE=1, which ``mi-mergekit sweep`` sets)
* 5 separate   ``mergekit-yaml`` at λ = 0.1, 0.3, 0.5, 0.7, 0.9 (walls summed)
* sweep        ``mi-mergekit sweep RECIPE --lambdas 0.1:0.9:0.2`` (one process)
* raw floor    read both inputs once with safetensors, write the Instruct
               tensors 5 times (the bytes a 5-output sweep must move; no math)

The sweep's λ = 0.5 output is compared byte for byte with the single merge.
Prints the load average (the machine may be shared) and a Markdown table of
wall time, ratio to one merge and to the 5 separate runs, and peak RSS.
Target: sweep wall ≤ 2 × one merge. Not a test.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _measure import ensure_pair, measure  # noqa: E402
from synthetic import PairSpec  # noqa: E402

# ~0.6 B parameters: 1.2 GB per model in bf16
SPEC = PairSpec(
    num_layers=10, hidden_size=2048, intermediate_size=5632, num_attention_heads=16,
    num_key_value_heads=16, head_dim=128, vocab_size=32000, tie_word_embeddings=True,
    dtype="bfloat16", noise=0.02,
)
LAMBDAS = ("0.1", "0.3", "0.5", "0.7", "0.9")

RAW_FLOOR = r"""
import os, sys
from safetensors import safe_open
from safetensors.torch import save_file
a, b, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tensors = {}
with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
    for name in fa.keys():
        tensors[name] = fa.get_tensor(name)
        fb.get_tensor(name)
for k in range(n):
    save_file(tensors, os.path.join(out, f"raw{k}.safetensors"), metadata={"format": "pt"})
"""

def recipe(instruct, thinking, lam):
    import yaml

    return yaml.safe_dump({
        "merge_method": "model_interpolation", "base_model": instruct, "dtype": "bfloat16",
        "models": [{"model": thinking}], "parameters": {"lambda": float(lam)},
    }, sort_keys=False)


def loadavg():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "mi-bench-sweep"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the outputs (they are deleted otherwise)")
    args = parser.parse_args()

    instruct, thinking, size = ensure_pair(args.root, SPEC)
    bindir = os.path.dirname(sys.executable)
    work = os.path.join(args.root, "runs")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    recipes = {}
    for lam in LAMBDAS:
        recipes[lam] = os.path.join(work, f"mi_{lam}.yaml")
        with open(recipes[lam], "w") as handle:
            handle.write(recipe(instruct, thinking, lam))
    load_before = loadavg()
    mergekit_yaml = os.path.join(bindir, "mergekit-yaml")

    # warm the page cache the same way for every case
    measure([sys.executable, "-c", RAW_FLOOR, os.path.join(instruct, "model.safetensors"),
             os.path.join(thinking, "model.safetensors"), work, "0"])

    results = {"one merge": [], "one merge + THP": [], "5 separate": [], "sweep": [], "raw floor": []}
    for rep in range(args.repeat):
        one = os.path.join(work, "one")
        r = measure([mergekit_yaml, recipes["0.5"], one])
        results["one merge"].append(r)
        print(f"  one merge: {r['wall']:.2f} s, {r['rss_mib']:.0f} MiB", flush=True)

        # the sweep CLI turns on transparent huge pages for torch's allocator; the same
        # environment variable on a single merge shows how much of the gap is page faults
        r = measure([mergekit_yaml, recipes["0.5"], one + "_thp"], env={"THP_MEM_ALLOC_ENABLE": "1"})
        results["one merge + THP"].append(r)
        shutil.rmtree(one + "_thp")
        print(f"  one merge + THP: {r['wall']:.2f} s, {r['rss_mib']:.0f} MiB", flush=True)

        walls, rss = [], []
        for lam in LAMBDAS:
            out = os.path.join(work, f"sep_{lam}")
            r = measure([mergekit_yaml, recipes[lam], out])
            walls.append(r["wall"])
            rss.append(r["rss_mib"])
            shutil.rmtree(out)
        results["5 separate"].append({"wall": sum(walls), "rss_mib": max(rss)})
        print(f"  5 separate: {sum(walls):.2f} s ({', '.join(f'{w:.1f}' for w in walls)}), {max(rss):.0f} MiB",
              flush=True)

        sweep_dir = os.path.join(work, "sweep")
        r = measure([sys.executable, "-m", "mi_mergekit.merge.sweep", recipes["0.5"], "--lambdas",
                     ",".join(LAMBDAS), sweep_dir])
        results["sweep"].append(r)
        print(f"  sweep: {r['wall']:.2f} s, {r['rss_mib']:.0f} MiB", flush=True)
        same = filecmp.cmp(os.path.join(one, "model.safetensors"),
                           os.path.join(sweep_dir, "lambda_0.5", "model.safetensors"), shallow=False)
        print(f"  sweep λ=0.5 weights identical to the single merge: {same}", flush=True)
        if not same:
            raise SystemExit("sweep output differs from the single merge")

        raw_dir = os.path.join(work, "raw")
        os.makedirs(raw_dir, exist_ok=True)
        r = measure([sys.executable, "-c", RAW_FLOOR, os.path.join(instruct, "model.safetensors"),
                     os.path.join(thinking, "model.safetensors"), raw_dir, str(len(LAMBDAS))])
        results["raw floor"].append(r)
        print(f"  raw floor (read 2, write {len(LAMBDAS)}): {r['wall']:.2f} s, {r['rss_mib']:.0f} MiB", flush=True)
        if not args.keep:
            for path in (one, sweep_dir, raw_dir):
                shutil.rmtree(path, ignore_errors=True)

    summary = {name: {"wall": statistics.median(r["wall"] for r in runs),
                      "rss_mib": max(r["rss_mib"] for r in runs)} for name, runs in results.items()}
    one_wall, sep_wall = summary["one merge"]["wall"], summary["5 separate"]["wall"]
    print(f"\npair: 2 × {size / 2**30:.2f} GiB bf16 ({SPEC.num_layers} layers, hidden {SPEC.hidden_size}); "
          f"{os.cpu_count()} cores; load avg (1/5/15 min) before {load_before}, after {loadavg()}; "
          f"median of {args.repeat}\n")
    print("| run | wall (s) | × one merge | × 5 separate | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in summary.items():
        print(f"| {name} | {r['wall']:.2f} | {r['wall'] / one_wall:.2f} | {r['wall'] / sep_wall:.2f} "
              f"| {r['rss_mib']:.0f} |")
    ratio = summary["sweep"]["wall"] / one_wall
    print(f"\nsweep / one merge = {ratio:.2f} (target ≤ 2.00: {'met' if ratio <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
