"""Reading a dataset file: rows of a local JSONL / CSV / Parquet file or of a hub dataset,
and the :class:`Example` a benchmark makes of each row.

This module knows no benchmark: which columns a benchmark reads and how a row becomes an
:class:`Example` are the benchmark's (:mod:`mi_mergekit.eval.benchmarks`);
:func:`mi_mergekit.eval.datasets.load_examples` puts the two together.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

from mi_mergekit.errors import EvalInputError

FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class DatasetError(EvalInputError):
    """A dataset cannot be read or lacks a required column."""


@dataclass
class Example:
    """One question: its id, the user message content, the gold answer and grader data."""

    id: str
    question: str
    answer: str
    grader_data: dict = field(default_factory=dict)


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


def check_row(row: dict, mapping: Dict[str, str], number: int, source: str, list_roles: Sequence[str] = ()) -> None:
    """Every mapped column present, non-empty, and text (integers allowed, e.g. AIME answers);
    ``list_roles``: roles whose value is a JSON list (checked by the benchmark's adapter), not text."""
    where, file = f"row {number + 1}", f" ({source})"
    for role, column in mapping.items():
        if column not in row:
            raise DatasetError(f"{where} has no {column!r} column, the {role}{file}")
        if role in list_roles:
            continue
        value = row[column]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DatasetError(
                f"{where}: {column!r} must be text, got {type(value).__name__} {str(value)[:40]!r}{file}"
            )
        if isinstance(value, str) and not value.strip():
            raise DatasetError(f"{where}: {column!r} is empty{file}")


def maybe_json(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"expected a JSON list, got {value[:60]!r}") from exc
    return value
