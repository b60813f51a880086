"""A merged row of the comparison: its recipe, and its merge by the real ``mergekit-yaml``.

An MI row's recipe is the recipe generator's text (:class:`mi_mergekit.merge.recipes.Recipe`, the
one ``mi-mergekit recipes`` writes), a baseline's its stock mergekit config
(:mod:`mi_mergekit.merge.baselines`). :func:`merge` runs ``mergekit-yaml`` into a hidden staging
folder renamed into ``OUT/models/<row>`` when it finishes, with ``merged.json`` (the recipe's
hash): a killed merge is done again, a finished one never.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from mi_mergekit.compare_rows import Row, Triple
from mi_mergekit.errors import MiMergekitError

MERGED_FILE = "merged.json"


def thinking_template(thinking: str) -> str:
    """The Thinking model's chat template (the tokenizer's, as transformers loads it)."""
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(thinking).chat_template
    if not isinstance(template, str) or not template:
        raise MiMergekitError("the Thinking model has no chat template to decode the baselines with", path=thinking)
    return template


def recipe_of(row: Row, triple: Triple, chat_template: Optional[str] = None) -> dict:
    """The mergekit recipe of a merged row, as a mapping (what :func:`recipe_text` writes)."""
    import yaml

    return yaml.safe_load(recipe_text(row, triple, chat_template))


def recipe_text(row: Row, triple: Triple, chat_template: Optional[str] = None) -> str:
    """The recipe file of a merged row: an MI row through the recipe generator (the text that
    ``mi-mergekit recipes`` writes for this pair, λ, window and modules, in float32), a baseline
    as its stock mergekit config."""
    import yaml

    if row.baseline:
        from mi_mergekit.merge.baselines import baseline_recipe

        return yaml.safe_dump(baseline_recipe(row.baseline, row.ancestor, triple.instruct, triple.thinking,
                                              dtype="float32", out_dtype=None, chat_template=chat_template),
                              sort_keys=False)
    from decimal import Decimal

    from mi_mergekit.merge.recipes import ModelPair, Recipe

    unknown = set(row.parameters) - {"layer_start", "layer_end", "modules", "exclude_modules"}
    if unknown:
        raise MiMergekitError(f"row {row.name}: no recipe form for the parameter(s) {sorted(unknown)}")
    window = ((int(row.parameters["layer_start"]), int(row.parameters["layer_end"]))
              if "layer_start" in row.parameters else None)
    pair = ModelPair(None, triple.instruct, triple.thinking, None, "", f"{triple.instruct} + {triple.thinking}")
    return Recipe(Decimal(repr(row.lam)), pair, window, row.parameters.get("modules"),
                  row.parameters.get("exclude_modules"), dtype="float32").render(
        origin=f"Row {row.name} of mi-mergekit's comparison (demo / compare): {row.description}.")


def merge(row: Row, triple: Triple, out: Path, chat_template: Optional[str] = None) -> Path:
    """Write ``OUT/recipes/<row>.yaml`` and run the real ``mergekit-yaml`` on it into
    ``OUT/models/<row>`` (published when finished; skipped when a finished merge of the same
    recipe is there)."""
    recipe_dir, model_dir = out / "recipes", out / "models" / row.name
    recipe_dir.mkdir(parents=True, exist_ok=True)
    text = recipe_text(row, triple, chat_template)
    recipe = recipe_dir / f"{row.name}.yaml"
    recipe.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    if merged_with(model_dir) == digest and any(model_dir.glob("*.safetensors")):
        return model_dir
    staging = model_dir.parent / f".{row.name}.partial"
    for stale in (staging, model_dir):
        if stale.exists():  # a killed merge, another recipe, or weights the demo dropped after evaluating
            shutil.rmtree(stale)
    script = Path(sys.executable).with_name("mergekit-yaml")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mergekit.scripts.run_yaml"]
    result = subprocess.run(command + [str(recipe), str(staging), "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise MiMergekitError(f"mergekit-yaml failed on the recipe: {result.stderr.strip()[-2000:]}", path=recipe)
    (staging / MERGED_FILE).write_text(json.dumps({"recipe_sha256": digest}) + "\n")
    os.replace(staging, model_dir)
    return model_dir


def merged_with(model_dir: Path) -> Optional[str]:
    """The recipe hash of a finished merge in ``model_dir``, else None."""
    try:
        return json.loads((model_dir / MERGED_FILE).read_text())["recipe_sha256"]
    except (OSError, ValueError, KeyError):
        return None


def drop_weights(model: Path) -> None:
    """Keep a merged folder's plan and config, drop its weights."""
    for item in model.iterdir():
        if item.suffix == ".safetensors" or item.name == "model.safetensors.index.json":
            item.unlink()


__all__ = ["MERGED_FILE", "thinking_template", "recipe_of", "recipe_text", "merge", "merged_with", "drop_weights"]
