"""``boxed``: the generic custom benchmark — a file of id / prompt / answer, the prompt used
verbatim, the answer checked with math-verify (strict grading by default)."""

from __future__ import annotations

from mi_mergekit.eval.benchmarks.base import Benchmark


class Boxed(Benchmark):
    name, title, aliases = "boxed", "Boxed", ("custom",)
    grader, max_new_tokens, n_samples, grading = "math", 65536, 8, "strict"
    columns = {"id": ("id", "ID"), "question": ("prompt", "question", "problem"), "answer": ("answer",)}
