"""Benchmark datasets from local files (JSONL / CSV / Parquet) or the hub.

Benchmarks are not vendored. Point ``--dataset`` at a file, or at
``hf:<name>`` (optionally ``hf:<name>:<config>``) to load through the
``datasets`` library where you have hub access (``--split``, default ``train``;
needs ``pip install 'mi-mergekit[hub]'``).

Columns, per benchmark (the first alias present is used; override any role
with ``--column ROLE=COLUMN``):

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
math-verify (the prompt is used verbatim). Each loader returns a list of
:class:`Example`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class DatasetError(ValueError):
    """A dataset cannot be read or lacks a required column."""


@dataclass
class Example:
    """One question: its id, the user message content, the gold answer and grader data."""

    id: str
    question: str
    answer: str
    grader_data: dict = field(default_factory=dict)


ROLES: Dict[str, Dict[str, Sequence[str]]] = {
    "aime25": {
        "id": ("id", "ID", "problem_id", "idx"),
        "question": ("problem", "question", "Problem", "Question"),
        "answer": ("answer", "Answer"),
    },
    "boxed": {"id": ("id", "ID"), "question": ("prompt", "question", "problem"), "answer": ("answer",)},
    "ifeval": {
        "id": ("key", "id"),
        "prompt": ("prompt",),
        "instruction_id_list": ("instruction_id_list",),
        "kwargs": ("kwargs",),
    },
    "gpqa": {
        "id": ("Record ID", "id", "record_id"),
        "question": ("Question", "question"),
        "correct": ("Correct Answer", "correct_answer"),
        "incorrect1": ("Incorrect Answer 1", "incorrect_answer_1"),
        "incorrect2": ("Incorrect Answer 2", "incorrect_answer_2"),
        "incorrect3": ("Incorrect Answer 3", "incorrect_answer_3"),
    },
}
OPTIONAL_ROLES = {"id"}


def read_rows(source: str, split: str = "train") -> List[dict]:
    """Rows of a local file (by suffix) or of ``hf:<name>[:<config>]``."""
    if source.startswith("hf:"):
        return _read_hub(source[3:], split)
    path = Path(source)
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if not path.is_file():
        from mi_mergekit.merge.hub import siblings_hint

        near = siblings_hint(source, folders=False)
        if kind is not None or (near and not path.exists()):  # a typo of a file that is there
            raise DatasetError(f"dataset file not found: {source}{near} ({path.absolute()})")
    if kind is None:
        raise DatasetError(
            f"cannot read {source!r}: use a .jsonl, .csv or .parquet file, or hf:<dataset name> for the hub"
        )
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError("reading Parquet needs pyarrow: pip install pyarrow") from exc
    return pq.read_table(path).to_pylist()


def _read_jsonl(path: Path) -> List[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
    return rows


def _read_hub(name: str, split: str) -> List[dict]:
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError("loading from the hub needs `datasets`: pip install 'mi-mergekit[hub]'") from exc
    from mi_mergekit.merge.hub import ask_hub, offline

    name, _, config = name.partition(":")
    found, why = ask_hub(name, kind="datasets")
    if found is False:
        raise DatasetError(f"{why} (hf:{name}): check the name, or pass a local .jsonl/.csv/.parquet file")
    if found:
        return list(datasets.load_dataset(name, config or None, split=split))
    try:  # the hub cannot be asked: the local datasets cache only, at once
        with offline():
            return list(datasets.load_dataset(name, config or None, split=split))
    except Exception as exc:  # noqa: BLE001 - not cached (datasets says it in many ways)
        raise DatasetError(f"dataset hf:{name} is not in the local datasets cache and {why}; pass a local "
                           ".jsonl/.csv/.parquet file, or load it once where the hub is reachable") from exc


def dataset_fingerprint(source: str) -> str:
    """sha256 of a local dataset file (recorded in the run), or the hub name."""
    path = Path(source)
    if source.startswith("hf:") or not path.is_file():
        return source
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_columns(benchmark: str, available: Sequence[str], overrides: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Map each role of ``benchmark`` to a column name, or raise DatasetError naming what is missing."""
    roles = ROLES[benchmark]
    overrides = dict(overrides or {})
    unknown_roles = sorted(set(overrides) - set(roles))
    if unknown_roles:
        raise DatasetError(f"unknown column role(s) {unknown_roles} for {benchmark}; roles are {sorted(roles)}")
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
        if found is None and role not in OPTIONAL_ROLES:
            raise DatasetError(
                f"{benchmark} dataset has no {role!r} column (looked for {list(aliases)}); "
                f"columns are {sorted(available)}; map one with --column {role}=NAME"
            )
        if found is not None:
            mapping[role] = found
    return mapping


