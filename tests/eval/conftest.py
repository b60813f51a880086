"""Shared fixtures: tiny models built once per session, fixture files, offline NLTK data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One intra-op thread, here and in the subprocesses the tests start: the machine is shared,
# and tiny models gain nothing from more.
os.environ["OMP_NUM_THREADS"] = "1"

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session", autouse=True)
def _offline_nltk(tmp_path_factory):
    """Point the punkt_tab writer at a fresh directory, so the tests do not depend on ~/.cache."""
    os.environ["MI_MERGEKIT_NLTK_DATA"] = str(tmp_path_factory.mktemp("nltk_data"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("models") / "thinking-tiny", seed=0, think_close_bias=3.0)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
