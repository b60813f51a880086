"""The streaming engine side by side with what a user would run instead, in one run.

    python benchmarks/bench_engine.py [--root /tmp/mi-bench] [--repeat 2] [--skip-big]

Builds (once) random Qwen3-shaped bf16 Instruct/Thinking pairs with
``tests/synthetic.py`` — "A" of ~1.3 GB per model (12 layers, hidden 2048) and
"B" of ~2.6 GB per model (24 layers) — then runs, each as a fresh subprocess
whose wall time and peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, what
``/usr/bin/time`` reports) are measured on their own, page cache warm:

* ``import``      ``python -c "import mergekit.merge"`` (charged to neither engine)
* ``floor``       read both inputs with safetensors, write one output (no arithmetic)
* ``paper``       the paper's script's algorithm: ``load_file`` the Instruct model, then
                  per Thinking shard ``T + λ(I − T)`` in bf16 and ``save_file``
* ``linear``      stock mergekit ``linear`` through ``mergekit-yaml``
* ``old``         ``mergekit-yaml`` + ``model_interpolation`` with ``MI_MERGEKIT_ENGINE=mergekit``
* ``new``         ``mergekit-yaml`` + ``model_interpolation`` (the streaming engine)
* ``floor-5``     read both inputs once, write five outputs
* ``sweep5-old`` / ``sweep5-new``  ``mi-mergekit sweep`` over 5 λ, each engine
* ``sweep9-new``  pair B, 9 λ (skipped with ``--skip-big``)

Every command makes its output durable (fsync of every file) — ours does it
before the atomic publish, the floor and paper scripts are given the same
fsync so that the comparison is of equal work; stock ``linear`` does not fsync.
Prints best-of-``--repeat`` wall, engine time (wall minus the measured import),
ratios, peak RSS and the load average, as Markdown. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _measure import ensure_pair, measure  # noqa: E402
from synthetic import PairSpec  # noqa: E402

SHAPE = dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8,
             head_dim=128, vocab_size=32000, tie_word_embeddings=True, dtype="bfloat16", noise=0.02)
PAIR_A = PairSpec(num_layers=12, **SHAPE)
PAIR_B = PairSpec(num_layers=24, **SHAPE)
LAMBDAS_5 = "0.2,0.4,0.6,0.8,1.0"
LAMBDAS_9 = "0.1:0.9:0.1"

FSYNC = r"""
def durable(path):
    import os
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
"""

FLOOR = FSYNC + r"""
import os, sys
from safetensors import safe_open
from safetensors.torch import save_file
a, b, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tensors = {}
with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
    for name in fa.keys():
        tensors[name] = fa.get_tensor(name)  # the output has to come from somewhere
        fb.get_tensor(name)
