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

That plain running sum is the first adapter's format (``runningsum``). The shipped
Thinking side (``overthink``) is trained on :func:`overthinking_trace`: the same running
sum with the habits that make real thinking models long, more of them the more terms
there are (probabilities in :data:`HABITS`)::

    57+58=115
    115+48=153
    Wait, let me recheck that.
    115+48=163
    163+86=249
    Let me verify by adding in another order.
    58+57=115
    115+48=163
    163+86=249
    Both give 249.
    </think>

    \\boxed{249}

- a **verification pass**: the terms re-added in another order (the first two swapped,
  then on to the last term), then ``Both give N.``;
- a **backtrack** after a line: ``Wait, let me recheck that.`` and the line again. Most
  rechecks repeat a right line (a habit that only costs tokens); some follow a *wrong*
  line and correct it;
- a wrong line the recheck does not catch is caught by the verification pass:
  ``The totals differ: 239 and 249. Wait, let me recheck.``, the running sum again in the
  first order, and ``Now both give 249.``; a slip *in the verification pass* is caught
  the same way (the first total was right, the third pass confirms it).

The wrong numbers are excluded from the training loss (:attr:`Trace.segments`), so the
model learns what to do after a slip without learning to slip.

Why the verification pass swaps the first two terms rather than re-adding in reverse
order or starting from the second term: a Thinking side trained on reverse-order
verification lost its place in the reversed term list (a term skipped or added twice)
and then wrote the verification's wrong total as the answer (60% on 10 held-out
problems where the running-sum adapter had 90%); one trained on "from the second term
on, the first one last" (150 steps) lost its place at the wrap-around: on 50 held-out
problems × 4 it dropped the last term or kept adding the first one until the budget in
27 of 200 samples whose first pass was right, for 67.5% against the running-sum
adapter's 72.5% (while its first passes had fewer slips: 36 wrong against 55). The
swapped order is read forwards and ends where the question ends, as the first pass does.

Its weakness: from its second line on, the swapped pass writes the first pass's lines
again (``b+a`` is ``a+b``), so the model copies them, slips included (of the 120-step
adapter's 200 samples on 50 held-out problems, 52 verified a wrong first pass; in 46 the
verification repeated the wrong total and agreed). A pass that shares no line with the
first, ``Habits(verification="columns")`` (the tens digits summed, the ones digits summed,
then ``10·tens + ones``; ``--set verification=columns`` to train it), did worse (same
recipe, 120 steps, 2128 s of training on a machine also busy with other work; evaluated at
budget 416, as its k=6 traces reach 406 tokens): 60.0 ± 5.6% against 72.5 ± 5.3%, at 111
tokens. It skipped a digit in the columns and, when the totals differed, mostly wrote
``Both give`` with the columns' total (11 right first passes overwritten): the model
learned the words of the comparison, not to compare.

Pure Python (no torch): cheap to import.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mi_mergekit import runsum
from mi_mergekit.errors import MiMergekitError
from mi_mergekit.eval.prompts import AIME_SUFFIX
from mi_mergekit.runsum import write_jsonl  # noqa: F401  (records of any Problem with to_record)

MIN_DIFFICULTY = 2
MAX_DIFFICULTY = 6
#: generation budget of the reproduction: over-thinking traces of k=6 are ~180 tokens at the
#: median, 307 at the 99th percentile and 343 at most of 1000 drawn (the first adapter's plain
#: running sum: ~70)
MAX_NEW_TOKENS = 352


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

#: the verification passes (:attr:`Habits.verification`) and the line that opens each
VERIFY_LINES = {"swap": "Let me verify by adding in another order.",
                "columns": "Let me verify by adding the tens and the ones."}
VERIFY_LINE = "Let me verify by adding"  # what every verification line starts with
RECHECK_LINE = "Wait, let me recheck that."
AGREE_LINE = "Both give {total}."
DISAGREE_LINE = "The totals differ: {first} and {second}. Wait, let me recheck."
REAGREE_LINE = "Now both give {total}."


