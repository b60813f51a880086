"""Shared fixtures: tiny models built once per session, fixture files, offline NLTK data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session", autouse=True)
def _offline_nltk(tmp_path_factory):
    """Point the punkt_tab writer at a fresh directory, so the tests do not depend on ~/.cache."""
    old = os.environ.get("MI_MERGEKIT_NLTK_DATA")
    os.environ["MI_MERGEKIT_NLTK_DATA"] = str(tmp_path_factory.mktemp("nltk_data"))
    yield
    if old is None:
        os.environ.pop("MI_MERGEKIT_NLTK_DATA", None)
    else:
        os.environ["MI_MERGEKIT_NLTK_DATA"] = old


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread in these tests (and their subprocesses, see test_cli_resume.py): the
    machine is shared and tiny models gain nothing from more. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("models") / "thinking-tiny", seed=0, think_close_bias=3.0)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES
