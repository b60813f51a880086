"""IFEval graded with lm-evaluation-harness's instruction checkers.

Correctness is *prompt-level strict* accuracy (every instruction of the prompt
followed by the response as is), the paper's IFEval metric. Prompt-level loose
(lm-eval's variants with first/last line and ``*`` removed) and the
instruction-level strict/loose fractions are extra scores. The checking itself
is lm-eval's ``test_instruction_following_strict`` / ``_loose``.

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


def validate_instructions(instruction_id_list: list) -> None:
    """Raise ValueError for instruction ids lm-eval does not know (checked when loading a dataset)."""
    from lm_eval.tasks.ifeval import instructions_registry

    _lm_eval_ifeval()
    unknown = [i for i in instruction_id_list if i not in instructions_registry.INSTRUCTION_DICT]
    if unknown:
        raise ValueError(f"unknown IFEval instruction ids {unknown}")


class IFEvalGrader(Grader):
    """``ifeval``: prompt-level strict accuracy; loose and instruction-level as extra scores."""

    name = "ifeval"
    requires = ("lm_eval", "langdetect", "nltk", "punkt", "immutabledict")
    score_names = ("prompt_level_loose", "inst_level_strict", "inst_level_loose")
    votes = False

    def grade(self, answer: str, item: dict) -> Grade:
        data = item["grader_data"]
        result = check(answer, data["prompt"], data["instruction_id_list"], data["kwargs"])
        return Grade(
            correct=result["prompt_level_strict"],
            extracted=None,
            scores={name: float(result[name]) for name in self.score_names},
        )
