"""Reading a recipe file: YAML -> mergekit ``MergeConfiguration``, with ``NAME=PATH``
model substitutions (``--model``) applied first, every failure a one-line error.

:func:`check_config` holds the checks every entry point makes on a validated recipe
before mergekit runs it (``mergekit-yaml``, ``run_merge``, ``mi-mergekit``
merge/plan/sweep/find-lambda): names mergekit would only reject mid-run.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import yaml

from mi_mergekit.errors import MergeInputError, did_you_mean, explain, os_problem, validation_summary

#: the dtype names mergekit reads (``mergekit.common.dtype_from_name``), and common ways of writing them
DTYPES = ("bfloat16", "float16", "float32", "float64", "int64")
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                 "float": "float32", "fp64": "float64", "double": "float64"}


class SubstitutionError(MergeInputError):
    """A malformed ``--model NAME=PATH`` value."""


def load_recipe(path: str, substitutions: Tuple[str, ...] = ()) -> Tuple[Any, str]:
    """Read a YAML recipe, apply ``NAME=PATH`` model substitutions, validate it.

    Returns ``(MergeConfiguration, yaml_text_after_substitution)``.
    """
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise MergeInputError(f"cannot read the recipe: {os_problem(exc)}", path=path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MergeInputError(explain(exc), path=path) from None
    if not isinstance(data, dict):
        raise MergeInputError("a recipe must be a YAML mapping (merge_method: …, models: …)", path=path)
    check_keys(data, path)
    mapping = parse_substitutions(substitutions)
    used = set()
    data = _substitute(data, mapping, used)
    unused = sorted(set(mapping) - used)
    if unused:
        names = sorted(_strings(data))
        raise MergeInputError(
            f"--model names not found in the recipe: {', '.join(unused)}"
            f"{did_you_mean(unused[0], names) if len(unused) == 1 else ''} "
            "(use the model name exactly as the recipe writes it)", path=path
        )
    for name, target in mapping.items():
        folder = target.split("@")[0].split("+")[0]
        if not os.path.exists(os.path.expanduser(folder)):
            from mi_mergekit.merge.hub import siblings_hint

            raise MergeInputError(f"--model {name}={target}: no such folder{siblings_hint(folder)} (a --model "
                                  "PATH is a local copy of the model)", path=os.path.abspath(folder))
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as exc:
        raise MergeInputError(validation_summary(exc), path=path) from None
    check_config(config, path)
    return config, yaml.safe_dump(data, sort_keys=False)


def check_keys(data: Any, path=None) -> None:
    """A recipe key that is close to one mergekit reads (``base_modle``, ``paramters``,
    ``out_dtpye``) is a typo: mergekit ignores keys it does not know, so the setting would
    silently not apply. Refused with the key path and the key meant; other unknown keys
    are left alone (mergekit ignores them)."""
    from mergekit.config import (InputModelDefinition, InputSliceDefinition, MergeConfiguration,
                                 OutputSliceDefinition)

    def walk(value, model, where):
        if not isinstance(value, dict):
            return
        known = list(model.model_fields)
        for key in value:
            if key not in known:
                hint = did_you_mean(key, known)
                if hint:
                    raise MergeInputError(f"{where}{key}: not a key mergekit reads (it would be ignored){hint}",
                                          path=path)
        for key, child in (("models", InputModelDefinition), ("slices", OutputSliceDefinition),
                           ("sources", InputSliceDefinition)):
            if key in known and isinstance(value.get(key), list):
                for i, item in enumerate(value[key]):
                    walk(item, child, f"{where}{key}[{i}].")

    walk(data, MergeConfiguration, "")


def check_config(config, path=None) -> None:
    """What mergekit would only reject mid-run (with a traceback): an unknown
    ``merge_method`` or ``dtype``/``out_dtype``. A close known name is suggested."""
    from mergekit import merge_methods

    name = config.merge_method
    known = [method.spec.name for method in merge_methods.registered_methods()]
    if name not in known:
        ours = sorted(m for m in known if m.endswith("_interpolation"))
        raise MergeInputError(
            f"merge_method: {name!r} is not a merge method{did_you_mean(name, known)} "
            f"(mi-mergekit's: {', '.join(ours)}; mergekit's: {', '.join(sorted(set(known) - set(ours)))})",
            path=path)
    for key in ("dtype", "out_dtype"):
        value = getattr(config, key, None)
        if value is None:
            continue
        bare = str(value).removeprefix("torch.")
        if bare not in DTYPES:
            hint = f" — did you mean {DTYPE_ALIASES[bare.lower()]!r}?" if bare.lower() in DTYPE_ALIASES else \
                did_you_mean(bare, DTYPES)
            raise MergeInputError(f"{key}: {value!r} is not a dtype mergekit reads{hint} "
                                  f"(choose from {', '.join(DTYPES)})", path=path)


def _strings(value: Any):
    """Every string in a recipe (the model names a --model NAME may refer to)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def parse_substitutions(items: Tuple[str, ...]) -> Dict[str, str]:
    """``("NAME=PATH", ...)`` -> ``{NAME: PATH}``."""
    mapping = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise SubstitutionError(f"--model: expected NAME=PATH, got {item!r}")
        mapping[name] = target
    return mapping


def _substitute(value: Any, mapping: Dict[str, str], used: set) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, mapping, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, mapping, used) for v in value]
    if isinstance(value, str) and value in mapping:
        used.add(value)
        return mapping[value]
    return value
