"""Search λ for a target on a calibration set: ``mi-mergekit find-lambda``.

Targets (``--target``):

- ``think_ratio>=0.95`` — Think #R at least 0.95 at the fewest tokens. Think #R
  grows monotonically with λ (the paper's stage 1 → 2 → 3), so the search is a
  **bisection** for the smallest λ in ``[lo, hi]`` that meets the threshold,
  down to ``tol``; the answer is the feasible probe with the fewest mean tokens
  (ties: smaller λ). With sampled metrics the response is only monotone up to
  noise — use enough samples on the calibration set.
- ``tokens<=12000`` (``mean_tokens``/``tokens_mean``) — mean tokens within a
  budget at the best accuracy. Tokens are not monotone in λ (they dip in stage
  2), so this is a **grid, then refine** search: ``grid`` evenly spaced probes,
  then probes halfway to the neighbours of the best feasible probe, halving the
  spacing until it is below ``tol`` or ``max_probes`` is spent. The answer is
  the feasible probe with the best accuracy (ties: fewer tokens).
- ``accuracy>=0.7`` (``mean``) — the fewest tokens with accuracy at least the
  value (grid, then refine, like the budget target).

The search talks to the model only through an **evaluator**: a callable
``λ -> metrics`` whose dict has ``think_ratio``, ``tokens_mean`` and ``mean``
(accuracy), the keys of the eval harness's ``metrics.json``. So it can be run
against synthetic responses, the real harness, or anything else. Every probe
is appended (and flushed) to a JSONL log: ``{"probe", "lambda", "phase",
"feasible", "metrics", "seconds", ...}``.

Evaluators provided here:

- :class:`InMemoryInterpolation` — loads the Instruct and Thinking tensors
  once (mergekit's loader) and a live transformers model, and re-materialises
  ``Θ_I + λ(Θ_T − Θ_I)`` into the model's parameters for each λ, with the
  recipe's window / module selection and the same dtype steps as a merge, so
  the live weights equal the on-disk merge bit for bit. Memory: both inputs
  plus the live model (about 3× one model). Needs the checkpoint's tensor
  names to be the model's parameter names (dense Qwen3/Llama-style models; not
  the fused-expert MoE layout of transformers 5 — use ``--materialize disk``).
- :class:`RoutedEvaluator` — ``--route ROUTER.json``: the search targets a **routed grid**
  (λ per question, :mod:`mi_mergekit.routing`) instead of one λ. The searched value is the
  router's knob in [0, 1] (:meth:`~mi_mergekit.routing.policy.Router.shifted`: every cut
  point moved by the same share of questions; 0 sends every question to the grid's lowest
  λ, 0.5 is the router as fitted, 1 sends all to the highest), so mean λ, Think #R and
  tokens grow with it as they do with λ and the same targets and searches apply. The
  grid's merges are written once to ``OUT/models/lambda_<λ>`` and loaded once; the
  dataset's signals are computed once from the recipe's two models (``OUT/signals.json``);
  each probe is a routed run in ``OUT/runs/route_<knob>``; ``OUT/router.json`` is the
  router at the answer.
- :class:`HarnessEvaluator` — runs ``mi_mergekit.eval.evaluate`` for each λ,
  on the live model (``memory``, transformers backend) or on a merge written to
  ``OUT/models/lambda_<λ>`` (``disk``, any backend; deleted after evaluation
  unless ``--keep-models``). Eval runs go to ``OUT/runs/lambda_<λ>``;
  re-running the same command resumes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from mi_mergekit.errors import AnalysisInputError

LOG = logging.getLogger("mi_mergekit.find_lambda")

Metrics = Dict[str, Any]
Evaluator = Callable[[float], Metrics]

_METRIC_ALIASES = {
    "think_ratio": "think_ratio", "think": "think_ratio",
    "tokens": "tokens_mean", "tokens_mean": "tokens_mean", "mean_tokens": "tokens_mean",
    "accuracy": "mean", "mean": "mean",
}


@dataclass(frozen=True)
class Target:
    metric: str  # think_ratio | tokens_mean | mean
    op: str  # ">=" or "<="
    value: float

    @classmethod
    def parse(cls, spec: str) -> "Target":
        match = re.fullmatch(r"\s*([A-Za-z_#@]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*(%?)\s*", spec or "")
        if not match or match.group(1).lower() not in _METRIC_ALIASES:
            raise AnalysisInputError(f"{spec!r}: expected think_ratio>=0.95, tokens<=12000 or accuracy>=0.7")
        metric = _METRIC_ALIASES[match.group(1).lower()]
        value = float(match.group(3)) / (100.0 if match.group(4) else 1.0)
        target = cls(metric, match.group(2), value)
        if (metric, target.op) not in (("think_ratio", ">="), ("tokens_mean", "<="), ("mean", ">=")):
            raise AnalysisInputError(f"{spec!r}: supported are think_ratio>=, tokens<=, accuracy>=")
        return target

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    @property
    def strategy(self) -> str:
        return "bisect" if self.metric == "think_ratio" else "grid"

    def feasible(self, metrics: Metrics) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            raise AnalysisInputError(f"the evaluator returned no {self.metric!r}: {sorted(metrics)}")
        return value >= self.value if self.op == ">=" else value <= self.value

    def rank(self, probe: "Probe") -> Tuple:
        """Sort key among feasible probes: smaller is better."""
        m = probe.metrics
        if self.metric == "tokens_mean":  # best accuracy, then fewer tokens, then smaller λ
            return (-(m.get("mean") or 0.0), m.get("tokens_mean", math.inf), probe.lam)
        return (m.get("tokens_mean", math.inf), probe.lam)  # fewest tokens, then smaller λ


@dataclass
class Probe:
    index: int
    lam: float
    phase: str
    metrics: Metrics
    feasible: bool
    seconds: float


@dataclass
class SearchResult:
    target: str
    best: Optional[Probe]
    probes: List[Probe] = field(default_factory=list)
    reason: str = ""

    def table(self, name: str = "λ") -> str:
        """Every probe, then the answer, as text (``name``: what was searched, λ or a router's knob)."""
        lines = [f"probe  {name:<10} phase    think_ratio  tokens_mean  accuracy  feasible"]
        for p in self.probes:
            m = p.metrics

            def fmt(key, spec):
                return format(m[key], spec) if m.get(key) is not None else "-"

            lines.append(f"{p.index:<6} {p.lam:<10g} {p.phase:<8} {fmt('think_ratio', '<12.4f')} "
                         f"{fmt('tokens_mean', '<12.1f')} {fmt('mean', '<9.4f')} {'yes' if p.feasible else 'no'}")
        if self.best:
            mean_lambda = self.best.metrics.get("lambda_mean")
            lines.append(f"best {name} = {self.best.lam:g} ({self.target})"
                         + ("" if mean_lambda is None else f", mean λ {mean_lambda:.3g}") + f"; {self.reason}")
        else:
            lines.append(f"no {name} meets {self.target}: {self.reason}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "lambda": self.best.lam if self.best else None,
            "best": asdict(self.best) if self.best else None,
            "reason": self.reason,
            "n_probes": len(self.probes),
            "probes": [asdict(p) for p in self.probes],
        }


def _round(lam: float) -> float:
    return round(lam, 6)


class Search:
    """Probe bookkeeping: cache by λ, budget, JSONL log."""

    def __init__(self, evaluator: Evaluator, target: Target, max_probes: int,
                 log_path: Optional[str] = None):
        if max_probes < 1:
            raise AnalysisInputError("max_probes must be >= 1")
        self.evaluator, self.target, self.max_probes = evaluator, target, max_probes
        self.log_path = log_path
        self.probes: List[Probe] = []
        self._cache: Dict[float, Probe] = {}

    @property
    def exhausted(self) -> bool:
        return len(self.probes) >= self.max_probes

    def probe(self, lam: float, phase: str) -> Probe:
        lam = _round(lam)
        if lam in self._cache:
            return self._cache[lam]
        start = time.perf_counter()
        metrics = dict(self.evaluator(lam))
        probe = Probe(len(self.probes), lam, phase, metrics, self.target.feasible(metrics),
                      round(time.perf_counter() - start, 3))
        self.probes.append(probe)
        self._cache[lam] = probe
        LOG.info("probe %d: λ=%g %s -> %s", probe.index, lam,
                 {k: metrics.get(k) for k in ("think_ratio", "tokens_mean", "mean")},
                 "feasible" if probe.feasible else "not feasible")
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"probe": probe.index, "lambda": lam, "phase": phase,
                                         "feasible": probe.feasible, "target": str(self.target),
                                         "metrics": _jsonable(metrics), "seconds": probe.seconds}) + "\n")
                handle.flush()
        return probe

    def best(self) -> Optional[Probe]:
        feasible = [p for p in self.probes if p.feasible]
        return min(feasible, key=self.target.rank) if feasible else None


