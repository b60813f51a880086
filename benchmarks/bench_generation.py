"""Generation speed on the SmolLM2 demo's workload, side by side in one run.

    python benchmarks/bench_generation.py [--pair-dir DIR] [--side thinking] [--every 1] [--slots 128]
        [--paths bound,today,slots,llama,llama1,bound] [--llama-venv DIR] [--threads 2] [--profile]

The workload is the demo's: its 50 held-out questions (sorted by difficulty, as the demo runs
them) × 4 samples, budget 352, the ``thinking`` decoding preset, rendered with the model's chat
template; ``--every K`` keeps every K-th question (a stated fraction, difficulty still balanced).
Each path generates it in this process or a child, one after the other, and reports generated
tokens per second of wall time and CPU seconds per 1,000 generated tokens (all threads), with the
1-minute load average before and after it (the machine may be shared: compare ratios within a run):

* ``today``: the transformers backend as the demo ran it (``--compact``, one prompt batch of
  ``--prompt-batch`` questions, ``generate``'s warpers);
* ``slots``: the continuous-batching decoder (``--slots N``, :mod:`mi_mergekit.eval.backends.slots`);
  ``slots_bf16`` the same with ``--dtype bfloat16`` (an option: these cores multiply bf16 with AMX);
* ``llama`` / ``llama1``: llama.cpp (llama-cpp-python) on the same weights at the same precision
  (a float32 GGUF written by llama.cpp's own ``convert_hf_to_gguf.py``, float32 KV cache), with
  ``--slots`` parallel sequences (continuous batching as its server does, prompts evaluated once
  per question) or one sequence at a time (``--llama1-questions`` questions only: it is slow);
* ``bound``: the float32 compute bound: the best matrix-product rate of the model's own shapes
  (every projection of every layer and the lm_head, for 64, 128, 256 and ``--slots`` rows)
  divided by the FLOPs of a generated token (2 × the weights multiplied; attention's few FLOPs
  are left out, so the bound is generous). Listing it twice measures it before and after.

llama-cpp-python compiles llama.cpp (about 8 minutes on 2 cores): ``--llama-venv`` names a
virtualenv that has it, or one to create. ``convert_hf_to_gguf.py`` comes from the sdist of the
same llama-cpp-python version (``pip download``), unpacked under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
N_SAMPLES, BUDGET = 4, 352


def load() -> float:
    return float(open("/proc/loadavg").read().split()[0])


def workload(model: Path, every: int):
    """The demo's questions (every ``every``-th) as prompt records, and the model's tokenizer."""
    import tempfile

    from mi_mergekit.eval.backends.base import load_tokenizer
    from mi_mergekit.eval.benchmarks import get_benchmark
    from mi_mergekit.eval.datasets import load_examples
    from mi_mergekit.eval.prompts import prompt_record
    from mi_mergekit.real import task

    records = task.balanced_questions(task.load_heldout(), 50)[::every]
    tokenizer = load_tokenizer(str(model))
    kind = get_benchmark("boxed").kind
    with tempfile.TemporaryDirectory() as folder:  # read as the demo's eval reads its heldout.jsonl
        path = Path(folder) / "heldout.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        examples = load_examples(str(path), kind)
    return [prompt_record(kind, e, tokenizer) for e in examples], tokenizer


def run_backend(backend, prompts, decoding) -> dict:
    from mi_mergekit.eval.runner import plan_chunks

    chunks = plan_chunks(prompts, N_SAMPLES, backend.chunk_size, 0, set(), backend.prompt_batch)
    before, t0, usage = load(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    done = list(backend.generate(chunks, decoding, BUDGET))
    wall = time.perf_counter() - t0
    end = resource.getrusage(resource.RUSAGE_SELF)
    tokens = sum(c.n_tokens for _, completions in done for c in completions)
    return {"samples": sum(len(c) for _, c in done), "tokens": tokens, "wall": wall,
            "cpu": end.ru_utime - usage.ru_utime + end.ru_stime - usage.ru_stime, "load": [before, load()]}


def matmul_bound(model: Path, rows: list) -> dict:
    """Best float32 matrix-product rate over the model's shapes, and the FLOPs of a generated token."""
    import torch
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model).get_text_config()
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    h, q, kv, ff = c.hidden_size, c.num_attention_heads * head, c.num_key_value_heads * head, c.intermediate_size
    shapes = [(q, h), (kv, h), (kv, h), (h, q), (ff, h), (ff, h), (h, ff)]
    flops = 2 * (c.num_hidden_layers * sum(o * i for o, i in shapes) + c.vocab_size * h)
    torch.manual_seed(0)
    weights = [torch.randn(o, i) * 0.02 for o, i in shapes]
    lm_head = torch.randn(c.vocab_size, h) * 0.02
    before, rates, cpu_rates = load(), {}, {}
    for m in sorted(set(rows)):
        inputs = {i: torch.randn(m, i) for _, i in shapes}

        def token_step():
            for _ in range(c.num_hidden_layers):
                for w in weights:
                    torch.nn.functional.linear(inputs[w.shape[1]], w)
            torch.nn.functional.linear(inputs[h], lm_head)

        token_step()
        repeats, t0, usage = 0, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        while repeats < 2 or time.perf_counter() - t0 < 1.5:  # small row counts: as many steps as fit in 1.5 s
            token_step()
            repeats += 1
        end = resource.getrusage(resource.RUSAGE_SELF)
        rates[m] = m * flops * repeats / (time.perf_counter() - t0)
        cpu_rates[m] = m * flops * repeats / (end.ru_utime - usage.ru_utime + end.ru_stime - usage.ru_stime)
    best = max(rates.values())
    return {"rates": rates, "flops_per_token": flops, "gflops": {m: round(r / 1e9, 1) for m, r in rates.items()},
            "tokens_per_s": best / flops, "cpu_per_1k": 1000 * flops / max(cpu_rates.values()),
            "load": [before, load()]}


