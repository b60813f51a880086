"""Where do Instruct and Thinking differ? ``mi-mergekit diverge INSTRUCT THINKING``.

For every tensor, and aggregated per decoder layer × module part (and per
module group, per non-layer tensor and for the whole model):

- relative distance ``‖Θ_T − Θ_I‖_F / ‖Θ_I‖_F``, and
- cosine similarity ``⟨Θ_I, Θ_T⟩ / (‖Θ_I‖_F ‖Θ_T‖_F)``.

These are *not* the σ of the paper's Table 1. That one is ``--sigma`` (:func:`sigma`):
the weight similarity of Shadow-FT (Wu et al., "Shadow-FT: Tuning Instruct via Base",
arXiv 2505.12716, Sec. 2.3), which the paper cites for Table 1 ("σ defined in Wu et
al. (2025b)"), as its authors compute it (github.com/wutaiqiang/Shadow-FT,
``src/shadow/weight_similarity.py``, whose README reproduces Table 1's 0.0562 for
Qwen3-4B-Base × Qwen3-4B-Instruct-2507): per tensor of the decoder layers (names
``model.layers.<i>.…``, norms included; embeddings, final norm and lm_head not),

    σ(W_A, W_B) = Σ|W_A − W_B| / (Σ|W_A| + Σ|W_B|)      (L1, symmetric, in [0, 1])

and the model pair's σ is the plain mean of the per-tensor values (every tensor counts
once, whatever its size). ``mi-mergekit diverge --sigma M1 M2 M3 …`` computes it for
every pair of the models given (four models: Table 1's six pairs), or for the pairs
named with ``--pair A B``; each tensor is read once per model.

Aggregates are over the concatenation of the tensors in a cell (sums of squares
add up), not means of per-tensor ratios, so large tensors weigh by their size.

Streaming: tensors are read one at a time through mergekit's lazy loader (the
same reader as a merge), and each tensor is reduced in row chunks of at most
``chunk_elements`` values in float64, so memory is one input tensor of each
model plus a small float64 chunk — never a whole model.

Outputs: a JSON document (schema below) and a heatmap PNG (layers × module
parts, colour = relative distance; a second panel plots per-layer distance of
the attention / mlp groups; matplotlib with the Agg backend)::

    {"instruct", "thinking", "num_layers", "definitions",
     "model":     {"relative_distance", "cosine", "n_params", "n_tensors"},
     "layers":    [{"layer", "parts": {part: stats}, "groups": {group: stats}}],
     "non_layer": {"embed_tokens": stats, "final_norm": stats, "lm_head": stats},
     "tensors":   [{"name", "part", "layer", "shape", "relative_distance", "cosine"}]}

Tensors are placed (layer, part, sub-layer) as a merge places them
(:mod:`mi_mergekit.merge.placement`, from mergekit's architecture knowledge); tensors with
no role are reported under the part ``other`` rather than failing the analysis.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mi_mergekit.errors import AnalysisInputError
from mi_mergekit.merge.roles import PARTS

LAYER_GROUPS = ("attention", "mlp", "mixer", "all")  # mixer: state-space/conv layers of hybrids
DEFAULT_CHUNK = 1 << 24  # 16M values (128 MB of float64 per operand)
#: the tensors Shadow-FT's σ runs over (``weight_similarity.py``: ``model\.layers\.(\d+)\.``, searched)
SIGMA_TENSOR = re.compile(r"model\.layers\.(\d+)\.")
SIGMA_DEFINITION = ("mean over the decoder-layer tensors (model.layers.<i>.*) of "
                    "sum|A - B| / (sum|A| + sum|B|) (Shadow-FT, arXiv 2505.12716, Sec. 2.3; "
                    "github.com/wutaiqiang/Shadow-FT src/shadow/weight_similarity.py)")


@dataclass
class Sums:
    """Sufficient statistics of a set of (I, T) value pairs."""

    ii: float = 0.0
    tt: float = 0.0
    dd: float = 0.0
    it: float = 0.0
    n: int = 0

    def add(self, other: "Sums") -> None:
        self.ii += other.ii
        self.tt += other.tt
        self.dd += other.dd
        self.it += other.it
        self.n += other.n

    def stats(self) -> Dict[str, Optional[float]]:
        norm_i, norm_t, norm_d = math.sqrt(self.ii), math.sqrt(self.tt), math.sqrt(self.dd)
        if norm_i > 0:
            rel = norm_d / norm_i
        else:
            rel = 0.0 if norm_d == 0 else None  # undefined: Instruct is all zeros
        if norm_i > 0 and norm_t > 0:
            cos = max(-1.0, min(1.0, self.it / (norm_i * norm_t)))
        else:
            cos = 1.0 if norm_d == 0 else None
        return {
            "relative_distance": rel,
            "cosine": cos,
            "distance": norm_d,
            "norm_instruct": norm_i,
            "norm_thinking": norm_t,
            "n_params": self.n,
        }


def tensor_sums(instruct, thinking, chunk_elements: int = DEFAULT_CHUNK) -> Sums:
    """Reduce one tensor pair in float64, ``chunk_elements`` values at a time."""
    import torch

    if instruct.shape != thinking.shape:
        raise AnalysisInputError(f"shape mismatch {tuple(instruct.shape)} vs {tuple(thinking.shape)}")
    a, b = instruct.reshape(-1), thinking.reshape(-1)
    sums = Sums(n=a.numel())
    step = max(1, int(chunk_elements))
    for start in range(0, a.numel(), step):
        x = a[start:start + step].to(torch.float64)
        y = b[start:start + step].to(torch.float64)
        sums.ii += float(torch.dot(x, x))
        sums.tt += float(torch.dot(y, y))
        sums.it += float(torch.dot(x, y))
        y.sub_(x)
        sums.dd += float(torch.dot(y, y))
        del x, y
    return sums


def sigma_sums(a, b, chunk_elements: int = DEFAULT_CHUNK) -> Tuple[float, float, float]:
    """(Σ|a − b|, Σ|a|, Σ|b|) of one tensor pair in float64, ``chunk_elements`` values at a time."""
    import torch

    if a.shape != b.shape:
        raise AnalysisInputError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    x_all, y_all = a.reshape(-1), b.reshape(-1)
    diff = norm_a = norm_b = 0.0
    step = max(1, int(chunk_elements))
    for start in range(0, x_all.numel(), step):
        x = x_all[start:start + step].to(torch.float64)
        y = y_all[start:start + step].to(torch.float64)
        norm_a += float(x.abs().sum())
        norm_b += float(y.abs().sum())
        diff += float((x - y).abs().sum())
    return diff, norm_a, norm_b


def tensor_sigma(a, b, chunk_elements: int = DEFAULT_CHUNK) -> float:
    """Shadow-FT's σ of one tensor pair: Σ|a − b| / (Σ|a| + Σ|b|); 0 for two all-zero tensors."""
    diff, norm_a, norm_b = sigma_sums(a, b, chunk_elements)
    return diff / (norm_a + norm_b) if norm_a + norm_b > 0 else 0.0


