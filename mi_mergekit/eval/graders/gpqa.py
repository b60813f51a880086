"""GPQA-style multiple choice: extract the letter after ``ANSWER:``.

The prompt (see :mod:`mi_mergekit.eval.prompts`) asks for a last line
``ANSWER: $LETTER``. Gold is the letter of the correct option in the order the
prompt showed, recorded in the prompt record's ``answer``.

``paper`` grading (OpenCompass, ``opencompass/configs/datasets/gpqa/
gpqa_openai_simple_evals_gen_5aeece.py`` — the config of the authors'
``evaluation/qwen3_ifeval_gpqa.py`` — with ``match_answer_pattern`` of
``opencompass/utils/text_postprocessors.py`` and ``GPQAEvaluator`` of
``opencompass/datasets/gpqa.py``): the *first* match of
``(?i)ANSWER\\s*:\\s*([A-D])`` (:data:`PAPER_PATTERN`), taken as is and compared with
the gold letter by string equality — so ``answer: b`` extracts ``b``, which is not
``B``, and ``ANSWER: Because …`` extracts ``B``, as OpenCompass does.

``strict`` grading (this harness's own): the *last* ``ANSWER: X`` in the answer text
(case-insensitive, optional ``$``/parentheses/bold around the letter, upper-cased);
if there is none, a final ``\\boxed{X}`` is accepted, since thinking models often box
their choice.
"""

from __future__ import annotations

import re
from typing import Optional

from mi_mergekit.eval.graders.base import Grade, Grader

LETTERS = "ABCDEFGHIJ"
_ANSWER = re.compile(r"(?i)answer\s*[:：]\s*[\*\$\(\s]*([A-J])\b")
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-J])\s*\}?\s*\}")
#: OpenCompass's answer pattern for GPQA (first match, ``re.search``)
PAPER_PATTERN = re.compile(r"(?i)ANSWER\s*:\s*([A-D])")


def extract_letter(text: str, n_options: int = 4) -> Optional[str]:
    """The chosen option letter in ``text`` under the ``strict`` rules, or None."""
    valid = LETTERS[:n_options]
    for pattern in (_ANSWER, _BOXED):
        letters = [m.group(1).upper() for m in pattern.finditer(text)]
        letters = [letter for letter in letters if letter in valid]
        if letters:
            return letters[-1]
    return None


def paper_extract_letter(text: str) -> Optional[str]:
    """OpenCompass's extraction: the first ``ANSWER: X`` match, case kept (None: no match)."""
    match = PAPER_PATTERN.search(text)
    return match.group(1) if match else None


class GPQAGrader(Grader):
    """``gpqa``: exact match of the extracted letter with the gold letter."""

    name = "gpqa"

    def grade(self, answer: str, item: dict) -> Grade:
        gold = str(item["answer"]).strip()
        if self.grading == "paper":
            letter = paper_extract_letter(answer)
            return Grade(correct=letter is not None and letter == gold, extracted=letter)
        n_options = len(item.get("grader_data", {}).get("options", "ABCD")) or 4
        letter = extract_letter(answer, n_options)
        return Grade(correct=letter is not None and letter == gold.upper(), extracted=letter)