@dataclass(frozen=True)
class Habits:
    """How often the over-thinking traces verify, recheck and slip, per number of terms ``k``.

    ``verify(k)``: probability of a verification pass; ``recheck(k)``: probability of a
    ``Wait, let me recheck that.`` after each right line of the first pass; ``slip(k)``:
    probability that one line of the first pass is wrong (then always caught: by an
    immediate recheck with probability ``catch_now``, else by the verification pass);
    ``verify_slip(k)``: probability that, after a clean first pass, one line of the
    verification pass is wrong (caught by the totals' disagreement and a third pass).
    All grow linearly with ``k`` (harder problems, more of both).
    """

    verify_per_term: float = 0.2
    recheck_per_term: float = 0.04
    slip_per_term: float = 0.06
    catch_now: float = 0.5
    verify_slip_per_term: float = 0.04
    #: ``swap`` (shipped): the running sum with the first two terms swapped; ``columns``: the
    #: tens digits summed, the ones digits summed, then ``10·tens + ones`` (tried, not shipped)
    verification: str = "swap"

    def verify(self, k: int) -> float:
        return min(1.0, self.verify_per_term * (k - 1))

    def recheck(self, k: int) -> float:
        return min(1.0, self.recheck_per_term * (k - 1))

    def slip(self, k: int) -> float:
        return min(1.0, self.slip_per_term * (k - 1))

    def verify_slip(self, k: int) -> float:
        return min(1.0, self.verify_slip_per_term * (k - 1))


HABITS = Habits()


@dataclass(frozen=True)
class Trace:
    """A Thinking completion as ``(text, trained)`` segments; untrained ones are the slips."""

    segments: tuple

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.segments)

    def untrained_spans(self) -> list:
        """Character ``(start, end)`` spans of :attr:`text` excluded from the loss."""
        spans, at = [], 0
        for text, trained in self.segments:
            if not trained:
                spans.append((at, at + len(text)))
            at += len(text)
        return spans


def _slipped(rng: random.Random, value: int) -> int:
    """A plausible wrong sum: off by ten (a carry) or by one."""
    wrong = value + rng.choice((-10, 10, -1, 1))
    return wrong if wrong > 0 and wrong != value else value + 10


