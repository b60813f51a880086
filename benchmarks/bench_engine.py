"""The streaming engine side by side with what a user would run instead, in one run.

    python benchmarks/bench_engine.py [--root /tmp/mi-bench] [--repeat 3] [--before main[,REF…]]
                                      [--steps REF[,REF…]]
                                      [--skip-4b] [--data-4b DIR] [--skip-a] [--skip-big]

Pairs (random Qwen3-shaped bf16 Instruct/Thinking pairs, built once and kept):

* "A": ~1.3 GB per model (12 layers, hidden 2048), one file, built with ``tests/synthetic.py``;
* "4B": Qwen3-4B-sized (36 layers, hidden 2560, intermediate 9728, vocab 151936, tied
  embeddings): 8.0 GB per model in 3 shards of ≤ 4 GB, as Qwen3-4B-Instruct-2507 ships,
  written slice by slice (``build_pair_streaming``) into ``--data-4b`` (default
  ``ROOT/pair-4b``; ~16 GB of disk, ~2–4 min to build). ``--skip-4b`` skips it;
* "B": ~2.6 GB per model (24 layers), for the 9-λ sweep (``--skip-big`` skips it).

Each command runs as a fresh subprocess. Its **wall** is measured until its output is
durable: the measuring wrapper fsyncs every file of the output folder after the command
exits, inside the timed span, for every command alike (ours already fsyncs before its
atomic publish, so that costs it nothing more; the floor, the paper's script and stock
mergekit do not fsync themselves). ``os.sync()`` runs before each command, untimed, so no
command pays for another's dirty pages. **Peak RSS** is ``getrusage(RUSAGE_CHILDREN)``'s
``ru_maxrss`` of a fresh wrapper (what ``/usr/bin/time`` reports). Pair A runs with a warm
page cache; for the 4B pair (inputs 16 GB + output 8 GB: more than this kind of machine
caches) the inputs' pages are dropped before each command (``posix_fadvise(DONTNEED)`` on
their files), so every command reads both models from disk. Runs are interleaved (round
robin over the cases, ``--repeat`` rounds), so load drift hits every case alike.

Cases:

* ``import``      ``python -c "import mergekit.scripts.run_yaml"`` — what ``mergekit-yaml``
                  imports (with the autoload hook); ``import-torch``: ``torch`` + ``safetensors``,
                  what the floor and the paper's script import
* ``floor``       read both inputs with safetensors, write one output (no arithmetic), shard by shard
* ``paper``       the paper's own merge script (github.com/wutaiqiang/MI ``mi.py``,
                  ``merge_models``), its algorithm step for step: every Instruct shard
                  ``load_file``'d into one dict, then per Thinking shard ``T + λ'(I − T)`` in
                  bf16 (``--model_b`` Thinking, ``--model_i`` Instruct, ``λ' = 1 − λ``),
                  ``save_file``, then the other files copied from the Thinking folder
                  (``--copy_from_b``: tokenizer, config, chat template)
* ``linear``      stock mergekit ``linear`` through ``mergekit-yaml`` (pair A)
* ``old``         ``mergekit-yaml`` + ``model_interpolation``, ``MI_MERGEKIT_ENGINE=mergekit`` (pair A)
* ``new``         ``mergekit-yaml`` + ``model_interpolation`` (the streaming engine)
* ``@REF``        ``new`` with the package as of git ``REF`` (``--before``, comma separated;
                  ``git archive``, first on PYTHONPATH); ``sweep5@REF`` likewise; ``--steps``
                  adds such rows for the 4B pair only (the commits between, one change each)
* ``floor-5``, ``sweep5-*``  read once, five outputs: floor, and ``mi-mergekit sweep`` per engine
* ``sweep9-new``  pair B, 9 λ

Engine time = wall − the import time of what that command imports (``import`` or
``import-torch``, measured for the same code). Prints best-of-``--repeat`` wall with the
spread (slowest run), engine time, ratios and peak RSS, as Markdown. Start-up (import to
first tensor read) is ``benchmarks/bench_startup.py --merge``. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from _measure import checkout, ensure_pair, evict, measure  # noqa: E402
from synthetic import PairSpec  # noqa: E402

SHAPE = dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8,
             head_dim=128, vocab_size=32000, tie_word_embeddings=True, dtype="bfloat16", noise=0.02)
PAIR_A = PairSpec(num_layers=12, **SHAPE)
PAIR_B = PairSpec(num_layers=24, **SHAPE)
#: Qwen3-4B-Instruct-2507 / -Thinking-2507's shapes (config.json of the released models)
PAIR_4B = PairSpec(num_layers=36, hidden_size=2560, intermediate_size=9728, num_attention_heads=32,
                   num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                   dtype="bfloat16", noise=0.02)
LAMBDA = 0.8
LAMBDAS_5 = "0.2,0.4,0.6,0.8,1.0"
LAMBDAS_9 = "0.1:0.9:0.1"

SHARDS = r"""
def shards(folder):
    import json, os
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        return sorted(set(json.load(open(index))["weight_map"].values()))
    return ["model.safetensors"]
