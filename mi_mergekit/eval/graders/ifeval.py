"""IFEval graded with the instruction checkers of Google's IFEval, as lm-evaluation-harness ships them.

Correctness is *prompt-level strict* accuracy (every instruction of the prompt
followed by the response as is), the paper's IFEval metric. Prompt-level loose
(the variants with first/last line and ``*`` removed) and the
instruction-level strict/loose fractions are extra scores.

The two harnesses differ in one rule, the instruction arguments: lm-eval's
``test_instruction_following_strict`` / ``_loose`` drop every *falsy* kwarg
(``if v``: a ``0`` or ``""`` too), OpenCompass's (``opencompass/datasets/IFEval/
ifeval.py`` ``IFEvaluator.score`` + ``evaluation_main.py``) drops only ``None`` and
passes the rest to ``build_description``. ``strict`` grading runs lm-eval's
functions; ``paper`` grading runs the same checkers (lm-eval's
``instructions_registry``) under OpenCompass's rule (:func:`check_opencompass`).

langdetect (used by the language checker) is seeded for reproducibility, and
NLTK's ``punkt_tab`` is provided offline first (:mod:`mi_mergekit.eval.nltk_data`).
"""

from __future__ import annotations

import json

from mi_mergekit.eval.graders.base import Grade, Grader

_UTILS = None


def _lm_eval_ifeval():
    """Import lm-eval's IFEval utilities once, after the offline NLTK set-up."""
    global _UTILS
    if _UTILS is None:
        from mi_mergekit.eval.nltk_data import ensure_punkt_tab

        ensure_punkt_tab()
        try:
            from langdetect import DetectorFactory

            DetectorFactory.seed = 0
            from lm_eval.tasks.ifeval import utils
        except ImportError as exc:
            raise ImportError("the 'ifeval' grader needs lm-eval's IFEval extra: pip install 'mi-mergekit[eval]'") from exc
        _UTILS = utils
    return _UTILS


def check(response: str, prompt: str, instruction_id_list: list, kwargs: list) -> dict:
    """lm-eval's strict and loose checks of one response; returns the four IFEval metrics."""
    utils = _lm_eval_ifeval()
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    kwargs = [dict(k or {}) for k in kwargs]
    inp = utils.InputExample(key=0, instruction_id_list=list(instruction_id_list), prompt=prompt, kwargs=kwargs)
    strict = utils.test_instruction_following_strict(inp, response)
    loose = utils.test_instruction_following_loose(inp, response)
    return {
        "prompt_level_strict": bool(strict.follow_all_instructions),
        "prompt_level_loose": bool(loose.follow_all_instructions),
        "inst_level_strict": sum(strict.follow_instruction_list) / len(strict.follow_instruction_list),
        "inst_level_loose": sum(loose.follow_instruction_list) / len(loose.follow_instruction_list),
    }


def check_opencompass(response: str, prompt: str, instruction_id_list: list, kwargs: list) -> dict:
    """The four IFEval metrics as OpenCompass computes them: its ``test_instruction_following_strict``
    / ``_loose`` (``opencompass/datasets/IFEval/evaluation_main.py``), rule for rule, over
    lm-eval's copy of the same Google checkers, with only ``None`` kwargs dropped."""
    _lm_eval_ifeval()
    from lm_eval.tasks.ifeval import instructions_registry

    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
    lines = response.split("\n")
    variants = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    loose_responses = [variants[0], variants[0].replace("*", ""), *variants[1:], *(v.replace("*", "") for v in variants[1:])]
    strict, loose = [], []
    for instruction_id, kw in zip(instruction_id_list, kwargs):
        instruction = instructions_registry.INSTRUCTION_DICT[instruction_id](instruction_id)
        instruction.build_description(**kw)
        args = instruction.get_instruction_args()
        if args and "prompt" in args:
            instruction.build_description(prompt=prompt)
        strict.append(bool(response.strip() and instruction.check_following(response)))
        loose.append(any(r.strip() and instruction.check_following(r) for r in loose_responses))
    return {
        "prompt_level_strict": all(strict),
        "prompt_level_loose": all(loose),
        "inst_level_strict": sum(strict) / len(strict),
        "inst_level_loose": sum(loose) / len(loose),
    }


class IFEvalGrader(Grader):
    """``ifeval``: prompt-level strict accuracy; loose and instruction-level as extra scores."""

    name = "ifeval"
    requires = ("lm_eval", "langdetect", "nltk", "punkt", "immutabledict")
    score_names = ("prompt_level_loose", "inst_level_strict", "inst_level_loose")
    votes = False

    def grade(self, answer: str, item: dict) -> Grade:
        data = item["grader_data"]
        checker = check_opencompass if self.grading == "paper" else check
        result = checker(answer, data["prompt"], data["instruction_id_list"], data["kwargs"])
        return Grade(
            correct=result["prompt_level_strict"],
            extracted=None,
            scores={name: float(result[name]) for name in self.score_names},
        )
