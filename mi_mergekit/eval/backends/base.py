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

A backend that ``mi-mergekit eval --backend NAME`` can pick is registered
(:func:`mi_mergekit.eval.backends.register_backend`) and declares on its class what the
command line needs: ``name`` (and ``aliases``), ``summary`` (its words in ``--backend``'s
help), ``options`` (one :class:`BackendOption` per command-line option, each naming the
constructor keyword it sets), ``takes`` (values of the evaluation as a whole it also takes:
``device``, ``seed``) and ``local_model`` (it loads the model folder itself, checked before
the run). ``cli/options.py`` builds the options and the constructor's keywords from these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

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


@dataclass(frozen=True)
class BackendOption:
    """One command-line option of a backend (``--flag``) and the constructor keyword it sets.

    Library terms only (the CLI turns them into click's): ``type`` is ``str``, ``int``,
    ``float`` or ``dict`` (a JSON object); ``minimum`` (exclusive with ``minimum_open``)
    bounds a number; ``choices`` restricts a text. An option several backends read is one
    object in each one's ``options`` (the help then names those backends)."""

    flag: str
    keyword: str
    help: str
    type: Any = str
    default: Any = None
    #: the command's parameter name where it differs from ``keyword`` (``--base-url``: base_urls)
    dest: Optional[str] = None
    multiple: bool = False
    is_flag: bool = False
    minimum: Optional[float] = None
    minimum_open: bool = False
    choices: Optional[Tuple[str, ...]] = None
    metavar: Optional[str] = None
    #: environment variable read when the option is not given
    envvar: Optional[str] = None
    #: passed to the constructor only when set (true, non-zero), else the constructor's default
    only_when_set: bool = False
    #: the value as the constructor takes it (``list`` for a repeated option)
    convert: Optional[Callable[[Any], Any]] = None
    #: what the backend cannot run without, said when it is missing (empty: optional)
    required: str = ""

    @property
    def name(self) -> str:
        """The command's parameter name."""
        return self.dest or self.keyword

    def value(self, given: Any) -> Any:
        """The constructor's value for what the command received."""
        return self.convert(given) if self.convert is not None and given is not None else given


#: the options more than one backend reads
DTYPE = BackendOption("--dtype", "dtype", "model dtype.", default="auto")
TOKENIZER = BackendOption("--tokenizer", "tokenizer_path", "tokenizer folder if not the model's.")
SAMPLES_PER_REQUEST = BackendOption("--samples-per-request", "samples_per_request",
                                    "samples per request (n; default vllm 8, openai 8 with a tokenizer, else 1).",
                                    int, minimum=1)


class Backend:
    """Base class of generation backends."""

    name: str = ""
    #: other names ``--backend`` takes
    aliases: Tuple[str, ...] = ()
    #: what ``--backend``'s help says of it
    summary: str = ""
    #: its command-line options (see :class:`BackendOption`)
    options: Tuple[BackendOption, ...] = ()
    #: values of the whole evaluation its constructor also takes (``device``, ``seed``)
    takes: Tuple[str, ...] = ()
    #: it loads the model folder itself (a missing folder fails before the run starts)
    local_model: bool = False
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
