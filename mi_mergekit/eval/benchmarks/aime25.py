"""AIME'25: the answer checked with math-verify, 64 samples, the paper's Mean/Pass@64.

Prompt: ``"{question}\\nPlease reason step by step, and put your final answer within
\\boxed{}."`` (the Qwen math prompt the paper uses).
"""

from __future__ import annotations

from mi_mergekit.eval.benchmarks.base import Benchmark

AIME_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


class AIME25(Benchmark):
    name, title, aliases = "aime25", "AIME'25", ("aime",)
    grader, max_new_tokens, n_samples, grading, in_paper = "math", 81920, 64, "paper", True
    columns = {
        "id": ("id", "ID", "problem_id", "idx"),
        "question": ("problem", "question", "Problem", "Question"),
        "answer": ("answer", "Answer"),
    }

    def message(self, example, shuffle_seed=0, **options):
        return example.question + AIME_SUFFIX, example.answer, {}
