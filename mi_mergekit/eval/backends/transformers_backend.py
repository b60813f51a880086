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

``compact=True`` (opt-in, recorded in run.json) generates a prompt batch with a decode loop
that drops each sequence from the batch once it has stopped (transformers'
``DynamicCache.batch_select_indices``), instead of ``generate``, which computes every
sequence until the longest one ends: on a CPU, where a batch's traces differ in length
(over-thinking), that is most of the work. The logits go through transformers' own
warpers in ``generate``'s order (temperature, top-k, top-p, min-p); greedy decoding gives
``generate``'s tokens, sampling gives other (equally distributed, equally seeded and
reproducible) draws, because fewer rows consume the random stream.

``slots=N`` (opt-in, recorded in run.json) decodes with continuous batching instead
(:mod:`.slots`): N samples decode at once from the run's whole queue, a stopped sample's slot
goes to the next one at the next step, each prompt is prefilled once for its samples, and each
sample draws from its own seeded stream (:func:`.sampling.sample_seed` of its chunk seed and
index), so its tokens depend neither on the batch nor on ``prompt_batch``. The fastest path on
a CPU (``benchmarks/bench_generation.py``); greedy decoding gives ``generate``'s tokens.
"""

from __future__ import annotations

import copy
from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.eval.backends.base import DTYPE, TOKENIZER, Backend, BackendOption, Chunk, Completion, load_tokenizer
from mi_mergekit.eval.decoding import Decoding


# generation_config fields (with their "off" value) that generate would apply and the compact loop does not
_COMPACT_IGNORES = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                    "bad_words_ids": None, "sequence_bias": None, "min_length": 0, "min_new_tokens": None,
                    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
                    "forced_eos_token_id": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                    "exponential_decay_length_penalty": None, "renormalize_logits": False, "num_beams": 1}


class TransformersBackend(Backend):
    name = "transformers"
    summary = "this machine, CPU or GPU"
    options = (
        BackendOption("--batch-size", "batch_size", "samples per generate call.", int, default=8, minimum=1),
        BackendOption("--prompt-batch", "prompt_batch",
                      "questions per generate call (fixed groups; faster for small models).", int, default=1,
                      minimum=1),
        BackendOption("--compact", "compact",
                      "decode with a loop that drops each stopped sample from the batch instead of generate, which "
                      "computes every sample until the longest ends (faster on a CPU when lengths differ; greedy "
                      "gives generate's tokens, sampling other draws of the same distribution; recorded in "
                      "run.json).", bool, is_flag=True, only_when_set=True),
        BackendOption("--slots", "slots",
                      "continuous batching with N samples decoding at once, a stopped sample's slot taken by the "
                      "next at once (fastest on a CPU, e.g. 128; each sample seeded on its own, so batches do not "
                      "change draws; greedy gives generate's tokens; recorded in run.json). 0 = off.",
                      int, default=0, minimum=0, only_when_set=True),
        DTYPE,
        TOKENIZER,
    )
    takes = ("device",)
    local_model = True

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
        compact: bool = False,
        slots: int = 0,
    ):
        import torch

        self.model_path = model_path
        self.chunk_size = max(1, int(batch_size))
        self.prompt_batch = max(1, int(prompt_batch))
        self.compact = bool(compact)
        self.slots = max(0, int(slots))
        #: with ``slots``: the rows decoded at each step of every run so far (the decoder's occupancy)
        self.step_rows: List[int] = []
        if self.slots and self.compact:
            from mi_mergekit.errors import EvalInputError

            raise EvalInputError("choose one decode loop: --slots or --compact")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer or load_tokenizer(tokenizer_path or model_path)
        self.dtype = dtype
        self._model = None if model is None else model.to(self.device).eval()

    @property
    def model(self):
        """The model, loaded on first use: a resumed run with nothing left to generate (a finished
        eval, the grid of a finished routing experiment) reads only the tokenizer."""
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype).to(self.device).eval()
        return self._model

    def describe(self) -> dict:
        described = {"name": self.name, "chunk_size": self.chunk_size, "prompt_batch": self.prompt_batch,
                     "device": self.device}
        if self.compact:
            described["compact"] = True
        if self.slots:
            described["slots"] = self.slots
        return described

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

        if self.compact:
            return self.complete_many([prompt], n, seed, decoding, max_new_tokens)[0]

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
            if self.compact:
                generated = self._compact_generate(inputs, config, eos_ids)
            else:
                width = inputs["input_ids"].shape[1]
                generated = [row[width:].tolist() for row in self.model.generate(**inputs, generation_config=config)]
        rows = [self._completion(tokens, eos_ids) for tokens in generated]
        return [rows[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _compact_generate(self, inputs, config, eos_ids: set) -> List[List[int]]:
        """New tokens of every sequence (``num_return_sequences`` per prompt, as ``generate`` orders
        them), decoding only the sequences that have not stopped (module docstring)."""
        import torch

        self._check_plain(config, "compact")
        from transformers import DynamicCache, LogitsProcessorList
        from transformers.generation.logits_process import (
            MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        warpers = LogitsProcessorList()
        if config.do_sample:
            if config.temperature not in (None, 1.0):
                warpers.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k:
                warpers.append(TopKLogitsWarper(config.top_k))
            if config.top_p is not None and config.top_p < 1.0:
                warpers.append(TopPLogitsWarper(config.top_p))
            if config.min_p is not None:
                warpers.append(MinPLogitsWarper(config.min_p))
        n = config.num_return_sequences
        ids = inputs["input_ids"].repeat_interleave(n, dim=0)
        mask = inputs["attention_mask"].repeat_interleave(n, dim=0)
        tokens: List[List[int]] = [[] for _ in range(ids.shape[0])]
        active = torch.arange(ids.shape[0], device=ids.device)
        cache = DynamicCache()
        step_ids, positions = ids, (mask.cumsum(-1) - 1).clamp(min=0)
        for _ in range(config.max_new_tokens):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
            if config.do_sample:
                chosen = torch.multinomial(torch.softmax(warpers(ids, logits), dim=-1), num_samples=1).squeeze(1)
            else:
                chosen = logits.argmax(dim=-1)
            stopped = []
            for row, token in zip(active.tolist(), chosen.tolist()):
                tokens[row].append(token)
                stopped.append(token in eos_ids)
            keep = torch.tensor([not s for s in stopped], device=ids.device)
            if not keep.any():
                break
            if not keep.all():
                index = keep.nonzero().squeeze(1)
                cache.batch_select_indices(index)
                active, mask, chosen = active[index], mask[index], chosen[index]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            step_ids, positions = chosen[:, None], mask.sum(-1, keepdim=True) - 1
        return tokens

    def _check_plain(self, config, loop: str) -> None:
        """Refuse a generation_config whose extra logits processing ``generate`` would apply and our loops do not."""
        from mi_mergekit.errors import EvalInputError

        unsupported = [name for name, off in _COMPACT_IGNORES.items() if getattr(config, name, off) not in (off, None)]
        if unsupported:
            raise EvalInputError(f"{self.model_path}: its generation_config sets {', '.join(unsupported)}, which the "
                                  f"{loop} decode loop does not apply; generate without {loop}")

    def _generate_slots(self, chunks: List[Chunk], decoding: Decoding, max_new_tokens: int):
        """Every chunk through the continuous-batching decoder (:mod:`.slots`), each chunk yielded once all
        its samples have stopped."""
        import torch

        from mi_mergekit.eval.backends.sampling import sample_seed
        from mi_mergekit.eval.backends.slots import Job, SlotDecoder

        config = self._generation_config(decoding, max_new_tokens, 1)
        self._check_plain(config, "slots")
        eos_ids = self._eos_ids(config)
        decoder = SlotDecoder(self.model, self.slots, eos_ids, decoding, max_new_tokens)
        groups, left = [], {}
        for number, chunk in enumerate(chunks):
            prompt = self.tokenizer(chunk.prompt, add_special_tokens=False)["input_ids"]
            groups.append([Job(number, prompt, sample_seed(chunk.seed, index)) for index in chunk.indices])
            left[number] = len(chunk.indices)
        try:
            with torch.no_grad():
                for job in decoder.run(groups):
                    left[job.key] -= 1
                    if not left[job.key]:
                        yield chunks[job.key], [self._completion(j.tokens, eos_ids) for j in groups[job.key]]
        finally:
            self.step_rows += decoder.step_rows

    def _completion(self, tokens: List[int], eos_ids: set) -> Completion:
        stop = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
        if stop is None:
            return Completion(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), "length")
        return Completion(self.tokenizer.decode(tokens[:stop], skip_special_tokens=True), stop + 1, "stop")

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        if self.slots:
            yield from self._generate_slots(list(chunks), decoding, max_new_tokens)
            return
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
        self._model = None
