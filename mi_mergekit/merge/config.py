"""Reading a recipe file: YAML -> mergekit ``MergeConfiguration``, with ``NAME=PATH``
model substitutions (``--model``) applied first, every failure a one-line error."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import yaml

from mi_mergekit.errors import MergeInputError, explain, os_problem, validation_summary


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
    mapping = parse_substitutions(substitutions)
    used = set()
    data = _substitute(data, mapping, used)
    unused = sorted(set(mapping) - used)
    if unused:
        raise MergeInputError(
            f"--model names not found in the recipe: {', '.join(unused)} "
            "(use the model name exactly as the recipe writes it)", path=path
        )
    try:
        config = MergeConfiguration.model_validate(data)
    except ValidationError as exc:
        raise MergeInputError(validation_summary(exc), path=path) from None
    return config, yaml.safe_dump(data, sort_keys=False)


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
