"""The signal → λ map of per-question routing, and its calibration.

A :class:`Router` sends a question with signal value ``s`` to the λ grid's level
``#{t in thresholds : direction·s > t}`` — thresholds ascending, one fewer than the grid
has λ values; ``direction = +1`` routes higher signals to higher λ, ``-1`` lower ones.

:func:`fit` chooses direction and thresholds on a **calibration split** from the eval runs
of every grid λ on it (per-question accuracy = Mean@n, tokens = mean tokens of that
question's samples). Candidate thresholds are the midpoints between the calibration
values at ``quantiles`` evenly spaced ranks (deciles by default, plus "never" and
"always"), so a 50-question split cannot be fitted question by question. Objectives:

- ``fewest-tokens``: the fewest mean tokens whose calibration accuracy is at least the top
  grid λ's minus ``tolerance`` of its standard errors (over questions) — "as accurate as
  the Thinking side, within noise, for less";
- ``best-accuracy``: the highest calibration accuracy (ties: fewer tokens).

The router records the calibration questions' hashes (:func:`question_hash`), so routing a
test set that shares a question with the calibration split is refused
(:func:`check_disjoint`), and the calibration values, so :meth:`Router.shifted` can move
every cut point by the same share of questions — the one knob ``find-lambda`` searches
(``0``: every question at the lowest λ, ``0.5``: the router as fitted, ``1``: all at the top).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mi_mergekit.errors import MiMergekitError

FORMAT = "mi-mergekit-router/1"
OBJECTIVES = ("fewest-tokens", "best-accuracy")


class RouterError(MiMergekitError):
    """A router cannot be fitted, read or applied as asked."""


def question_hash(user_message: str) -> str:
    return hashlib.sha256(user_message.strip().encode("utf-8")).hexdigest()[:16]


@dataclass
class Router:
    signal: str
    grid: Tuple[float, ...]
    thresholds: Tuple[float, ...]
    direction: int = 1
    #: sorted direction-adjusted signal values of the calibration questions
    calibration_values: Tuple[float, ...] = ()
    #: hashes of the calibration questions (:func:`question_hash`)
    calibration_questions: Tuple[str, ...] = ()
    #: how it was made: objective, tolerance, calibration accuracy/tokens, knob
    fit: dict = field(default_factory=dict)

    def __post_init__(self):
        self.grid = tuple(float(g) for g in self.grid)
        self.thresholds = tuple(float(t) for t in self.thresholds)
        if list(self.grid) != sorted(set(self.grid)) or len(self.grid) < 1:
            raise RouterError(f"the λ grid must be ascending and distinct, got {list(self.grid)}")
        if len(self.thresholds) != len(self.grid) - 1 or list(self.thresholds) != sorted(self.thresholds):
            raise RouterError(f"need {len(self.grid) - 1} ascending thresholds for the grid {list(self.grid)}, "
                              f"got {list(self.thresholds)}")
        if self.direction not in (1, -1):
            raise RouterError(f"direction must be +1 or -1, got {self.direction}")

    def route(self, value: float) -> float:
        if value is None or not math.isfinite(value):
            raise RouterError(f"cannot route a question with signal {self.signal} = {value}")
        x = self.direction * value
        return self.grid[sum(1 for t in self.thresholds if x > t)]

    def assign(self, values: Mapping[str, float]) -> Dict[str, float]:
        """``{question_id: λ}`` of the questions' signal values."""
        return {qid: self.route(value) for qid, value in values.items()}

    def shifted(self, knob: float) -> "Router":
        """The router with every cut point moved by ``1 − 2·knob`` of the calibration questions
        (``knob`` 0: all at the lowest λ; 0.5: unchanged; 1: all at the highest)."""
        if not 0 <= knob <= 1:
            raise RouterError(f"the routing knob must be in [0, 1], got {knob}")
        values = self.calibration_values
        if not values:
            raise RouterError("the router carries no calibration values to shift its cut points by")
        shift = 1 - 2 * knob
        thresholds = self.thresholds if shift == 0 else tuple(
            _threshold_at_share(values, bisect.bisect_right(values, t) / len(values) + shift) for t in self.thresholds)
        return Router(self.signal, self.grid, thresholds, self.direction, self.calibration_values,
                      self.calibration_questions, {**self.fit, "knob": knob, "shifted_from": list(self.thresholds)})

    def to_json(self) -> dict:
        data = asdict(self)
        data["thresholds"] = [_finite(t) for t in self.thresholds]
        return {"format": FORMAT, **data}

    @classmethod
    def from_json(cls, data: dict) -> "Router":
        if data.get("format") != FORMAT:
            raise RouterError(f"not a router file (format {data.get('format')!r}, expected {FORMAT!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["thresholds"] = tuple(_infinite(t) for t in fields["thresholds"])
        for key in ("grid", "calibration_values", "calibration_questions"):
            fields[key] = tuple(fields.get(key, ()))
        return cls(**fields)

    def save(self, path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Router":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RouterError(f"cannot read the router: {reason}", path=path) from None
        return cls.from_json(data)

    def describe(self) -> dict:
        """What run.json records of the router."""
        return {"signal": self.signal, "grid": list(self.grid), "direction": self.direction,
                "thresholds": [_finite(t) for t in self.thresholds],
                **{k: v for k, v in self.fit.items() if k in ("objective", "tolerance", "knob", "name")}}


def _finite(t: float):
    return t if math.isfinite(t) else ("inf" if t > 0 else "-inf")


def _infinite(t) -> float:
    return float(t)


def _threshold_at_share(values: Sequence[float], share: float) -> float:
    """A threshold below which ``share`` of ``values`` (sorted) fall, between two distinct values."""
    n = len(values)
    if share <= 0:
        return -math.inf
    if share >= 1:
        return math.inf
    rank = min(n - 1, max(1, round(share * n)))
    return (values[rank - 1] + values[rank]) / 2


def check_disjoint(router: Router, user_messages: Sequence[str]) -> None:
    """Refuse questions that were part of the router's calibration split."""
    seen = set(router.calibration_questions)
    shared = [m for m in user_messages if question_hash(m) in seen]
    if shared:
        raise RouterError(f"{len(shared)} of the questions to route were used to calibrate the router "
                          f"(e.g. {shared[0][:60]!r}); route held-out questions only")


# ---------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Outcome:
    """One question's result at one λ: Mean@n and mean tokens."""

    accuracy: float
    tokens: float


def outcomes_of_runs(runs: Mapping[float, object]) -> Dict[str, Dict[float, Outcome]]:
    """``{question_id: {λ: Outcome}}`` from one finished eval run per grid λ (run folders)."""
    from mi_mergekit.eval.runner import load_run

    table: Dict[str, Dict[float, Outcome]] = {}
    ids = None
    for lam, run_dir in sorted(runs.items()):
        questions = load_run(run_dir)["questions"]
        these = {q["question_id"] for q in questions}
        if ids is not None and these != ids:
            raise RouterError(f"the calibration runs do not cover the same questions ({run_dir})")
        ids = these
        for q in questions:
            table.setdefault(q["question_id"], {})[float(lam)] = Outcome(q["mean@k"][q["n"]], q["tokens_mean"])
    return table


def evaluate_assignment(assignment: Mapping[str, float], outcomes: Mapping[str, Mapping[float, Outcome]]) -> dict:
    """Accuracy, tokens and their standard errors over questions of a ``{question_id: λ}`` routing."""
    accs = [outcomes[q][lam].accuracy for q, lam in assignment.items()]
    tokens = [outcomes[q][lam].tokens for q, lam in assignment.items()]
    from mi_mergekit.eval.metrics import stderr_of_mean

    return {"mean": sum(accs) / len(accs), "mean_se": stderr_of_mean(accs),
            "tokens_mean": sum(tokens) / len(tokens), "tokens_se": stderr_of_mean(tokens),
            "lambda_mean": sum(assignment.values()) / len(assignment)}


def candidate_thresholds(values: Sequence[float], quantiles: int) -> List[float]:
    """−inf, +inf and the midpoints between the sorted ``values`` at ``quantiles`` evenly spaced ranks."""
    values = sorted(values)
    cuts = {-math.inf, math.inf}
    for j in range(1, quantiles):
        cuts.add(_threshold_at_share(values, j / quantiles))
    return sorted(cuts)


def fit(signal: str, values: Mapping[str, float], outcomes: Mapping[str, Mapping[float, Outcome]], *,
        objective: str = "fewest-tokens", tolerance: float = 1.0, quantiles: int = 10,
        calibration_questions: Sequence[str] = (), name: Optional[str] = None) -> Router:
    """The router of ``signal`` that best meets ``objective`` on the calibration questions.

    ``values``: ``{question_id: signal value}``; ``outcomes``: :func:`outcomes_of_runs` of the
    same questions at every grid λ (the grid is their λ values).
    """
    if objective not in OBJECTIVES:
        raise RouterError(f"unknown objective {objective!r}; choose from {list(OBJECTIVES)}")
    ids = sorted(values)
    if set(ids) != set(outcomes):
        missing = sorted(set(ids) ^ set(outcomes))[:3]
        raise RouterError(f"the signals and the calibration runs cover different questions (e.g. {missing})")
    if len(ids) < 2:
        raise RouterError("calibration needs at least two questions")
    grid = tuple(sorted(next(iter(outcomes.values()))))
    top = evaluate_assignment({q: grid[-1] for q in ids}, outcomes)
    floor = top["mean"] - tolerance * (top["mean_se"] or 0.0)
    best, best_key = None, None
    for direction in (1, -1):
        oriented = {q: direction * values[q] for q in ids}
        cuts = candidate_thresholds(list(oriented.values()), quantiles)
        for thresholds in itertools.combinations_with_replacement(cuts, len(grid) - 1):
            router = Router(signal, grid, thresholds, direction)
            assignment = {q: router.route(values[q]) for q in ids}
            result = evaluate_assignment(assignment, outcomes)
            if objective == "fewest-tokens":
                if result["mean"] < floor - 1e-12:
                    continue
                key = (result["tokens_mean"], -result["mean"], result["lambda_mean"])
            else:
                key = (-result["mean"], result["tokens_mean"], result["lambda_mean"])
            if best_key is None or key < best_key:
                best, best_key = (router, result), key
    router, result = best  # the all-top router always meets the fewest-tokens floor
    router.calibration_values = tuple(sorted(router.direction * values[q] for q in ids))
    router.calibration_questions = tuple(calibration_questions)
    router.fit = {"name": name or f"{signal}:{objective}", "objective": objective, "tolerance": tolerance,
                  "quantiles": quantiles, "calibration": {**result, "questions": len(ids)},
                  "calibration_top": {**top, "lambda": grid[-1]},
                  "calibration_static": {f"{lam:g}": evaluate_assignment({q: lam for q in ids}, outcomes)
                                         for lam in grid}}
    return router
