"""Prompts as in the paper, rendered with the model's own chat template.

- AIME'25: ``"{question}\\nPlease reason step by step, and put your final answer
  within \\boxed{}."`` (the Qwen math prompt the paper uses).
- GPQA-Diamond: multiple choice; the four options are shuffled per question by
  a seeded RNG (``random.Random(f"{shuffle_seed}:{question_id}")``), and the
  permutation and gold letter are recorded in the run's ``prompts.jsonl``. The
  model is asked to end with ``ANSWER: $LETTER``.
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

from mi_mergekit.eval.datasets import Example
from mi_mergekit.eval.thinking import opens_think

AIME_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

GPQA_TEMPLATE = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}. "
    "Think step by step before answering.\n\n{question}\n\n{options}"
)


def aime_message(example: Example) -> Tuple[str, str, dict]:
    return example.question + AIME_SUFFIX, example.answer, {}


def verbatim_message(example: Example) -> Tuple[str, str, dict]:
    return example.question, example.answer, dict(example.grader_data)


def gpqa_message(example: Example, shuffle_seed: int) -> Tuple[str, str, dict]:
    """The multiple-choice prompt with options shuffled; the first original option is the correct one."""
    options = example.grader_data["options"]
    order = list(range(len(options)))
    random.Random(f"{shuffle_seed}:{example.id}").shuffle(order)
    letters = "ABCDEFGHIJ"[: len(options)]
    lines = "\n".join(f"{letters[i]}) {options[j]}" for i, j in enumerate(order))
    gold = letters[order.index(0)]
    text = GPQA_TEMPLATE.format(letters="".join(letters), question=example.question, options=lines)
    return text, gold, {"options": [options[j] for j in order], "permutation": order, "shuffle_seed": shuffle_seed}


def build_message(kind: str, example: Example, shuffle_seed: int = 0) -> Tuple[str, str, dict]:
    """(user message, gold answer, grader data) of ``example`` for dataset kind ``kind``."""
    if kind == "aime25":
        return aime_message(example)
    if kind == "gpqa":
        return gpqa_message(example, shuffle_seed)
    return verbatim_message(example)


def chat_messages(user_message: str, system_prompt: str | None = None) -> List[dict]:
    """One user turn, after the optional system message."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": user_message}]


def render_chat(tokenizer, user_message: str, system_prompt: str | None = None) -> Tuple[str, List[dict]]:
    """The model's chat template applied to one user turn, ready for generation."""
    messages = chat_messages(user_message, system_prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; evaluate a chat model (or set tokenizer.chat_template)")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, messages


def prompt_record(kind: str, example: Example, tokenizer, shuffle_seed: int = 0, system_prompt: str | None = None) -> dict:
    """One line of ``prompts.jsonl``: everything needed to generate and to grade a question."""
    user, gold, data = build_message(kind, example, shuffle_seed)
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
