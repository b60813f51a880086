"""The vLLM backend against a stand-in ``vllm`` that keeps vLLM 0.33's rules (``vllm_033.py``;
vLLM has no CPU wheel). Each test names the rule it pins; each failed on the backend as it was
before the rule was written down (greedy n, finish reasons, double BOS, unset top_k)."""

from __future__ import annotations

import pytest

import vllm_033
from mi_mergekit.eval.backends import make_backend
from mi_mergekit.eval.backends.base import Chunk
from mi_mergekit.eval.backends.openai_http import OpenAIHTTPBackend
from mi_mergekit.eval.backends.vllm_backend import VLLMGenerationFailed
from mi_mergekit.eval.decoding import PRESETS, resolve_decoding
from tiny_model import BOS_TEMPLATE, build_tokenizer


def tokenizer_loader(bos=False):
    return lambda path: build_tokenizer(BOS_TEMPLATE if bos else build_tokenizer().chat_template, bos=bos)


def install(monkeypatch, script=None, bos=False):
    return vllm_033.install(monkeypatch, tokenizer_loader(bos), script)


def run(backend, chunks, decoding=PRESETS["thinking"], budget=64):
    return [(chunk, [(c.text, c.n_tokens, c.finish_reason) for c in completions])
            for chunk, completions in backend.generate(chunks, decoding, budget)]


def test_llm_and_sampling_params_take_what_vllm_033_takes(monkeypatch):
    install(monkeypatch)
    backend = make_backend("vllm", "models/mi", samples_per_request=3, tensor_parallel_size=4,
                           requests_per_call=2, max_model_len=4096, seed=5)
    assert vllm_033.LLM.created == [{"model": "models/mi", "tokenizer": "models/mi", "tensor_parallel_size": 4,
                                     "dtype": "auto", "gpu_memory_utilization": 0.9, "seed": 5, "max_model_len": 4096}]
    assert backend.chunk_size == 3 and backend.tokenizer is not None
    assert backend.describe() == {"name": "vllm", "chunk_size": 3, "tensor_parallel_size": 4}
    chunks = [Chunk("a", "P1", [], (0, 1, 2), 11), Chunk("a", "P1", [], (3,), 12), Chunk("b", "P2", [], (0, 1, 2), 13)]
    results = run(backend, chunks, budget=81920)
    params = [p.sampling() for _, p in vllm_033.LLM.requests]
    assert params[0] == {"n": 3, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "seed": 11,
                         "max_tokens": 81920}
    assert [(p["n"], p["seed"]) for p in params] == [(3, 11), (1, 12), (3, 13)]
    assert [c for c, _ in results] == chunks
    # outputs come back in finishing order; stored in index order, tokens = len(token_ids)
    assert [n for _, n, _ in results[0][1]] == [1, 2, 3]


def test_greedy_asks_one_sample_per_request(monkeypatch):
    # vllm/sampling_params.py _verify_greedy_sampling: "n must be 1 when using greedy sampling"
    install(monkeypatch)
    backend = make_backend("vllm", "m", samples_per_request=4)
    results = run(backend, [Chunk("a", "P", [], (0, 1, 2, 3), 21)], decoding=PRESETS["greedy"])
    assert [(p.n, p.seed, p.temperature) for _, p in vllm_033.LLM.requests] == [(1, 21 + j, 0.0) for j in range(4)]
    assert len(results[0][1]) == 4
    with pytest.raises(vllm_033.VLLMValidationError, match="n must be 1 when using greedy sampling"):
        vllm_033.SamplingParams(n=4, temperature=0.0)  # the rule the stand-in keeps


def test_finish_reasons_are_kept_and_failures_are_generated_again(monkeypatch):
    # vllm/v1/engine/__init__.py FINISH_REASON_STRINGS: stop, length, abort, error, repetition
    attempts = []

    def script(ids, params, index):
        attempts.append(params.seed)
        if params.seed == 31 and attempts.count(31) <= 2:  # chunk b: aborted on its first try
            return "cut", [1], "abort"
        return f"s{index}", [1] * (index + 1), ("repetition", "length", "stop")[index % 3]

    install(monkeypatch, script)
    backend = make_backend("vllm", "m", samples_per_request=3)
    results = dict((c.question_id, out) for c, out in
                   run(backend, [Chunk("a", "P", [], (0, 1, 2), 30), Chunk("b", "Q", [], (0, 1, 2), 31)]))
    assert [r for _, _, r in results["a"]] == ["repetition", "length", "stop"]  # not folded into "stop"
    assert [r for _, _, r in results["b"]] == ["repetition", "length", "stop"]  # generated again, stored once
    assert attempts.count(31) == 6  # two calls of three samples

    install(monkeypatch, lambda ids, params, index: ("x", [1], "error"))
    with pytest.raises(VLLMGenerationFailed, match="finish_reason 'error' 3 times"):
        run(make_backend("vllm", "m"), [Chunk("c", "R", [], (0,), 1)])


def test_a_rendered_prompt_gets_no_second_bos(monkeypatch):
    # vllm/renderers/base.py default_cmpl_tok_params: add_special_tokens=True for text prompts
    install(monkeypatch, bos=True)
    backend = make_backend("vllm", "m")
    tok = backend.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+1"}], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|endoftext|>") and tok(prompt)["input_ids"][:2] == [tok.bos_token_id] * 2
    run(backend, [Chunk("a", prompt, [], (0,), 1)])
    (ids, _), = vllm_033.LLM.requests
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1


def test_unset_top_k_samples_alike_offline_and_through_vllm_serve(monkeypatch):
    # vllm/entrypoints/openai/completion/protocol.py to_sampling_params: an omitted field takes the
    # model's generation_config.json value (Qwen3: top_k 20); offline SamplingParams: vLLM's neutral 0
    install(monkeypatch)
    decoding = resolve_decoding("custom", temperature=0.6, top_p=0.95)
    chunk = Chunk("a", "P", [], (0, 1), 7)
    offline = make_backend("vllm", "m", samples_per_request=2).requests(chunk, decoding, 100)[0]
    body = OpenAIHTTPBackend("m", "http://127.0.0.1:9/v1", tokenizer=build_tokenizer()).payload(chunk, decoding, 100, n=2)
    served = vllm_033.serve_sampling_params(body, generation_config={"top_k": 20, "temperature": 0.7})
    # top_k -1 (sent to servers: SGLang takes -1 only) and 0 are both "off" in vLLM ("quietly accept -1")
    assert {**served.sampling(), "top_k": max(served.top_k, 0)} == offline.sampling()
    assert offline.top_k == 0 and body["top_k"] == -1 and body["min_p"] == 0.0


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="vllm backend needs vLLM.*--backend openai"):
        make_backend("vllm", "m")


def test_unknown_backend_and_missing_base_url():
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        make_backend("tgi", "m")
    with pytest.raises(ValueError, match="needs a base URL"):
        make_backend("openai", "m")
