"""Decoding presets and per-sample seeds.

The paper decodes merged and Thinking models with temperature 0.6, top_p 0.95,
top_k 20 and Instruct models with 0.7 / 0.8 / 20, and ablates that choice, so
decoding is a named, switchable preset (``thinking``, ``instruct``) or a custom
set of values. The generation budget (max new tokens) belongs to the benchmark
(AIME 81920, others 65536) and is kept separate from the preset.

Seeds: every unit of generation work (a *chunk* of consecutive sample indices of
one question) gets its own seed derived from ``(run seed, question id, first
sample index)``. Backends seed their sampler with it, so a chunk's samples do
not depend on what else ran before or alongside it; that is what makes a
resumed run equal to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Optional

from mi_mergekit.errors import EvalInputError


@dataclass(frozen=True)
class Decoding:
    """Sampling settings. ``temperature == 0`` means greedy decoding.

    ``top_k`` / ``min_p`` None means *off* (no top-k / min-p filtering) on every backend:
    each sends the value that switches the filter off (transformers 0 / 0.0, vLLM 0 / 0.0,
    servers -1 / 0.0), so neither a model's ``generation_config.json`` nor a server's own
    default fills it in unseen (``vllm serve`` and ``transformers serve`` would: Qwen3 has
    top_k 20 there). A server that does not take the field at all is recorded as such.
    """

    name: str
    temperature: float
    top_p: float = 1.0
    top_k: Optional[int] = None
    min_p: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Decoding":
        return cls(**data)


PRESETS = {
    "thinking": Decoding("thinking", temperature=0.6, top_p=0.95, top_k=20),
    "instruct": Decoding("instruct", temperature=0.7, top_p=0.8, top_k=20),
    "greedy": Decoding("greedy", temperature=0.0, top_p=1.0, top_k=None),
}


def generation_config(decoding: Decoding) -> dict:
    """The sampling fields of a ``generation_config.json`` that decode with ``decoding`` by default."""
    return {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p,
            "top_k": decoding.top_k}


def resolve_decoding(
    preset: str = "thinking",
    temperature: Optional[float] = None,
    top_p: Optional[float] = None,
    top_k: Optional[int] = None,
    min_p: Optional[float] = None,
) -> Decoding:
    """Return a preset, with any explicitly given value overriding it.

    Overriding a value renames the result to ``custom`` (``preset=custom``
    starts from no preset and then needs ``temperature``).
    """
    if preset == "custom":
        if temperature is None:
            raise EvalInputError("decoding 'custom' needs an explicit temperature")
        base = Decoding("custom", temperature=temperature)
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise EvalInputError(f"unknown decoding preset {preset!r}; choose from {sorted(PRESETS) + ['custom']}")
    overrides = {
        key: value
        for key, value in dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p).items()
        if value is not None and value != getattr(base, key)
    }
    if overrides:
        base = replace(base, name="custom", **overrides)
    if base.temperature < 0:
        raise EvalInputError("temperature must be >= 0")
    if not 0 < base.top_p <= 1:
        raise EvalInputError("top_p must be in (0, 1]")
    if base.top_k is not None and base.top_k < 1:
        raise EvalInputError("top_k must be >= 1 (or unset)")
    return base


def chunk_seed(seed: int, question_id: str, first_index: int) -> int:
    """A 31-bit seed for the chunk of ``question_id`` starting at ``first_index``.

    Stable across Python versions and processes (sha256, not ``hash``), and
    small enough for every backend (torch, vLLM, OpenAI-style ``seed``).
    """
    digest = hashlib.sha256(f"{seed}\x1f{question_id}\x1f{first_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)