def sigma(models: List[str], pairs: Optional[List[Tuple[int, int]]] = None,
          chunk_elements: int = DEFAULT_CHUNK, progress: bool = False, device: str = "cpu") -> dict:
    """Table 1's σ (see the module docstring) for ``pairs`` of ``models`` (indices; default:
    every pair i < j). Each decoder-layer tensor is read once per model that a pair uses.

    Returns ``{"definition", "models", "pairs": [{"a", "b", "sigma", "n_tensors",
    "layers": [{"layer", "sigma", "n_tensors"}]}]}``; a pair's ``sigma`` is the mean of
    its per-tensor σ, each layer's the mean over that layer's tensors.
    """
    import tqdm


    if len(models) < 2:
        raise AnalysisInputError("--sigma needs at least two models")
    if pairs is None:
        pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    if not pairs:
        raise AnalysisInputError("no model pairs to compare")
    used = sorted({i for pair in pairs for i in pair})
    loaders = {i: _loader(models[i]) for i in used}
    names = {i: {n for n in loaders[i].index.tensor_paths if SIGMA_TENSOR.search(n)} for i in used}
    first = names[used[0]]
    if not first:
        raise AnalysisInputError(f"{models[used[0]]} has no decoder-layer tensors (model.layers.<i>.*) to compare")
    for i in used[1:]:
        if names[i] != first:
            only_a, only_b = sorted(first - names[i]), sorted(names[i] - first)
            raise AnalysisInputError(
                f"the checkpoints do not store the same decoder-layer tensors: only in {models[used[0]]} "
                f"{only_a[:5]}, only in {models[i]} {only_b[:5]}")
    per_pair: Dict[Tuple[int, int], List[Tuple[int, float]]] = {pair: [] for pair in pairs}
    from mi_mergekit.merge.layout import natural_key  # mergekit: imported by the work, not by `stages`

    for name in tqdm.tqdm(sorted(first, key=natural_key), desc="σ", unit="tensor", disable=not progress):
        tensors = {i: loaders[i].get_tensor(name, device=device) for i in used}
        if not tensors[used[0]].is_floating_point():
            continue
        layer = int(SIGMA_TENSOR.search(name).group(1))
        for a, b in pairs:
            if tensors[a].shape != tensors[b].shape:
                raise AnalysisInputError(f"{name}: shape {tuple(tensors[a].shape)} in {models[a]} vs "
                                      f"{tuple(tensors[b].shape)} in {models[b]}")
            per_pair[(a, b)].append((layer, tensor_sigma(tensors[a], tensors[b], chunk_elements)))
        del tensors
    for loader in loaders.values():
        loader.flush()
    result = []
    for (a, b), values in per_pair.items():
        layers: Dict[int, List[float]] = {}
        for layer, value in values:
            layers.setdefault(layer, []).append(value)
        result.append({
            "a": str(models[a]), "b": str(models[b]),
            "sigma": sum(v for _, v in values) / len(values), "n_tensors": len(values),
            "layers": [{"layer": layer, "sigma": sum(vs) / len(vs), "n_tensors": len(vs)}
                       for layer, vs in sorted(layers.items())],
        })
    return {"definition": SIGMA_DEFINITION, "models": [str(m) for m in models], "pairs": result}