def _jsonable(metrics: Metrics) -> Metrics:
    return json.loads(json.dumps(metrics, default=str))


def bisect(search: Search, lo: float, hi: float, tol: float) -> str:
    """Smallest λ in [lo, hi] meeting a threshold on a response increasing in λ."""
    low = search.probe(lo, "bracket")
    if low.feasible:
        return f"already met at lo={lo:g}"
    if search.exhausted:
        return "probe budget spent"
    high = search.probe(hi, "bracket")
    if not high.feasible:
        return f"not met even at hi={hi:g}: widen [lo, hi] or relax the target"
    a, b = lo, hi  # invariant: a infeasible, b feasible
    while b - a > tol and not search.exhausted:
        mid = _round((a + b) / 2)
        if mid in (a, b):
            break
        if search.probe(mid, "bisect").feasible:
            b = mid
        else:
            a = mid
    return f"bracketed in ({a:g}, {b:g}]" + ("" if b - a <= tol else " (probe budget spent)")


def grid_refine(search: Search, lo: float, hi: float, tol: float, grid: int) -> str:
    """Grid over [lo, hi], then halve the spacing around the best feasible probe."""
    grid = max(2, grid)
    spacing = (hi - lo) / (grid - 1)
    for k in range(grid):
        if search.exhausted:
            return "probe budget spent during the grid"
        search.probe(lo + k * spacing, "grid")
    while spacing / 2 >= tol and not search.exhausted:
        best = search.best()
        if best is None:
            return "no feasible λ on the grid: widen [lo, hi] or relax the target"
        spacing /= 2
        for lam in (best.lam - spacing, best.lam + spacing):
            if lo <= lam <= hi and not search.exhausted:
                search.probe(lam, "refine")
    return "refined to spacing %.3g" % spacing


