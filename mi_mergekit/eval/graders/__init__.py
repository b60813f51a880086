"""Graders by name: ``math`` (math-verify), ``ifeval`` (lm-eval's instruction
checkers, prompt-level strict; loose as an extra score), ``gpqa`` (multiple-choice
letter after ``ANSWER:``).

A custom benchmark is a dataset file plus one of these names. Graders import
their libraries lazily, so a missing optional dependency only breaks the grader
that needs it, with an error naming the package.
"""

from __future__ import annotations

import importlib

from mi_mergekit.eval.graders.base import Grade, Grader

GRADERS = {
    "math": "mi_mergekit.eval.graders.math:MathGrader",
    "ifeval": "mi_mergekit.eval.graders.ifeval:IFEvalGrader",
    "gpqa": "mi_mergekit.eval.graders.gpqa:GPQAGrader",
}


def get_grader(name: str) -> Grader:
    """Instantiate the grader called ``name``; unknown names raise ValueError listing the known ones."""
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; choose from {sorted(GRADERS)}")
    module_name, class_name = GRADERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


__all__ = ["GRADERS", "Grade", "Grader", "get_grader"]
