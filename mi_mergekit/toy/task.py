"""The toy task: running sums of single digits, with a checkable answer.

A problem is a sum of ``k`` DISTINCT single digits (``k`` = difficulty, 2..8),
e.g. the question ``"3+5+2+8="`` with answer ``18``. (Distinct digits make
"which term comes next" unambiguous for the model: it finds the term it just
added in the question and takes the one after it.)

* The Thinking completion works it out one addition a line::

      <think>\\n3+5=8\\n8+2=10\\n10+8=18\\n</think>\\n\\n\\boxed{18}

  (the ``<think>\\n`` is part of the Thinking chat template's generation prompt,
  so the model itself generates from ``3+5=8`` on).
* The Instruct completion is the answer only: ``\\boxed{18}``.

Each line of the work is a one-digit addition to a number the model just wrote,
which a tiny transformer learns easily; the direct answer needs the exact sum of
``k`` digits in one forward pass (its units digit is the sum mod 10, a
parity-like function), which a tiny model cannot do for large ``k``. So thinking
pays off more the harder the problem, as in the paper.

The problem, its completions and the grading are :mod:`mi_mergekit.runsum`'s (shared
with the SmolLM2 pair); this module asks it over single digits and holds the toy's
held-out set. Pure Python (no torch) so that it is cheap to import.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Iterator

from mi_mergekit.errors import MiMergekitError

from mi_mergekit.runsum import (  # noqa: F401  (the task's shared half, used as task.*)
    THINK_CLOSE,
    THINK_OPEN,
    Problem,
    extract_answer,
    has_thinking,
    is_correct,
    load_jsonl,
    normalize,
    write_jsonl,
)

MIN_DIFFICULTY = 2
MAX_DIFFICULTY = 8
MAX_NEW_TOKENS = 128  # generation budget: the longest thinking (k=8) is ~60 tokens

def parse_question(question: str) -> tuple[int, ...]:
    """Inverse of :attr:`Problem.question` (``"3+5+2+8="`` -> ``(3, 5, 2, 8)``)."""
    body = question.strip().rstrip("=").strip()
    return tuple(int(x) for x in body.split("+"))


def make_problem(rng: random.Random, difficulty: int, id: str = "") -> Problem:
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise MiMergekitError(f"difficulty must be in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], got {difficulty}")
    return Problem(id=id, terms=tuple(rng.sample(range(10), difficulty)))


def generate_problems(
    n: int,
    seed: int,
    difficulties: Iterable[int] = range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1),
    prefix: str = "p",
    exclude: set[str] | None = None,
) -> list[Problem]:
    """``n`` problems, difficulties cycled evenly, deterministic in ``seed``.

    ``exclude`` is a set of question strings to skip (e.g. the held-out set when
    generating training data).
    """
    rng = random.Random(seed)
    diffs = list(difficulties)
    out: list[Problem] = []
    i = 0
    while len(out) < n:
        p = make_problem(rng, diffs[i % len(diffs)], id=f"{prefix}{len(out):05d}")
        i += 1
        if exclude and p.question in exclude:
            continue
        out.append(p)
    return out


def iter_training_problems(seed: int, exclude: set[str] | None = None) -> Iterator[Problem]:
    """An endless deterministic stream of training problems (uniform difficulty)."""
    rng = random.Random(seed)
    i = 0
    while True:
        p = make_problem(rng, rng.randint(MIN_DIFFICULTY, MAX_DIFFICULTY), id=f"t{i}")
        i += 1
        if exclude and p.question in exclude:
            continue
        yield p


# ---------------------------------------------------------------------------
# the shipped held-out set

HELDOUT_PATH = Path(__file__).resolve().parent / "data" / "heldout.jsonl"
HELDOUT_SEED = 20251012
HELDOUT_PER_DIFFICULTY = 20


def make_heldout() -> list[Problem]:
    """The held-out set: 20 problems drawn per difficulty 2..8 with seed 20251012, each question
    once — the draw repeats two of the 90 two-term questions, so difficulty 2 has 18 and the set 138
    distinct questions. (The draw itself is kept: the shipped pair was trained without exactly these
    questions.)"""
    n = HELDOUT_PER_DIFFICULTY * (MAX_DIFFICULTY - MIN_DIFFICULTY + 1)
    seen: set[str] = set()
    distinct = []
    for problem in generate_problems(n, seed=HELDOUT_SEED, prefix="heldout-"):
        if problem.question not in seen:
            seen.add(problem.question)
            distinct.append(problem)
    return distinct


def load_heldout(path: str | Path = HELDOUT_PATH) -> list[dict]:
    """Records ``{id, question, answer, difficulty}`` of the held-out JSONL."""
    return load_jsonl(path)
