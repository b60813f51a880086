"""Shared by the benchmark scripts: isolated wall/peak-RSS measurement, cached pairs."""

import json
import os
import subprocess
import sys

from synthetic import PairSpec, build_pair

# A fresh wrapper process per measured command, so RUSAGE_CHILDREN sees that command alone.
WRAPPER = (
    "import resource, subprocess, sys, time, json\n"
    "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "w = time.perf_counter() - t\n"
    "if r.returncode: sys.stderr.write(r.stderr[-3000:]); sys.exit(r.returncode)\n"
    "print(json.dumps({'wall': w, 'rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)


def measure(cmd, env=None) -> dict:
    """{'wall': seconds, 'rss_mib': peak RSS} of one command."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def ensure_pair(root: str, spec: PairSpec):
    """Build (once) a benchmark pair under ``root``; return (instruct, thinking, bytes per model)."""
    instruct, thinking = os.path.join(root, "instruct"), os.path.join(root, "thinking")
    if not os.path.exists(os.path.join(thinking, "config.json")):
        print(f"building the benchmark pair in {root} ...", flush=True)
        build_pair(root, spec)
    return instruct, thinking, os.path.getsize(os.path.join(instruct, "model.safetensors"))
