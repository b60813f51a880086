"""Shared by the benchmark scripts: isolated wall/peak-RSS measurement, cached pairs, old code."""

import json
import os
import subprocess
import sys

from synthetic import PairSpec, build_pair, build_pair_streaming  # noqa: F401  (PairSpec re-exported)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh wrapper process per measured command, so RUSAGE_CHILDREN sees that command alone.
# With an output path, the timed part ends when every file under it is on disk (fsync of
# each file and folder): each command is made durable the same way, whatever it did itself.
WRAPPER = (
    "import os, resource, subprocess, sys, time, json\n"
    "durable, cmd = sys.argv[1], sys.argv[2:]\n"
    "t = time.perf_counter(); r = subprocess.run(cmd, capture_output=True, text=True)\n"
    "if r.returncode: sys.stderr.write(r.stderr[-3000:]); sys.exit(r.returncode)\n"
    "for folder, _, files in (os.walk(durable) if durable else ()):\n"
    "    for name in files + ['.']:\n"
    "        fd = os.open(os.path.join(folder, name), os.O_RDONLY); os.fsync(fd); os.close(fd)\n"
    "w = time.perf_counter() - t\n"
    "print(json.dumps({'wall': w, 'rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)


def measure(cmd, env=None, durable: str = "") -> dict:
    """{'wall': seconds, 'rss_mib': peak RSS} of one command; the wall includes making
    every file under ``durable`` (the command's output) durable."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, durable, *cmd], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def evict(*folders: str) -> None:
    """Drop the page-cache pages of every file in ``folders`` (clean pages only: call
    after ``os.sync()``), so the next command reads them from disk."""
    for folder in folders:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)


def ensure_pair(root: str, spec: PairSpec, streaming: bool = False, device: str = "cpu"):
    """Build (once) a benchmark pair under ``root``; return (instruct, thinking, bytes per model).

    ``streaming``: write it slice by slice in ~4 GB shards (pairs that do not fit in memory),
    drawing the random numbers on ``device``."""
    instruct, thinking = os.path.join(root, "instruct"), os.path.join(root, "thinking")
    if not os.path.exists(os.path.join(thinking, "config.json")):
        print(f"building the benchmark pair in {root} ...", flush=True)
        if streaming:
            build_pair_streaming(root, spec, progress=True, device=device)
        else:
            build_pair(root, spec)
    return instruct, thinking, weight_bytes(instruct)


def weight_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors"))


def checkout(ref: str, root: str) -> dict:
    """The package as of git ``ref``, extracted under ``root``; returns the environment that
    makes ``python``, ``mergekit-yaml`` and ``mi-mergekit`` run it (PYTHONPATH comes before
    the editable install; the autoload ``.pth`` then imports the old hook too)."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", ref], check=True, capture_output=True,
                         text=True).stdout.strip()
    target = os.path.join(root, "checkout-" + sha[:12])
    if not os.path.isdir(target):
        os.makedirs(target)
        archive = subprocess.run(["git", "-C", REPO, "archive", ref, "mi_mergekit"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return {"PYTHONPATH": target}
