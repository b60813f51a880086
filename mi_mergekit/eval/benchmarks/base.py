"""What a benchmark declares, once, and what the harness reads from it.

A benchmark is one file in :mod:`mi_mergekit.eval.benchmarks`: a subclass of
:class:`Benchmark` registered with :func:`~mi_mergekit.eval.benchmarks.register_benchmark`,
with

* its name (``--benchmark``), aliases, title (the report's column heads) and defaults:
  grader, token budget, samples per question (for a benchmark of the paper's tables,
  ``in_paper``, also the k behind the paper's numbers), grading mode, and the accuracy the
  paper's tables show beside Mean@k (``second``: ``pass`` or ``vote``);
* ``columns`` — each role the benchmark reads from a dataset row and the column names
  tried for it, first found wins (``--column ROLE=NAME`` overrides);
* :meth:`Benchmark.example` — the dataset adapter: a row (its columns mapped) to an
  :class:`~mi_mergekit.eval.dataset_files.Example`;
* :meth:`Benchmark.message` — the prompt: (user message, gold answer, grader data);
* ``grader`` — the default grader's name (:mod:`mi_mergekit.eval.graders`), and
  ``grader_class`` when the benchmark brings a grader of its own (registered under that name);
* prompt options — ``prompt_keys``: settings that fix how the prompts are laid out, chosen
  from the grading mode (:meth:`Benchmark.prompt_options`) at generation, recorded in
  ``run.json`` and kept by a resume (GPQA's option order).

Everything else is the same for every benchmark: reading the file
(:mod:`~mi_mergekit.eval.dataset_files`), mapping and checking columns (here), rendering the
chat template (:mod:`~mi_mergekit.eval.prompts`), generating, grading, the report and the
lm-eval export; none of them names a benchmark.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from mi_mergekit.eval.dataset_files import DatasetError, Example, check_row, read_rows

#: (user message, gold answer, grader data) of one question
Message = Tuple[str, str, dict]


class Benchmark:
    """A dataset kind, its prompt, its default grader and settings (see the module docstring)."""

    name: str = ""
    title: str = ""
    #: other names ``--benchmark`` takes
    aliases: Tuple[str, ...] = ()
    #: the default grader, by name (``--grader`` overrides)
    grader: str = "math"
    #: a grader of the benchmark's own (a :class:`~mi_mergekit.eval.graders.base.Grader`
    #: subclass), registered under ``grader``; None: ``grader`` names a registered one
    grader_class: Optional[type] = None
    max_new_tokens: int = 65536
    n_samples: int = 8
    #: default grading mode (``paper`` | ``strict``, :mod:`mi_mergekit.eval.grading`)
    grading: str = "strict"
    #: the accuracy shown beside Mean@n in the paper-layout table: ``pass`` or ``vote``
    second: str = "pass"
    #: one of the paper's benchmarks (its Tables 2 and 5): its n_samples is the paper's k
    in_paper: bool = False
    #: role -> the column names tried for it, in order
    columns: Mapping[str, Sequence[str]] = {"id": ("id", "ID"), "question": ("question",), "answer": ("answer",)}
    #: roles that may be missing (the id defaults to the row number)
    optional_columns: Tuple[str, ...] = ("id",)
    #: roles whose value is a JSON list (checked by :meth:`example`), not text
    list_columns: Tuple[str, ...] = ()
    #: run.json keys of the prompt options (:meth:`prompt_options`)
    prompt_keys: Tuple[str, ...] = ()

    # ------------------------------------------------------------ what a benchmark defines

    def example(self, row: dict, mapping: Dict[str, str], number: int) -> Example:
        """The dataset adapter: row ``number`` (0-based) with its roles mapped to columns.
        This one: a question and its answer."""
        return Example(self.row_id(row, mapping, number), str(row[mapping["question"]]),
                       str(row[mapping["answer"]]).strip())

    def message(self, example: Example, shuffle_seed: int = 0, **options: Any) -> Message:
        """(user message, gold answer, grader data) of ``example``; ``options``: the benchmark's
        prompt options (:meth:`prompt_options`). This one: the question verbatim."""
        return example.question, example.answer, dict(example.grader_data)

    # ------------------------------------------------------------ optional hooks

    def prompt_options(self, grading: str) -> Dict[str, Any]:
        """The prompt options (keys: ``prompt_keys``) for grading mode ``grading``."""
        return {}

    def legacy_prompt_options(self) -> Dict[str, Any]:
        """The prompt options implied for runs written before ``prompt_keys`` were recorded."""
        return {}

    def resume_hint(self, diffs: Sequence[str], stored: Callable[[str], Any]) -> str:
        """Words added to a refused resume whose settings ``diffs`` differ (``stored(key)``: the
        stored run's value)."""
        return ""

    # ------------------------------------------------------------ what the harness calls

    @property
    def kind(self) -> str:
        """The dataset kind (the benchmark's name)."""
        return self.name

    @property
    def paper_k(self) -> Optional[int]:
        """Samples per question behind the paper's numbers (None: not a benchmark of the paper)."""
        return self.n_samples if self.in_paper else None

    @staticmethod
    def row_id(row: dict, mapping: Dict[str, str], number: int) -> str:
        return str(row[mapping["id"]]) if "id" in mapping else str(number)

    def resolve_columns(self, available: Sequence[str], overrides: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Map each role to a column name, or raise DatasetError naming what is missing."""
        roles = self.columns
        overrides = dict(overrides or {})
        unknown_roles = sorted(set(overrides) - set(roles))
        if unknown_roles:
            raise DatasetError(f"unknown column role(s) {unknown_roles} for {self.name}; roles are {sorted(roles)}")
        mapping = {}
        for role, aliases in roles.items():
            if role in overrides:
                if overrides[role] not in available:
                    raise DatasetError(
                        f"column {overrides[role]!r} (for {role}) is not in the dataset; columns are {sorted(available)}"
                    )
                mapping[role] = overrides[role]
                continue
            found = next((alias for alias in aliases if alias in available), None)
            if found is None and role not in self.optional_columns:
                raise DatasetError(
                    f"{self.name} dataset has no {role!r} column (looked for {list(aliases)}); "
                    f"columns are {sorted(available)}; map one with --column {role}=NAME"
                )
            if found is not None:
                mapping[role] = found
        return mapping

    def load_examples(self, source: str, columns: Optional[Dict[str, str]] = None, split: str = "train",
                      limit: Optional[int] = None) -> List[Example]:
        """``source`` read as this benchmark's examples (every row checked, ids unique)."""
        rows = read_rows(source, split)
        if not rows:
            raise DatasetError(f"dataset {source} has no rows")
        try:
            mapping = self.resolve_columns(list(rows[0].keys()), columns)
        except DatasetError as exc:
            raise DatasetError(f"{exc} ({source})") from None
        for number, row in enumerate(rows):
            check_row(row, mapping, number, source, self.list_columns)
        examples = [self.example(row, mapping, number) for number, row in enumerate(rows)]
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DatasetError(f"dataset {source} has duplicate ids, e.g. {duplicates}")
        return examples[:limit] if limit else examples

    def __repr__(self) -> str:
        return f"<benchmark {self.name}>"
