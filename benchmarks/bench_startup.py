"""Start-up costs, two measurements:

    python benchmarks/bench_startup.py [--runs 60]                  # the autoload hook
    python benchmarks/bench_startup.py --merge [--before main[,REF…]] [--runs 10]

Default: `python -c pass` with and without mi_mergekit installed. Builds our wheel, makes
two fresh virtual environments (no pip, no other packages), installs the wheel into one
of them, and times `python -c pass` alternately in both; reports the median and the
difference.

``--merge``: `mergekit-yaml` start-up, from the process start to its first read of tensor
data (the engine's first ``os.preadv``; the process exits there), on the shipped toy
pair — imports, recipe validation, planning, output checks. Wall time and the process's
CPU time at that point; with ``--before REF[,REF…]`` the package as of those git refs
runs too, alternating with the current one. Reports the median and the fastest run.

Not a test (wall-clock numbers).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

# mergekit-yaml as its console script runs it, stopped at the first tensor read.
FIRST_READ = r"""
import json, os, sys, time
def first_read(*args):
    print(json.dumps({"at": time.time(), "cpu": time.process_time()}), flush=True)
    os._exit(0)
os.preadv = first_read
from mergekit.scripts.run_yaml import main
main(sys.argv[1:])
"""


def autoload(runs: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                        os.path.join(root, "dist"), REPO], check=True, capture_output=True)
        wheel = os.path.join(root, "dist", os.listdir(os.path.join(root, "dist"))[0])
        pythons = {}
        for name in ("without", "with"):
            venv = os.path.join(root, name)
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
            pythons[name] = os.path.join(venv, "bin", "python")
        subprocess.run([sys.executable, "-m", "pip", "--python", pythons["with"], "install", "--no-deps",
                        "--quiet", wheel], check=True)
        times = {name: [] for name in pythons}
        for _ in range(runs):
            for name, python in pythons.items():
                start = time.perf_counter()
                subprocess.run([python, "-c", "pass"], check=True)
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(values) * 1000 for name, values in times.items()}
        print(f"python -c pass, median of {runs}: without {med['without']:.1f} ms, "
              f"with mi_mergekit {med['with']:.1f} ms, difference {med['with'] - med['without']:+.2f} ms "
              f"(load avg {os.getloadavg()[0]:.2f})")


def merge_startup(runs: int, before: str = "") -> None:
    import yaml
    from _measure import checkout

    toy = os.path.join(REPO, "mi_mergekit", "toy", "pair")
    with tempfile.TemporaryDirectory() as root:
        recipe = os.path.join(root, "mi.yaml")
        with open(recipe, "w") as handle:
            yaml.safe_dump({"merge_method": "model_interpolation", "base_model": os.path.join(toy, "instruct"),
                            "models": [{"model": os.path.join(toy, "thinking")}], "parameters": {"lambda": 0.8},
                            "dtype": "bfloat16"}, handle)
        sides = {f"@{ref}": checkout(ref, root) for ref in before.split(",") if ref}
        sides["this checkout"] = {}
        samples = {name: [] for name in sides}
        for _ in range(runs):
            for name, env in sides.items():
                start = time.time()
                out = os.path.join(root, f"out-{len(samples[name])}-{name.replace('/', '_')}")
                result = subprocess.run([sys.executable, "-c", FIRST_READ, recipe, out],
                                        capture_output=True, text=True, env={**os.environ, **env})
                if result.returncode or not result.stdout.strip():
                    raise SystemExit(f"{name}: mergekit-yaml did not reach a tensor read:\n{result.stderr[-3000:]}")
                first = json.loads(result.stdout.strip().splitlines()[-1])
                samples[name].append((first["at"] - start, first["cpu"]))
        print(f"mergekit-yaml start-up (process start to first tensor read), {runs} runs each, "
              f"load avg {os.getloadavg()[0]:.2f}:\n")
        print("| code | wall median (s) | wall fastest (s) | CPU median (s) |")
        print("|---|---:|---:|---:|")
        for name, values in samples.items():
            walls, cpus = [v[0] for v in values], [v[1] for v in values]
            print(f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f} | {statistics.median(cpus):.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int)
    parser.add_argument("--merge", action="store_true", help="mergekit-yaml: start to first tensor read")
    parser.add_argument("--before", metavar="REF[,REF…]", help="with --merge: also the package as of these git refs")
    args = parser.parse_args()
    if args.merge:
        merge_startup(args.runs or 10, args.before or "")
    else:
        autoload(args.runs or 60)


if __name__ == "__main__":
    main()
