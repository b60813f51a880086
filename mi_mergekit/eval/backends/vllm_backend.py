"""Generation with vLLM's offline engine (GPU; optional).

vLLM has no CPU wheel and pins its own transformers/torch, so it usually lives
in a separate environment: install mi-mergekit there with
``pip install 'mi-mergekit[eval,vllm]'``, or serve the model with
``vllm serve`` and use the HTTP backend from here.

One ``SamplingParams(n=chunk_size, seed=chunk.seed, temperature, top_p,
top_k, min_p, max_tokens)`` per chunk, i.e. n samples per prompt with vLLM's
per-request seeded sampler; chunks are submitted ``requests_per_call`` at a
time to ``LLM.generate`` so vLLM batches them, and each call's results are
stored before the next. ``tensor_parallel_size`` shards the model across GPUs.
Token counts are ``len(output.token_ids)``; vLLM's ``finish_reason`` is
``stop`` or ``length``.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.eval.backends.base import Backend, Chunk, Completion
from mi_mergekit.eval.decoding import Decoding


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "the vllm backend needs vLLM (GPU only; often its own environment): pip install 'mi-mergekit[vllm]'. "
            "Alternatively run `vllm serve MODEL` and use --backend openai --base-url http://HOST:PORT/v1"
        ) from exc
    return vllm


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model_path: str,
        samples_per_request: int = 8,
        tensor_parallel_size: int = 1,
        requests_per_call: int = 256,
        dtype: str = "auto",
        max_model_len: Optional[int] = None,
        gpu_memory_utilization: float = 0.9,
        tokenizer_path: Optional[str] = None,
        seed: int = 0,
    ):
        vllm = _import_vllm()
        self._vllm = vllm
        self.chunk_size = max(1, int(samples_per_request))
        self.requests_per_call = max(1, int(requests_per_call))
        self.tensor_parallel_size = int(tensor_parallel_size)
        kwargs = dict(
            model=model_path,
            tokenizer=tokenizer_path or model_path,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def describe(self) -> dict:
        return {"name": self.name, "chunk_size": self.chunk_size, "tensor_parallel_size": self.tensor_parallel_size}

    def sampling_params(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int):
        """vLLM SamplingParams for one chunk."""
        kwargs = dict(
            n=len(chunk.indices),
            seed=chunk.seed,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            max_tokens=max_new_tokens,
        )
        if decoding.top_k is not None:
            kwargs["top_k"] = decoding.top_k
        if decoding.min_p is not None:
            kwargs["min_p"] = decoding.min_p
        return self._vllm.SamplingParams(**kwargs)

    @staticmethod
    def completions(request_output) -> List[Completion]:
        """Completions of one vLLM RequestOutput, in output index order."""
        outputs = sorted(request_output.outputs, key=lambda o: o.index)
        return [
            Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
            for o in outputs
        ]

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        chunks = list(chunks)
        for start in range(0, len(chunks), self.requests_per_call):
            group = chunks[start:start + self.requests_per_call]
            params = [self.sampling_params(c, decoding, max_new_tokens) for c in group]
            outputs = self.llm.generate([c.prompt for c in group], params, use_tqdm=False)
            for chunk, output in zip(group, outputs):
                yield chunk, self.completions(output)
