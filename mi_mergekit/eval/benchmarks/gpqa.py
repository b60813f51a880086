"""GPQA-Diamond: multiple choice, graded by the letter after ``ANSWER:``, the paper's Mean/Vote@8
("Since questions from GPQA-Diamond are multiple-choice, we report Vote@8 instead of Pass@8").

The prompt is OpenCompass's (``gpqa_openai_simple_evals_gen_5aeece``,
which the authors' config uses); the model is asked to end with ``ANSWER: $LETTER``.
Option order (``gpqa_options``): ``rotate`` (``paper`` grading, the default) places
the options as OpenCompass's ``GPQADataset.load`` does (``opencompass/datasets/gpqa.py``):
data row ``cnt`` (1-based, file order) takes the pattern ``['ABCD', 'BCDA', 'CDAB',
'DABC'][cnt % 4]`` over ``[correct, incorrect 1, incorrect 2, incorrect 3]``, and the
gold is the first letter whose text equals the correct answer; ``shuffle`` (``strict``
grading) shuffles the four options per question by a seeded RNG
(``random.Random(f"{shuffle_seed}:{question_id}")``). The permutation and gold letter
are recorded in the run's ``prompts.jsonl``.

Under ``rotate`` the text is OpenCompass's byte for byte: the question and options as
the file has them (trailing newlines and spaces included: 47 of GPQA-Diamond's 198 rows
carry some), put into the template by OpenCompass's ``safe_format``
(``opencompass/utils/prompt.py``), which replaces ``{question}``, ``{A}`` … ``{D}``,
``{options}``, ``{answer}`` one after another — so a ``{B}`` inside a question's LaTeX
(``\\vec{B}``; 3 rows of GPQA-Diamond) becomes option B's text in the paper's prompt, and
here too. ``tests/eval/opencompass_gpqa.py`` holds OpenCompass's loader and template as
the oracle. Under ``shuffle`` the same raw text is formatted in one pass.

The option order is this benchmark's prompt option: ``gpqa_options`` (``rotate`` under
``paper`` grading, ``shuffle`` under ``strict``) and ``gpqa_prompt`` (``opencompass``: the text
byte for byte; ``raw``: the same text, options shuffled), recorded in ``run.json`` at
generation; a resume keeps them (runs written before they were recorded: ``shuffle`` and
``stripped``).
"""

from __future__ import annotations

import random
from typing import List, Tuple

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.benchmarks.base import Benchmark
from mi_mergekit.eval.dataset_files import Example

GPQA_TEMPLATE = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}. "
    "Think step by step before answering.\n\n{question}\n\n{options}"
)
#: OpenCompass's ``align_prompt`` (``configs/datasets/gpqa/gpqa_openai_simple_evals_gen_5aeece.py``)
OPENCOMPASS_GPQA_PROMPT = GPQA_TEMPLATE.format(letters="ABCD", question="{question}",
                                               options="A) {A}\nB) {B}\nC) {C}\nD) {D}")


def opencompass_format(template: str, entry: dict) -> str:
    """OpenCompass's ``safe_format`` (``opencompass/utils/prompt.py``): each ``{key}`` of
    ``entry`` replaced in turn, in the entry's order, values included."""
    for key, value in entry.items():
        template = template.replace(f"{{{key}}}", str(value))
    return template


#: OpenCompass's GPQA option patterns, indexed by ``row % 4`` (``opencompass/datasets/gpqa.py``)
GPQA_ROTATIONS = ("ABCD", "BCDA", "CDAB", "DABC")
GPQA_OPTION_ORDERS = ("rotate", "shuffle")


def gpqa_rotation(row: int) -> List[int]:
    """The option order of 1-based data row ``row`` as OpenCompass lays it out:
    position ``i`` shows original option ``ord(pattern[i]) - ord('A')`` (0 = the correct one)."""
    return [ord(c) - ord("A") for c in GPQA_ROTATIONS[row % 4]]


