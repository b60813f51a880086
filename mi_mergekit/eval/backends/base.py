"""The backend interface: generate the samples of chunks.

A :class:`Chunk` is the unit of generation work: consecutive sample indices of
one question, with one seed (:func:`mi_mergekit.eval.decoding.chunk_seed`). A
backend generates ``len(chunk.indices)`` completions of ``chunk.prompt`` seeded
with ``chunk.seed`` and yields each chunk's completions as soon as they are
done, so the runner can store them before starting anything else. Chunk sizes
are fixed by the backend (``chunk_size``) and recorded in the run, so a resumed
run regenerates exactly the chunks that were lost.

A backend with ``prompt_batch = P > 1`` generates the chunks of P consecutive
questions in one call. The groups are fixed by question order (not by what is
missing), and a group with any sample missing is planned whole, so a resumed
run replays exactly the calls of an uninterrupted one (samples already stored
are not written twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.eval.decoding import Decoding


@dataclass(frozen=True)
class Chunk:
    question_id: str
    prompt: Optional[str]  # rendered chat prompt (None for chat-endpoint backends)
    messages: list
    indices: Tuple[int, ...]
    seed: int
    #: chunks with the same ``batch`` (>= 0) are generated in one call; -1 = alone
    batch: int = -1


#: finish reasons of a sample that ran into a limit instead of ending its turn: the token budget
#: ("length") or a server's repetition detector (vLLM's "repetition"); graded as cut off
CUT_OFF = ("length", "repetition")
#: finish reasons that mean the generation failed (vLLM: "abort", "error"); never stored
FAILED = ("abort", "error")


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop", or one of CUT_OFF


def is_cut_off(finish_reason: str) -> bool:
    """True if a sample stopped at a limit (budget, repetition) rather than ending its turn."""
    return finish_reason in CUT_OFF


def greedy(decoding: Decoding) -> bool:
    """Greedy decoding: every sample of a prompt is the same, and vLLM takes only ``n = 1`` for it."""
    return decoding.temperature == 0


class Backend:
    """Base class of generation backends."""

    name: str = ""
    #: samples per chunk; fixed for a run
    chunk_size: int = 1
    #: questions generated together in one call (fixed groups, recorded in the run)
    prompt_batch: int = 1
    #: the model's tokenizer (renders prompts with its chat template), or None
    tokenizer = None

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Settings recorded in run.json (those that change samples must be stable across resumes)."""
        return {"name": self.name, "chunk_size": self.chunk_size}

    def prepare(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> Optional[dict]:
        """Check, before anything is generated or stored, that ``decoding`` can be honoured
        (``chunk``: the run's first unit of work). Returns what run.json records as
        ``server`` (None: nothing to record); raises if the run cannot go on as asked."""
        return None

    def report(self) -> Optional[dict]:
        """``server`` record after generating (what :meth:`prepare` returned, updated)."""
        return None

    def sample_fields(self, chunk: Chunk) -> dict:
        """Extra fields stored with each sample of ``chunk`` (a routed run: its ``lambda`` and ``model``)."""
        return {}

    def close(self) -> None:
        """Release resources (model memory, thread pools)."""


def load_tokenizer(path: str):
    """The model's tokenizer via transformers (local folder or hub id)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