def sigma_table(doc: dict) -> str:
    """The pairs and their σ as Table 1 prints them (four decimals, plus the full value)."""
    width = max(len(os.path.basename(p[key].rstrip("/"))) for p in doc["pairs"] for key in ("a", "b"))
    lines = [f"{'model A':<{width}}  {'model B':<{width}}  σ       (exact)       tensors"]
    for pair in doc["pairs"]:
        a, b = (os.path.basename(pair[key].rstrip("/")) for key in ("a", "b"))
        lines.append(f"{a:<{width}}  {b:<{width}}  {pair['sigma']:.4f}  ({pair['sigma']:.10f})  {pair['n_tensors']}")
    lines.append(f"σ = {doc['definition']}")
    return "\n".join(lines)


def _placements(path: str, names) -> Dict[str, Tuple[str, Optional[int], frozenset]]:
    """name -> (part, decoder layer or None, the groups that select it), as a merge places it."""
    from mergekit.common import ModelReference

    from mi_mergekit.merge.placement import layout_of

    try:
        layout = layout_of(ModelReference.model_validate(path), names=names)
    except Exception:  # noqa: BLE001 - no usable config: "other", by the first index in the name
        return {name: ("other", int(m.group(1)) if (m := re.search(r"(?:^|\.)(\d+)\.", name)) else None,
                       frozenset({"all", "other"})) for name in names}
    return {name: ((p.part or "other"), p.layer, p.role.tags if p.role else frozenset({"all", "other"}))
            for name, p in layout.placements.items()}


def _loader(path: str):
    from mergekit.common import ModelReference

    return ModelReference.model_validate(path).lazy_loader(cache_dir=None, lazy_unpickle=True)


