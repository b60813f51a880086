"""Splitting a response into its thinking part and its answer.

Thinking chat templates (e.g. Qwen3-Thinking-2507) pre-insert ``<think>`` in the
generation prompt, so the model's output holds only the closing ``</think>``.
The paper's Think #R counts responses that contain ``</think>``; answers are
graded on the text after the *last* ``</think>``.

Unterminated thinking -- the response has no ``</think>``, a think block was
open (the prompt ended inside ``<think>`` or the response opened one) *and* the
sample ran out of tokens -- means the model never reached an answer. We grade it
as *no answer*: incorrect, no vote, and every instruction of IFEval failed.

A response that never closes the think block but *ends its turn* (EOS) is an
answer without explicit thinking: the Instruct end of a λ sweep under the
Thinking template answers directly. It is graded as a whole (minus a stray
``<think>`` tag) and does not count for Think #R. This is how the paper's
numbers read: MI-0.4 thinks in 1.4% of responses yet scores 55.8 on AIME'25.
A response with no think tags at all (an Instruct model) is all answer.

These are the ``strict`` rules. Under ``grading="paper"`` (the paper's evaluator,
see :mod:`mi_mergekit.eval.grading`) every response is graded on OpenCompass's
``extract_non_reasoning_content`` of its text: unterminated thinking is graded on
its whole text rather than as no answer (it is still *counted* as unterminated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mi_mergekit.errors import EvalInputError

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


def split_response(text: str, prompt_opens_think: bool, truncated: bool = True,
                   grading: str = "strict", postprocess: str = "non-reasoning") -> SplitResponse:
    """Split ``text`` (the generated continuation) for grading.

    ``truncated`` is True when the sample stopped at a limit (the token budget) rather
    than ending its turn. ``grading``: ``strict`` (the rules above) or ``paper``
    (OpenCompass's rules), where ``postprocess`` is ``non-reasoning`` (OpenCompass's
    ``extract_non_reasoning_content``) or ``none`` (the raw text, as the paper grades its
    Instruct model; see :mod:`mi_mergekit.eval.grading`).
    """
    if grading == "paper":
        from mi_mergekit.eval.grading import extract_non_reasoning_content

        closed = THINK_CLOSE in text
        unterminated = not closed and (prompt_opens_think or THINK_OPEN in text) and truncated
        answer = text if postprocess == "none" else extract_non_reasoning_content(text)
        return SplitResponse(closed, unterminated, answer)
    if grading != "strict":
        raise EvalInputError(f"unknown grading mode {grading!r}")
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        return SplitResponse(True, False, text[close + len(THINK_CLOSE):].strip())
    if prompt_opens_think or THINK_OPEN in text:
        if truncated:
            return SplitResponse(False, True, None)
        return SplitResponse(False, False, text.replace(THINK_OPEN, "").strip())
    return SplitResponse(False, False, text.strip())