def find_lambda(evaluator: Evaluator, target: Target, lo: float = 0.0, hi: float = 1.0,
                tol: float = 0.02, max_probes: int = 12, grid: int = 5,
                log_path: Optional[str] = None) -> SearchResult:
    """Search λ in [lo, hi] for ``target``; every probe goes to ``log_path`` (JSONL)."""
    if not lo < hi:
        raise AnalysisInputError(f"need lo < hi, got [{lo}, {hi}]")
    if tol <= 0:
        raise AnalysisInputError("tol must be positive")
    search = Search(evaluator, target, max_probes, log_path)
    if target.strategy == "bisect":
        reason = bisect(search, lo, hi, tol)
    else:
        reason = grid_refine(search, lo, hi, tol, grid)
    return SearchResult(target=str(target), best=search.best(), probes=search.probes, reason=reason)


# ------------------------------------------------------------ materialisation


class InMemoryInterpolation:
    """A live transformers model whose weights are set to the merge of a recipe over the same
    two inputs — the recipe at any λ (:meth:`set_lambda`), or any recipe of the family
    (:meth:`set_recipe`, e.g. a λ profile) — computed by the recipe's method, tensor by
    tensor, from the inputs held in memory (no files written)."""

    def __init__(self, merge_config, options=None, device: Optional[str] = None):
        from mergekit.common import ModelReference, dtype_from_name
        from mergekit.io.tasks import LoaderCache
        from mergekit.options import MergeOptions
        from transformers import AutoModelForCausalLM

        from mi_mergekit.errors import MergeInputError
        from mi_mergekit.merge.plan import build_plan, method_of

        self.options = options or MergeOptions()
        self.config = merge_config
        self.method = method_of(merge_config)
        plan, _ = build_plan(merge_config, self.options)
        self.plan = plan
        in_dtype = dtype_from_name(merge_config.dtype) if merge_config.dtype else None
        self.out_dtype = dtype_from_name(merge_config.out_dtype) if merge_config.out_dtype else None

        cache = LoaderCache()
        cache.setup(self.options)
        refs = [ModelReference.model_validate(model) for _, model in plan.inputs]
        self._loaders = [cache.get(ref) for ref in refs]
        self._in_dtype = in_dtype
        #: each tensor's inputs in the method's order, in the recipe's load dtype; where the
        #: recipe keeps the base tensor only the base, aligned (the others load when needed)
        self.inputs: Dict[str, List[Any]] = {}
        for tensor in plan.tensors:
            inputs = self._load(tensor.name)
            if not tensor.interpolated:
                from mi_mergekit.merge.method import align_inputs

                inputs = [align_inputs(self.method, tensor.name, inputs, 0, [tensor.setting]).result(tensor.setting)]
            self.inputs[tensor.name] = inputs
        for loader in self._loaders:
            loader.flush()

        path = refs[0].merged(cache_dir=self.options.lora_merge_cache,
                              trust_remote_code=self.options.trust_remote_code
                              ).local_path(cache_dir=self.options.transformers_cache)
        model_dtype = self.out_dtype or in_dtype or "auto"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=model_dtype)
        if device:
            self.model.to(device)
        self.model.eval()
        state = dict(self.model.named_parameters(remove_duplicate=False))
        state.update(dict(self.model.named_buffers()))
        missing = [n for n in self.inputs if n not in state]
        if missing:
            raise MergeInputError(
                f"{len(missing)} checkpoint tensor(s) have no parameter of that name in the "
                f"transformers model (e.g. {missing[:3]}; fused MoE experts?): use --materialize disk")
        self._targets = {n: state[n] for n in self.inputs}
        self.lam: Optional[float] = None
        self._donor = ModelReference.model_validate(plan.donor) if plan.donor else refs[0]
        self._set_generation_config()

    def donor_path(self) -> str:
        return self._donor.merged(cache_dir=self.options.lora_merge_cache,
                                  trust_remote_code=self.options.trust_remote_code
                                  ).local_path(cache_dir=self.options.transformers_cache)

    def _set_generation_config(self) -> None:
        from transformers import GenerationConfig

        donor = self.donor_path()
        if os.path.exists(os.path.join(donor, "generation_config.json")):
            self.model.generation_config = GenerationConfig.from_pretrained(donor)

    def _load(self, name: str) -> List[Any]:
        return [t if self._in_dtype is None else t.to(self._in_dtype)
                for t in (loader.get_tensor(name) for loader in self._loaders)]

    def merged_tensor(self, name: str, setting):
        """The tensor a merge with the method's ``setting`` writes for ``name`` (the same
        input preparation and arithmetic as the engines: :func:`align_inputs`)."""
        from mi_mergekit.merge.method import align_inputs

        inputs = self.inputs[name]
        if len(inputs) == 1:  # held as the kept base tensor
            if self.method.keeps_base(setting):
                value = inputs[0]
                return value.to(self.out_dtype) if self.out_dtype is not None else value
            inputs = self.inputs[name] = self._load(name)  # another recipe of the family computes it
        value = align_inputs(self.method, name, inputs, 0, [setting]).result(setting)
        return value.to(self.out_dtype) if self.out_dtype is not None else value

    def set_recipe(self, merge_config):
        """Write the merge of ``merge_config`` (same inputs) into the live model; returns the model."""
        import torch

        from mi_mergekit.merge.plan import build_plan

        plan, _ = build_plan(merge_config, self.options)
        if [model for _, model in plan.inputs] != [model for _, model in self.plan.inputs]:
            raise AnalysisInputError("set_recipe: the recipe merges other models than the live one holds")
        with torch.no_grad():
            for tensor in plan.tensors:
                self._targets[tensor.name].copy_(self.merged_tensor(tensor.name, tensor.setting))
        return self.model

    def set_lambda(self, lam: float):
        """Write the merge of the recipe at λ into the live model's parameters; returns the model."""
        from mi_mergekit.merge.sweep import with_lambda

        model = self.set_recipe(with_lambda(self.config, lam))
        self.lam = lam
        return model


class HarnessEvaluator:
    """λ -> metrics with mi_mergekit.eval, materialising in memory or on disk."""

    def __init__(self, merge_config, out_dir: str, dataset: str, *, materialize: str = "memory",
                 backend: str = "transformers", backend_options: Optional[dict] = None,
                 options=None, keep_models: bool = False, eval_options: Optional[dict] = None):
        from mergekit.options import MergeOptions

        self.config, self.out_dir, self.dataset = merge_config, out_dir, dataset
        self.materialize, self.backend = materialize, backend
        self.backend_options = dict(backend_options or {})
        self.options = options or MergeOptions(quiet=True)
        self.keep_models = keep_models
        self.eval_options = dict(eval_options or {})
        self.live: Optional[InMemoryInterpolation] = None
        self.tokenizer = None
        if materialize == "memory":
            if backend != "transformers":
                raise AnalysisInputError("--materialize memory needs the transformers backend")
            self.live = InMemoryInterpolation(merge_config, self.options,
                                              device=self.backend_options.get("device"))
            from mi_mergekit.eval.backends.base import load_tokenizer

            self.tokenizer = load_tokenizer(self.live.donor_path())
        elif materialize != "disk":
            raise AnalysisInputError(f"materialize must be memory or disk, got {materialize!r}")

    def run_dir(self, lam: float) -> str:
        from mi_mergekit.merge.lambdas import output_name

        return os.path.join(self.out_dir, "runs", output_name(lam))

    def __call__(self, lam: float) -> Metrics:
        from mi_mergekit.eval import evaluate, load_run
        from mi_mergekit.merge.lambdas import output_name
        from mi_mergekit.merge.sweep import with_lambda

        label = output_name(lam)
        common = dict(out_dir=self.run_dir(lam), lambda_=lam, label=label, progress=False,
                      **self.eval_options)
        if self.live is not None:
            from mi_mergekit.eval.backends.transformers_backend import TransformersBackend

            model = self.live.set_lambda(lam)
            backend = TransformersBackend(f"mi:{label}", model=model, tokenizer=self.tokenizer,
                                          **{k: v for k, v in self.backend_options.items()
                                             if k in ("batch_size", "prompt_batch", "device", "compact")})
            run = evaluate(f"mi-live:{self.config.base_model}:{label}", self.dataset,
                           backend=backend, **common)
        else:
            import mergekit.merge

            from mi_mergekit import register

            register()
            path = os.path.join(self.out_dir, "models", label)
            if not os.path.exists(os.path.join(path, "mi_plan.json")):
                mergekit.merge.run_merge(with_lambda(self.config, lam), path, self.options)
            try:
                run = evaluate(path, self.dataset, backend=self.backend,
                               backend_options=self.backend_options, **common)
            finally:
                if not self.keep_models:
                    shutil.rmtree(path, ignore_errors=True)
        metrics = load_run(run)["metrics"]
        return {k: metrics[k] for k in ("think_ratio", "tokens_mean", "mean", "truncation_rate")
                if k in metrics} | {"run_dir": str(run)}


