"""Metrics: Pass@k, Mean@k, Vote@k, Think #R, Token #N, truncation.

Definitions (fractions in [0, 1] in the JSON files; the report prints percent):

- **Pass@k** -- the unbiased estimator of Chen et al. (2021),
  ``1 - C(n-c, k) / C(n, k)`` for a question with ``n`` samples of which ``c``
  are correct, for every ``k <= n``; averaged over questions.
- **Mean@k** -- mean correctness of the first ``k`` samples (by sample index) of
  each question, averaged over questions. Mean@n is the paper's Mean@64 / Mean@8.
- **Vote@k** -- majority vote over the first ``k`` samples. Samples without an
  answer (no extractable answer, unterminated thinking) do not vote. Ties:
  if ``t`` answers share the top count and the correct one is among them, the
  question scores ``1/t`` -- the expected score of breaking the tie uniformly at
  random, which keeps Vote@k independent of sample order within the tie. No
  votes at all scores 0. Answers are grouped by the grader's ``vote_key``
  (math answers equivalent under math-verify share a key). Graders for which a
  majority answer means nothing (IFEval) leave ``vote@k`` empty.
- **Think #R** -- fraction of responses containing ``</think>``.
- **Token #N** -- generated tokens per response, mean and median.
- **Truncation rate** -- fraction of responses that stopped at a limit instead of ending
  their turn: the token budget (``finish_reason == "length"``) or a server's repetition
  detector (vLLM's ``"repetition"``), reported separately from Think #R, along with
  the rate of unterminated thinking.
- **Standard errors** of the run's Mean@k and Pass@k (``stderr``): see
  :data:`STDERR_METHOD`. ``None`` with a single question.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from math import comb
from typing import Iterable, Optional, Sequence

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.backends.base import is_cut_off


#: how ``stderr`` is computed (recorded in metrics.json beside the numbers)
STDERR_METHOD = (
    "standard error of the mean over questions of each question's Mean@k / Pass@k: sample "
    "standard deviation (n-1) / sqrt(questions), as lm-eval's mean_stderr; the question is the "
    "unit because the samples of one question are not independent"
)


def stderr_of_mean(values: Sequence[float]) -> Optional[float]:
    """Standard error of the mean of ``values`` (None for fewer than two)."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k: probability that a random k-subset of n samples with c correct has one correct."""
    if not 0 <= c <= n:
        raise EvalInputError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise EvalInputError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_at_k(correct: Sequence[bool], k: int) -> float:
    """Mean correctness of the first ``k`` samples."""
    if not 1 <= k <= len(correct):
        raise EvalInputError(f"need 1 <= k <= {len(correct)}, got k={k}")
    return sum(bool(x) for x in correct[:k]) / k


def vote_at_k(keys: Sequence[Optional[str]], correct: Sequence[bool], k: int) -> float:
    """Majority-vote score of the first ``k`` samples (ties: ``1/t``, see module docstring).

    ``keys[i]`` is sample i's answer key (None: no vote); ``correct[i]`` whether
    it is correct. Samples sharing a key must agree on correctness.
    """
    if not 1 <= k <= len(keys):
        raise EvalInputError(f"need 1 <= k <= {len(keys)}, got k={k}")
    counts = Counter(key for key in keys[:k] if key is not None)
    if not counts:
        return 0.0
    key_correct = {}
    for key, ok in zip(keys[:k], correct[:k]):
        if key is not None:
            key_correct[key] = key_correct.get(key, False) or bool(ok)
    top = max(counts.values())
    tied = [key for key, count in counts.items() if count == top]
    return sum(key_correct[key] for key in tied) / len(tied)


