"""What a run measures, apart from the model and the machine that generates: an :class:`EvalTask`.

One value holds the questions (dataset, benchmark, columns, split, limit), how they are asked
(system prompt, GPQA's shuffle seed), how they are sampled (decoding, samples per question,
budget, seed) and how the answers are graded (grader, grading mode, postprocess). The same task
evaluates every model of a comparison, a λ sweep or a search::

    from mi_mergekit.eval import EvalTask, evaluate

    task = EvalTask("data/aime25.jsonl", benchmark="aime25", n_samples=64)
    evaluate("out/mi-0.8", task, "runs/mi-0.8")
    evaluate("out/instruct", task.replace(decoding="instruct"), "runs/instruct")

``None`` means the benchmark's default (its grader, grading mode, samples and budget);
:meth:`EvalTask.settled` fills those in and checks the values before anything loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.decoding import Decoding, resolve_decoding


@dataclass(frozen=True)
class EvalTask:
    """The questions, how they are asked and sampled, and how the answers are graded."""

    #: dataset file (.jsonl / .csv / .parquet) or ``hf:NAME[:CONFIG]``
    dataset: Union[str, Path]
    #: a registered benchmark (:mod:`mi_mergekit.eval.benchmarks`) or one of its aliases: the
    #: dataset's columns, the prompt and the defaults below
    benchmark: str = "boxed"
    #: dataset column of each role, where it differs from the benchmark's
    columns: Optional[Mapping[str, str]] = None
    #: the split of an ``hf:`` dataset
    split: str = "train"
    #: only the first N questions
    limit: Optional[int] = None
    system_prompt: Optional[str] = None
    #: GPQA's option shuffling seed (strict grading; paper grading rotates the options by row)
    shuffle_seed: int = 0
    #: a preset name (thinking / instruct / greedy) or a :class:`~mi_mergekit.eval.decoding.Decoding`
    decoding: Union[str, Decoding] = "thinking"
    #: samples per question (default: the benchmark's)
    n_samples: Optional[int] = None
    #: the token budget (default: the benchmark's)
    max_new_tokens: Optional[int] = None
    #: sampling seed; each chunk of samples derives its own from it
    seed: int = 0
    #: a registered grader (default: the benchmark's)
    grader: Optional[str] = None
    #: ``paper`` | ``strict`` (default: the benchmark's; :mod:`mi_mergekit.eval.grading`)
    grading: Optional[str] = None
    #: what ``paper`` grading does to a response first (``auto`` / None: the paper's grouping)
    postprocess: Optional[str] = None

    def replace(self, **changes) -> "EvalTask":
        """This task with ``changes`` (e.g. another dataset or decoding)."""
        return replace(self, **changes)

    @property
    def bench(self):
        """The :class:`~mi_mergekit.eval.benchmarks.base.Benchmark` this task names."""
        from mi_mergekit.eval.benchmarks import get_benchmark

        return get_benchmark(self.benchmark)

    def settled(self) -> "EvalTask":
        """This task with the benchmark's defaults filled in and every value checked: the
        benchmark's own name, a grader, a grading mode, a :class:`Decoding`, ints for the samples
        and the budget. Unknown names and graders whose extras are missing fail here, before a
        model loads."""
        from mi_mergekit.eval.graders import check_requirements
        from mi_mergekit.eval.grading import check_grading, check_postprocess

        bench = self.bench
        grader = self.grader or bench.grader
        check_requirements(grader)
        n_samples = int(bench.n_samples if self.n_samples is None else self.n_samples)  # 0 is refused
        max_new_tokens = int(bench.max_new_tokens if self.max_new_tokens is None else self.max_new_tokens)
        if n_samples < 1 or max_new_tokens < 1:
            raise EvalInputError("n_samples and max_new_tokens must be >= 1")
        decoding = resolve_decoding(self.decoding) if isinstance(self.decoding, str) else self.decoding
        return replace(self, benchmark=bench.name, grader=grader, grading=check_grading(self.grading) or bench.grading,
                       postprocess=check_postprocess(self.postprocess), decoding=decoding, n_samples=n_samples,
                       max_new_tokens=max_new_tokens)

    def prompt_options(self) -> Dict[str, Any]:
        """How the benchmark lays out its prompts under this task's grading mode (settled tasks)."""
        return self.bench.prompt_options(self.grading)

    def examples(self) -> List:
        """The questions: the dataset's examples, read with the benchmark's kind."""
        from mi_mergekit.eval.datasets import load_examples

        return load_examples(str(self.dataset), self.bench.kind, columns=self.columns, split=self.split,
                             limit=self.limit)

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON values (the decoding as its fields, the dataset as a string)."""
        data = asdict(self)
        data["dataset"] = str(self.dataset)
        data["columns"] = dict(self.columns) if self.columns else self.columns
        if isinstance(self.decoding, Decoding):
            data["decoding"] = self.decoding.to_dict()
        return data


__all__ = ["EvalTask"]
