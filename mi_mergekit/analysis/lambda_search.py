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

A probe can also be a **λ profile** (``--profile ramp|modules``: a λ per layer or per module
group, :mod:`mi_mergekit.analysis.profiles`): the search then runs over the family's two
parameters (a ramp's first and last λ; attention's and the MLP's λ) on a grid of
``grid × grid`` points, then halves the spacing around the best feasible profile along each
parameter; a probe's λ is the profile's mean λ.

The evaluators are in :mod:`mi_mergekit.analysis.probe_evaluators` (an eval run per probe,
materialised in memory by :mod:`mi_mergekit.analysis.live_merge` or on disk; or a routed run).
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from mi_mergekit.errors import AnalysisInputError

LOG = logging.getLogger("mi_mergekit.find_lambda")

Metrics = Dict[str, Any]
Knob = Union[float, Tuple[float, ...]]  # λ (or a routing knob), or a profile family's parameters
Evaluator = Callable[[Knob], Metrics]

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
    lam: float  # the probe's λ (a profile's mean λ)
    phase: str
    metrics: Metrics
    feasible: bool
    seconds: float
    params: Optional[List[float]] = None  # a profile family's parameters


@dataclass
class SearchResult:
    target: str
    best: Optional[Probe]
    probes: List[Probe] = field(default_factory=list)
    reason: str = ""

    def table(self, name: str = "λ") -> str:
        """Every probe, then the answer, as text (``name``: what was searched, λ or a router's knob)."""
        profiles = any(p.params is not None for p in self.probes)
        head = f"{'parameters':<14} {'mean λ':<8}" if profiles else f"{name:<10}"
        lines = [f"probe  {head} phase    think_ratio  tokens_mean  accuracy  feasible"]
        for p in self.probes:
            m = p.metrics

            def fmt(key, spec):
                return format(m[key], spec) if m.get(key) is not None else "-"

            knob = (f"{','.join(f'{v:g}' for v in p.params):<14} {p.lam:<8.3g}" if profiles else f"{p.lam:<10g}")
            lines.append(f"{p.index:<6} {knob} {p.phase:<8} {fmt('think_ratio', '<12.4f')} "
                         f"{fmt('tokens_mean', '<12.1f')} {fmt('mean', '<9.4f')} {'yes' if p.feasible else 'no'}")
        if self.best and self.best.params is not None:
            lines.append(f"best {name} = {','.join(f'{v:g}' for v in self.best.params)} (mean λ "
                         f"{self.best.lam:.3g}; {self.target}); {self.reason}")
        elif self.best:
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
            "params": self.best.params if self.best else None,
            "best": asdict(self.best) if self.best else None,
            "reason": self.reason,
            "n_probes": len(self.probes),
            "probes": [asdict(p) for p in self.probes],
        }


def _round(lam: float) -> float:
    return round(lam, 6)


def _key(knob: Knob) -> Knob:
    return tuple(_round(v) for v in knob) if isinstance(knob, tuple) else _round(knob)


class Search:
    """Probe bookkeeping: cache by λ, budget, JSONL log."""

    def __init__(self, evaluator: Evaluator, target: Target, max_probes: int,
                 log_path: Optional[str] = None):
        if max_probes < 1:
            raise AnalysisInputError("max_probes must be >= 1")
        self.evaluator, self.target, self.max_probes = evaluator, target, max_probes
        self.log_path = log_path
        self.probes: List[Probe] = []
        self._cache: Dict[Knob, Probe] = {}

    @property
    def exhausted(self) -> bool:
        return len(self.probes) >= self.max_probes

    def probe(self, knob: Knob, phase: str) -> Probe:
        """Evaluate ``knob`` (a λ, or a profile family's parameters) once."""
        knob = _key(knob)
        if knob in self._cache:
            return self._cache[knob]
        start = time.perf_counter()
        metrics = dict(self.evaluator(knob))
        params = list(knob) if isinstance(knob, tuple) else None
        lam = metrics.get("lambda_mean", 0.0) if params is not None else knob
        probe = Probe(len(self.probes), lam, phase, metrics, self.target.feasible(metrics),
                      round(time.perf_counter() - start, 3), params)
        self.probes.append(probe)
        self._cache[knob] = probe
        LOG.info("probe %d: %s %s -> %s", probe.index, knob,
                 {k: metrics.get(k) for k in ("think_ratio", "tokens_mean", "mean")},
                 "feasible" if probe.feasible else "not feasible")
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"probe": probe.index, "lambda": lam, "params": params, "phase": phase,
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


