"""Prompts as in the paper, rendered with the model's own chat template.

Each benchmark writes its user message (:meth:`~mi_mergekit.eval.benchmarks.base.Benchmark.message`):

- AIME'25: ``"{question}\\nPlease reason step by step, and put your final answer
  within \\boxed{}."`` (the Qwen math prompt the paper uses; :mod:`~mi_mergekit.eval.benchmarks.aime25`).
- GPQA-Diamond: multiple choice, OpenCompass's prompt, options rotated by row (``paper``
  grading) or shuffled by a seed (``strict``): :mod:`~mi_mergekit.eval.benchmarks.gpqa`.
  The permutation and gold letter are recorded in the run's ``prompts.jsonl``.
- IFEval and ``boxed``: the prompt verbatim.

Rendering uses ``tokenizer.apply_chat_template(messages, tokenize=False,
add_generation_prompt=True)``: a Thinking template that pre-inserts ``<think>``
after the assistant header is honoured, and the record notes whether the
rendered prompt leaves a think block open (needed to recognise unterminated
thinking, see :mod:`mi_mergekit.eval.thinking`).
"""

from __future__ import annotations

from typing import Any, List, Tuple

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.benchmarks import BENCHMARKS
from mi_mergekit.eval.benchmarks.aime25 import AIME_SUFFIX  # noqa: F401 - importable from here, as it was
from mi_mergekit.eval.dataset_files import Example
from mi_mergekit.eval.thinking import opens_think


def build_message(kind: str, example: Example, shuffle_seed: int = 0, **options: Any) -> Tuple[str, str, dict]:
    """(user message, gold answer, grader data) of ``example`` for benchmark ``kind``;
    ``options``: the benchmark's prompt options (GPQA's ``gpqa_options``: ``rotate`` | ``shuffle``,
    default ``shuffle``)."""
    return BENCHMARKS[kind].message(example, shuffle_seed, **options)


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
                  **options: Any) -> dict:
    """One line of ``prompts.jsonl``: everything needed to generate and to grade a question
    (``options``: the benchmark's prompt options, see :func:`build_message`)."""
    user, gold, data = build_message(kind, example, shuffle_seed, **options)
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