"""

FLOOR = SHARDS + r"""
import os, sys
from safetensors import safe_open
from safetensors.torch import save_file
a, b, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(out, exist_ok=True)
for shard in shards(a):
    tensors = {}
    with safe_open(os.path.join(a, shard), "pt") as fa, safe_open(os.path.join(b, shard), "pt") as fb:
        for name in fa.keys():
            tensors[name] = fa.get_tensor(name)  # the output has to come from somewhere
            fb.get_tensor(name)
    for k in range(n):
        save_file(tensors, os.path.join(out, f"{k}-{shard}"), metadata={"format": "pt"})
    del tensors
"""

# github.com/wutaiqiang/MI mi.py, merge_models(), step for step (the prints, tqdm and
# try/except around each step left out; variable lifetimes kept, they set the peak memory).
PAPER = r"""
import os, shutil, sys
from glob import glob
from safetensors.torch import load_file, save_file
model_b, model_i, lambda_val, output_dir = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
os.makedirs(output_dir, exist_ok=True)
b_files = glob(os.path.join(model_b, "*.safetensors"))
i_files = glob(os.path.join(model_i, "*.safetensors"))
i_tensors_all = {}
for i_path in i_files:
    i_tensors = load_file(i_path, device="cpu")
    i_tensors_all.update(i_tensors)
for b_path in b_files:
    filename = os.path.basename(b_path)
    i_path = os.path.join(model_i, filename)
    output_path = os.path.join(output_dir, filename)
    if not os.path.exists(i_path):
        continue
    b_tensors = load_file(b_path, device="cpu")
    merged_tensors = {}
    for key in b_tensors.keys():
        if key in i_tensors_all:
            merged_tensors[key] = b_tensors[key] + lambda_val * (i_tensors_all[key] - b_tensors[key])
        else:
            merged_tensors[key] = b_tensors[key]
    save_file(merged_tensors, output_path)
src_dir = model_b  # --copy_from_b True: the Thinking model's tokenizer, config, chat template
for filename in os.listdir(src_dir):
    if filename.endswith(".safetensors"):
        continue
    src_path = os.path.join(src_dir, filename)
    dest_path = os.path.join(output_dir, filename)
    if not os.path.exists(dest_path) and os.path.isfile(src_path):
        shutil.copy2(src_path, dest_path)
