"""The running-sum task both shipped pairs are trained on, and what their trainers share.

A problem is a sum of ``k`` numbers (``k`` = difficulty). The Thinking completion
writes the running sum one addition a line inside the think block, then the answer
in ``\\boxed{}``; the Instruct completion is the answer only. The toy pair asks it
over single digits (:mod:`mi_mergekit.toy.task`), the SmolLM2 pair over two-digit
numbers in words (:mod:`mi_mergekit.real.task`): both build on this module, neither
imports the other.

Pure Python (no torch at import): cheap to import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Problem:
    """One problem: ``terms`` are the digits summed; difficulty is ``len(terms)``."""

    id: str
    terms: tuple[int, ...]

    @property
    def question(self) -> str:
        return "+".join(str(t) for t in self.terms) + "="

    @property
    def answer(self) -> str:
        return str(sum(self.terms))

    @property
    def difficulty(self) -> int:
        return len(self.terms)

    def work(self) -> str:
        """The step-by-step work, one addition a line, each line ending in ``\\n``."""
        lines = []
        acc = self.terms[0]
        for t in self.terms[1:]:
            lines.append(f"{acc}+{t}={acc + t}\n")
            acc += t
        return "".join(lines)

    def thinking_completion(self) -> str:
        """What a Thinking model generates after the ``<think>\\n`` of its template."""
        return f"{self.work()}{THINK_CLOSE}\n\n\\boxed{{{self.answer}}}"

    def instruct_completion(self) -> str:
        """What an Instruct model generates: the answer only."""
        return f"\\boxed{{{self.answer}}}"

    def to_record(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "difficulty": self.difficulty,
        }


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` after the last ``</think>``.

    If the text has no ``</think>``, the whole text is searched (the Instruct
    model answers without a think block). Returns ``None`` if there is no
    ``\\boxed{}``.
    """
    if THINK_CLOSE in text:
        text = text.rsplit(THINK_CLOSE, 1)[1]
    found = _BOXED.findall(text)
    if not found:
        return None
    return found[-1].strip()


def normalize(answer: str) -> str:
    a = answer.strip().replace(" ", "")
    if re.fullmatch(r"[+-]?\d+", a):
        return str(int(a))
    return a


def is_correct(text: str, answer: str) -> bool:
    """Grade one generated response against the reference answer."""
    got = extract_answer(text)
    return got is not None and normalize(got) == normalize(str(answer))


def has_thinking(text: str) -> bool:
    """The paper's Think #R signal: the response contains ``</think>``."""
    return THINK_CLOSE in text


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.to_record()) + "\n")


def load_jsonl(path: str | Path) -> list[dict]:
    """Records ``{id, question, answer, difficulty}`` of a problems JSONL."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def collate(examples, pad_id: int):
    """Right-padded ``(ids, labels, mask)`` tensors of ``(input ids, labels)`` examples."""
    import torch

    n = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):  # right padding for training
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask
