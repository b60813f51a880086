"""What find-lambda probes: λ (or a profile, or a routing knob) -> metrics of an eval run.

- :class:`HarnessEvaluator` — runs ``mi_mergekit.eval.evaluate`` for each probe, on the live
  model (``memory``, transformers backend: :mod:`mi_mergekit.analysis.live_merge`) or on a
  merge written to ``OUT/models/<label>`` (``disk``, any backend; deleted after evaluation
  unless ``--keep-models``). A probe is a λ of the recipe, or the parameters of a λ-profile
  family (:class:`~mi_mergekit.analysis.lambda_search.ProfileFamily`). Eval runs go to
  ``OUT/runs/<label>``; re-running the same command resumes them.
- :class:`RoutedEvaluator` — ``--route ROUTER.json``: the probe is the knob of a routed λ grid
  (λ per question, :mod:`mi_mergekit.routing`); see :mod:`mi_mergekit.analysis.lambda_search`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional, Tuple

from mi_mergekit.analysis.lambda_search import Knob, Metrics, ProfileFamily
from mi_mergekit.errors import AnalysisInputError


class HarnessEvaluator:
    """λ (or a profile family's parameters) -> metrics with mi_mergekit.eval, materialising
    in memory or on disk."""

    def __init__(self, merge_config, out_dir: str, task, *, materialize: str = "memory",
                 backend: str = "transformers", backend_options: Optional[dict] = None,
                 options=None, keep_models: bool = False, family: Optional[ProfileFamily] = None):
        from mergekit.options import MergeOptions

        from mi_mergekit.analysis.live_merge import InMemoryInterpolation

        self.config, self.out_dir, self.task = merge_config, out_dir, task
        self.materialize, self.backend = materialize, backend
        self.backend_options = dict(backend_options or {})
        self.options = options or MergeOptions(quiet=True)
        self.keep_models = keep_models
        self.family = family
        self.live: Optional[InMemoryInterpolation] = None
        self.tokenizer = None
        if materialize == "memory":
            if backend != "transformers":
                raise AnalysisInputError("--materialize memory needs the transformers backend")
            self.live = InMemoryInterpolation(merge_config, self.options,
                                              device=self.backend_options.get("device"))
            from mi_mergekit.eval.backends.base import load_tokenizer

            self.tokenizer = load_tokenizer(self.live.tokenizer_donor_path())
        elif materialize != "disk":
            raise AnalysisInputError(f"materialize must be memory or disk, got {materialize!r}")

    def candidate(self, knob: Knob) -> Tuple[str, float, Any]:
        """(label, λ or mean λ, recipe) of a probe."""
        from mi_mergekit.merge.lambdas import output_name
        from mi_mergekit.merge.sweep import with_lambda

        if isinstance(knob, tuple):
            if self.family is None:
                raise AnalysisInputError("a profile probe needs a profile family")
            return self.family.label(knob), self.family.mean_lambda(knob), self.family.recipe(knob)
        return output_name(knob), knob, with_lambda(self.config, knob)

    def run_dir(self, knob: Knob) -> str:
        return os.path.join(self.out_dir, "runs", self.candidate(knob)[0])

    def __call__(self, knob: Knob) -> Metrics:
        from mi_mergekit.eval import evaluate, load_run

        label, lam, recipe = self.candidate(knob)
        run_dir = os.path.join(self.out_dir, "runs", label)
        common = dict(lambda_=lam, label=label, progress=False)
        if self.live is not None:
            from mi_mergekit.eval.backends.transformers_backend import TransformersBackend

            model = self.live.set_recipe(recipe)
            backend = TransformersBackend(f"mi:{label}", model=model, tokenizer=self.tokenizer,
                                          **{k: v for k, v in self.backend_options.items()
                                             if k in ("batch_size", "prompt_batch", "device", "compact", "slots")})
            run = evaluate(f"mi-live:{self.config.base_model}:{label}", self.task, run_dir, backend, **common)
        else:
            import mergekit.merge

            from mi_mergekit import register

            register()
            path = os.path.join(self.out_dir, "models", label)
            if not os.path.exists(os.path.join(path, "mi_plan.json")):
                mergekit.merge.run_merge(recipe, path, self.options)
            try:
                run = evaluate(path, self.task, run_dir, self.backend, backend_options=self.backend_options,
                               **common)
            finally:
                if not self.keep_models:
                    shutil.rmtree(path, ignore_errors=True)
        metrics = load_run(run)["metrics"]
        return {k: metrics[k] for k in ("think_ratio", "tokens_mean", "mean", "truncation_rate")
                if k in metrics} | {"run_dir": str(run)} | ({"lambda_mean": lam} if isinstance(knob, tuple) else {})


class RoutedEvaluator:
    """knob -> metrics of a routed run over the router's λ grid (see the module docstring)."""

    def __init__(self, merge_config, router, out_dir: str, task, *, options=None,
                 backend_options: Optional[dict] = None, keep_models: bool = False):
        import mergekit.merge
        from mergekit.options import MergeOptions

        from mi_mergekit import register
        from mi_mergekit.merge.lambdas import output_name
        from mi_mergekit.merge.sweep import with_lambda
        from mi_mergekit.routing.run import GridBackends
        from mi_mergekit.routing.signals import compute_signals, signal_values

        register()
        self.router, self.out_dir, self.task = router, out_dir, task
        backend_options = {k: v for k, v in (backend_options or {}).items() if v is not None}
        device = backend_options.get("device")
        self.keep_models = keep_models
        options = options or MergeOptions(quiet=True)
        self.models = {}
        for lam in router.grid:
            path = os.path.join(out_dir, "models", output_name(lam))
            if not os.path.exists(os.path.join(path, "mi_plan.json")):
                mergekit.merge.run_merge(with_lambda(merge_config, lam), path, options)
            self.models[lam] = path
        signals_path = os.path.join(out_dir, "signals.json")
        if os.path.exists(signals_path):
            with open(signals_path, encoding="utf-8") as handle:
                doc = json.load(handle)
        else:
            instruct, thinking = endpoint_paths(merge_config, options)
            doc = compute_signals(str(task.dataset), instruct=instruct, thinking=thinking, benchmark=task.benchmark,
                                  signals=[router.signal], seed=task.seed, limit=task.limit, device=device,
                                  progress=False)
            with open(signals_path, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1)
        self.values = signal_values(doc, router.signal)
        self.grid = GridBackends(self.models, device=device,
                                 **{k: v for k, v in backend_options.items()
                                    if k in ("batch_size", "prompt_batch", "compact", "slots")})

    def __call__(self, knob: float) -> Metrics:
        from mi_mergekit.eval import load_run
        from mi_mergekit.routing.run import routed_evaluate

        label = f"route_{knob:g}"
        run = routed_evaluate(self.router.shifted(knob), self.grid, self.task,
                              os.path.join(self.out_dir, "runs", label), values=self.values, label=label,
                              allow_calibration_overlap=True, progress=False)
        metrics = load_run(run)["metrics"]
        return {k: metrics[k] for k in ("think_ratio", "tokens_mean", "mean", "truncation_rate") if k in metrics} | {
            "lambda_mean": metrics["routing"]["lambda_mean"], "run_dir": str(run)}

    def close(self) -> None:
        self.grid.close()
        if not self.keep_models:
            for path in self.models.values():
                shutil.rmtree(path, ignore_errors=True)


def endpoint_paths(merge_config, options) -> Tuple[str, str]:
    """Local folders of a model_interpolation recipe's Instruct (base) and Thinking models."""
    instruct = merge_config.base_model
    thinking = next(m.model for m in merge_config.models if m.model != instruct)

    def local(ref) -> str:
        return ref.merged(cache_dir=options.lora_merge_cache, trust_remote_code=options.trust_remote_code
                          ).local_path(cache_dir=options.transformers_cache)

    return local(instruct), local(thinking)
