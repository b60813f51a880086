"""Families of model_interpolation recipes (the generator behind ``mi-mergekit recipes``).

The files in ``recipes/`` are produced by this generator (one command line per
family in ``recipes/families.txt``), so contributors add a family by adding a
command, not by copying YAML. Regenerate everything with::

    mi-mergekit recipes --families recipes/families.txt -o recipes/

Naming scheme (one file per configuration)::

    mi_<λ>[_<window>][_<modules>][_<model>].yaml

    <λ>        the interpolation weight, shortest decimal form: 0.3, 0.55, 1.0
    <window>   decoder-layer window (0-based, inclusive), in thirds of the model:
               first1of3, mid1of3, last1of3, first2of3, last2of3 — or
               layers<a>to<b> for any other window; omitted for the whole model
    <modules>  <group> for ``--modules <group>`` (only that group interpolated),
               no<group> for ``--exclude-modules <group>`` (that group kept at
               Instruct, everything else interpolated); omitted for all modules
    <model>    omitted for Qwen3-4B-2507, ``30b`` for Qwen3-30B-A3B-2507, ``mix`` /
               ``base`` for Qwen3-4B / Qwen3-4B-Base × Qwen3-4B-Thinking-2507 (the
               paper's Table 4), or ``--suffix`` for a custom pair
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from decimal import Decimal
from typing import List, Optional, Sequence, Tuple

from mi_mergekit.errors import MergeInputError, SelectionError
from mi_mergekit.merge.lambdas import format_lambda, parse_lambdas
from mi_mergekit.merge.selection import parse_modules


class RecipeOptionError(MergeInputError):
    """A generator argument that cannot make a recipe (``option``: the one at fault, if one is)."""

    def __init__(self, message: str, option: Optional[str] = None):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class ModelPair:
    key: Optional[str]  # the --model-pair value, None for a custom pair
    instruct: str
    thinking: str
    num_layers: Optional[int]
    suffix: str  # file-name suffix without the underscore ("" = none)
    label: str
    low_end: str = "Instruct"  # what the λ=0 model is, for the recipe's comments


MODEL_PAIRS = {
    "4b": ModelPair(
        "4b", "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507", 36, "", "Qwen3-4B-2507"
    ),
    "30b": ModelPair(
        "30b",
        "Qwen/Qwen3-30B-A3B-Instruct-2507",
        "Qwen/Qwen3-30B-A3B-Thinking-2507",
        48,
        "30b",
        "Qwen3-30B-A3B-2507",
    ),
    # the paper's Table 4: the Thinking model interpolated with other backbones at the λ=0 end
    "4b-mix": ModelPair(
        "4b-mix", "Qwen/Qwen3-4B", "Qwen/Qwen3-4B-Thinking-2507", 36, "mix",
        "Qwen3-4B (hybrid, Table 4's 'Mix') × Qwen3-4B-Thinking-2507", "hybrid Qwen3-4B, in place of Instruct",
    ),
    "4b-base": ModelPair(
        "4b-base", "Qwen/Qwen3-4B-Base", "Qwen/Qwen3-4B-Thinking-2507", 36, "base",
        "Qwen3-4B-Base (Table 4's 'Base') × Qwen3-4B-Thinking-2507", "Qwen3-4B-Base, in place of Instruct",
    ),
}

#: Named windows in thirds of the decoder stack: name -> (first third, end third).
THIRDS = {
    "first1of3": (0, 1),
    "mid1of3": (1, 2),
    "last1of3": (2, 3),
    "first2of3": (0, 2),
    "last2of3": (1, 3),
}
THIRDS_TEXT = {
    "first1of3": "first third",
    "mid1of3": "middle third",
    "last1of3": "last third",
    "first2of3": "first two thirds",
    "last2of3": "last two thirds",
}


# --------------------------------------------------------------------------- windows


def third_bounds(name: str, num_layers: int) -> Tuple[int, int]:
    """``(start, end)``, inclusive, of a thirds window: the thirds end at ⌊k·L/3⌋, so their sizes
    differ by at most one layer (32 layers: [0,9], [10,20], [21,31]); the paper's 36 layers give
    its [0,11], [12,23], [24,35]. The one definition: recipes, ``plan-grid`` and the demo use it."""
    first, last = THIRDS[name]
    return first * num_layers // 3, last * num_layers // 3 - 1


def parse_window(spec: str, num_layers: Optional[int]) -> Tuple[int, int]:
    """``12,35`` or a thirds name (``last2of3``; needs the layer count)."""
    spec = spec.strip()
    if spec in THIRDS:
        if not num_layers:
            raise RecipeOptionError(
                f"window {spec!r} needs the layer count: pass --num-layers for a custom pair",
                option="--window",
            )
        return third_bounds(spec, num_layers)
    match = re.fullmatch(r"(\d+)\s*[,:]\s*(\d+)", spec)
    if not match:
        raise RecipeOptionError(
            f"{spec!r}: use START,END (0-based, inclusive) or one of {', '.join(THIRDS)}",
            option="--window",
        )
    start, end = int(match.group(1)), int(match.group(2))
    if start > end:
        raise RecipeOptionError(f"empty window {spec!r} (START > END)", option="--window")
    if num_layers and end >= num_layers:
        raise RecipeOptionError(
            f"window {spec!r} ends past the last layer ({num_layers - 1})", option="--window"
        )
    return start, end


def window_name(window: Tuple[int, int], num_layers: Optional[int]) -> Optional[str]:
    """The thirds name of a window, None for the whole model, else ``layers<a>to<b>``."""
    if num_layers:
        if window == (0, num_layers - 1):
            return None
        for name in THIRDS:
            if third_bounds(name, num_layers) == window:
                return name
    return f"layers{window[0]}to{window[1]}"


# --------------------------------------------------------------------------- recipes


def _modules_token(spec: str) -> str:
    tokens = [t for t in re.split(r"[,\s]+", spec.strip()) if t]
    try:
        parse_modules(spec)
    except SelectionError as exc:
        raise RecipeOptionError(exc.message) from None
    if not tokens:
        raise RecipeOptionError("empty module list")
    return "-".join(tokens)


@dataclass(frozen=True)
class Recipe:
    lam: Decimal
    pair: ModelPair
    window: Optional[Tuple[int, int]] = None  # None = whole model
    modules: Optional[str] = None  # "attention" or "attention-norms" (canonical, '-' joined)
    exclude_modules: Optional[str] = None
    dtype: str = "bfloat16"

    @property
    def window_label(self) -> Optional[str]:
        return None if self.window is None else window_name(self.window, self.pair.num_layers)

    @property
    def name(self) -> str:
        parts = ["mi", format_lambda(self.lam, point=True)]
        if self.window_label:
            parts.append(self.window_label)
        if self.modules:
            parts.append(self.modules)
        if self.exclude_modules:
            parts.append("no" + self.exclude_modules)
        if self.pair.suffix:
            parts.append(self.pair.suffix)
        return "_".join(parts)

    def command(self) -> str:
        """The generator arguments that write exactly this file."""
        args = ["--lambdas", format_lambda(self.lam, point=True)]
        if self.window_label:
            label = self.window_label
            args += ["--window", label if label in THIRDS else f"{self.window[0]},{self.window[1]}"]
        if self.modules:
            args += ["--modules", self.modules.replace("-", ",")]
        if self.exclude_modules:
            args += ["--exclude-modules", self.exclude_modules.replace("-", ",")]
        if self.pair.key:
            args += ["--model-pair", self.pair.key]
        else:
            args += ["--instruct", self.pair.instruct, "--thinking", self.pair.thinking]
            if self.pair.num_layers:
                args += ["--num-layers", str(self.pair.num_layers)]
            if self.pair.suffix:
                args += ["--suffix", self.pair.suffix]
        if self.dtype != "bfloat16":
            args += ["--dtype", self.dtype]
        return "mi-mergekit recipes " + " ".join(shlex.quote(a) for a in args)

    def title(self) -> str:
        what = f"Model interpolation λ={format_lambda(self.lam, point=True)}"
        label = self.window_label
        if label is None:
            where = "all decoder layers"
        else:
            where = f"decoder layers [{self.window[0]}, {self.window[1]}]"
            if label in THIRDS:
                where += f" ({THIRDS_TEXT[label]} of {self.pair.num_layers})"
        if self.modules:
            which = f"only module group(s) {self.modules.replace('-', ', ')}"
        elif self.exclude_modules:
            which = (
                f"all modules except {self.exclude_modules.replace('-', ', ')} "
                "(kept at Instruct weights)"
            )
        else:
            which = "all modules"
        return f"{what}, {where}, {which}: {self.pair.label}"

    def render(self, origin: Optional[str] = None) -> str:
        """The recipe file; ``origin`` (one comment line) replaces the generator's provenance and
        run lines, for a recipe written by another command (the demo, ``compare``)."""
        lam = format_lambda(self.lam, point=True)
        lines = [
            f"# {self.title()}",
            '# Wu et al., "Revisiting Model Interpolation for Efficient Reasoning", arXiv 2510.10977.',
        ]
        lines += [f"# {origin}"] if origin else [
            f"# Generated by `{self.command()}`;",
            "# change the generator or recipes/families.txt, not this file (see recipes/README.md).",
            f"# Run: mergekit-yaml {self.name}.yaml OUT/",
            f"#  or: mi-mergekit merge {self.name}.yaml OUT/ --model {self.pair.instruct}=/local/instruct \\",
            f"#        --model {self.pair.thinking}=/local/thinking",
        ]
        lines += [
            "merge_method: model_interpolation",
            f"base_model: {self.pair.instruct}  # {self.pair.low_end}: the λ=0 end",
            "models:",
            f"  - model: {self.pair.thinking}  # Thinking: the λ=1 end",
            "parameters:",
            f"  lambda: {lam}",
        ]
        if self.window_label is not None:
            lines += [
                f"  layer_start: {self.window[0]}  # 0-based, inclusive",
                f"  layer_end: {self.window[1]}",
            ]
        if self.modules:
            lines.append(f"  modules: {self.modules.replace('-', ',')}")
        if self.exclude_modules:
            lines.append(f"  exclude_modules: {self.exclude_modules.replace('-', ',')}")
        lines.append(f"dtype: {self.dtype}  # read and written in this dtype; the kernel computes in float32")
        return "\n".join(lines) + "\n"


def family(
    lambdas: str,
    windows: Sequence[str] = (),
    modules: Optional[str] = None,
    exclude_modules: Optional[str] = None,
    model_pair: Optional[str] = None,
    instruct: Optional[str] = None,
    thinking: Optional[str] = None,
    num_layers: Optional[int] = None,
    suffix: Optional[str] = None,
    dtype: str = "bfloat16",
) -> List[Recipe]:
    """All recipes of one family: every λ × every window (or the whole model)."""
    if modules and exclude_modules:
        raise RecipeOptionError("--modules and --exclude-modules are mutually exclusive")
    if instruct or thinking:
        if model_pair:
            raise RecipeOptionError("use either --model-pair or --instruct/--thinking")
        if not (instruct and thinking):
            raise RecipeOptionError("a custom pair needs both --instruct and --thinking")
        if suffix is not None and not re.fullmatch(r"[A-Za-z0-9.-]*", suffix):
            raise RecipeOptionError("letters, digits, '.' and '-' only", option="--suffix")
        pair = ModelPair(None, instruct, thinking, num_layers, suffix or "", f"{instruct} + {thinking}")
    else:
        if num_layers is not None or suffix is not None:
            raise RecipeOptionError("--num-layers/--suffix are for custom --instruct/--thinking pairs")
        pair = MODEL_PAIRS[model_pair or "4b"]
    parsed = [parse_window(w, pair.num_layers) for w in windows] or [None]
    mod = _modules_token(modules) if modules else None
    exc = _modules_token(exclude_modules) if exclude_modules else None
    return [
        Recipe(lam, pair, window, mod, exc, dtype)
        for window in parsed
        for lam in parse_lambdas(lambdas)
    ]


def write(recipes: Sequence[Recipe], out_dir: str) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for recipe in recipes:
        path = os.path.join(out_dir, recipe.name + ".yaml")
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(recipe.render())
        paths.append(path)
    return paths


def read_families(path: str) -> List[List[str]]:
    """Argument lists, one per non-comment line of a families file."""
    with open(path, "r", encoding="utf-8") as handle:
        return [
            shlex.split(line)
            for line in handle
            if line.strip() and not line.lstrip().startswith("#")
        ]