def gpqa_message(example: Example, shuffle_seed: int, order_kind: str = "shuffle") -> Tuple[str, str, dict]:
    """The multiple-choice prompt with options rotated by row or shuffled; the first
    original option is the correct one."""
    options = example.grader_data["options"]
    if order_kind == "rotate":
        if len(options) != 4:
            raise EvalInputError(f"rotating GPQA options needs 4 options, got {len(options)}")
        row = example.grader_data.get("row")
        if not isinstance(row, int):
            raise EvalInputError(f"GPQA question {example.id!r} has no data row number to rotate its options by")
        order = gpqa_rotation(row)
        shown = [options[j] for j in order]
        gold = "ABCD"[shown.index(options[0])]  # first letter whose text is the correct answer
        extra = {"option_order": "rotate", "row": row}
    elif order_kind == "shuffle":
        order = list(range(len(options)))
        random.Random(f"{shuffle_seed}:{example.id}").shuffle(order)
        shown = [options[j] for j in order]
        gold = "ABCDEFGHIJ"[order.index(0)]
        extra = {"option_order": "shuffle", "shuffle_seed": shuffle_seed}
    else:
        raise EvalInputError(f"unknown GPQA option order {order_kind!r}; choose from {list(GPQA_OPTION_ORDERS)}")
    if order_kind == "rotate":  # OpenCompass's dataset row: question, A-D, options, answer (emptied)
        entry = {"question": example.question, **dict(zip("ABCD", shown)), "options": list(options), "answer": ""}
        text = opencompass_format(OPENCOMPASS_GPQA_PROMPT, entry)
    else:
        letters = "ABCDEFGHIJ"[: len(options)]
        lines = "\n".join(f"{letters[i]}) {text}" for i, text in enumerate(shown))
        text = GPQA_TEMPLATE.format(letters="".join(letters), question=example.question, options=lines)
    return text, gold, {"options": shown, "permutation": order, **extra}


#: how GPQA prompts are written for each option order (run.json ``gpqa_prompt``): ``opencompass``
#: is OpenCompass's text byte for byte, ``raw`` the same text with the options shuffled
GPQA_PROMPTS = {"rotate": "opencompass", "shuffle": "raw"}


class GPQA(Benchmark):
    name, title, aliases = "gpqa", "GPQA-Diamond", ("gpqa_diamond", "gpqa-diamond")
    grader, max_new_tokens, n_samples, grading, second, in_paper = "gpqa", 65536, 8, "paper", "vote", True
    columns = {
        "id": ("Record ID", "id", "record_id"),
        "question": ("Question", "question"),
        "correct": ("Correct Answer", "correct_answer"),
        "incorrect1": ("Incorrect Answer 1", "incorrect_answer_1"),
        "incorrect2": ("Incorrect Answer 2", "incorrect_answer_2"),
        "incorrect3": ("Incorrect Answer 3", "incorrect_answer_3"),
    }
    prompt_keys = ("gpqa_options", "gpqa_prompt")

    def example(self, row, mapping, number):
        """``row``: the 1-based data row, which fixes the option order under ``paper`` grading. The
        text is kept as the file has it, whitespace included, as OpenCompass puts it in the prompt."""
        options = [str(row[mapping[r]]) for r in ("correct", "incorrect1", "incorrect2", "incorrect3")]
        return Example(self.row_id(row, mapping, number), str(row[mapping["question"]]), "",
                       {"options": options, "row": number + 1})

    def message(self, example, shuffle_seed=0, gpqa_options="shuffle", **options):
        return gpqa_message(example, shuffle_seed, gpqa_options)

    def prompt_options(self, grading):
        order = "rotate" if grading == "paper" else "shuffle"
        return {"gpqa_options": order, "gpqa_prompt": GPQA_PROMPTS[order]}

    def legacy_prompt_options(self):
        # GPQA options were always shuffled, and the text stripped, before these were recorded
        return {"gpqa_options": "shuffle", "gpqa_prompt": "stripped"}

    def resume_hint(self, diffs, stored):
        if "gpqa_options" not in diffs:
            return ""
        mode = "paper" if stored("gpqa_options") == "rotate" else "strict"
        return f" (its GPQA prompts were laid out for --grading {mode}: pass that to resume it)"
