"""λ per question: route each question to one merged model of a λ grid (DAMI-style).

DAMI ("System 1&2 Synergy via Dynamic Model Interpolation", arXiv 2601.21414) sets a
per-question reasoning intensity λ(q) between an Instruct and a Thinking checkpoint; its
zero-shot variant reads it off the disagreement of the two models. Here:

- :mod:`.signals` — zero-shot signals computed from the two *endpoint* models before anything
  is generated: ``divergence`` (how far the Thinking model's next-token distributions are
  from the Instruct model's over the question) and ``disagreement`` (how often a few short
  Instruct samples disagree with their majority answer);
- :mod:`.policy` — the signal → λ map (thresholds on the signal over a λ grid), fitted on a
  calibration split that shares no question with the test set, or set by one knob for
  ``find-lambda``;
- :class:`mi_mergekit.eval.backends.routed.RoutedBackend` — generation: each question's
  chunks go to the backend of its λ (local transformers models loaded once, or one
  OpenAI-compatible server per λ), and every sample records the λ it got;
- :mod:`.cli` — ``mi-mergekit route signals | fit | eval``.

A routed run is an ordinary eval run; ``report``, ``stages`` and the frontier
(:mod:`mi_mergekit.eval.frontier`) read it.
"""
