"""Helpers in the style of mergekit's tests/common.py: run a merge, read the result."""

import os
import subprocess
import sys
from typing import Dict, Optional

import pytest

import torch
import yaml
from safetensors.torch import load_file

from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge

from synthetic import recipe_data


def load_model(path: str) -> Dict[str, torch.Tensor]:
    tensors = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(path, name)))
    return tensors


def config_from(data: dict) -> MergeConfiguration:
    return MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(data)))


def mi_config(instruct: str, thinking: str, lam=0.8, dtype: Optional[str] = "float32",
              out_dtype: Optional[str] = None, **parameters) -> dict:
    """A model_interpolation recipe dict; float32 by default so oracles compare exactly."""
    return recipe_data(instruct, thinking, lam, dtype, out_dtype, **parameters)


def merge(data: dict, out_path: str, **options) -> Dict[str, torch.Tensor]:
    """Run mergekit's own run_merge (as its Python API users do) and load the output."""
    run_merge(
        config_from(data),
        str(out_path),
        options=MergeOptions(quiet=True, **options),
    )
    return load_model(str(out_path))


def oracle(instruct: torch.Tensor, thinking: torch.Tensor, lam: float) -> torch.Tensor:
    """I + λ(T − I) in float32, written the obvious way."""
    i, t = instruct.to(torch.float32), thinking.to(torch.float32)
    return i + (t - i) * lam


BIN = os.path.dirname(sys.executable)


def console(name: str) -> str:
    """Path of a console script installed next to this interpreter."""
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.fail(f"console script {name} is not installed next to {sys.executable}")
    return path


def command_env(env: Optional[dict] = None) -> dict:
    """The environment :func:`run` gives a command: this process's, unbuffered, with ``env`` over it."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}


def run(args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a command the way a user would; capture output for assertions. ``timeout`` only
    guards against a hang (a slow shared machine must not fail a correct run)."""
    env = command_env(kwargs.pop("env", None))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)
