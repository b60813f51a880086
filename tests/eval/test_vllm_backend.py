"""The vLLM backend's mapping onto vLLM's API, with a stand-in ``vllm`` module (vLLM has no CPU wheel)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from mi_mergekit.eval.backends import make_backend
from mi_mergekit.eval.backends.base import Chunk
from mi_mergekit.eval.decoding import PRESETS, resolve_decoding


@dataclass
class FakeOutput:
    index: int
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class FakeRequestOutput:
    outputs: list = field(default_factory=list)


def fake_vllm():
    module = types.ModuleType("vllm")
    calls = {"llm": None, "generate": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def get_tokenizer(self):
            return "tokenizer"

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"].append((list(prompts), [p.kwargs for p in sampling_params]))
            results = []
            for prompt, params in zip(prompts, sampling_params):
                n = params.kwargs["n"]
                outs = [FakeOutput(i, f"{prompt}#{i}", list(range(i + 1)), "length" if i == 0 else "stop")
                        for i in reversed(range(n))]  # vLLM may return outputs in any order
                results.append(FakeRequestOutput(outs))
            return results

    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module, calls


def test_vllm_backend_maps_onto_llm_and_sampling_params(monkeypatch):
    module, calls = fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", module)
    backend = make_backend("vllm", "models/mi", samples_per_request=3, tensor_parallel_size=4,
                           requests_per_call=2, max_model_len=4096, seed=5)
    assert calls["llm"] == {"model": "models/mi", "tokenizer": "models/mi", "tensor_parallel_size": 4, "dtype": "auto",
                            "gpu_memory_utilization": 0.9, "seed": 5, "max_model_len": 4096}
    assert backend.tokenizer == "tokenizer" and backend.chunk_size == 3
    assert backend.describe() == {"name": "vllm", "chunk_size": 3, "tensor_parallel_size": 4}
    chunks = [Chunk("a", "P1", [], (0, 1, 2), 11), Chunk("a", "P1", [], (3,), 12), Chunk("b", "P2", [], (0, 1, 2), 13)]
    results = list(backend.generate(chunks, PRESETS["thinking"], 81920))
    assert [len(call[0]) for call in calls["generate"]] == [2, 1]  # requests_per_call
    assert calls["generate"][0][1][0] == {"n": 3, "seed": 11, "temperature": 0.6, "top_p": 0.95,
                                          "max_tokens": 81920, "top_k": 20}
    assert calls["generate"][0][1][1]["n"] == 1 and calls["generate"][0][1][1]["seed"] == 12
    chunk, completions = results[0]
    assert chunk is chunks[0]
    assert [(c.text, c.n_tokens, c.finish_reason) for c in completions] == [
        ("P1#0", 1, "length"), ("P1#1", 2, "stop"), ("P1#2", 3, "stop")]


def test_vllm_backend_omits_unset_top_k_and_passes_min_p(monkeypatch):
    module, calls = fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", module)
    backend = make_backend("vllm", "m")
    params = backend.sampling_params(Chunk("a", "p", [], (0,), 1), resolve_decoding("greedy", min_p=0.05), 10)
    assert params.kwargs == {"n": 1, "seed": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 10, "min_p": 0.05}


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(ImportError, match="vllm backend needs vLLM.*--backend openai"):
        make_backend("vllm", "m")


def test_unknown_backend_and_missing_base_url():
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        make_backend("tgi", "m")
    with pytest.raises(ValueError, match="needs a base URL"):
        make_backend("openai", "m")