def gguf_f32(model: Path, work: Path, llama_python: str) -> Path:
    """``model`` as a float32 GGUF, written by llama.cpp's convert_hf_to_gguf.py (from the sdist of the
    llama-cpp-python in ``llama_python``'s environment)."""
    out = work / f"{model.name}-f32.gguf"
    if out.exists() and out.stat().st_mtime > max(p.stat().st_mtime for p in model.glob("*.safetensors")):
        return out
    version = subprocess.run([llama_python, "-c", "import llama_cpp; print(llama_cpp.__version__)"], check=True,
                             capture_output=True, text=True).stdout.strip()
    source = work / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "convert_hf_to_gguf.py").exists():
        subprocess.run([llama_python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(work)], check=True)
        with tarfile.open(work / f"llama_cpp_python-{version}.tar.gz") as archive:
            wanted = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name and (
                m.name.endswith("convert_hf_to_gguf.py") or "/gguf-py/" in m.name or "/conversion/" in m.name)]
            archive.extractall(work, members=wanted, filter="data")
    subprocess.run([sys.executable, str(source / "convert_hf_to_gguf.py"), str(model), "--outtype", "f32",
                    "--outfile", str(out)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(source / "gguf-py")})
    return out


def llama_venv(path: Path) -> str:
    python = path / "bin" / "python"
    if subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True).returncode:
        print(f"building llama-cpp-python into {path} (compiles llama.cpp, ~8 min on 2 cores)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "llama-cpp-python"], check=True)
    return str(python)


def run_llama(python: str, gguf: Path, prompts, tokenizer, decoding, eos, slots: int, threads: int) -> dict:
    from mi_mergekit.eval.decoding import chunk_seed

    ids = [tokenizer(p["prompt"], add_special_tokens=False)["input_ids"] for p in prompts]
    job = {"gguf": str(gguf), "prompts": ids, "n": N_SAMPLES, "budget": BUDGET, "eos": sorted(eos), "slots": slots,
           "threads": threads, "kv_unified": True, "temperature": decoding.temperature, "top_p": decoding.top_p,
           "top_k": decoding.top_k, "seeds": [[chunk_seed(0, p["question_id"], i) for i in range(N_SAMPLES)]
                                               for p in prompts]}
    before = load()
    result = subprocess.run([python, str(REPO / "benchmarks" / "_llama_generate.py")], input=json.dumps(job),
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"llama.cpp failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout)
    return {"samples": sum(len(c) for c in out["counts"]), "tokens": sum(map(sum, out["counts"])),
            "wall": out["wall"], "cpu": out["cpu"], "load": [before, load()]}


def occupancy_bound(bound: dict, step_rows: list) -> float:
    """Seconds the decode steps would take at the measured matrix-product rate *of each step's own
    row count* (log-interpolated between the measured row counts): the bound that the schedule
    allows, since a step with few rows in flight streams every weight for few tokens."""
    import math

    measured = sorted(bound["rates"].items())

    def rate(rows: int) -> float:
        if rows <= measured[0][0]:
            return measured[0][1] * rows / measured[0][0]  # below the smallest measured: the same time a step
        for (m0, r0), (m1, r1) in zip(measured, measured[1:]):
            if rows <= m1:
                w = (math.log(rows) - math.log(m0)) / (math.log(m1) - math.log(m0))
                return r0 + w * (r1 - r0)
        return measured[-1][1]

    return sum(rows * bound["flops_per_token"] / rate(rows) for rows in step_rows)


def profile(backend, prompts, decoding, label: str) -> None:
    """torch.profiler's busiest operators for one path on ``prompts``."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from mi_mergekit.eval.runner import plan_chunks

    chunks = plan_chunks(prompts, N_SAMPLES, backend.chunk_size, 0, set(), backend.prompt_batch)
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        done = list(backend.generate(chunks, decoding, BUDGET))
    wall = time.perf_counter() - t0
    tokens = sum(c.n_tokens for _, completions in done for c in completions)
    print(f"\n## profile: {label}: {tokens} tokens in {wall:.1f} s (load {load():.1f})")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair-dir", type=Path, default=REPO / "smollm2-pair")
    parser.add_argument("--side", default="thinking", help="pair side or model folder (default: thinking, λ = 1)")
    parser.add_argument("--every", type=int, default=1, help="every K-th of the demo's 50 questions")
    parser.add_argument("--slots", type=int, default=128)
    parser.add_argument("--prompt-batch", type=int, default=50, help="today's path: questions per batch")
    parser.add_argument("--paths", default="bound,today,slots,llama,llama1,bound")
    parser.add_argument("--llama1-questions", type=int, default=3)
    parser.add_argument("--llama-venv", type=Path, default=REPO / "llama-cpp-check" / "llama-venv")
    parser.add_argument("--work", type=Path, default=REPO / "llama-cpp-check")
    parser.add_argument("--threads", type=int, default=None, help="threads of every path (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile today's and the slots path instead")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch
    from transformers import GenerationConfig

    from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
    from mi_mergekit.eval.decoding import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model = Path(args.side) if Path(args.side).is_dir() else args.pair_dir / args.side
    if not (model / "config.json").exists():
        from mi_mergekit.real.build import build_pair

        build_pair(args.pair_dir, log=print)
    prompts, tokenizer = workload(model, args.every)
    decoding = PRESETS["thinking"]
    eos = GenerationConfig.from_pretrained(model).eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    today = dict(batch_size=N_SAMPLES, prompt_batch=args.prompt_batch, compact=True)
    slots = dict(batch_size=N_SAMPLES, slots=args.slots)
    if args.profile:
        for label, options in (("today", today), ("slots", slots)):
            profile(TransformersBackend(str(model), **options), prompts, decoding, label)
        return
    print(f"model {model}; {len(prompts)} questions × {N_SAMPLES} samples, budget {BUDGET}, decoding thinking; "
          f"{threads} threads; load {load():.1f}", flush=True)
    results = []
    for path in args.paths.split(","):
        if path == "bound":
            bound = matmul_bound(model, [1, 4, 16, 64, 128, 256, args.slots])
            results.append(("compute bound (float32)", bound))
            print(f"bound: {bound['gflops']} GFLOP/s at rows; {bound['flops_per_token'] / 1e9:.3f} GFLOP/token -> "
                  f"{bound['tokens_per_s']:.0f} tokens/s (load {bound['load']})", flush=True)
            continue
        if path in ("today", "slots", "slots_bf16"):
            options = {"today": today, "slots": slots, "slots_bf16": {**slots, "dtype": "bfloat16"}}[path]
            backend = TransformersBackend(str(model), **options)
            label = {"today": f"today: --compact --prompt-batch {args.prompt_batch}", "slots": f"new: --slots {args.slots}",
                     "slots_bf16": f"new: --slots {args.slots} --dtype bfloat16"}[path]
            result = run_backend(backend, prompts, decoding)
            result["step_rows"] = list(backend.step_rows)
            backend.close()
        else:
            python = llama_venv(args.llama_venv)
            gguf = gguf_f32(model, args.work, python)
            one = path == "llama1"
            result = run_llama(python, gguf, prompts[:args.llama1_questions] if one else prompts, tokenizer,
                               decoding, eos, 1 if one else args.slots, threads)
            label = (f"llama.cpp f32, one sequence ({args.llama1_questions} questions)" if one
                     else f"llama.cpp f32, {args.slots} parallel sequences")
        results.append((label, result))
        print(f"{label}: {result['tokens']} tokens in {result['wall']:.1f} s = {result['tokens'] / result['wall']:.1f} "
              f"tokens/s, {1000 * result['cpu'] / result['tokens']:.2f} CPU-s per 1k tokens (load {result['load']})",
              flush=True)
    bounds = [r for label, r in results if label.startswith("compute")]
    bound = sum(r["tokens_per_s"] for r in bounds) / len(bounds) if bounds else None
    bound_cpu = sum(r["cpu_per_1k"] for r in bounds) / len(bounds) if bounds else None
    base = next((r["tokens"] / r["wall"] for label, r in results if label.startswith("today")), None)
    print("\n| path | tokens | wall s | tokens/s | CPU-s / 1k tokens | × today | ÷ bound (tokens/s) | "
          "÷ bound (CPU-s) | rows a step | ÷ bound at its rows | load before→after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, r in results:
        loads = f"{r['load'][0]:.1f}→{r['load'][1]:.1f}"
        if label.startswith("compute"):
            print(f"| {label} | | | {r['tokens_per_s']:.0f} | {r['cpu_per_1k']:.2f} | | 1 | 1 | | 1 | {loads} |")
            continue
        rate, cpu = r["tokens"] / r["wall"], 1000 * r["cpu"] / r["tokens"]
        ratio = lambda value: f"{value:.2f}" if value else ""  # noqa: E731
        steps = r.get("step_rows")
        rows = f"{sum(steps) / len(steps):.1f}" if steps else ""
        # the decode steps' matrix products at each step's own rows (prefill left out) ÷ the path's wall time
        at_rows = ratio(steps and bounds and sum(occupancy_bound(b, steps) for b in bounds) / len(bounds) / r["wall"])
        print(f"| {label} | {r['tokens']} | {r['wall']:.1f} | {rate:.1f} | {cpu:.2f} | {ratio(base and rate / base)} | "
              f"{ratio(bound and rate / bound)} | {ratio(bound_cpu and bound_cpu / cpu)} | {rows} | {at_rows} | {loads} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": threads, "results": results}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