def overthinking_trace(problem: "Problem", rng: random.Random, habits: Habits = HABITS) -> Trace:
    """The over-thinking completion of ``problem`` (module docstring), drawn with ``rng``."""
    k, terms = problem.difficulty, problem.terms
    out: list = []

    def say(text: str, trained: bool = True) -> None:
        if out and out[-1][1] == trained:
            out[-1] = (out[-1][0] + text, trained)
        else:
            out.append((text, trained))

    def line(a: int, b: int, slipped: bool = False) -> int:
        """One ``a+b=c`` line; wrong (a slip, left out of the loss) where ``slipped``. Returns
        the sum it wrote."""
        say(f"{a}+{b}=")
        if slipped:
            wrong = _slipped(rng, a + b)
            say(str(wrong), trained=False)
            say("\n")
            return wrong
        say(f"{a + b}\n")
        return a + b

    def running_sum(order, slip_at=None, caught_now=False) -> int:
        acc = order[0]
        for i, term in enumerate(order[1:]):
            right = acc + term
            if i == slip_at:
                wrong = line(acc, term, slipped=True)
                if caught_now:
                    say(f"{RECHECK_LINE}\n{acc}+{term}={right}\n")
                acc = right if caught_now else wrong
                continue
            acc = line(acc, term)
            if slip_at is None and rng.random() < habits.recheck(k):  # a clean pass's habit
                say(f"{RECHECK_LINE}\n{acc - term}+{term}={right}\n")
        return acc

    def columns(slip_at=None) -> int:
        """The tens digits summed, the ones digits summed, then ``10·tens + ones``: lines of
        one-digit additions that share no partial sum with the running sum."""
        n = len(terms) - 1
        sums = []
        for label, digits, offset in (("Tens", [t // 10 for t in terms], 0), ("Ones", [t % 10 for t in terms], n)):
            say(f"{label}:\n")
            acc = digits[0]
            for i, digit in enumerate(digits[1:]):
                acc = line(acc, digit, slip_at == offset + i)
            sums.append(acc)
        return line(10 * sums[0], sums[1], slip_at == 2 * n)

    verify = rng.random() < habits.verify(k)
    slip_at = rng.randrange(k - 1) if rng.random() < habits.slip(k) else None
    caught_now = slip_at is not None and (not verify or rng.random() < habits.catch_now)
    first = running_sum(terms, slip_at, caught_now)
    total = sum(terms)
    if verify:
        say(f"{VERIFY_LINES[habits.verification]}\n")
        if habits.verification == "columns":
            second_slip = (rng.randrange(2 * k - 1) if slip_at is None and rng.random() < habits.verify_slip(k)
                           else None)
            second = columns(second_slip)
        else:
            second_slip = rng.randrange(k - 1) if slip_at is None and rng.random() < habits.verify_slip(k) else None
            second = running_sum((terms[1], terms[0]) + terms[2:], second_slip)
        if first == second:
            say(AGREE_LINE.format(total=total) + "\n")
        else:
            say(DISAGREE_LINE.format(first=first, second=second) + "\n")
            running_sum(terms)
            say(REAGREE_LINE.format(total=total) + "\n")
    say(f"{runsum.THINK_CLOSE}\n\n\\boxed{{{total}}}")
    return Trace(tuple(out))


def habits_shown(text: str) -> dict:
    """What a response's thinking does: ``verified`` (a verification pass), ``rechecks``
    (``Wait, let me recheck`` lines) and ``steps`` (:func:`steps_shown`)."""
    thinking = text.rsplit(runsum.THINK_CLOSE, 1)[0]
    return {"verified": VERIFY_LINE in thinking, "rechecks": thinking.count("Wait, let me recheck"),
            "steps": steps_shown(text)}


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
        raise MiMergekitError(f"difficulty must be in [{MIN_DIFFICULTY}, {MAX_DIFFICULTY}], got {difficulty}")
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


CALIBRATION_PATH = Path(__file__).resolve().parent / "data" / "calibration.jsonl"
CALIBRATION_SEED = 20260128
CALIBRATION_PER_DIFFICULTY = 20


def make_calibration() -> list[Problem]:
    """The calibration set of per-question λ routing: 20 problems per difficulty (100), seed
    20260128, none of them in the held-out set (the test questions). Training excludes it too."""
    heldout = {p.expression for p in make_heldout()}
    rng = random.Random(CALIBRATION_SEED)
    out: list[Problem] = []
    n = CALIBRATION_PER_DIFFICULTY * (MAX_DIFFICULTY - MIN_DIFFICULTY + 1)
    while len(out) < n:
        difficulty = MIN_DIFFICULTY + len(out) % (MAX_DIFFICULTY - MIN_DIFFICULTY + 1)
        p = make_problem(rng, difficulty, id=f"calibration-{len(out):04d}")
        if p.expression not in heldout and p.expression not in {q.expression for q in out}:
            out.append(p)
    return out


def excluded_from_training() -> set[str]:
    """Expressions training never sees: the held-out and the calibration set."""
    return {p.expression for p in make_heldout()} | {p.expression for p in make_calibration()}


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


def balanced_questions(records, limit: int | None) -> list[dict]:
    """``limit`` questions balanced over difficulty (:func:`balanced_subset`), sorted by it: what
    the demo evaluates on (of the held-out set) and calibrates a router on (of the calibration set)."""
    return sorted(balanced_subset(list(records), limit), key=lambda r: int(r["difficulty"]))
