"""GPQA-style multiple choice: extract the letter after ``ANSWER:``.

The prompt (see :mod:`mi_mergekit.eval.prompts`) asks for a last line
``ANSWER: $LETTER``. We take the *last* ``ANSWER: X`` in the answer text
(case-insensitive, optional ``$``/parentheses/bold around the letter); if there
is none, a final ``\\boxed{X}`` is accepted, since thinking models often box
their choice. Gold is the letter of the correct option after shuffling,
recorded in the prompt record's ``answer``.
"""

from __future__ import annotations

import re
from typing import Optional

from mi_mergekit.eval.graders.base import Grade, Grader

LETTERS = "ABCDEFGHIJ"
_ANSWER = re.compile(r"(?i)answer\s*[:：]\s*[\*\$\(\s]*([A-J])\b")
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([A-J])\s*\}?\s*\}")


def extract_letter(text: str, n_options: int = 4) -> Optional[str]:
    """The chosen option letter in ``text``, or None."""
    valid = LETTERS[:n_options]
    for pattern in (_ANSWER, _BOXED):
        letters = [m.group(1).upper() for m in pattern.finditer(text)]
        letters = [letter for letter in letters if letter in valid]
        if letters:
            return letters[-1]
    return None


class GPQAGrader(Grader):
    """``gpqa``: exact match of the extracted letter with the gold letter."""

    name = "gpqa"

    def grade(self, answer: str, item: dict) -> Grade:
        n_options = len(item.get("grader_data", {}).get("options", "ABCD")) or 4
        letter = extract_letter(answer, n_options)
        return Grade(correct=letter is not None and letter == str(item["answer"]).strip().upper(), extracted=letter)