def grid_refine_2d(search: Search, lo: float, hi: float, tol: float, grid: int,
                   start: Optional[Tuple[float, float]] = None) -> str:
    """A grid × grid grid over [lo, hi]², then, probe by probe: first toward the boundary —
    the midpoint between the best feasible probe and the best-ranked infeasible probe that
    would beat it (more accurate under a token budget, cheaper under an accuracy floor), while
    the two are more than ``tol`` apart — then halve the spacing around the best feasible
    probe, one parameter at a time. On a sharp transition (thinking switching on between two
    grid points) the answer lies on that boundary, which a refinement around the best
    feasible grid point alone never reaches."""
    grid = max(2, grid)
    spacing = (hi - lo) / (grid - 1)
    axis = [lo + k * spacing for k in range(grid)]
    if start is not None and all(lo <= v <= hi for v in start):
        search.probe(tuple(start), "start")  # the recipe's static λ: the answer is never below it
    for a in axis:
        for b in axis:
            if search.exhausted:
                return "probe budget spent during the grid"
            search.probe((a, b), "grid")
    while not search.exhausted:
        best = search.best()
        if best is None:
            return "no feasible profile on the grid: widen [lo, hi] or relax the target"
        point = _toward_boundary(search, best, tol)
        if point is not None:
            search.probe(point, "boundary")
            continue
        if spacing / 2 < tol:
            break
        spacing /= 2
        a, b = best.params
        for step in ((-spacing, 0.0), (spacing, 0.0), (0.0, -spacing), (0.0, spacing)):
            point = (a + step[0], b + step[1])
            if all(lo <= v <= hi for v in point) and not search.exhausted:
                search.probe(point, "refine")
    return "refined to spacing %.3g" % spacing


def _toward_boundary(search: Search, best: Probe, tol: float) -> Optional[Tuple[float, ...]]:
    """The next point of a bisection toward the feasibility boundary: for the best-ranked
    infeasible probe that ranks above ``best`` (in rank order), the midpoint between it and the
    nearest feasible probe, walking toward that feasible probe past midpoints already probed
    (infeasible), while the two ends are more than ``tol`` apart; None when there is none."""
    rank = search.target.rank
    feasible = [p for p in search.probes if p.feasible]
    for probe in sorted((p for p in search.probes if not p.feasible and rank(p) < rank(best)), key=rank):
        near = min(feasible, key=lambda q: sum((x - y) ** 2 for x, y in zip(q.params, probe.params))).params
        far = tuple(probe.params)
        while max(abs(x - y) for x, y in zip(far, near)) > tol:
            point = _key(tuple((x + y) / 2 for x, y in zip(far, near)))
            seen = search._cache.get(point)
            if seen is None:
                return point
            if seen.feasible:
                break
            far = point
    return None


def find_profile(evaluator: Evaluator, target: Target, lo: float = 0.0, hi: float = 1.0, tol: float = 0.05,
                 max_probes: int = 12, grid: int = 3, log_path: Optional[str] = None,
                 start: Optional[Tuple[float, float]] = None) -> SearchResult:
    """Search a two-parameter profile family (the evaluator takes ``(a, b)``) for ``target``;
    ``start``: a point probed first (the recipe's static λ as ``(λ, λ)``)."""
    if not lo < hi:
        raise AnalysisInputError(f"need lo < hi, got [{lo}, {hi}]")
    if tol <= 0:
        raise AnalysisInputError("tol must be positive")
    search = Search(evaluator, target, max_probes, log_path)
    reason = grid_refine_2d(search, lo, hi, tol, grid, start)
    return SearchResult(target=str(target), best=search.best(), probes=search.probes, reason=reason)


@dataclass
class ProfileFamily:
    """A two-parameter family of λ profiles over a recipe's pair: ``ramp`` (the first and
    last layer's λ, linear between) or ``modules`` (attention's λ, the MLP's λ)."""

    kind: str
    base: dict  # the recipe as data
    layout: Any  # the Instruct checkpoint's ModelLayout
    table: Dict[str, Any]  # its cells (profiles.cells)

    KINDS = ("ramp", "modules")

    @classmethod
    def of(cls, kind: str, merge_config, options) -> "ProfileFamily":
        import yaml
        from mergekit.common import ModelReference

        from mi_mergekit.analysis.profiles import cells
        from mi_mergekit.merge.layout import CheckpointIndex
        from mi_mergekit.merge.placement import known_layout
        from mi_mergekit.merge.plan import build_plan

        if kind not in cls.KINDS:
            raise AnalysisInputError(f"unknown profile family {kind!r}: choose from {', '.join(cls.KINDS)}")
        plan, _ = build_plan(merge_config, options)
        base = ModelReference.model_validate(plan.base)
        layout = known_layout(base)
        return cls(kind, yaml.safe_load(merge_config.to_yaml()), layout,
                   cells(layout, CheckpointIndex.read(base, options).shapes))

    def profile(self, params: Sequence[float]):
        from mi_mergekit.analysis.profiles import Profile

        a, b = params
        if self.kind == "ramp":
            return Profile.ramp(a, b, self.layout.num_layers)
        return Profile.modules({"attention": a, "mlp": b}, self.layout.num_layers)

    def recipe(self, params: Sequence[float]):
        """The profile's recipe (a MergeConfiguration)."""
        from mergekit.config import MergeConfiguration

        from mi_mergekit.analysis.profiles import profile_recipe

        return MergeConfiguration.model_validate(profile_recipe(self.base, self.profile(params), self.layout))

    def mean_lambda(self, params: Sequence[float]) -> float:
        from mi_mergekit.analysis.profiles import mean_lambda

        return mean_lambda(self.profile(params), self.table)

    def static(self) -> Optional[Tuple[float, float]]:
        """The recipe's own λ as this family's point ``(λ, λ)`` (a ramp from λ to λ, or λ for
        both groups), where the recipe sets one number."""
        lam = (self.base.get("parameters") or {}).get("lambda")
        if isinstance(lam, (int, float)) and not isinstance(lam, bool):
            return (float(lam), float(lam))
        return None

    def label(self, params: Sequence[float]) -> str:
        return f"{self.kind}_" + "_".join(f"{v:g}" for v in params)