def load_examples(
    source: str,
    benchmark: str,
    columns: Optional[Dict[str, str]] = None,
    split: str = "train",
    limit: Optional[int] = None,
) -> List[Example]:
    """Load ``source`` as ``benchmark`` examples (see the module docstring for columns)."""
    if benchmark not in ROLES:
        raise DatasetError(f"unknown dataset kind {benchmark!r}; choose from {sorted(ROLES)}")
    rows = read_rows(source, split)
    if not rows:
        raise DatasetError(f"dataset {source} has no rows")
    try:
        mapping = resolve_columns(benchmark, list(rows[0].keys()), columns)
    except DatasetError as exc:
        raise DatasetError(f"{exc} ({source})") from None
    for number, row in enumerate(rows):
        check_row(row, mapping, number, source)
    examples = [_ADAPTERS[benchmark](row, mapping, number) for number, row in enumerate(rows)]
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DatasetError(f"dataset {source} has duplicate ids, e.g. {duplicates}")
    return examples[:limit] if limit else examples


#: roles whose value is a JSON list (checked by the IFEval adapter), not text
_LIST_ROLES = ("instruction_id_list", "kwargs")


def check_row(row: dict, mapping: Dict[str, str], number: int, source: str) -> None:
    """Every mapped column present, non-empty, and text (integers allowed, e.g. AIME answers)."""
    where, file = f"row {number + 1}", f" ({source})"
    for role, column in mapping.items():
        if column not in row:
            raise DatasetError(f"{where} has no {column!r} column, the {role}{file}")
        if role in _LIST_ROLES:
            continue
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DatasetError(
                f"{where}: {column!r} must be text, got {type(value).__name__} {str(value)[:40]!r}{file}"
            )
        if isinstance(value, str) and not value.strip():
            raise DatasetError(f"{where}: {column!r} is empty{file}")


def _id(row: dict, mapping: dict, number: int) -> str:
    return str(row[mapping["id"]]) if "id" in mapping else str(number)


def _answer_example(row: dict, mapping: dict, number: int) -> Example:
    return Example(_id(row, mapping, number), str(row[mapping["question"]]), str(row[mapping["answer"]]).strip())


def _ifeval_example(row: dict, mapping: dict, number: int) -> Example:
    ids = _maybe_json(row[mapping["instruction_id_list"]])
    kwargs = _maybe_json(row[mapping["kwargs"]])
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise DatasetError(f"ifeval row {number}: instruction_id_list and kwargs must be lists of equal length")
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    prompt = str(row[mapping["prompt"]])
    data = {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}
    return Example(_id(row, mapping, number), prompt, "", data)


def _gpqa_example(row: dict, mapping: dict, number: int) -> Example:
    """``row``: the 1-based data row, which fixes the option order under ``paper`` grading. The
    text is kept as the file has it, whitespace included, as OpenCompass puts it in the prompt."""
    options = [str(row[mapping[r]]) for r in ("correct", "incorrect1", "incorrect2", "incorrect3")]
    return Example(_id(row, mapping, number), str(row[mapping["question"]]), "",
                   {"options": options, "row": number + 1})


def _maybe_json(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"expected a JSON list, got {value[:60]!r}") from exc
    return value


_ADAPTERS = {"aime25": _answer_example, "boxed": _answer_example, "ifeval": _ifeval_example, "gpqa": _gpqa_example}