"""


def write_recipes(work: str, instruct: str, thinking: str) -> dict:
    import yaml

    recipes = {
        "linear": {"merge_method": "linear", "dtype": "bfloat16",
                   "models": [{"model": instruct, "parameters": {"weight": round(1 - LAMBDA, 6)}},
                              {"model": thinking, "parameters": {"weight": LAMBDA}}]},
        "mi": {"merge_method": "model_interpolation", "base_model": instruct, "dtype": "bfloat16",
               "models": [{"model": thinking}], "parameters": {"lambda": LAMBDA}},
    }
    paths = {}
    for name, data in recipes.items():
        paths[name] = os.path.join(work, f"{name}.yaml")
        with open(paths[name], "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
    return paths


def mem_available_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def run_cases(cases: dict, work: str, repeat: int, cold=()) -> dict:
    """Round robin over ``cases`` (name -> (command, env, output or None)), ``repeat`` rounds."""
    runs = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (cmd, env, out, need_gib) in cases.items():
            if need_gib and mem_available_gib() < need_gib:
                print(f"  {name}: skipped, {mem_available_gib():.1f} GiB available < {need_gib} GiB", flush=True)
                continue
            os.sync()
            if cold:
                evict(*cold)
            runs[name].append(measure(cmd, env, durable=out or ""))
            print(f"  {name}: {runs[name][-1]['wall']:.2f} s, {runs[name][-1]['rss_mib']:.0f} MiB", flush=True)
            if out:
                shutil.rmtree(out, ignore_errors=True)
    return {name: {"wall": min(r["wall"] for r in rs), "slowest": max(r["wall"] for r in rs),
                   "rss_mib": max(r["rss_mib"] for r in rs), "n": len(rs)}
            for name, rs in runs.items() if rs}


def table(title: str, results: dict, imports: dict) -> None:
    """Markdown: wall (best, slowest), engine time, ratios (five-output runs against
    ``floor-5``), RSS."""
    print(f"\n{title}\n")
    print("| run | wall (s) | slowest (s) | engine (s) | wall × paper | engine × floor | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    paper = results.get("paper", {}).get("wall")
    engine = {name: r["wall"] - imports.get(name, 0.0) for name, r in results.items()}
    for name, r in results.items():
        floor = "floor-5" if name.startswith(("sweep5", "floor-5")) else "floor"
        ratio_paper = f"{r['wall'] / paper:.2f}" if paper else "–"
        ratio_floor = f"{engine[name] / engine[floor]:.2f}" if floor in engine else "–"
        print(f"| {name} | {r['wall']:.2f} | {r['slowest']:.2f} | {engine[name]:.2f} | {ratio_paper} "
              f"| {ratio_floor} | {r['rss_mib']:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "mi-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", metavar="REF[,REF…]", help="also run the package as of these git refs")
    parser.add_argument("--skip-a", action="store_true", help="skip pair A (1.3 GB)")
    parser.add_argument("--skip-4b", action="store_true", help="skip the Qwen3-4B-sized pair (16 GB of disk)")
    parser.add_argument("--data-4b", help="where the 4B pair is (built there once); default ROOT/pair-4b")
    parser.add_argument("--skip-big", action="store_true", help="skip the 9-λ sweep of pair B")
    parser.add_argument("--steps", metavar="REF[,REF…]", help="more refs, for the 4B pair only")
    parser.add_argument("--cases", help="run only these merge cases (comma separated, e.g. floor,new,@main)")
    args = parser.parse_args()
    only = set(args.cases.split(",")) if args.cases else None

    bindir = os.path.dirname(sys.executable)
    mergekit_yaml, mi = os.path.join(bindir, "mergekit-yaml"), os.path.join(bindir, "mi-mergekit")
    py = sys.executable
    os.makedirs(args.root, exist_ok=True)
    work = os.path.join(args.root, "runs")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    out = lambda name: os.path.join(work, name.replace("/", "_"))  # noqa: E731
    old = {"MI_MERGEKIT_ENGINE": "mergekit"}
    refs = lambda value: value.split(",") if value else []  # noqa: E731
    before = {ref: checkout(ref, args.root) for ref in refs(args.before) + refs(args.steps)}
    steps = set(refs(args.steps)) - set(refs(args.before))
    import_cases = {
        "import": ([py, "-c", "import mergekit.scripts.run_yaml"], None, None, 0),
        "import-torch": ([py, "-c", "import torch, safetensors.torch"], None, None, 0),
    }
    for ref, env in before.items():
        import_cases[f"import@{ref}"] = ([py, "-c", "import mergekit.scripts.run_yaml"], env, None, 0)
    imports = run_cases(import_cases, work, args.repeat)
    for name, r in imports.items():
        print(f"`{name}`: {r['wall']:.2f} s (slowest {r['slowest']:.2f} s)")
    torch_only = ("floor", "floor-5", "paper")
    import_of = lambda name: imports["import-torch" if name in torch_only else  # noqa: E731
                                     "import@" + name.split("@")[1] if "@" in name else "import"]["wall"]
    load = os.getloadavg()
    print(f"\n{os.cpu_count()} cores, {mem_available_gib():.1f} GiB available; load avg {load[0]:.2f} {load[1]:.2f}; "
          f"best of {args.repeat}; λ = {LAMBDA}; before = {args.before or '–'}; steps = {args.steps or '–'}")

    def merge_cases(instruct, thinking, recipes, extra: bool, with_steps: bool = False) -> dict:
        cases = {
            "floor": ([py, "-c", FLOOR, instruct, thinking, out("floor"), "1"], None, out("floor"), 0),
            "paper": ([py, "-c", PAPER, thinking, instruct, str(round(1 - LAMBDA, 6)), out("paper")], None,
                      out("paper"), None),
        }
        if extra:
            cases["linear"] = ([mergekit_yaml, recipes["linear"], out("linear")], None, out("linear"), 0)
            cases["old"] = ([mergekit_yaml, recipes["mi"], out("old")], old, out("old"), 0)
        for ref, env in before.items():
            if ref in steps and not with_steps:
                continue
            name = f"@{ref}"
            cases[name] = ([mergekit_yaml, recipes["mi"], out(name)], env, out(name), 0)
        cases["new"] = ([mergekit_yaml, recipes["mi"], out("new")], None, out("new"), 0)
        if extra:
            cases["floor-5"] = ([py, "-c", FLOOR, instruct, thinking, out("floor-5"), "5"], None, out("floor-5"), 0)
            sweep = lambda name, env: ([mi, "sweep", recipes["mi"], out(name), "--lambdas", LAMBDAS_5],  # noqa: E731
                                       env, out(name), 0)
            cases["sweep5-old"] = sweep("sweep5-old", old)
            for ref, env in before.items():
                if ref not in steps:
                    cases[f"sweep5@{ref}"] = sweep(f"sweep5@{ref}", env)
            cases["sweep5-new"] = sweep("sweep5-new", None)
        return {name: case for name, case in cases.items() if only is None or name in only}

    if not args.skip_a:
        instruct, thinking, size = ensure_pair(os.path.join(args.root, "pair-a"), PAIR_A)
        cases = merge_cases(instruct, thinking, write_recipes(work, instruct, thinking), extra=True)
        # the paper's script holds the whole Instruct model, a Thinking shard and its merge
        if "paper" in cases:
            cases["paper"] = cases["paper"][:3] + (2.2 * size / 2**30,)
        results = run_cases(cases, work, args.repeat)
        table(f"pair A: 2 × {size / 2**30:.2f} GiB bf16 ({PAIR_A.num_layers} layers, hidden {PAIR_A.hidden_size}), "
              "one file, page cache warm", results, {name: import_of(name) for name in results})
        if {"new", "sweep5-new", "floor-5"} <= set(results):
            new, sweep = results["new"], results["sweep5-new"]
            print(f"\nsweep5-new / new (wall): {sweep['wall'] / new['wall']:.2f}; "
                  f"sweep5-new / floor-5: {sweep['wall'] / results['floor-5']['wall']:.2f}; "
                  f"RSS sweep5-new / new: {sweep['rss_mib'] / new['rss_mib']:.2f}")

    if not args.skip_4b:
        root_4b = args.data_4b or os.path.join(args.root, "pair-4b")
        instruct, thinking, size = ensure_pair(root_4b, PAIR_4B, streaming=True)
        cases = merge_cases(instruct, thinking, write_recipes(work, instruct, thinking), extra=False,
                            with_steps=True)
        if "paper" in cases:
            cases["paper"] = cases["paper"][:3] + (2.1 * size / 2**30,)
        results = run_cases(cases, work, args.repeat, cold=(instruct, thinking))
        table(f"Qwen3-4B-sized pair: 2 × {size / 2**30:.2f} GiB bf16 ({PAIR_4B.num_layers} layers, hidden "
              f"{PAIR_4B.hidden_size}), 3 shards, inputs read from disk (page cache dropped before each run)",
              results, {name: import_of(name) for name in results})

    if not args.skip_big:
        bi, bt, size_b = ensure_pair(os.path.join(args.root, "pair-b"), PAIR_B)
        big = write_recipes(work, bi, bt)
        results = run_cases({"sweep9-new": ([mi, "sweep", big["mi"], out("sweep9-new"), "--lambdas", LAMBDAS_9],
                                            None, out("sweep9-new"), 0)}, work, 1)
        table(f"pair B: 2 × {size_b / 2**30:.2f} GiB, 9 λ", results, {"sweep9-new": import_of("new")})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
