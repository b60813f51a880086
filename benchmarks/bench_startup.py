"""Start-up cost of the autoload hook: `python -c pass` with and without mi_mergekit installed.

    python benchmarks/bench_startup.py [--runs 60]

Builds our wheel, makes two fresh virtual environments (no pip, no other packages),
installs the wheel into one of them, and times `python -c pass` alternately in both.
Reports the median and the difference. Not a test (wall-clock numbers).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
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
        for _ in range(args.runs):
            for name, python in pythons.items():
                start = time.perf_counter()
                subprocess.run([python, "-c", "pass"], check=True)
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(values) * 1000 for name, values in times.items()}
        print(f"python -c pass, median of {args.runs}: without {med['without']:.1f} ms, "
              f"with mi_mergekit {med['with']:.1f} ms, difference {med['with'] - med['without']:+.2f} ms "
              f"(load avg {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
