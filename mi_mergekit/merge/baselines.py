"""The paper's Task Arithmetic and TIES baselines as recipes for any triple (stock mergekit methods).

The files in ``baselines/`` are these recipes for the paper's models (``tests/test_baselines.py``
checks that they say the same); the demo and ``mi-mergekit compare`` write them for their own
triple. The mapping of the paper's wording onto mergekit's parameters is in
``baselines/README.md``:

- TA, "the scaling factors are set to 0.7 for both models": ``task_arithmetic``, per model
  ``weight: 0.7``, ``normalize: false``, ``lambda: 1.0``: Θ_base + 0.7·τ_I + 0.7·τ_T;
- TIES, "a sparsity of 0.2 and … the scaling factor to 0.5": ``ties``, per model ``weight: 1.0``
  and ``density: 0.8``, ``normalize: true``, ``rescale: false``, ``lambda: 0.5``:
  Θ_base + 0.5·disjoint_mean(trim₈₀(τ_I), trim₈₀(τ_T)).

``chat_template`` (a Jinja string) goes into mergekit's own ``chat_template`` field: stock mergekit
gives a merge the tokenizer of ``base_model``, and the paper decodes merged models the way it
decodes the Thinking model, so the demo and ``compare`` pass the Thinking side's template.
"""

from __future__ import annotations

from typing import Dict, Optional

from mi_mergekit.errors import MergeInputError

#: method -> (mergekit method, per-model parameters, top-level parameters)
SETTINGS: Dict[str, tuple] = {
    "ta": ("task_arithmetic", {"weight": 0.7}, {"normalize": False, "lambda": 1.0}),
    "ties": ("ties", {"weight": 1.0, "density": 0.8}, {"normalize": True, "rescale": False, "lambda": 0.5}),
}
#: the paper's row names (Table 2): with the hybrid ancestor, and with the pre-trained one ("-Base")
TITLES = {"ta": "TA", "ties": "TIES", "ta_base": "TA-Base", "ties_base": "TIES-Base"}


def baseline_recipe(method: str, base: str, instruct: str, thinking: str, dtype: str = "float32",
                    out_dtype: Optional[str] = "bfloat16", chat_template: Optional[str] = None) -> dict:
    """The recipe of baseline ``method`` (``ta`` or ``ties``) on ``base`` (the common ancestor) with
    the Instruct and Thinking models, as a mergekit config mapping (``yaml.safe_dump`` writes it)."""
    if method not in SETTINGS:
        raise MergeInputError(f"unknown baseline {method!r}; choose from {sorted(SETTINGS)}")
    merge_method, per_model, parameters = SETTINGS[method]
    recipe = {
        "merge_method": merge_method,
        "base_model": base,
        "models": [{"model": model, "parameters": dict(per_model)} for model in (instruct, thinking)],
        "parameters": dict(parameters),
        "dtype": dtype,
    }
    if out_dtype:
        recipe["out_dtype"] = out_dtype
    if chat_template:
        recipe["chat_template"] = chat_template
    return recipe


__all__ = ["SETTINGS", "TITLES", "baseline_recipe"]