def question_metrics(grades: Sequence[dict]) -> dict:
    """Metrics of one question from its graded samples (sorted by sample index)."""
    n = len(grades)
    correct = [bool(g["correct"]) for g in grades]
    keys = [g.get("vote_key") for g in grades]
    c = sum(correct)
    tokens = [g["n_tokens"] for g in grades]
    score_names = sorted({name for g in grades for name in g.get("scores", {})})
    return {
        "question_id": grades[0]["question_id"],
        "n": n,
        "correct": c,
        "pass@k": {k: pass_at_k(n, c, k) for k in range(1, n + 1)},
        "mean@k": {k: mean_at_k(correct, k) for k in range(1, n + 1)},
        "vote@k": {k: vote_at_k(keys, correct, k) for k in range(1, n + 1)},
        "scores": {name: _mean(g.get("scores", {}).get(name, 0.0) for g in grades) for name in score_names},
        "think_ratio": _mean(g["has_think_close"] for g in grades),
        "unterminated_rate": _mean(g["unterminated"] for g in grades),
        "truncation_rate": _mean(is_cut_off(g["finish_reason"]) for g in grades),
        "tokens_mean": _mean(tokens),
        "tokens_median": float(statistics.median(tokens)),
    }


def run_metrics(grades: Iterable[dict]) -> dict:
    """Per-run metrics and per-question metrics from all graded samples of a run.

    Every question must have the same number of samples ``n`` (a complete run).
    """
    by_question: dict = {}
    for g in grades:
        by_question.setdefault(g["question_id"], []).append(g)
    if not by_question:
        raise EvalInputError("no graded samples")
    questions = []
    for items in by_question.values():
        items.sort(key=lambda g: g["sample_index"])
        questions.append(question_metrics(items))
    ns = {q["n"] for q in questions}
    if len(ns) != 1:
        raise EvalInputError(f"questions have different sample counts {sorted(ns)}; is the run complete?")
    n = ns.pop()
    all_grades = [g for items in by_question.values() for g in items]
    tokens = [g["n_tokens"] for g in all_grades]
    score_names = sorted({name for q in questions for name in q["scores"]})
    summary = {
        "n_questions": len(questions),
        "n_samples": n,
        "n_responses": len(all_grades),
        "mean": _mean(q["mean@k"][n] for q in questions),
        "pass@k": {k: _mean(q["pass@k"][k] for q in questions) for k in range(1, n + 1)},
        "mean@k": {k: _mean(q["mean@k"][k] for q in questions) for k in range(1, n + 1)},
        "vote@k": {k: _mean(q["vote@k"][k] for q in questions) for k in range(1, n + 1)},
        "scores": {name: _mean(q["scores"].get(name, 0.0) for q in questions) for name in score_names},
        "think_ratio": _mean(g["has_think_close"] for g in all_grades),
        "unterminated_rate": _mean(g["unterminated"] for g in all_grades),
        "truncation_rate": _mean(is_cut_off(g["finish_reason"]) for g in all_grades),
        "tokens_mean": _mean(tokens),
        "tokens_median": float(statistics.median(tokens)),
        "stderr": {
            key: {k: stderr_of_mean([q[key][k] for q in questions]) for k in range(1, n + 1)}
            for key in ("mean@k", "pass@k")
        },
        "stderr_method": STDERR_METHOD,
    }
    return {"run": summary, "questions": questions}


def lambda_breakdown(grades: Sequence[dict], questions: Sequence[dict]) -> Optional[dict]:
    """A routed run's λ (grades carry ``lambda``): the mean λ over questions and, per λ, the
    questions routed there with their Mean@n, tokens and Think #R. None if no grade has a λ."""
    lam = {g["question_id"]: g["lambda"] for g in grades if g.get("lambda") is not None}
    if not lam:
        return None
    missing = sorted({g["question_id"] for g in grades} - set(lam))
    if missing:
        raise EvalInputError(f"some samples of a routed run carry no λ (e.g. question {missing[0]!r})")
    groups: dict = {}
    for q in questions:
        groups.setdefault(float(lam[q["question_id"]]), []).append(q)
    by_lambda = []
    for value, items in sorted(groups.items()):
        n = items[0]["n"]
        by_lambda.append({"lambda": value, "questions": len(items), "share": len(items) / len(questions),
                          "mean": _mean(q["mean@k"][n] for q in items),
                          "tokens_mean": _mean(q["tokens_mean"] for q in items),
                          "think_ratio": _mean(q["think_ratio"] for q in items)})
    return {"lambda_mean": _mean(lam[q["question_id"]] for q in questions), "by_lambda": by_lambda}


def _mean(values: Iterable) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0
