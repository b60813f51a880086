"""Analysis tools the paper implies (cheap to import; heavy imports happen inside).

- :mod:`~mi_mergekit.analysis.divergence` -- per-layer × per-module weight distance
  between Instruct and Thinking (``mi-mergekit diverge``);
- :mod:`~mi_mergekit.analysis.stages` -- the three-stage boundaries of a λ sweep
  (``mi-mergekit stages``);
- :mod:`~mi_mergekit.analysis.lambda_search` -- search λ for a target on a
  calibration set, merging in memory (``mi-mergekit find-lambda``).
"""
