"""The run directory and its append-only sample store.

A run directory holds one (model, benchmark) evaluation::

    run.json          settings that determine the samples (model, dataset hash,
                      decoding, budget, seeds, chunk size) and labels (λ, name)
    prompts.jsonl     one rendered prompt per question, with gold answer
    samples.jsonl     append-only, one line per generated sample
    grades.jsonl      one line per sample, rewritten by every grading pass
    metrics.json      per-run metrics;  questions.json: per-question metrics

``samples.jsonl`` lines are ``{"question_id", "sample_index", "text",
"n_tokens", "finish_reason", "seed", "decoding", "model"}``. Each finished
chunk is appended whole and fsynced, so a killed run loses at most the chunks
in flight; a failed append (disk full) is cut back off the file, so a stored
sample is never lost or duplicated. A torn last line (killed mid-write) is
ignored on reading and cut off before the next append. The first record of a
(question, index) pair wins, so a store never holds two versions of a sample.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

RUN_FILE = "run.json"
PROMPTS_FILE = "prompts.jsonl"
SAMPLES_FILE = "samples.jsonl"
GRADES_FILE = "grades.jsonl"
METRICS_FILE = "metrics.json"
QUESTIONS_FILE = "questions.json"


class SampleStore:
    """Append-only JSONL of samples, keyed by (question id, sample index)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._samples: Dict[Tuple[str, int], dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn final line from a killed writer
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            good_end += len(line)
            self._samples.setdefault((record["question_id"], int(record["sample_index"])), record)
        if good_end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)

    def __contains__(self, key: Tuple[str, int]) -> bool:
        return key in self._samples

    def __len__(self) -> int:
        return len(self._samples)

    def get(self, question_id: str, index: int) -> dict:
        return self._samples[(question_id, index)]

    def samples(self) -> List[dict]:
        """All samples, sorted by (question id order of insertion, sample index)."""
        return sorted(self._samples.values(), key=lambda r: (r["question_id"], r["sample_index"]))

    def append(self, records: Iterable[dict]) -> int:
        """Append records not yet stored; returns how many were written."""
        new = []
        for record in records:
            key = (record["question_id"], int(record["sample_index"]))
            if key not in self._samples:
                self._samples[key] = record
                new.append(record)
        if new:
            payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new).encode("utf-8")
            self._write(payload, new)
        return len(new)

    def _write(self, payload: bytes, new: List[dict]) -> None:
        """Append ``payload`` whole or not at all: on a failed write (disk full …) the
        file is cut back to its previous end and the records are forgotten again."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException as exc:
                for record in new:
                    self._samples.pop((record["question_id"], int(record["sample_index"])), None)
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                if isinstance(exc, OSError) and not exc.filename:
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
                raise
        finally:
            os.close(fd)


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    tmp = Path(str(path) + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> List[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
