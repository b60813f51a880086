"""Generation with transformers ``generate`` (CPU or GPU).

Each chunk is one ``generate`` call with ``num_return_sequences = len(chunk)``
(batched sampling of one prompt, so no padding affects the numerics), after
``torch.manual_seed(chunk.seed)``: the same chunk always yields the same
samples on the same hardware and software. With ``prompt_batch > 1`` the
chunks of a fixed group of questions (see :mod:`..base`) share one call, left
padded and seeded with the group's first chunk seed — far faster for small
models on CPU, and still reproducible because groups never change. The generation settings come from
the model's ``generation_config`` (its EOS ids) with sampling replaced by the
run's decoding; a top_k or min_p the decoding leaves unset is switched off (0), so the
model's own ``generation_config.json`` value (Qwen3: top_k 20) never fills it in unseen.

Token counts include the EOS token that stopped a sample (as vLLM and
OpenAI-style ``usage.completion_tokens`` do); ``finish_reason`` is ``stop`` if
an EOS was produced and ``length`` if the budget ran out. Text is decoded with
special tokens skipped; ``<think>``/``</think>`` are ordinary added tokens in
Qwen3 tokenizers and survive decoding.
"""

from __future__ import annotations

import copy
from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.eval.backends.base import Backend, Chunk, Completion, load_tokenizer
from mi_mergekit.eval.decoding import Decoding


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        prompt_batch: int = 1,
        device: Optional[str] = None,
        dtype: str = "auto",
        tokenizer_path: Optional[str] = None,
        model=None,
        tokenizer=None,
    ):
        import torch

        self.model_path = model_path
        self.chunk_size = max(1, int(batch_size))
        self.prompt_batch = max(1, int(prompt_batch))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer or load_tokenizer(tokenizer_path or model_path)
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model = model.to(self.device).eval()

    def describe(self) -> dict:
        return {"name": self.name, "chunk_size": self.chunk_size, "prompt_batch": self.prompt_batch,
                "device": self.device}

    def _generation_config(self, decoding: Decoding, max_new_tokens: int, n: int):
        config = copy.deepcopy(self.model.generation_config)
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        config.eos_token_id = eos
        first_eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        config.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else first_eos
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.num_return_sequences = n
        config.do_sample = decoding.temperature > 0
        config.temperature = decoding.temperature if config.do_sample else 1.0
        config.top_p = decoding.top_p if config.do_sample else 1.0
        if config.do_sample:  # unset = off, not the model's generation_config.json value (0 / 0.0 are "off")
            config.top_k = decoding.top_k or 0
            config.min_p = decoding.min_p if decoding.min_p is not None else 0.0
        else:
            config.top_k = config.min_p = None
        return config

    def _eos_ids(self, config) -> set:
        eos = config.eos_token_id
        return set(eos if isinstance(eos, (list, tuple)) else [eos])

    def complete(self, prompt: str, n: int, seed: int, decoding: Decoding, max_new_tokens: int) -> List[Completion]:
        """``n`` seeded completions of one rendered prompt."""
        import torch

        config = self._generation_config(decoding, max_new_tokens, n)
        eos_ids = self._eos_ids(config)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        torch.manual_seed(seed)
        with torch.no_grad():
            output = self.model.generate(**inputs, generation_config=config)
        prompt_len = inputs["input_ids"].shape[1]
        return [self._completion(row[prompt_len:].tolist(), eos_ids) for row in output]

    def complete_many(self, prompts: List[str], n: int, seed: int, decoding: Decoding,
                      max_new_tokens: int) -> List[List[Completion]]:
        """``n`` completions for each of several prompts in one left-padded call."""
        import torch

        config = self._generation_config(decoding, max_new_tokens, n)
        eos_ids = self._eos_ids(config)
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                    add_special_tokens=False).to(self.device)
        finally:
            self.tokenizer.padding_side = side
        torch.manual_seed(seed)
        with torch.no_grad():
            output = self.model.generate(**inputs, generation_config=config)
        width = inputs["input_ids"].shape[1]
        rows = [self._completion(row[width:].tolist(), eos_ids) for row in output]
        return [rows[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _completion(self, tokens: List[int], eos_ids: set) -> Completion:
        stop = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
        if stop is None:
            return Completion(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), "length")
        return Completion(self.tokenizer.decode(tokens[:stop], skip_special_tokens=True), stop + 1, "stop")

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        pending: List[Chunk] = []
        for chunk in list(chunks) + [None]:
            if pending and (chunk is None or chunk.batch < 0 or chunk.batch != pending[0].batch):
                yield from self._run_batch(pending, decoding, max_new_tokens)
                pending = []
            if chunk is not None:
                if chunk.batch < 0:
                    yield chunk, self.complete(chunk.prompt, len(chunk.indices), chunk.seed, decoding, max_new_tokens)
                else:
                    pending.append(chunk)

    def _run_batch(self, chunks: List[Chunk], decoding: Decoding, max_new_tokens: int):
        n = len(chunks[0].indices)
        results = self.complete_many([c.prompt for c in chunks], n, chunks[0].seed, decoding, max_new_tokens)
        yield from zip(chunks, results)

    def close(self) -> None:
        self.model = None
