"""Shared fixtures: tiny random Instruct/Thinking pairs built in code (no network)."""

import os
import shutil

import pytest

import mi_mergekit
from synthetic import PairSpec, build_pair

mi_mergekit.register()


def _share_the_cores() -> None:
    """Under pytest-xdist (``bash .ci/test`` runs one worker per core), each worker and the
    console scripts it starts compute on its share of the cores: torch's default (every core
    per process) would put N workers × N threads on N cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores()


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


#: files whose tests run real console scripts end to end, build wheels, train, or run the demo:
#: marked ``slow``; ``bash .ci/test -m "not slow"`` is the fast subset to run between edits
#: (the whole suite still runs in CI)
SLOW_FILES = (  # longest first (measured): the order they start in
    "tests/real/",
    "tests/eval/test_transformers_serve.py",
    "tests/test_refused_inputs.py",
    "tests/test_hub_cache.py",
    "tests/test_readme.py",
    "tests/test_install.py",
    "tests/toy/test_toy_compare.py",
    "tests/toy/test_toy_demo.py",
    "tests/test_architectures.py",
    "tests/test_warm.py",
    "tests/test_startup.py",
    "tests/eval/test_routing.py",
    "tests/toy/test_toy_train.py",
    "tests/eval/test_new_backend.py",
)


#: single tests of other files that take 5 s or more (measured): slow too
SLOW_TESTS = (
    "tests/analysis/test_profiles.py::test_estimators_through_the_command",
    "tests/eval/test_cli_resume.py::test_killed_run_resumes_to_the_uninterrupted_result",
)


def _slow_rank(item) -> int:
    return next((rank for rank, prefix in enumerate(SLOW_FILES) if item.nodeid.startswith(prefix)), len(SLOW_FILES))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW_FILES + SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
    # the longest files first (SLOW_FILES is in that order): with one worker per core
    # (bash .ci/test) no long file starts last and keeps one core busy alone at the end
    items.sort(key=_slow_rank)
