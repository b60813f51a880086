"""Math answers graded with math-verify (Hugging Face), as for AIME'25.

Two rule sets (``grading``, see :mod:`mi_mergekit.eval.grading`):

``strict`` (this harness's own): the gold answer is parsed as LaTeX (wrapped in
``\\boxed{}`` so that bare gold values such as ``204`` or ``\\sqrt{2}/2`` parse
alike); the model's answer text is parsed with math-verify's default LaTeX +
plain-expression extraction, which prefers the ``\\boxed{}`` content but also
accepts a bare number. Equivalence is ``verify(gold, answer)``.

``paper`` (OpenCompass's ``MATHVerifyEvaluator``, ``opencompass/evaluator/
math_evaluator.py``, as in open-compass/opencompass aa2b89b6 — the version of 2025;
later commits only add a subprocess timeout): the gold is parsed as ``$gold$`` with
``LatexExtractionConfig()`` and ``ExprExtractionConfig()``, first match; the answer
with ``LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False,
normalization_config=NormalizationConfig(nits=False, malformed_operators=False,
basic_latex=True, equations=True, boxed="all", units=True))`` only, first match —
LaTeX only, ``\\boxed`` first, no bare numbers (``$18$`` counts, ``18`` does not);
correct is ``verify(answer, gold)`` (OpenCompass's argument order). A gold that does
not parse makes the sample incorrect (OpenCompass skips it but keeps it in the count).

math-verify enforces its timeouts with ``signal.alarm``, which only works in a
process's main thread. Grading elsewhere (a thread) runs without timeouts
rather than crashing; the runner grades in the main thread.
"""

from __future__ import annotations

import logging
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
    """Parse a gold answer string into math-verify's representation (``strict`` rules)."""
    mv = _mv()
    gold = str(gold).strip()
    text = gold if "\\boxed" in gold or "$" in gold else f"\\boxed{{{gold}}}"
    parsed = mv.parse(text, parsing_timeout=_timeout())
    if not parsed:
        parsed = mv.parse(gold, parsing_timeout=_timeout())
    return parsed


def parse_answer(text: str):
    """Extract and parse the final answer of a model's answer text (``strict``; empty list: none)."""
    return _mv().parse(text, parsing_timeout=_timeout())


class _DropEquationsNotice(logging.Filter):
    """latex2sympy2_extended logs a deprecation notice on *every* normalisation with
    ``equations=True``, which OpenCompass's rules set (and which still acts); keep the
    rule, drop the notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "equations=True in NormalizationConfig is deprecated" not in record.getMessage()


_PAPER_CONFIGS = None


def _paper_configs():
    """(gold extraction configs, answer extraction configs) of OpenCompass's MATHVerifyEvaluator."""
    global _PAPER_CONFIGS
    if _PAPER_CONFIGS is None:
        mv = _mv()
        from latex2sympy2_extended import NormalizationConfig

        logging.getLogger("latex2sympy2_extended.math_normalization").addFilter(_DropEquationsNotice())
        gold = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
        answer = [mv.LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                nits=False, malformed_operators=False, basic_latex=True, equations=True, boxed="all", units=True,
            ),
            boxed_match_priority=0,
            try_extract_without_anchor=False,
        )]
        _PAPER_CONFIGS = (gold, answer)
    return _PAPER_CONFIGS


def paper_parse_gold(gold: str):
    """The gold as OpenCompass parses it: ``$gold$``, LaTeX then expression, first match."""
    configs, _ = _paper_configs()
    return _mv().parse(f"${gold}$", extraction_mode="first_match", extraction_config=configs,
                       parsing_timeout=_timeout())


def paper_parse_answer(text: str):
    """A response's answer as OpenCompass parses it: LaTeX only, ``\\boxed`` first, first match."""
    _, configs = _paper_configs()
    return _mv().parse(text, extraction_config=configs, extraction_mode="first_match", parsing_timeout=_timeout())


def equivalent(gold_parsed, answer_parsed) -> bool:
    """math-verify equivalence of two parsed answers (``verify(gold, answer)``)."""
    if not gold_parsed or not answer_parsed:
        return False
    return bool(_mv().verify(gold_parsed, answer_parsed, timeout_seconds=_timeout()))


def _extracted(parsed) -> str:
    return parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])


class MathGrader(Grader):
    """``math``: math-verify equivalence with the gold ``answer`` (rules per ``grading``)."""

    name = "math"
    requires = ("math_verify",)

    def grade(self, answer: str, item: dict) -> Grade:
        if self.grading == "paper":
            parsed = paper_parse_answer(answer)
            if not parsed:
                return Grade(correct=False, extracted=None)
            gold = paper_parse_gold(item["answer"])
            correct = bool(gold) and bool(_mv().verify(parsed, gold, timeout_seconds=_timeout()))
            return Grade(correct=correct, extracted=_extracted(parsed))
        parsed = parse_answer(answer)
        if not parsed:
            return Grade(correct=False, extracted=None)
        return Grade(correct=equivalent(parse_gold(item["answer"]), parsed), extracted=_extracted(parsed))

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
