"""Benchmarks, one file each, and their registry.

========== ======= ============== ========= ======= ================
name       grader  max new tokens n samples grading paper's columns
========== ======= ============== ========= ======= ================
aime25     math    81920          64        paper   Mean/Pass@64
ifeval     ifeval  65536          8         paper   Mean/Pass@8
gpqa       gpqa    65536          8         paper   Mean/Vote@8
boxed      math    65536          8         strict  Mean/Pass@n
========== ======= ============== ========= ======= ================

These are the paper's settings (its Tables 2 and 5 report Vote@8, not Pass@8, for
GPQA-Diamond: "Since questions from GPQA-Diamond are multiple-choice, we report
Vote@8 instead of Pass@8"); all are overridable per run. ``boxed`` is the generic
custom benchmark (a file of id / prompt / answer, graded with math-verify); any
benchmark's dataset can be paired with any grader. Grading modes:
:mod:`mi_mergekit.eval.grading`.

A benchmark is one :class:`~mi_mergekit.eval.benchmarks.base.Benchmark` (what it declares:
that module's docstring); :func:`register_benchmark` makes it known to ``evaluate``, the
CLI (when registered before the command is built), the report and the export —
``tests/eval/test_new_benchmark.py`` defines one in a test file alone.
"""

from __future__ import annotations

from typing import Dict, Tuple

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.benchmarks.aime25 import AIME25
from mi_mergekit.eval.benchmarks.base import Benchmark
from mi_mergekit.eval.benchmarks.boxed import Boxed
from mi_mergekit.eval.benchmarks.gpqa import GPQA
from mi_mergekit.eval.benchmarks.ifeval import IFEval

#: name -> benchmark, in registration order (the paper's benchmarks in the order of its tables)
BENCHMARKS: Dict[str, Benchmark] = {}
#: other name -> name
ALIASES: Dict[str, str] = {}


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Make ``benchmark`` known by its name and aliases (again: replaces it), with its own
    grader when it brings one."""
    if not benchmark.name or not benchmark.columns:
        raise EvalInputError(f"a benchmark needs a name and columns, got {benchmark!r}")
    if benchmark.grader_class is not None:
        from mi_mergekit.eval.graders import register_grader

        register_grader(benchmark.grader, benchmark.grader_class)
    BENCHMARKS[benchmark.name] = benchmark
    for alias in benchmark.aliases:
        ALIASES[alias] = benchmark.name
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name, name)
    if key not in BENCHMARKS:
        raise EvalInputError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]


def paper_benchmarks() -> Tuple[str, ...]:
    """The paper's benchmarks, in the order of its tables."""
    return tuple(name for name, benchmark in BENCHMARKS.items() if benchmark.in_paper)


def prompt_keys() -> Tuple[str, ...]:
    """Every registered benchmark's prompt-option keys (run.json records each, None where a
    benchmark has no such option)."""
    keys: list = []
    for benchmark in BENCHMARKS.values():
        keys += [k for k in benchmark.prompt_keys if k not in keys]
    return tuple(keys)


for _builtin in (AIME25(), IFEval(), GPQA(), Boxed()):
    register_benchmark(_builtin)

#: the paper's benchmarks, in the order of its tables
PAPER_BENCHMARKS = paper_benchmarks()

__all__ = ["ALIASES", "BENCHMARKS", "PAPER_BENCHMARKS", "Benchmark", "get_benchmark", "paper_benchmarks",
           "prompt_keys", "register_benchmark"]