class RoutedEvaluator:
    """knob -> metrics of a routed run over the router's λ grid (see the module docstring)."""

    def __init__(self, merge_config, router, out_dir: str, dataset: str, *, options=None,
                 backend_options: Optional[dict] = None, keep_models: bool = False,
                 eval_options: Optional[dict] = None):
        import mergekit.merge
        from mergekit.options import MergeOptions

        from mi_mergekit import register
        from mi_mergekit.merge.lambdas import output_name
        from mi_mergekit.merge.sweep import with_lambda
        from mi_mergekit.routing.run import GridBackends
        from mi_mergekit.routing.signals import compute_signals, signal_values

        register()
        self.router, self.out_dir, self.dataset = router, out_dir, dataset
        # the routed run's backend is the grid's: evaluate() gets neither a backend name nor its options
        self.eval_options = {k: v for k, v in (eval_options or {}).items() if k not in ("backend", "backend_options")}
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
            doc = compute_signals(dataset, instruct=instruct, thinking=thinking,
                                  benchmark=self.eval_options.get("benchmark", "boxed"), signals=[router.signal],
                                  seed=self.eval_options.get("seed", 0), limit=self.eval_options.get("limit"),
                                  device=device, progress=False)
            with open(signals_path, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1)
        self.values = signal_values(doc, router.signal)
        self.grid = GridBackends(self.models, device=device,
                                 **{k: v for k, v in backend_options.items()
                                    if k in ("batch_size", "prompt_batch", "compact")})

    def __call__(self, knob: float) -> Metrics:
        from mi_mergekit.eval import load_run
        from mi_mergekit.routing.run import routed_evaluate

        label = f"route_{knob:g}"
        run = routed_evaluate(self.router.shifted(knob), self.grid, self.dataset,
                              os.path.join(self.out_dir, "runs", label), values=self.values, label=label,
                              allow_calibration_overlap=True, progress=False, **self.eval_options)
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
