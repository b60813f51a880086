"""Stand-ins for the paper's models (real layer counts, tiny widths) and helpers to run
the committed recipes / baselines on them. Import the fixtures into a test module.

Each stand-in set is built once per test session.
"""

import dataclasses
import os
import re
from typing import Dict, List, Tuple

import pytest
import yaml

from synthetic import PairSpec, build_pair

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
BASELINES = os.path.join(ROOT, "baselines")

TINY = dict(
    hidden_size=16,
    intermediate_size=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    vocab_size=64,
)
SPEC_4B = PairSpec(num_layers=36, **TINY)  # Qwen3-4B: 36 layers, tied embeddings
SPEC_30B = PairSpec(  # Qwen3-30B-A3B: 48 layers, MoE (4 experts, not 128), untied lm_head
    num_layers=48, moe=True, num_experts=4, tie_word_embeddings=False, seed=3, **TINY
)

NAMES_4B = {
    "instruct": "Qwen/Qwen3-4B-Instruct-2507",
    "thinking": "Qwen/Qwen3-4B-Thinking-2507",
    "hybrid": "Qwen/Qwen3-4B",
    "base": "Qwen/Qwen3-4B-Base",
}
NAMES_30B = {
    "instruct": "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "thinking": "Qwen/Qwen3-30B-A3B-Thinking-2507",
    "hybrid": "Qwen/Qwen3-30B-A3B",
    "base": "Qwen/Qwen3-30B-A3B-Base",
}


def yaml_files(folder: str) -> List[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith((".yaml", ".yml")))


def _standins(root: str, spec: PairSpec, names: Dict[str, str]) -> Dict[str, str]:
    """Real model name -> local stand-in path (a second pair supplies the two bases)."""
    instruct, thinking = build_pair(os.path.join(root, "pair"), spec)
    hybrid, base = build_pair(
        os.path.join(root, "bases"), dataclasses.replace(spec, seed=spec.seed + 10)
    )
    paths = {"instruct": instruct, "thinking": thinking, "hybrid": hybrid, "base": base}
    return {names[role]: paths[role] for role in names}


@pytest.fixture(scope="session")
def standins_4b(tmp_path_factory) -> Dict[str, str]:
    return _standins(str(tmp_path_factory.mktemp("standin-4b")), SPEC_4B, NAMES_4B)


@pytest.fixture(scope="session")
def standins_30b(tmp_path_factory) -> Dict[str, str]:
    return _standins(str(tmp_path_factory.mktemp("standin-30b")), SPEC_30B, NAMES_30B)


@pytest.fixture(scope="session")
def standins(standins_4b, standins_30b) -> Dict[str, str]:
    return {**standins_4b, **standins_30b}


def substitutions(path: str, standins: Dict[str, str]) -> Tuple[str, ...]:
    """``NAME=PATH`` for every stand-in model the YAML file names (as --model takes them)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    named = {data.get("base_model")} | {m["model"] for m in data.get("models") or []}
    missing = named - set(standins) - {None}
    assert not missing, f"{path} names models without a stand-in: {missing}"
    return tuple(f"{name}={standins[name]}" for name in sorted(named - {None}))


def load(path: str, standins: Dict[str, str]):
    """The recipe as a validated MergeConfiguration, model names -> stand-in paths."""
    from mi_mergekit.merge.config import load_recipe

    config, _ = load_recipe(path, substitutions(path, standins))
    return config


def run_recipe(path: str, standins: Dict[str, str], out: str):
    """Run a committed YAML with mergekit's own run_merge on the stand-ins; load the output."""
    from mergekit.merge import MergeOptions, run_merge

    from common import load_model

    run_merge(load(path, standins), out, options=MergeOptions(quiet=True))
    return load_model(out)


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def depth_of(name: str, num_layers: int) -> int:
    """Decoder depth from the tensor name alone: layer index; embeddings at 0; final
    norm and lm_head at the last layer (DESIGN.md §3 placement)."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1))
    if "embed_tokens" in name:
        return 0
    assert name in ("model.norm.weight", "lm_head.weight"), name
    return num_layers - 1


def is_mlp(name: str) -> bool:
    """FFN sub-layer (dense MLP or MoE router/experts) and the norm that feeds it."""
    return ".mlp." in name or "post_attention_layernorm" in name


def is_attention(name: str) -> bool:
    """Attention sub-layer (projections, q/k norms) and the norm that feeds it."""
    return ".self_attn." in name or "input_layernorm" in name
