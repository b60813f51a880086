#!/usr/bin/env bash
# The streaming engine on one GPU: a Qwen3-4B-sized pair merged with `mergekit-yaml --cuda`
# and on the CPU, on the same machine; prints both (wall until durable, peak RSS) and
# whether the two outputs are the same bytes.
#
#   bash benchmarks/gpu_check.sh --prepare [PYTHON_VERSION]   # here: fill .whl/ (default 3.12)
#   bash benchmarks/gpu_check.sh [--small]                    # there: install from .whl/, run
#
# The GPU machine's python3 has torch (CUDA), transformers and safetensors but no mergekit
# and no network: --prepare (on a machine with PyPI) puts mi-mergekit's own wheel and the
# wheels of what that machine lacks (mergekit, pydantic, pydantic_core, immutables, …;
# ~5 MB) in .whl/ at the repository root, which git ignores and which travels beside the
# checkout. The run makes a venv on top of that python3 (seeing its packages), installs
# .whl/ into it without an index, builds the pair in $GPU_CHECK_DIR (default
# /tmp/gpu-check; ~16 GB, random numbers drawn on the GPU), merges it both ways and cleans
# up. Under 8 minutes on an H100/H200 machine. --small uses a 2 × 50 MB pair (a CPU rehearsal:
# without CUDA the --cuda run must end in one `Error:` line, which is then what it checks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WHEELS=.whl
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  PYVER=${2:-3.12}
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  PIP=(.venv/bin/python -m pip)
  [ -x .venv/bin/python ] || PIP=("$PY" -m pip)
  "${PIP[@]}" wheel --no-deps --no-build-isolation --quiet -w "$WHEELS" .
  # what mergekit 0.1.5 and mi-mergekit import that the GPU image lacks (KINDS.md's list)
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" \
    mergekit==0.1.5 "pydantic==2.14.4" "pydantic_core==2.50.5" "annotated-types==0.8.0" \
    "typing-inspection==0.4.5" "immutables==0.21"
  ls -l "$WHEELS"
  du -sh "$WHEELS"
  exit 0
fi

SIZE=4b
[ "${1:-}" = "--small" ] && SIZE=small
WORK=${GPU_CHECK_DIR:-/tmp/gpu-check}
VENV=$WORK/venv
START=$(date +%s)
rm -rf "$WORK" && mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "Error: no wheels in $WHEELS: run bash benchmarks/gpu_check.sh --prepare first" >&2; exit 1; }

# A venv that sees the packages of $PY (itself often a venv, so not --system-site-packages):
# its site-packages first (our wheels win), then those of $PY, through a .pth file.
"$PY" -m venv --without-pip "$VENV"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$SITE/_gpu_check_base.pth"
"$PY" -m pip --python "$VENV/bin/python" install --quiet --no-index --no-deps --no-compile \
  --disable-pip-version-check "$WHEELS"/*.whl
echo "[gpu_check] installed from $WHEELS in $(( $(date +%s) - START )) s"

PYTHONUNBUFFERED=1 "$VENV/bin/python" - "$SIZE" "$WORK" <<'EOF'
import hashlib, os, subprocess, sys, time
sys.path.insert(0, "tests"); sys.path.insert(0, "benchmarks")
import torch, transformers, safetensors, mergekit.merge
from _measure import ensure_pair, measure
from bench_engine import PAIR_4B, write_recipes
from synthetic import PairSpec

size, work = sys.argv[1], sys.argv[2]
bindir = os.path.dirname(sys.executable)
cuda = torch.cuda.is_available()
print(f"[gpu_check] python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, {os.cpu_count()} cores, GPU: "
      f"{torch.cuda.get_device_name(0) if cuda else 'none (CUDA not available)'}", flush=True)
spec = PAIR_4B if size == "4b" else PairSpec(num_layers=4, hidden_size=512, intermediate_size=1536,
                                              num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                                              vocab_size=32000, dtype="bfloat16", noise=0.02)
start = time.time()
instruct, thinking, nbytes = ensure_pair(os.path.join(work, "pair"), spec, streaming=True,
                                        device="cuda" if cuda else "cpu")
print(f"[gpu_check] pair: 2 x {nbytes / 2**30:.2f} GiB bf16 built in {time.time() - start:.0f} s", flush=True)
recipe = write_recipes(work, instruct, thinking)["mi"]


def digest(folder):
    h = hashlib.sha256()
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".safetensors")):
        with open(os.path.join(folder, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


rows, digests = [], {}
for label, extra in (("--cuda", ["--cuda"]), ("cpu", [])):
    out = os.path.join(work, "out-" + label.strip("-"))
    cmd = [os.path.join(bindir, "mergekit-yaml"), recipe, out, *extra]
    if label == "--cuda" and not cuda:  # a CPU rehearsal: the one-line refusal is the result
        result = subprocess.run(cmd, capture_output=True, text=True)
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        ok = result.returncode == 1 and last.startswith("Error: ") and "CUDA is not available" in last
        print(f"[gpu_check] --cuda without CUDA: exit {result.returncode}, last line: {last}")
        if not ok:
            sys.exit("[gpu_check] FAILED: --cuda without CUDA did not end in one Error: line")
        continue
    os.sync()
    r = measure(cmd, durable=out)
    rows.append((label, r["wall"], r["rss_mib"]))
    digests[label] = digest(out)
    print(f"[gpu_check] mergekit-yaml {label}: {r['wall']:.1f} s, peak RSS {r['rss_mib']:.0f} MiB", flush=True)
    subprocess.run(["rm", "-rf", out], check=True)

print(f"\n| mergekit-yaml + model_interpolation, 2 x {nbytes / 2**30:.2f} GiB bf16 | wall (s) | peak RSS (MiB) |")
print("|---|---:|---:|")
for label, wall, rss in rows:
    print(f"| {label} | {wall:.1f} | {rss:.0f} |")
if len(digests) == 2:
    same = len(set(digests.values())) == 1
    print(f"\n--cuda and CPU outputs: {'the same bytes' if same else 'DIFFERENT'}")
    if not same:
        sys.exit(1)
EOF
echo "[gpu_check] done in $(( $(date +%s) - START )) s"
