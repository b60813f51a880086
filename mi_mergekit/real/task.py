"""The real pair's task: sums of two-digit numbers, worked one addition a line.

A problem adds ``k`` two-digit numbers (``k`` = difficulty, 2..6), e.g.
``Compute 23+58+11+94.`` with answer ``186``. The user message ends with the
paper's AIME instruction ("Please reason step by step, and put your final answer
within \\boxed{}."), so the prompt is the one the paper's harness would send.

The Thinking side's completion, after the ``<think>\\n`` its chat template
pre-inserts, is the running sum::

    23+58=81
    81+11=92
    92+94=186
    </think>

    \\boxed{186}

Each line is one two-digit addition to a number the model just wrote; the
direct answer needs all ``k`` numbers summed in one pass, which SmolLM2-135M
cannot do. Grading is math-verify on the last ``\\boxed{}`` (the harness's
``boxed`` benchmark), so this module only generates problems and completions.

Pure Python (no torch): cheap to import.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mi_mergekit import runsum
from mi_mergekit.eval.prompts import AIME_SUFFIX
from mi_mergekit.runsum import write_jsonl  # noqa: F401  (records of any Problem with to_record)

MIN_DIFFICULTY = 2
MAX_DIFFICULTY = 6
#: generation budget of the reproduction: the longest worked answer (k=6) is ~70 tokens
MAX_NEW_TOKENS = 160


@dataclass(frozen=True)
class Problem(runsum.Problem):
    """The running-sum problem (work, completion, answer) over two-digit terms, asked in words."""

    @property
    def expression(self) -> str:
        return "+".join(str(t) for t in self.terms)

    @property
    def question(self) -> str:
        """The user message: the problem and the paper's boxed-answer instruction."""
        return f"Compute {self.expression}.{AIME_SUFFIX}"


_STEP = re.compile(r"^\s*\d+\s*\+\s*\d+\s*=\s*\d+\s*$")


def steps_shown(text: str) -> int:
    """How many one-addition lines (``a+b=c``) the thinking part of a response holds.

    The thinking part is the text before the last ``</think>`` (all of it when there is none).
    A response *shows its work* when this is at least ``difficulty - 1``: Think #R only asks
    for the closing tag, this asks for the running sum the Thinking side was trained to write.
    (The toy's ``3+5=8`` lines count the same way.)
    """
    thinking = text.rsplit("</think>", 1)[0]
    return sum(1 for line in thinking.splitlines() if _STEP.match(line))


def make_problem(rng: random.Random, difficulty: int, id: str = "") -> Problem:
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], got {difficulty}")
    return Problem(id=id, terms=tuple(rng.randint(10, 99) for _ in range(difficulty)))


def generate_problems(n: int, seed: int, prefix: str = "p") -> list[Problem]:
    """``n`` problems, difficulties cycled evenly, deterministic in ``seed``."""
    rng = random.Random(seed)
    diffs = range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1)
    return [make_problem(rng, diffs[i % len(diffs)], id=f"{prefix}{i:04d}") for i in range(n)]


def iter_training_problems(seed: int, exclude: set[str]) -> Iterator[Problem]:
    """An endless deterministic stream of training problems, none in ``exclude``."""
    rng = random.Random(seed)
    i = 0
    while True:
        p = make_problem(rng, rng.randint(MIN_DIFFICULTY, MAX_DIFFICULTY), id=f"t{i}")
        i += 1
        if p.expression not in exclude:
            yield p


HELDOUT_PATH = Path(__file__).resolve().parent / "data" / "heldout.jsonl"
HELDOUT_SEED = 20251013
HELDOUT_PER_DIFFICULTY = 20


def make_heldout() -> list[Problem]:
    """The held-out set: 20 problems per difficulty 2..6 (100), seed 20251013."""
    n = HELDOUT_PER_DIFFICULTY * (MAX_DIFFICULTY - MIN_DIFFICULTY + 1)
    return generate_problems(n, seed=HELDOUT_SEED, prefix="heldout-")


def load_heldout(path: str | Path = HELDOUT_PATH) -> list[dict]:
    """Records ``{id, question, answer, difficulty}`` of the held-out JSONL."""
    return runsum.load_jsonl(path)


def balanced_subset(records: list[dict], limit: int | None) -> list[dict]:
    """The first ``limit`` records taken round-robin over difficulties (all if None)."""
    if limit is None or limit >= len(records):
        return list(records)
    by_difficulty: dict[int, list[dict]] = {}
    for record in records:
        by_difficulty.setdefault(int(record["difficulty"]), []).append(record)
    queues = [list(v) for _, v in sorted(by_difficulty.items())]
    out: list[dict] = []
    while len(out) < limit:
        for queue in queues:
            if queue and len(out) < limit:
                out.append(queue.pop(0))
    return out
