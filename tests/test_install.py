"""Registration after an ordinary `pip install` of the wheel, in a fresh virtual environment.

The new environment gets only our wheel and mergekit (no deps); torch, transformers
and mergekit's other dependencies are borrowed from the test interpreter through a
path entry, so the test needs no download beyond mergekit's own small wheel.
"""

import os
import site
import subprocess
import sys
import sysconfig

import pytest

from common import run
from synthetic import recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mergekit_version():
    from importlib.metadata import version

    return version("mergekit")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheelenv")
    build = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), REPO])
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = [p for p in os.listdir(root / "dist") if p.endswith(".whl")]
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = run([
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet",
        str(root / "dist" / wheel), f"mergekit=={_mergekit_version()}",
    ])
    assert install.returncode == 0, install.stdout + install.stderr
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # dependencies (torch, transformers, ...) from the test interpreter, after our own site-packages
    with open(os.path.join(purelib, "zz_test_deps.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    return venv, purelib


def test_wheel_ships_the_autoload_pth(wheel_env):
    _, purelib = wheel_env
    assert os.path.exists(os.path.join(purelib, "mi_mergekit_autoload.pth"))
    assert os.path.isdir(os.path.join(purelib, "mi_mergekit"))


def test_startup_imports_nothing_heavy(wheel_env):
    venv, _ = wheel_env
    probe = (
        "import sys; from mi_mergekit._autoload import PostImportFinder;"
        "print('torch' in sys.modules, 'mergekit' in sys.modules,"
        " any(isinstance(f, PostImportFinder) for f in sys.meta_path))"
    )
    result = run([str(venv / "bin" / "python"), "-c", probe])
    assert result.stdout.split() == ["False", "False", "True"], result.stderr


def test_unchanged_mergekit_yaml_finds_the_method(wheel_env, dense_pair, tmp_path):
    venv, purelib = wheel_env
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8, layer_start=2))
    result = run([str(venv / "bin" / "mergekit-yaml"), str(path), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "mi_plan.json").exists()
    where = run([str(venv / "bin" / "python"), "-c", "import mi_mergekit; print(mi_mergekit.__file__)"])
    assert where.stdout.startswith(purelib)  # the wheel's copy, not the source tree


def test_python_api_run_merge_finds_the_method(wheel_env, dense_pair, tmp_path):
    venv, _ = wheel_env
    instruct, thinking = dense_pair
    script = (
        "import sys, yaml\n"
        "from mergekit.config import MergeConfiguration\n"
        "from mergekit.merge import MergeOptions, run_merge\n"
        "cfg = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1])))\n"
        "run_merge(cfg, sys.argv[2], options=MergeOptions(quiet=True))\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.5))
    result = run([str(venv / "bin" / "python"), "-c", script, str(path), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "config.json").exists()


def test_opt_out_then_explicit_register(wheel_env, dense_pair, tmp_path):
    venv, _ = wheel_env
    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.5))
    off = {"MI_MERGEKIT_NO_AUTOLOAD": "1"}
    result = run([str(venv / "bin" / "mergekit-yaml"), str(path), str(tmp_path / "a")], env=off)
    assert result.returncode != 0
    assert "Unimplemented merge method model_interpolation" in result.stderr
    script = (
        "import sys, mi_mergekit; mi_mergekit.register()\n"
        "from mergekit.scripts.run_yaml import main\n"
        "sys.argv = ['mergekit-yaml', sys.argv[1], sys.argv[2]]; main()\n"
    )
    result = run([str(venv / "bin" / "python"), "-c", script, str(path), str(tmp_path / "b")], env=off)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b" / "mi_plan.json").exists()


def test_development_install_has_the_autoload_pth_too():
    """The environment running these tests installed the project (CI: editable)."""
    assert any(
        os.path.exists(os.path.join(d, "mi_mergekit_autoload.pth")) for d in site.getsitepackages()
    )


@pytest.mark.parametrize("first", ["mi_mergekit.merge.engine", "mi_mergekit.merge.method", "mi_mergekit.merge.plan"])
def test_importing_the_merge_core_first_still_registers_the_methods(first):
    """The autoload hook fires while mi_mergekit.merge.method imports mergekit: the methods,
    which build on it, are registered when it has finished, without a 'could not hook' line."""
    code = (f"import {first}\n"
            "from mergekit import merge_methods\n"
            "print(type(merge_methods.get('model_interpolation')).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ModelInterpolation" and "could not hook" not in result.stderr
