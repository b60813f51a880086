"""Continuous batching for the transformers backend: a fixed number of decoding slots, always full.

``generate`` (and the compacting loop) decode a prompt batch until its last sample ends: the
batch shrinks as samples stop, and the next batch waits. Here ``slots`` samples decode at once
and a sample that stops hands its slot to the next waiting sample at the following step, so
the matrix products keep their rows until the run's queue is empty. What makes that cheap:

* a static key/value cache, one row per slot (:class:`SlotCache`, a transformers ``Cache``):
  a step writes one position per row in place; nothing is concatenated or re-selected;
* attention over each row's own length, not the longest one's: rows are kept in groups of
  similar lengths (re-sorted when that saves more reads than the sort costs) and each group
  attends over its own window (:func:`slot_attention`);
* a question's prompt is prefilled once and copied to its samples' rows;
* the token choice runs on the top-k logits only, and each sample draws from its own seeded
  stream (:mod:`.sampling`), so a sample does not depend on which others share its steps: a
  chunk's samples are the same whatever the batch, the prompt batch or a resume.

The model is transformers' own (any decoder-only model whose layers use the attention
interface and the ``Cache`` API, without sliding-window layers); its forward runs unchanged,
with this attention function for the decode steps and transformers' ``sdpa`` for prefill.
Greedy decoding gives ``generate``'s tokens up to float rounding of different batch shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache

from mi_mergekit.eval.backends.sampling import choose, uniforms
from mi_mergekit.eval.decoding import Decoding

ATTENTION = "mi_slots"
#: rows per attention group (each group attends over its own longest row)
GROUP_ROWS = 16
#: positions per row allocated past the longest prompt at first (the cache doubles when rows need more)
FIRST_POSITIONS = 512


class SlotLayer(CacheLayerMixin):
    """One layer's keys and values: ``[slots, kv_heads, capacity, head_dim]``, written in place."""

    is_compileable = False
    is_sliding = False

    def __init__(self, cache: "SlotCache"):
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        slots, capacity = self.cache.slots, self.cache.capacity
        self.keys = key_states.new_zeros((slots, key_states.shape[1], capacity, key_states.shape[-1]))
        self.values = value_states.new_zeros((slots, value_states.shape[1], capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the step's key/value of rows ``[0, B)`` at each row's position; return the rows' cache up
        to the longest window (each attention group narrows it further)."""
        rows, positions, window = self.cache.step
        self.keys[rows, :, positions] = key_states[:, :, 0]
        self.values[rows, :, positions] = value_states[:, :, 0]
        count = key_states.shape[0]
        return self.keys[:count, :, :window], self.values[:count, :, :window]

    def place(self, rows: range, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy a prefilled prompt (``[kv_heads, length, head_dim]``) into ``rows``."""
        if not self.is_initialized:
            self.cache.allocating(lambda: self.lazy_initialization(keys[None], values[None]))
        self.keys[rows.start:rows.stop, :, :keys.shape[1]] = keys
        self.values[rows.start:rows.stop, :, :values.shape[1]] = values

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` positions per row (the first ones kept)."""
        if self.is_initialized:
            old_keys, old_values = self.keys, self.values
            self.lazy_initialization(old_keys, old_values)
            self.keys[:, :, :old_keys.shape[2]] = old_keys
            self.values[:, :, :old_values.shape[2]] = old_values

    def move(self, dest: torch.Tensor, source: torch.Tensor, length: int) -> None:
        """Rows ``dest`` take the first ``length`` positions of rows ``source``."""
        self.keys[dest, :, :length] = self.keys[source, :, :length]
        self.values[dest, :, :length] = self.values[source, :, :length]

    def get_seq_length(self) -> int:
        return 0

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:  # the decode steps pass their own 4D mask
        return self.cache.capacity, 0

    def get_max_length(self) -> int:
        return self.cache.capacity


class SlotCache(Cache):
    """The cache of ``slots`` rows for every layer of a model: ``capacity`` positions per row, doubled
    (up to ``limit``) when a row needs more, so memory follows the longest sample, not the budget."""

    def __init__(self, num_layers: int, slots: int, capacity: int, limit: int):
        self.slots, self.capacity, self.limit = slots, min(capacity, limit), limit
        #: (row index tensor, write positions, longest window) of the step being run
        self.step: Tuple[torch.Tensor, torch.Tensor, int] = (torch.arange(0), torch.arange(0), 0)
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])

    def reserve(self, positions: int) -> None:
        """Make room for ``positions`` positions in every row."""
        if positions <= self.capacity:
            return
        self.capacity = min(self.limit, max(positions, 2 * self.capacity))
        for layer in self.layers:
            self.allocating(lambda: layer.grow(self.capacity))

    def allocating(self, allocate) -> None:
        """Run ``allocate``; a cache that does not fit in memory is one clear error."""
        try:
            allocate()
        except (RuntimeError, MemoryError) as exc:  # torch's allocators raise RuntimeError
            from mi_mergekit.errors import EvalInputError

            raise EvalInputError(f"the key/value cache of {self.slots} slots × {self.capacity} positions does not fit "
                                 f"in memory ({str(exc).splitlines()[0]}); use fewer --slots") from None


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Decode-step attention (one query per row), group by group: each group of rows attends over
    the window its longest row needs (``slot_groups``: ``(first row, end row, window)``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = kwargs.get("slot_groups") or [(0, query.shape[0], key.shape[2])]
    outputs = [sdpa_attention_forward(module, query[a:b], key[a:b, :, :w], value[a:b, :, :w],
                                      attention_mask[a:b, :, :, :w], dropout=dropout, scaling=scaling)[0]
               for a, b, w in groups]
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, slot_attention)


@dataclass
class Job:
    """A sample to generate: its prompt (token ids) and seed; ``tokens`` fills as it decodes."""

    key: object
    prompt: Sequence[int]
    seed: int
    tokens: List[int] = field(default_factory=list)


@dataclass
class _Row:
    job: Job
    length: int  # positions in the cache: the prompt and the tokens fed back so far
    draws: torch.Tensor  # the job's uniform numbers, one per step


class SlotDecoder:
    """Generates :class:`Job` s with ``slots`` rows decoding at once (module docstring)."""

    def __init__(self, model, slots: int, eos_ids: set, decoding: Decoding, max_new_tokens: int):
        config = model.config.get_text_config()
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
            from mi_mergekit.errors import EvalInputError

            raise EvalInputError(f"{config.model_type}: continuous batching (--slots) needs full attention in "
                                 "every layer; generate without --slots")
        self.model, self.slots, self.eos_ids = model, slots, eos_ids
        self.decoding, self.budget = decoding, max_new_tokens
        self.layers = config.num_hidden_layers
        self.device = model.device
        #: rows decoded at each step so far (the occupancy that bounds the step's matrix products)
        self.step_rows: List[int] = []
        _register()

    def run(self, groups: Sequence[Sequence[Job]]) -> Iterator[Job]:
        """Generate every job, yielding each as soon as it has stopped; ``groups``: jobs that share
        a prompt (prefilled once), admitted in this order."""
        if not groups:
            return
        longest = max(len(g[0].prompt) for g in groups)
        cache = SlotCache(self.layers, self.slots, longest + min(self.budget, FIRST_POSITIONS),
                          longest + self.budget)
        waiting = [list(g) for g in reversed(groups)]  # popped from the end: the first group first
        rows: List[_Row] = []
        tokens = torch.zeros(self.slots, dtype=torch.long, device=self.device)  # each row's latest token
        while waiting or rows:
            admitted = self._admit(waiting, self.slots - len(rows))
            if admitted:
                first = self._prefill(admitted, cache, len(rows))
                for job, token in zip((j for g in admitted for j in g), first):
                    tokens[len(rows)] = token
                    rows.append(_Row(job, len(job.prompt), uniforms(job.seed, self.budget)))
            alive = []
            for row, token in zip(rows, tokens[:len(rows)].tolist()):
                row.job.tokens.append(token)
                stopped = row.job.tokens[-1] in self.eos_ids or len(row.job.tokens) >= self.budget
                if stopped:
                    yield row.job
                alive.append(not stopped)
            rows = self._compact(cache, rows, alive, tokens)
            if rows:
                self.step_rows.append(len(rows))
                logits = self._decode(cache, rows, tokens[:len(rows)])
                draws = torch.stack([row.draws[len(row.job.tokens)] for row in rows]).to(self.device)
                tokens[:len(rows)] = choose(logits, self.decoding, draws)
                for row in rows:
                    row.length += 1

    @staticmethod
    def _admit(waiting: List[List[Job]], free: int) -> List[List[Job]]:
        """Take up to ``free`` jobs off ``waiting``, keeping jobs of one prompt together."""
        admitted = []
        while waiting and free > 0:
            take, rest = waiting[-1][:free], waiting[-1][free:]
            if rest:
                waiting[-1] = rest
            else:
                waiting.pop()
            admitted.append(take)
            free -= len(take)
        return admitted

    def _compact(self, cache: SlotCache, rows: List[_Row], alive: List[bool], tokens: torch.Tensor) -> List[_Row]:
        """The rows still decoding, as rows ``[0, K)``: stopped rows are filled from the end, and the
        rows are re-sorted by length when that saves more attention reads than it copies."""
        kept = [i for i, a in enumerate(alive) if a]
        count = len(kept)
        order = list(range(count))
        holes = [i for i in range(count) if not alive[i]]
        for hole, source in zip(holes, [i for i in kept if i >= count]):
            order[hole] = source
        lengths = [rows[i].length for i in order]
        if _sort_pays(lengths):
            order = [order[i] for i in sorted(range(count), key=lambda i: -lengths[i])]
        moved = [(d, s) for d, s in enumerate(order) if d != s]
        if moved:
            dest, source = (torch.tensor(v, device=self.device) for v in zip(*moved))
            longest = max(rows[s].length for _, s in moved)
            for layer in cache.layers:
                if layer.is_initialized:
                    layer.move(dest, source, longest)
            tokens[dest] = tokens[source]
        return [rows[i] for i in order]

    def _prefill(self, admitted: List[List[Job]], cache: SlotCache, first_row: int) -> List[int]:
        """Run each admitted group's prompt through the model once (left padded), copy its keys and
        values to the rows of its jobs from ``first_row`` on; returns each job's first token."""
        prompts = [g[0].prompt for g in admitted]
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt)
            mask[i, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        prefill = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                            cache=prefill, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        row = first_row
        for i, group in enumerate(admitted):
            start = width - len(prompts[i])
            for layer, source in zip(cache.layers, prefill.layers):
                layer.place(range(row, row + len(group)), source.keys[i, :, start:], source.values[i, :, start:])
            row += len(group)
        jobs = [job for group in admitted for job in group]
        draws = torch.stack([uniforms(job.seed, 1)[0] for job in jobs]).to(self.device)
        per_job = logits.repeat_interleave(torch.tensor([len(g) for g in admitted], device=self.device), dim=0)
        return choose(per_job, self.decoding, draws).tolist()

    def _decode(self, cache: SlotCache, rows: List[_Row], tokens: torch.Tensor) -> torch.Tensor:
        """One step for rows ``[0, len(rows))``: the logits of each row's next token."""
        count = len(rows)
        lengths = torch.tensor([r.length for r in rows], device=self.device)
        window = max(r.length for r in rows) + 1
        cache.reserve(window)
        cache.step = (torch.arange(count, device=self.device), lengths, window)
        mask = (torch.arange(window, device=self.device)[None, :] <= lengths[:, None])[:, None, None, :]
        groups = [(a, min(a + GROUP_ROWS, count), max(r.length for r in rows[a:a + GROUP_ROWS]) + 1)
                  for a in range(0, count, GROUP_ROWS)]
        config = self.model.config
        previous = config._attn_implementation
        config._attn_implementation = ATTENTION
        try:
            output = self.model(input_ids=tokens[:, None], position_ids=lengths[:, None], attention_mask=mask,
                                cache=cache, use_cache=True, logits_to_keep=1, slot_groups=groups)
        finally:
            config._attn_implementation = previous
        return output.logits[:, -1, :]


def _sort_pays(lengths: List[int]) -> bool:
    """Whether sorting rows of these lengths (longest first) into attention groups saves, over the next
    16 steps, more positions read than the sort copies (every row up to the longest, read and written)."""
    def reads(values):
        return sum(max(values[i:i + GROUP_ROWS]) * len(values[i:i + GROUP_ROWS])
                   for i in range(0, len(values), GROUP_ROWS))

    if len(lengths) <= GROUP_ROWS:
        return False
    saved = reads(lengths) - reads(sorted(lengths, reverse=True))
    return saved * 16 > 2 * len(lengths) * max(lengths)
