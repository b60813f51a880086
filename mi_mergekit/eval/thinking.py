"""Splitting a response into its thinking part and its answer.

Thinking chat templates (e.g. Qwen3-Thinking-2507) pre-insert ``<think>`` in the
generation prompt, so the model's output holds only the closing ``</think>``.
The paper's Think #R counts responses that contain ``</think>``; answers are
graded on the text after the *last* ``</think>``.

Unterminated thinking -- the response has no ``</think>`` but a think block was
open (the prompt ended inside ``<think>`` or the response opened one) -- means
the model never reached an answer (usually: it hit the token budget). We grade
it as *no answer*: incorrect, no vote, and every instruction of IFEval failed.
A response with no think tags at all (an Instruct model) is all answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def opens_think(text: str) -> bool:
    """True if ``text`` leaves a ``<think>`` block open at its end."""
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


@dataclass(frozen=True)
class SplitResponse:
    """A response split at its last ``</think>``.

    ``answer`` is None when thinking never terminated (no answer to grade).
    """

    has_think_close: bool
    unterminated: bool
    answer: Optional[str]


def split_response(text: str, prompt_opens_think: bool) -> SplitResponse:
    """Split ``text`` (the generated continuation) for grading."""
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        return SplitResponse(True, False, text[close + len(THINK_CLOSE):].strip())
    if prompt_opens_think or THINK_OPEN in text:
        return SplitResponse(False, True, None)
    return SplitResponse(False, False, text.strip())
