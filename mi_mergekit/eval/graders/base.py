"""The grader interface.

A grader turns one answer text (the part of a response after the last
``</think>``, see :mod:`mi_mergekit.eval.thinking`) and the question's gold data
into a :class:`Grade`. Under ``strict`` grading, graders never see unterminated
thinking: the runner grades that as "no answer" itself (:func:`no_answer`). Under
``paper`` grading they get OpenCompass's post-processed text of every response.
A grader is built for one grading mode (``grading``, see :mod:`mi_mergekit.eval.grading`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from mi_mergekit.errors import EvalInputError


@dataclass
class Grade:
    """One graded sample.

    ``extracted`` is the answer the grader found (None: none found); it is what
    takes part in Vote@k after :meth:`Grader.vote_keys` groups equivalent ones.
    ``scores`` holds extra per-sample metrics in [0, 1] (e.g. IFEval loose).
    """

    correct: bool
    extracted: Optional[str] = None
    scores: Dict[str, float] = field(default_factory=dict)


class Grader:
    """Base class; subclasses set ``name`` and implement :meth:`grade`."""

    name: str = ""
    #: names of the extra ``scores`` this grader reports, so that "no answer"
    #: can fill them with zeros
    score_names: tuple = ()
    #: whether a majority vote over answers is meaningful (not for IFEval)
    votes: bool = True
    #: modules the grader imports lazily (checked before any generation)
    requires: tuple = ()

    def __init__(self, grading: str = "strict"):
        from mi_mergekit.eval.grading import GRADING_MODES

        if grading not in GRADING_MODES:
            raise EvalInputError(f"unknown grading mode {grading!r}; choose from {list(GRADING_MODES)}")
        #: ``paper`` (OpenCompass's rules) or ``strict``
        self.grading = grading

    def grade(self, answer: str, item: dict) -> Grade:
        """Grade ``answer`` against ``item`` (a prompts.jsonl record: gold ``answer`` and ``grader_data``)."""
        raise NotImplementedError

    def vote_keys(self, extracted: List[Optional[str]]) -> List[Optional[str]]:
        """Group equivalent extracted answers of one question under one key (default: identity)."""
        return list(extracted) if self.votes else [None] * len(extracted)

    def no_answer(self) -> Grade:
        """The grade of a response that has no answer (unterminated thinking)."""
        return Grade(correct=False, extracted=None, scores={name: 0.0 for name in self.score_names})