os.makedirs(out, exist_ok=True)
for k in range(n):
    path = os.path.join(out, f"model{k}.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    durable(path)
"""

# The algorithm of the paper's merge script: the whole Instruct model in memory,
# then per Thinking shard T + λ(I − T) in the checkpoint's dtype (bf16), save.
PAPER = FSYNC + r"""
import json, os, sys
from safetensors.torch import load_file, save_file
instruct, thinking, out, lam = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def shards(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        return sorted(set(json.load(open(index))["weight_map"].values()))
    return ["model.safetensors"]
I = {}
for shard in shards(instruct):
    I.update(load_file(os.path.join(instruct, shard)))
os.makedirs(out, exist_ok=True)
for shard in shards(thinking):
    T = load_file(os.path.join(thinking, shard))
    merged = {name: t + lam * (I[name] - t) for name, t in T.items()}
    path = os.path.join(out, shard)
    save_file(merged, path, metadata={"format": "pt"})
    durable(path)
"""


def write_recipes(work: str, instruct: str, thinking: str) -> dict:
    import yaml

    recipes = {
        "linear": {"merge_method": "linear", "dtype": "bfloat16",
                   "models": [{"model": instruct, "parameters": {"weight": 0.2}},
                              {"model": thinking, "parameters": {"weight": 0.8}}]},
        "mi": {"merge_method": "model_interpolation", "base_model": instruct, "dtype": "bfloat16",
               "models": [{"model": thinking}], "parameters": {"lambda": 0.8}},
    }
    paths = {}
    for name, data in recipes.items():
        paths[name] = os.path.join(work, f"{name}.yaml")
        with open(paths[name], "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "mi-bench"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-big", action="store_true", help="skip the 9-λ sweep of pair B")
    args = parser.parse_args()

    bindir = os.path.dirname(sys.executable)
    mergekit_yaml, mi = os.path.join(bindir, "mergekit-yaml"), os.path.join(bindir, "mi-mergekit")
    instruct, thinking, size_a = ensure_pair(os.path.join(args.root, "pair-a"), PAIR_A)
    work = os.path.join(args.root, "runs")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    recipes = write_recipes(work, instruct, thinking)
    out = lambda name: os.path.join(work, name)  # noqa: E731
    old = {"MI_MERGEKIT_ENGINE": "mergekit"}
    cases = {
        "import": ([sys.executable, "-c", "import mergekit.merge"], None),
        "floor": ([sys.executable, "-c", FLOOR, os.path.join(instruct, "model.safetensors"),
                   os.path.join(thinking, "model.safetensors"), out("floor"), "1"], None),
        "paper": ([sys.executable, "-c", PAPER, instruct, thinking, out("paper"), "0.2"], None),
        "linear": ([mergekit_yaml, recipes["linear"], out("linear")], None),
        "old": ([mergekit_yaml, recipes["mi"], out("old")], old),
        "new": ([mergekit_yaml, recipes["mi"], out("new")], None),
        "floor-5": ([sys.executable, "-c", FLOOR, os.path.join(instruct, "model.safetensors"),
                     os.path.join(thinking, "model.safetensors"), out("floor-5"), "5"], None),
        "sweep5-old": ([mi, "sweep", recipes["mi"], out("sweep5-old"), "--lambdas", LAMBDAS_5], old),
        "sweep5-new": ([mi, "sweep", recipes["mi"], out("sweep5-new"), "--lambdas", LAMBDAS_5], None),
    }
    results = {}
    for name, (cmd, env) in cases.items():
        runs = []
        for _ in range(args.repeat):
            runs.append(measure(cmd, env))
            print(f"  {name}: {runs[-1]['wall']:.2f} s, {runs[-1]['rss_mib']:.0f} MiB", flush=True)
            shutil.rmtree(out(name), ignore_errors=True)  # every case writes into out(name)
        results[name] = {"wall": min(r["wall"] for r in runs), "rss_mib": max(r["rss_mib"] for r in runs)}
    if not args.skip_big:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        bi, bt, size_b = ensure_pair(os.path.join(args.root, "pair-b"), PAIR_B)
        big = write_recipes(work, bi, bt)
        r = measure([mi, "sweep", big["mi"], out("sweep9-new"), "--lambdas", LAMBDAS_9])
        print(f"  sweep9-new: {r['wall']:.2f} s, {r['rss_mib']:.0f} MiB", flush=True)
        results["sweep9-new (pair B)"] = r
        shutil.rmtree(work, ignore_errors=True)

    imp = results["import"]["wall"]
    load = os.getloadavg()
    print(f"\npair A: 2 × {size_a / 2**30:.2f} GiB bf16 ({PAIR_A.num_layers} layers, hidden "
          f"{PAIR_A.hidden_size}); {os.cpu_count()} cores; load avg {load[0]:.2f} {load[1]:.2f}; "
          f"best of {args.repeat}; engine = wall − import ({imp:.2f} s) for mergekit-based runs\n")
    print("| run | wall (s) | engine (s) | × paper | × floor | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    paper, floor = results["paper"]["wall"], results["floor"]["wall"]
    for name, r in results.items():
        engine = r["wall"] - imp if name in ("linear", "old", "new") or name.startswith("sweep") else r["wall"]
        print(f"| {name} | {r['wall']:.2f} | {engine:.2f} | {engine / paper:.2f} | {engine / floor:.2f} "
              f"| {r['rss_mib']:.0f} |")
    new, sweep = results["new"], results["sweep5-new"]
    print(f"\nsweep5-new / new (wall): {sweep['wall'] / new['wall']:.2f}; "
          f"sweep5-new / floor-5: {sweep['wall'] / results['floor-5']['wall']:.2f}; "
          f"RSS sweep5-new / new: {sweep['rss_mib'] / new['rss_mib']:.2f}")


if __name__ == "__main__":
    main()
