"""Graders by name: ``math`` (math-verify), ``ifeval`` (lm-eval's instruction
checkers, prompt-level strict; loose as an extra score), ``gpqa`` (multiple-choice
letter after ``ANSWER:``), each in a grading mode: ``paper`` (OpenCompass's rules, as
the paper graded) or ``strict`` (see :mod:`mi_mergekit.eval.grading`).

A custom benchmark is a dataset file plus one of these names; a benchmark that brings a
grader of its own registers it with itself (:mod:`mi_mergekit.eval.benchmarks`). Graders import
their libraries lazily, so a missing optional dependency only breaks the grader
that needs it, with an error naming the package.
"""

from __future__ import annotations

import importlib
from typing import Dict, Union

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.graders.base import Grade, Grader

#: name -> grader class, or ``"module:Class"`` imported when first used
GRADERS: Dict[str, Union[str, type]] = {
    "math": "mi_mergekit.eval.graders.math:MathGrader",
    "ifeval": "mi_mergekit.eval.graders.ifeval:IFEvalGrader",
    "gpqa": "mi_mergekit.eval.graders.gpqa:GPQAGrader",
}


def register_grader(name: str, grader: Union[str, type]) -> None:
    """Make ``grader`` (a :class:`Grader` subclass, or ``"module:Class"``) known as ``name``."""
    GRADERS[name] = grader


#: what `report` needs beside the graders (plots)
REPORT_REQUIRES = ("matplotlib",)


def check_requirements(name: str) -> None:
    """Fail before any generation if the grader ``name`` or the report cannot import what they need."""
    missing = [m for m in (*get_grader(name).requires, *REPORT_REQUIRES) if not _importable(m)]
    if missing:
        raise ImportError(f"grading with {name!r} and reporting need {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'mi-mergekit[eval]'",
                          name=missing[0])


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def get_grader(name: str, grading: str = "strict") -> Grader:
    """Instantiate the grader called ``name`` for ``grading`` (``paper`` | ``strict``);
    unknown names or modes raise ValueError listing the known ones."""
    if name not in GRADERS:
        raise EvalInputError(f"unknown grader {name!r}; choose from {sorted(GRADERS)}")
    grader = GRADERS[name]
    if isinstance(grader, str):
        module_name, class_name = grader.split(":")
        grader = getattr(importlib.import_module(module_name), class_name)
    return grader(grading)


__all__ = ["GRADERS", "Grade", "Grader", "check_requirements", "get_grader", "register_grader"]
