"""llama.cpp's batched decoding of a workload, for bench_generation.py (run by llama-cpp-python's interpreter).

Reads a JSON job on stdin: ``gguf``, ``prompts`` (token ids), ``n`` samples each, ``budget``, ``eos``
ids, ``slots`` (sequences decoding at once; 1 = one sequence at a time), ``threads``, ``seeds``
(one per sample) and the decoding (``temperature``, ``top_p``, ``top_k``). Writes JSON on stdout:
each sample's token count, the wall and CPU seconds of the decoding, the decode calls.

Continuous batching as llama.cpp's server does it with parallel slots: every slot that frees
takes the next sample at the next llama_decode; a prompt is evaluated once and its cache copied
to the other samples of the question (llama_memory_seq_cp). The sampler chain is temperature,
top-k, top-p, then a seeded draw: transformers' order.
"""
import json
import resource
import sys
import time

import llama_cpp as L


def main() -> None:
    job = json.load(sys.stdin)
    L.llama_backend_init()
    model = L.llama_model_load_from_file(job["gguf"].encode(), L.llama_model_default_params())
    slots, n, budget, eos = job["slots"], job["n"], job["budget"], set(job["eos"])
    params = L.llama_context_default_params()
    params.n_seq_max = slots
    params.kv_unified = bool(job.get("kv_unified", False))
    params.n_ctx = slots * (max(len(p) for p in job["prompts"]) + budget + 1)
    params.n_batch = params.n_ubatch = max(512, slots + max(len(p) for p in job["prompts"]) * slots)
    params.n_threads = params.n_threads_batch = job["threads"]
    params.type_k = params.type_v = 0  # GGML_TYPE_F32: the cache at the weights' precision
    params.no_perf = True
    ctx = L.llama_init_from_model(model, params)
    memory = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(params.n_batch, 0, 1)

    def sampler(seed):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if job["temperature"] > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(job["temperature"]))
            if job.get("top_k"):
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(job["top_k"]))
            if job.get("top_p", 1.0) < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(job["top_p"], 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return chain

    def add(token, pos, seq, logits):
        k = batch.n_tokens
        batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = token, pos, 1, logits
        batch.seq_id[k][0] = seq
        batch.n_tokens = k + 1
        return k

    waiting = [(q, list(range(n))) for q in range(len(job["prompts"]))][::-1]  # questions and their samples left
    counts = [[0] * n for _ in job["prompts"]]
    running = {}  # slot -> [question, sample, position, sampler, tokens, logits row, last token]
    free = list(range(slots))[::-1]
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    calls = 0
    while waiting or running:
        batch.n_tokens = 0
        for slot, s in running.items():
            s[5] = add(s[6], s[2], slot, True)
            s[2] += 1
        copies = []
        while waiting and free:  # as many of a question's samples as there are free slots
            q, samples = waiting.pop()
            group = [free.pop() for _ in samples[:len(free)]]
            if samples[len(group):]:
                waiting.append((q, samples[len(group):]))
            prompt = job["prompts"][q]
            for j, token in enumerate(prompt):
                row = add(token, j, group[0], j == len(prompt) - 1)
            copies.append(group)
            for i, slot in zip(samples, group):
                running[slot] = [q, i, len(prompt), sampler(job["seeds"][q][i]), 0, row, None]
        if L.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        calls += 1
        for group in copies:
            for slot in group[1:]:
                L.llama_memory_seq_cp(memory, group[0], slot, -1, -1)
        for slot in list(running):
            s = running[slot]
            token = L.llama_sampler_sample(s[3], ctx, s[5])
            s[4] += 1
            s[6] = token
            if token in eos or s[4] >= budget:
                counts[s[0]][s[1]] = s[4]
                L.llama_sampler_free(s[3])
                L.llama_memory_seq_rm(memory, slot, -1, -1)
                del running[slot]
                free.append(slot)
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage_end.ru_utime - usage.ru_utime + usage_end.ru_stime - usage.ru_stime
    json.dump({"counts": counts, "wall": time.perf_counter() - started, "cpu": cpu, "calls": calls}, sys.stdout)


if __name__ == "__main__":
    main()