def divergence(instruct: str, thinking: str, chunk_elements: int = DEFAULT_CHUNK,
               progress: bool = False, device: str = "cpu") -> dict:
    """Compute the divergence document (see the module docstring) for two checkpoints.

    ``device``: where the sums are computed (tensors are read on the CPU and moved
    one at a time); the figures agree with the CPU's to float rounding.
    """
    import tqdm


    li, lt = _loader(instruct), _loader(thinking)
    names_i, names_t = set(li.index.tensor_paths), set(lt.index.tensor_paths)
    if names_i != names_t:
        only_i, only_t = sorted(names_i - names_t), sorted(names_t - names_i)
        raise AnalysisInputError(
            "the checkpoints do not store the same tensors: "
            f"only in Instruct {only_i[:5]}, only in Thinking {only_t[:5]}"
        )
    placed = _placements(instruct, sorted(names_i))
    cells: Dict[Tuple[Optional[int], str], Sums] = {}
    tags: Dict[Tuple[Optional[int], str], frozenset] = {}
    tensors: List[dict] = []
    total = Sums()
    from mi_mergekit.merge.layout import natural_key

    for name in tqdm.tqdm(sorted(names_i, key=natural_key), desc="Divergence", unit="tensor",
                          disable=not progress):
        a, b = li.get_tensor(name, device=device), lt.get_tensor(name, device=device)
        if not a.is_floating_point():
            continue
        if a.shape != b.shape:
            raise AnalysisInputError(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        sums = tensor_sums(a, b, chunk_elements)
        del a, b
        part, layer, groups = placed[name]
        key = (layer, part)
        cells.setdefault(key, Sums()).add(sums)
        tags[key] = groups
        total.add(sums)
        stats = sums.stats()
        tensors.append({"name": name, "part": part, "layer": layer, "n_params": sums.n,
                        "relative_distance": stats["relative_distance"], "cosine": stats["cosine"]})
    li.flush()
    lt.flush()

    layer_ids = sorted({layer for layer, _ in cells if layer is not None})
    num_layers = layer_ids[-1] + 1 if layer_ids else 0
    layers = []
    for layer in range(num_layers):
        parts = {part: cells[(layer, part)] for (l, part) in cells if l == layer}
        groups = {}
        for group in LAYER_GROUPS:
            agg = Sums()
            for part, sums in parts.items():
                if group in tags[(layer, part)]:
                    agg.add(sums)
            if agg.n:
                groups[group] = agg.stats()
        layers.append({
            "layer": layer,
            "parts": {p: parts[p].stats() for p in _ordered(parts)},
            "groups": groups,
        })
    non_layer = {part: sums.stats() for (layer, part), sums in cells.items() if layer is None}
    return {
        "instruct": str(instruct),
        "thinking": str(thinking),
        "num_layers": num_layers,
        "definitions": {
            "relative_distance": "||T - I||_F / ||I||_F over all values of the cell",
            "cosine": "<I, T> / (||I||_F ||T||_F) over all values of the cell",
        },
        "model": {**total.stats(), "n_tensors": len(tensors)},
        "layers": layers,
        "non_layer": {p: non_layer[p] for p in _ordered(non_layer)},
        "tensors": tensors,
    }


def _ordered(parts) -> List[str]:
    known = [p for p in PARTS if p in parts]
    return known + sorted(p for p in parts if p not in PARTS)


def write_json(doc: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1)
        handle.write("\n")


def plot_heatmap(doc: dict, path: str, metric: str = "relative_distance") -> str:
    """Layers × module parts heatmap of ``metric`` plus per-layer group curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    parts = _ordered({p for layer in doc["layers"] for p in layer["parts"]})
    grid = np.full((max(1, doc["num_layers"]), max(1, len(parts))), np.nan)
    for layer in doc["layers"]:
        for j, part in enumerate(parts):
            value = layer["parts"].get(part, {}).get(metric)
            if value is not None:
                grid[layer["layer"], j] = value
    height = min(14.0, max(4.5, 2.5 + 0.22 * grid.shape[0]))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, height),
                                  gridspec_kw={"width_ratios": [max(2, len(parts)), 3]})
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(parts)))
    ax.set_xticklabels(parts, rotation=45, ha="right")
    ax.set_ylabel("decoder layer")
    step = max(1, grid.shape[0] // 24)
    ax.set_yticks(range(0, grid.shape[0], step))
    ax2.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{metric.replace('_', ' ')} by layer × module")
    fig.colorbar(image, ax=ax, fraction=0.05)
    for group, style in (("attention", "o-"), ("mlp", "s-"), ("mixer", "^-"), ("all", "k--")):
        ys = [layer["groups"].get(group, {}).get(metric) for layer in doc["layers"]]
        xs = [i for i, y in enumerate(ys) if y is not None]
        if xs:
            ax2.plot([ys[i] for i in xs], xs, style, label=group, markersize=3)
    ax2.invert_yaxis()
    ax2.set_xlabel(metric.replace("_", " "))
    ax2.set_title("per layer")
    ax2.grid(alpha=0.3)
    ax2.legend()
    extra = ", ".join(
        f"{p}={v[metric]:.3g}" for p, v in doc["non_layer"].items() if v.get(metric) is not None
    )
    model = doc["model"].get(metric)
    fig.suptitle(
        f"{os.path.basename(doc['thinking'].rstrip('/'))} vs {os.path.basename(doc['instruct'].rstrip('/'))}"
        f" — model {metric.replace('_', ' ')} {model:.4g}" + (f"; {extra}" if extra else ""),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(doc: dict) -> str:
    """A short text table: per-layer relative distance of attention / mlp / (mixer) / all."""
    groups = [g for g in LAYER_GROUPS if any(g in layer["groups"] for layer in doc["layers"])]
    lines = [f"model: relative distance {doc['model']['relative_distance']:.6g}, "
             f"cosine {doc['model']['cosine']:.6g} ({doc['model']['n_params']} params)",
             "layer  " + " ".join(f"{g:<12}" for g in groups).rstrip()]
    for layer in doc["layers"]:
        cells = []
        for group in groups:
            value = layer["groups"].get(group, {}).get("relative_distance")
            cells.append(f"{value:<12.6g}" if value is not None else f"{'-':<12}")
        lines.append(f"{layer['layer']:<6} " + " ".join(cells))
    for part, stats in doc["non_layer"].items():
        lines.append(f"{part}: {stats['relative_distance']:.6g}")
    return "\n".join(lines)
