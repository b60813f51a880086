"""Math answers graded with math-verify (Hugging Face), as for AIME'25.

The gold answer is parsed as LaTeX (wrapped in ``\\boxed{}`` so that bare gold
values such as ``204`` or ``\\sqrt{2}/2`` parse alike); the model's answer text
is parsed with math-verify's default LaTeX + plain-expression extraction, which
prefers the ``\\boxed{}`` content. Equivalence (``\\frac{1}{2}`` = ``0.5``) is
math-verify's ``verify``.

math-verify enforces its timeouts with ``signal.alarm``, which only works in a
process's main thread. Grading elsewhere (a thread) runs without timeouts
rather than crashing; the runner grades in the main thread.
"""

from __future__ import annotations

import threading
from typing import List, Optional

from mi_mergekit.eval.graders.base import Grade, Grader


def _timeout() -> Optional[int]:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _mv():
    try:
        import math_verify
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the 'math' grader needs math-verify: pip install 'mi-mergekit[eval]'") from exc
    return math_verify


def parse_gold(gold: str):
    """Parse a gold answer string into math-verify's representation."""
    mv = _mv()
    gold = str(gold).strip()
    text = gold if "\\boxed" in gold or "$" in gold else f"\\boxed{{{gold}}}"
    parsed = mv.parse(text, parsing_timeout=_timeout())
    if not parsed:
        parsed = mv.parse(gold, parsing_timeout=_timeout())
    return parsed


def parse_answer(text: str):
    """Extract and parse the final answer of a model's answer text (empty list: none)."""
    return _mv().parse(text, parsing_timeout=_timeout())


def equivalent(gold_parsed, answer_parsed) -> bool:
    """math-verify equivalence of two parsed answers."""
    if not gold_parsed or not answer_parsed:
        return False
    return bool(_mv().verify(gold_parsed, answer_parsed, timeout_seconds=_timeout()))


class MathGrader(Grader):
    """``math``: math-verify equivalence with the gold ``answer``."""

    name = "math"
    requires = ("math_verify",)

    def grade(self, answer: str, item: dict) -> Grade:
        parsed = parse_answer(answer)
        if not parsed:
            return Grade(correct=False, extracted=None)
        extracted = parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])
        return Grade(correct=equivalent(parse_gold(item["answer"]), parsed), extracted=extracted)

    def vote_keys(self, extracted: List[Optional[str]]) -> List[Optional[str]]:
        """Cluster extracted answers by math-verify equivalence; the key is the cluster's first member."""
        representatives: list = []  # (key, parsed)
        keys: List[Optional[str]] = []
        for text in extracted:
            if text is None:
                keys.append(None)
                continue
            parsed = parse_gold(text)
            for key, rep in representatives:
                if key == text or equivalent(rep, parsed):
                    keys.append(key)
                    break
            else:
                representatives.append((text, parsed))
                keys.append(text)
        return keys
