"""Benchmarks: a dataset kind, a default grader, a token budget, a sample count, a
default grading mode and the paper's second accuracy column.

========== ============ ======= ============== ========= ======= ================
name       dataset kind grader  max new tokens n samples grading paper's columns
========== ============ ======= ============== ========= ======= ================
aime25     aime25       math    81920          64        paper   Mean/Pass@64
ifeval     ifeval       ifeval  65536          8         paper   Mean/Pass@8
gpqa       gpqa         gpqa    65536          8         paper   Mean/Vote@8
boxed      boxed        math    65536          8         strict  Mean/Pass@n
========== ============ ======= ============== ========= ======= ================

These are the paper's settings (its Tables 2 and 5 report Vote@8, not Pass@8, for
GPQA-Diamond: "Since questions from GPQA-Diamond are multiple-choice, we report
Vote@8 instead of Pass@8"); all are overridable per run. ``boxed`` is the generic
custom benchmark (a file of id / prompt / answer, graded with math-verify); any kind
can be paired with any grader. Grading modes: :mod:`mi_mergekit.eval.grading`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mi_mergekit.errors import EvalInputError


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    grader: str
    max_new_tokens: int
    n_samples: int
    title: str
    #: default grading mode (``paper`` | ``strict``)
    grading: str = "strict"
    #: the accuracy shown beside Mean@n in the paper's tables: ``pass`` or ``vote``
    second: str = "pass"


BENCHMARKS = {
    "aime25": Benchmark("aime25", "aime25", "math", 81920, 64, "AIME'25", "paper"),
    "ifeval": Benchmark("ifeval", "ifeval", "ifeval", 65536, 8, "IFEval", "paper"),
    "gpqa": Benchmark("gpqa", "gpqa", "gpqa", 65536, 8, "GPQA-Diamond", "paper", "vote"),
    "boxed": Benchmark("boxed", "boxed", "math", 65536, 8, "Boxed"),
}
#: the paper's benchmarks, in the order of its tables
PAPER_BENCHMARKS = ("aime25", "ifeval", "gpqa")
ALIASES = {"aime": "aime25", "gpqa_diamond": "gpqa", "gpqa-diamond": "gpqa", "custom": "boxed"}


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name, name)
    if key not in BENCHMARKS:
        raise EvalInputError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]
