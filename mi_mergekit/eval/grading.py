"""Grading modes: ``paper`` (the paper's evaluator, OpenCompass) and ``strict``.

The paper (arXiv 2510.10977, §4.1) evaluates with OpenCompass; its configs are in the
authors' repository (github.com/wutaiqiang/MI, ``evaluation/qwen3_AIME.py``,
``evaluation/qwen3_ifeval_gpqa.py``, ``evaluation/aime25.py``). ``--grading paper``
applies the rules of that evaluator; ``--grading strict`` keeps this harness's own,
stricter rules. What differs, rule by rule (the OpenCompass file each ``paper`` rule
follows is named; checked against open-compass/opencompass at a5acc4bb, where these
files are as they were in 2025):

============================ ========================================= ==========================================
rule                         ``paper`` (OpenCompass)                   ``strict``
============================ ========================================= ==========================================
response without             graded on its whole text: OpenCompass's   "no answer" when the sample ran out of
``</think>``                 ``extract_non_reasoning_content``         tokens inside an open think block
                             (``opencompass/utils/text_postprocessors  (:mod:`mi_mergekit.eval.thinking`)
                             .py``), the model post-processor of every
                             Thinking / merged model in the configs
math answer                  math-verify, LaTeX extraction only,       math-verify's defaults (LaTeX *and* plain
                             ``\\boxed`` first (priority 0), no        expressions, so a bare ``18`` counts)
                             extraction without an anchor, no bare
                             numbers; gold parsed as ``$gold$``
                             (``opencompass/evaluator/math_evaluator.py``,
                             ``MATHVerifyEvaluator``)
GPQA option order            rotated by row: data row ``cnt``          shuffled per question by a seeded RNG
                             (1-based) gets ``['ABCD', 'BCDA',         (``--shuffle-seed``)
                             'CDAB', 'DABC'][cnt % 4]``
                             (``opencompass/datasets/gpqa.py``,
                             ``GPQADataset.load``)
GPQA letter                  the *first* ``(?i)ANSWER\\s*:\\s*([A-D])``  the *last* ``ANSWER: X`` (also ``$X$``,
                             match, compared as is with the gold       ``(X)``, ``**X**``), upper-cased; else a
                             letter (``configs/datasets/gpqa/          final ``\\boxed{X}``
                             gpqa_openai_simple_evals_gen_5aeece.py``)
IFEval                       prompt-level strict on the post-processed  prompt-level strict; unterminated
                             text (the same Google checkers)           thinking fails every instruction
============================ ========================================= ==========================================

Think #R (``</think>`` present) and Token #N do not depend on the mode.

**Post-processing** (``postprocess``, ``paper`` grading only). The paper's configs apply
``extract_non_reasoning_content`` only to the Thinking and merged models; the Instruct model's
responses are graded as they are (``evaluation/qwen3_AIME.py``, ``qwen3_ifeval_gpqa.py``: the
``pred_postprocessor`` sits on the Thinking models alone). ``non-reasoning`` applies it,
``none`` grades the raw text; the default, ``auto``, takes the paper's grouping: ``none`` for a
run decoded with the ``instruct`` preset whose chat template opens no think block (the Instruct
model; a merged model carries the Thinking template, so a decoding ablation on it keeps the
post-processor), ``non-reasoning`` otherwise. The choice is recorded in ``run.json``
(``postprocess``); ``--grade-only --postprocess …`` re-grades under the other.

``paper`` is the default for the paper's benchmarks (aime25, ifeval, gpqa); ``strict`` for
custom ones (``boxed``). A run records the mode in ``run.json`` (``grading``) and its
metrics in ``metrics.json``; ``mi-mergekit eval --out RUN --grade-only --grading MODE``
re-grades the stored samples in either mode (the GPQA option order, being part of the
prompt, stays what it was at generation: ``run.json`` ``gpqa_options``).
"""

from __future__ import annotations

import re
from typing import Optional

from mi_mergekit.errors import EvalInputError

GRADING_MODES = ("paper", "strict")
#: mode of a run written before grading modes existed (its metrics were graded this way)
LEGACY_GRADING = "strict"


#: what ``paper`` grading does to a response before its graders (module docstring)
POSTPROCESS = ("non-reasoning", "none")
#: the post-processing of runs written before it was recorded: every response post-processed
LEGACY_POSTPROCESS = "non-reasoning"


def check_postprocess(value: Optional[str]) -> Optional[str]:
    """``value`` if it is a post-processing choice (``auto`` and None mean: decide per run)."""
    if value in (None, "auto"):
        return None
    if value not in POSTPROCESS:
        raise EvalInputError(f"unknown post-processing {value!r}; choose from {['auto', *POSTPROCESS]}")
    return value


def default_postprocess(decoding_name: str, template_opens_think: bool) -> str:
    """The paper's grouping: no post-processor for the Instruct model (``instruct`` decoding, a
    template that opens no think block), ``extract_non_reasoning_content`` for the rest."""
    return "none" if decoding_name == "instruct" and not template_opens_think else "non-reasoning"


def check_grading(mode: Optional[str]) -> Optional[str]:
    """``mode`` if it is a grading mode (or None); else a ValueError naming the modes."""
    if mode is not None and mode not in GRADING_MODES:
        raise EvalInputError(f"unknown grading mode {mode!r}; choose from {list(GRADING_MODES)}")
    return mode


def extract_non_reasoning_content(text: str, think_start_token: str = "<think>",
                                  think_end_token: str = "</think>") -> str:
    """OpenCompass's ``extract_non_reasoning_content``, rule for rule.

    From ``opencompass/utils/text_postprocessors.py`` (added in open-compass/opencompass
    27c91666, unchanged since): with only the end token present, the text after the
    *last* end token; otherwise every ``<think>…</think>`` pair (non-greedy) is removed
    and the rest kept — so a response with no ``</think>`` is graded on its whole text,
    and an unclosed ``<think>`` stays in it. Re-implemented here (eight lines) rather
    than depending on OpenCompass and its dependency tree.
    """
    if think_start_token not in text and think_end_token in text:
        return text.split(think_end_token)[-1].strip()
    reasoning = re.compile(rf"{think_start_token}(.*?){think_end_token}", re.DOTALL)
    return reasoning.sub("", text).strip()
