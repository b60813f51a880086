"""Benchmark datasets from local files (JSONL / CSV / Parquet) or the hub.

Benchmarks are not vendored. Point ``--dataset`` at a file, or at
``hf:<name>`` (optionally ``hf:<name>:<config>``) to load through the
``datasets`` library where you have hub access (``--split``, default ``train``;
needs ``pip install 'mi-mergekit[hub]'``).

Columns, per benchmark (declared by each benchmark, :mod:`mi_mergekit.eval.benchmarks`;
the first alias present is used; override any role with ``--column ROLE=COLUMN``):

========== ========== ================================================================
benchmark  role       aliases
========== ========== ================================================================
aime25     id         id, ID, problem_id, idx            (default: row number)
           question   problem, question, Problem, Question
           answer     answer, Answer
boxed      id         id, ID                              (default: row number)
           question   prompt, question, problem
           answer     answer
ifeval     id         key, id                             (default: row number)
           prompt     prompt
           instruction_id_list / kwargs (JSON strings accepted in CSV)
gpqa       id         Record ID, id, record_id            (default: row number)
           question   Question, question
           correct    Correct Answer, correct_answer
           incorrect1..3  Incorrect Answer 1..3, incorrect_answer_1..3
========== ========== ================================================================

``boxed`` is the generic custom task: any question whose answer is checked with
math-verify (the prompt is used verbatim). :func:`load_examples` returns a list of
:class:`Example`; reading the file is :mod:`mi_mergekit.eval.dataset_files`'s.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from mi_mergekit.eval.benchmarks import BENCHMARKS
from mi_mergekit.eval.dataset_files import (FILE_SUFFIXES, DatasetError, Example, check_row, dataset_fingerprint,
                                            read_rows)


def resolve_columns(benchmark: str, available: Sequence[str], overrides: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Map each role of ``benchmark`` to a column name, or raise DatasetError naming what is missing."""
    return BENCHMARKS[benchmark].resolve_columns(available, overrides)


def load_examples(
    source: str,
    benchmark: str,
    columns: Optional[Dict[str, str]] = None,
    split: str = "train",
    limit: Optional[int] = None,
) -> List[Example]:
    """Load ``source`` as ``benchmark`` examples (see the module docstring for columns)."""
    if benchmark not in BENCHMARKS:
        raise DatasetError(f"unknown dataset kind {benchmark!r}; choose from {sorted(BENCHMARKS)}")
    return BENCHMARKS[benchmark].load_examples(source, columns, split, limit)


__all__ = ["FILE_SUFFIXES", "DatasetError", "Example", "check_row", "dataset_fingerprint", "load_examples",
           "read_rows", "resolve_columns"]
