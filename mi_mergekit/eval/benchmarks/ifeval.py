"""IFEval: the prompt verbatim, graded by lm-eval's instruction checkers, Mean/Pass@8.

Columns: ``prompt``, ``instruction_id_list`` and ``kwargs`` (JSON strings accepted, as a CSV
holds them), the id from ``key`` or ``id``.
"""

from __future__ import annotations

from mi_mergekit.eval.benchmarks.base import Benchmark
from mi_mergekit.eval.dataset_files import DatasetError, Example, maybe_json


class IFEval(Benchmark):
    name, title = "ifeval", "IFEval"
    grader, max_new_tokens, n_samples, grading, in_paper = "ifeval", 65536, 8, "paper", True
    columns = {
        "id": ("key", "id"),
        "prompt": ("prompt",),
        "instruction_id_list": ("instruction_id_list",),
        "kwargs": ("kwargs",),
    }
    list_columns = ("instruction_id_list", "kwargs")

    def example(self, row, mapping, number):
        ids = maybe_json(row[mapping["instruction_id_list"]])
        kwargs = maybe_json(row[mapping["kwargs"]])
        if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
            raise DatasetError(f"ifeval row {number}: instruction_id_list and kwargs must be lists of equal length")
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
        prompt = str(row[mapping["prompt"]])
        data = {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}
        return Example(self.row_id(row, mapping, number), prompt, "", data)
