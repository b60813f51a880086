"""Shared fixtures: tiny random Instruct/Thinking pairs built in code (no network)."""

import os
import shutil
import subprocess
import sys

import pytest

import mi_mergekit
from mi_mergekit.synthetic import PairSpec, build_pair

mi_mergekit.register()

BIN = os.path.dirname(sys.executable)


def console(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.fail(f"console script {name} is not installed next to {sys.executable}")
    return path


def run(args, **kwargs) -> subprocess.CompletedProcess:
    """Run a command the way a user would; capture output for assertions."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kwargs)


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
