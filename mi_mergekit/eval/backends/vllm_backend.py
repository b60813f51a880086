"""Generation with vLLM's offline engine (GPU; optional).

vLLM has no CPU wheel and pins its own transformers/torch, so it usually lives
in a separate environment: install mi-mergekit there with
``pip install 'mi-mergekit[eval,vllm]'``, or serve the model with
``vllm serve`` and use the HTTP backend from here.

One ``SamplingParams(n=chunk_size, seed=chunk.seed, temperature, top_p, top_k,
min_p, max_tokens)`` per chunk, i.e. n samples per prompt with vLLM's per-request
seeded sampler; chunks are submitted ``requests_per_call`` at a time to
``LLM.generate`` so vLLM batches them, and each call's results are stored before
the next. ``tensor_parallel_size`` shards the model across GPUs. Checked against
vLLM 0.33's source (file names under ``vllm/``):

- greedy decoding (temperature 0) takes ``n = 1`` only (``sampling_params.py``,
  ``_verify_greedy_sampling``): a greedy chunk is one request per sample;
- a top_k / min_p the decoding leaves unset is passed as the value that switches it
  off (0 / 0.0) — the same as the openai backend sends ``vllm serve``, which would
  otherwise fill it from the model's ``generation_config.json``;
- the prompt is already rendered by the chat template, so it is tokenized with
  ``add_special_tokens=False`` (``LLM.generate(tokenization_kwargs=…)``; the default,
  ``renderers/base.py`` ``default_cmpl_tok_params``, would add a second BOS for
  tokenizers that add one, e.g. Llama and R1-Distill);
- finish reasons are kept as vLLM reports them (``v1/engine/__init__.py``
  ``FINISH_REASON_STRINGS``): ``stop``, ``length`` and ``repetition`` are stored
  (the last two graded as cut off), ``abort`` / ``error`` are failures: the chunk is
  generated again (twice at most), never stored.

Token counts are ``len(output.token_ids)``.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.errors import MiMergekitError
from mi_mergekit.eval.backends.base import (DTYPE, FAILED, SAMPLES_PER_REQUEST, TOKENIZER, Backend, BackendOption,
                                            Chunk, Completion, greedy)
from mi_mergekit.eval.decoding import Decoding


class VLLMGenerationFailed(MiMergekitError):
    """vLLM aborted a sample or failed it with an internal error."""


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
    summary = "GPU"
    options = (
        BackendOption("--tensor-parallel-size", "tensor_parallel_size", "GPUs per model.", int, default=1, minimum=1),
        SAMPLES_PER_REQUEST,
        BackendOption("--max-model-len", "max_model_len", "context length.", int, minimum=1),
        DTYPE,
        TOKENIZER,
    )
    takes = ("seed",)
    local_model = True
    #: generations of a chunk whose samples vLLM keeps failing (abort / error) before giving up
    max_attempts = 3

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

    def sampling_params(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int, n: Optional[int] = None,
                        seed: Optional[int] = None):
        """vLLM SamplingParams for ``n`` samples of one chunk (default: all of them)."""
        return self._vllm.SamplingParams(
            n=len(chunk.indices) if n is None else n,
            seed=chunk.seed if seed is None else seed,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k or 0,  # unset = off
            min_p=decoding.min_p if decoding.min_p is not None else 0.0,
            max_tokens=max_new_tokens,
        )

    def requests(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> list:
        """The SamplingParams of one chunk: one request, or one per sample for greedy decoding."""
        if greedy(decoding) and len(chunk.indices) > 1:
            return [self.sampling_params(chunk, decoding, max_new_tokens, n=1, seed=chunk.seed + j)
                    for j in range(len(chunk.indices))]
        return [self.sampling_params(chunk, decoding, max_new_tokens)]

    @staticmethod
    def completions(request_output) -> List[Completion]:
        """Completions of one vLLM RequestOutput, in output index order; raises
        :class:`VLLMGenerationFailed` if vLLM ended a sample with ``abort`` / ``error``."""
        outputs = sorted(request_output.outputs, key=lambda o: o.index)
        failed = [o.finish_reason for o in outputs if o.finish_reason in FAILED or o.finish_reason is None]
        if failed:
            raise VLLMGenerationFailed(f"vLLM ended a sample with finish_reason {failed[0]!r}")
        return [Completion(o.text, len(o.token_ids), o.finish_reason) for o in outputs]

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        queue = [(chunk, 0) for chunk in chunks]
        while queue:
            group, queue = queue[:self.requests_per_call], queue[self.requests_per_call:]
            prompts, params, owner = [], [], []
            for chunk, _ in group:
                for request in self.requests(chunk, decoding, max_new_tokens):
                    prompts.append(chunk.prompt)
                    params.append(request)
                    owner.append(chunk)
            outputs = self.llm.generate(prompts, params, use_tqdm=False,
                                        tokenization_kwargs={"add_special_tokens": False})
            by_chunk = {}
            for chunk, output in zip(owner, outputs):
                by_chunk.setdefault(id(chunk), []).append(output)
            for chunk, attempt in group:
                try:
                    completions = [c for output in by_chunk[id(chunk)] for c in self.completions(output)]
                except VLLMGenerationFailed as exc:
                    if attempt >= self.max_attempts - 1:
                        raise VLLMGenerationFailed(f"{exc} {attempt + 1} times for question "
                                                   f"{chunk.question_id!r}; giving up") from None
                    queue.append((chunk, attempt + 1))
                    continue
                yield chunk, completions
