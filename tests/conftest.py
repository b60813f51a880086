"""Shared fixtures: tiny random Instruct/Thinking pairs built in code (no network)."""

import os
import shutil

import pytest

import mi_mergekit
from synthetic import PairSpec, build_pair

mi_mergekit.register()

@pytest.fixture(scope="session")
def dense_pair(tmp_path_factory):
    """Qwen3, 4 layers, tied embeddings, bf16."""
    return build_pair(str(tmp_path_factory.mktemp("dense")), PairSpec(num_layers=4))


@pytest.fixture(scope="session")
def untied_pair(tmp_path_factory):
    """Qwen3, 4 layers, separate lm_head, bf16."""
    return build_pair(
        str(tmp_path_factory.mktemp("untied")), PairSpec(num_layers=4, tie_word_embeddings=False, seed=1)
    )


@pytest.fixture(scope="session")
def moe_pair(tmp_path_factory):
    """Qwen3-MoE, 3 layers, 4 experts, untied lm_head, bf16, per-expert checkpoint layout."""
    return build_pair(
        str(tmp_path_factory.mktemp("moe")),
        PairSpec(num_layers=3, moe=True, tie_word_embeddings=False, seed=2),
    )


@pytest.fixture
def copy_pair(tmp_path):
    """Copy a pair to a scratch folder (for tests that corrupt a checkpoint)."""

    def _copy(pair):
        out = []
        for path in pair:
            target = tmp_path / ("src-" + os.path.basename(path))
            shutil.copytree(path, target)
            out.append(str(target))
        return tuple(out)

    return _copy
