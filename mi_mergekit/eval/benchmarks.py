"""Benchmarks: a dataset kind, a default grader, a token budget and a sample count.

========== ============ ======= ============== =========
name       dataset kind grader  max new tokens n samples
========== ============ ======= ============== =========
aime25     aime25       math    81920          64
ifeval     ifeval       ifeval  65536          8
gpqa       gpqa         gpqa    65536          8
boxed      boxed        math    65536          8
========== ============ ======= ============== =========

These are the paper's settings; all are overridable per run. ``boxed`` is the
generic custom benchmark (a file of id / prompt / answer, graded with
math-verify); any kind can be paired with any grader.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    grader: str
    max_new_tokens: int
    n_samples: int
    title: str


BENCHMARKS = {
    "aime25": Benchmark("aime25", "aime25", "math", 81920, 64, "AIME'25"),
    "ifeval": Benchmark("ifeval", "ifeval", "ifeval", 65536, 8, "IFEval"),
    "gpqa": Benchmark("gpqa", "gpqa", "gpqa", 65536, 8, "GPQA-Diamond"),
    "boxed": Benchmark("boxed", "boxed", "math", 65536, 8, "Boxed"),
}
ALIASES = {"aime": "aime25", "gpqa_diamond": "gpqa", "gpqa-diamond": "gpqa", "custom": "boxed"}


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name, name)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]
