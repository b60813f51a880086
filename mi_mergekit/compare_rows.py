"""What the paper's comparison compares: a :class:`Triple` of models and its :class:`Row` s.

The rows (:mod:`mi_mergekit.compare`): the Instruct and Thinking models as they are
(:func:`side_rows`), Task Arithmetic and TIES on the ancestor and the pre-trained ancestor
(:func:`baseline_rows`), and MI at each λ with its layer windows and module ablations at λ = 0.8
(:func:`mi_rows`, :func:`paper_windows`). A row's recipe and merge: :mod:`mi_mergekit.compare_merges`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

#: the MI rows of the paper's Table 2
PAPER_LAMBDAS = (0.2, 0.4, 0.45, 0.5, 0.55, 0.6, 0.8)
#: the λ of the window and module variants (the paper's Table 3 and Figure 5)
VARIANT_LAMBDA = 0.8
MODULE_ABLATIONS = ("nomlp", "noattention")
BASELINES = ("ta", "ties")


@dataclass(frozen=True)
class Triple:
    """The models of a comparison: folders (absolute) or hub ids."""

    instruct: str
    thinking: str
    base: Optional[str] = None
    pretrained: Optional[str] = None


@dataclass(frozen=True)
class Row:
    """One row of the comparison: a model evaluated as it is (``side``), an MI merge (``lam``
    with window/module ``parameters``) or a baseline merge (``baseline`` on ``ancestor``)."""

    name: str
    description: str
    lam: Optional[float] = None
    parameters: Dict[str, object] = field(default_factory=dict)
    baseline: Optional[str] = None
    ancestor: Optional[str] = None
    side: Optional[str] = None

    @property
    def decoding(self) -> str:
        return "instruct" if self.side == "instruct" else "thinking"

    @property
    def curve_lambda(self) -> Optional[float]:
        """λ as a point of the MI curve (whole-model merges and the Thinking model), else None."""
        if self.side == "thinking":
            return 1.0
        return self.lam if self.lam is not None and not self.parameters else None

    def key(self) -> dict:
        """What the row is, for the settings its run is reused with."""
        return {k: v for k, v in (("lambda", self.lam), ("parameters", self.parameters), ("baseline", self.baseline),
                                  ("side", self.side)) if v not in (None, {})}


def choose(value: Optional[str], known: Sequence[str], option: str) -> Optional[List[str]]:
    """A comma list of names from ``known`` (``none`` for the empty list); None when not given."""
    from mi_mergekit.merge.recipes import RecipeOptionError

    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise RecipeOptionError(f"unknown name(s) {unknown}; choose from {list(known)} or 'none'", option=option)
    return names


def paper_windows(num_layers: int) -> List[Tuple[str, int, int]]:
    """The paper's windows (thirds of the decoder: first, middle, last, first two, last two), as
    ``(name, start, end)``, from the one definition the recipes use
    (:func:`mi_mergekit.merge.recipes.third_bounds`); for 36 layers they are the paper's [0,11] … [12,35]."""
    from mi_mergekit.merge.recipes import THIRDS, third_bounds

    return [(name, *third_bounds(name, num_layers)) for name in THIRDS]


def mi_rows(lambdas: Sequence[float], windows: Sequence[Tuple[str, int, int]] = (),
            modules: Sequence[str] = ()) -> List[Row]:
    """The λ sweep, then the windows and the module ablations (``nomlp``, ``noattention``) at λ = 0.8."""
    rows = [Row(f"mi_{lam:g}", f"whole model, λ={lam:g}", lam) for lam in lambdas]
    rows += [Row(f"mi_{VARIANT_LAMBDA:g}_{name}", f"layers [{start},{end}] only, λ={VARIANT_LAMBDA:g}",
                 VARIANT_LAMBDA, {"layer_start": start, "layer_end": end}) for name, start, end in windows]
    ablations = {
        "nomlp": Row(f"mi_{VARIANT_LAMBDA:g}_nomlp", f"attention only (MLP kept Instruct), λ={VARIANT_LAMBDA:g}",
                     VARIANT_LAMBDA, {"exclude_modules": "mlp"}),
        "noattention": Row(f"mi_{VARIANT_LAMBDA:g}_noattention",
                           f"MLP only (attention kept Instruct), λ={VARIANT_LAMBDA:g}", VARIANT_LAMBDA,
                           {"exclude_modules": "attention"}),
    }
    return rows + [ablations[name] for name in MODULE_ABLATIONS if name in modules]


def baseline_rows(triple: Triple) -> List[Row]:
    """TA and TIES on the ancestor, and on the pre-trained ancestor where there is one."""
    from mi_mergekit.merge.baselines import TITLES

    rows = []
    for suffix, ancestor, what in (("", triple.base, "the ancestor"), ("_base", triple.pretrained,
                                                                       "the pre-trained ancestor")):
        if ancestor:
            rows += [Row(f"{method}{suffix}", f"{TITLES[method + suffix]}: stock {method} on {what}",
                         baseline=method, ancestor=ancestor) for method in ("ta", "ties")]
    return rows


def side_rows(thinking: bool = True) -> List[Row]:
    """The Instruct model (its own template and decoding) and, unless λ = 1 stands for it, the Thinking model."""
    rows = [Row("instruct", "the Instruct model as it is (its template, Instruct decoding)", side="instruct")]
    if thinking:
        rows.append(Row("thinking", "the Thinking model as it is (λ = 1)", side="thinking"))
    return rows


__all__ = ["PAPER_LAMBDAS", "VARIANT_LAMBDA", "MODULE_ABLATIONS", "BASELINES", "Triple", "Row", "choose",
           "paper_windows", "mi_rows", "baseline_rows", "side_rows"]
