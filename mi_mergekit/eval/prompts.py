"""Prompts as in the paper, rendered with the model's own chat template.

- AIME'25: ``"{question}\\nPlease reason step by step, and put your final answer
  within \\boxed{}."`` (the Qwen math prompt the paper uses).
- GPQA-Diamond: multiple choice, OpenCompass's prompt (``gpqa_openai_simple_evals_gen_5aeece``,
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
  (``\vec{B}``; 3 rows of GPQA-Diamond) becomes option B's text in the paper's prompt, and
  here too. ``tests/eval/opencompass_gpqa.py`` holds OpenCompass's loader and template as
  the oracle. Under ``shuffle`` the same raw text is formatted in one pass.
- IFEval and ``boxed``: the prompt verbatim.

Rendering uses ``tokenizer.apply_chat_template(messages, tokenize=False,
add_generation_prompt=True)``: a Thinking template that pre-inserts ``<think>``
after the assistant header is honoured, and the record notes whether the
rendered prompt leaves a think block open (needed to recognise unterminated
thinking, see :mod:`mi_mergekit.eval.thinking`).
"""

from __future__ import annotations

import random
from typing import List, Tuple

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.datasets import Example
from mi_mergekit.eval.thinking import opens_think

AIME_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

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


def aime_message(example: Example) -> Tuple[str, str, dict]:
    return example.question + AIME_SUFFIX, example.answer, {}


def verbatim_message(example: Example) -> Tuple[str, str, dict]:
    return example.question, example.answer, dict(example.grader_data)


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


def build_message(kind: str, example: Example, shuffle_seed: int = 0,
                  gpqa_options: str = "shuffle") -> Tuple[str, str, dict]:
    """(user message, gold answer, grader data) of ``example`` for dataset kind ``kind``."""
    if kind == "aime25":
        return aime_message(example)
    if kind == "gpqa":
        return gpqa_message(example, shuffle_seed, gpqa_options)
    return verbatim_message(example)


def chat_messages(user_message: str, system_prompt: str | None = None) -> List[dict]:
    """One user turn, after the optional system message."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": user_message}]


def render_chat(tokenizer, user_message: str, system_prompt: str | None = None) -> Tuple[str, List[dict]]:
    """The model's chat template applied to one user turn, ready for generation."""
    messages = chat_messages(user_message, system_prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise EvalInputError("the tokenizer has no chat template; evaluate a chat model (or set tokenizer.chat_template)")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, messages


def prompt_record(kind: str, example: Example, tokenizer, shuffle_seed: int = 0, system_prompt: str | None = None,
                  gpqa_options: str = "shuffle") -> dict:
    """One line of ``prompts.jsonl``: everything needed to generate and to grade a question."""
    user, gold, data = build_message(kind, example, shuffle_seed, gpqa_options)
    if tokenizer is None:  # a chat endpoint renders the template itself
        text, messages = None, chat_messages(user, system_prompt)
    else:
        text, messages = render_chat(tokenizer, user, system_prompt)
    return {
        "question_id": example.id,
        "prompt": text,
        "messages": messages,
        "answer": gold,
        "grader_data": data,
        "prompt_opens_think": bool(text and opens_think(text)),
    }
