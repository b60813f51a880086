"""nway_interpolation: Σ wᵢ Θᵢ over 3+ models, against stock `linear`, exact at the vertices."""

import os

import pytest
import torch
import yaml

from common import config_from, load_model
from common import console
from warm import run_warm
from mergekit import merge_methods
from mergekit.merge import MergeOptions, run_merge
from mergekit.merge_methods.base import TensorGroup
from mi_mergekit.errors import MergeInputError
from mi_mergekit.methods.nway import nway_interpolation
from synthetic import PairSpec, build_pair

WEIGHTS = [0.2, 0.3, 0.5]


@pytest.fixture(scope="module")
def triple(tmp_path_factory):
    """Base, Instruct, Thinking: three fine-tune-like perturbations of one random model."""
    root = tmp_path_factory.mktemp("triple")
    instruct, thinking = build_pair(str(root / "it"), PairSpec(num_layers=2))
    base, _ = build_pair(str(root / "b"), PairSpec(num_layers=2, noise=0.2))
    return base, instruct, thinking


def _recipe(models, weights, method="nway_interpolation", dtype="float32", **parameters):
    data = {
        "merge_method": method,
        "models": [{"model": m, "parameters": {"weight": w}} for m, w in zip(models, weights)],
        "dtype": dtype,
    }
    if parameters:
        data["parameters"] = parameters
    return data


def _merge(data, out):
    run_merge(config_from(data), str(out), options=MergeOptions(quiet=True))
    return load_model(str(out))


def test_matches_stock_linear(triple, tmp_path):
    ours = _merge(_recipe(triple, WEIGHTS), tmp_path / "nway")
    stock = _merge(_recipe(triple, WEIGHTS, method="linear"), tmp_path / "linear")
    assert ours.keys() == stock.keys()
    for name in ours:
        assert ours[name].dtype == stock[name].dtype == torch.float32
        diff = (ours[name] - stock[name]).abs().max().item()
        assert diff <= 2e-7, (name, diff)
    # and it really is the weighted sum of the inputs
    inputs = [load_model(m) for m in triple]
    for name in ours:
        expected = sum(w * x[name].double() for w, x in zip(WEIGHTS, inputs))
        assert torch.allclose(ours[name].double(), expected, rtol=0, atol=2e-7), name


@pytest.mark.parametrize("vertex", [0, 1, 2])
def test_exact_at_the_vertices(triple, tmp_path, vertex):
    weights = [1.0 if i == vertex else 0.0 for i in range(3)]
    out = _merge(_recipe(triple, weights, dtype="bfloat16"), tmp_path / "v")
    source = load_model(triple[vertex])
    assert out.keys() == source.keys()
    for name in out:
        assert out[name].dtype == source[name].dtype and torch.equal(out[name], source[name]), name


def test_weights_must_sum_to_one_unless_normalized(triple, tmp_path):
    with pytest.raises(MergeInputError, match="sum to 1.2"):
        _merge(_recipe(triple, [0.4, 0.4, 0.4]), tmp_path / "bad")
    ours = _merge(_recipe(triple, [2.0, 3.0, 5.0], normalize=True), tmp_path / "norm")
    stock = _merge(_recipe(triple, [2.0, 3.0, 5.0], method="linear", normalize=True), tmp_path / "lin")
    for name in ours:
        assert (ours[name] - stock[name]).abs().max().item() <= 2e-7, name


def _groups(n_models, shape=(64, 48), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(shape, generator=g).to(dtype) for _ in range(n_models)]
    return tensors, TensorGroup.from_tensors(tensors, name="model.layers.0.mlp.up_proj.weight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("weights", [[0.2, 0.3, 0.5], [0.25, 0.25, 0.25, 0.25], [0.7, -0.2, 0.5], [0.5, 0.5]])
def test_kernel_against_linear_directly(dtype, weights):
    tensors, group = _groups(len(weights), dtype=dtype)
    (ours,) = nway_interpolation([group], parameters={"weight": weights})
    (stock,) = merge_methods.get("linear")([group], parameters={"weight": weights})
    assert ours.dtype == stock.dtype == dtype
    if dtype == torch.bfloat16:  # one rounding of nearly equal fp32 values
        assert (ours.float() - stock.float()).abs().max().item() <= 2 ** -7 * 8
    else:
        assert (ours - stock).abs().max().item() <= 2e-7 * max(1.0, stock.abs().max().item())


def test_kernel_vertex_bitwise_and_nonfinite():
    tensors, group = _groups(3, dtype=torch.bfloat16)
    for k in range(3):
        weights = [float(i == k) for i in range(3)]
        (out,) = nway_interpolation([group], parameters={"weight": weights})
        assert torch.equal(out, tensors[k])
    bad = [t.clone() for t in tensors]
    bad[1][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        nway_interpolation([TensorGroup.from_tensors(bad, name="x")], parameters={"weight": WEIGHTS})
    with pytest.raises(MergeInputError, match="sum to 0"):
        nway_interpolation([group], parameters={"weight": [1.0, -1.0, 0.0], "normalize": True})


def test_mergekit_yaml_runs_nway(triple, tmp_path):
    path = tmp_path / "nway.yaml"
    data = _recipe(triple, WEIGHTS, dtype="bfloat16")
    data["base_model"] = triple[1]
    path.write_text(yaml.safe_dump(data))
    result = run_warm([console("mergekit-yaml"), str(path), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    out = load_model(str(tmp_path / "out"))
    inputs = [load_model(m) for m in triple]
    for name in out:
        expected = sum(w * x[name].float() for w, x in zip(WEIGHTS, inputs)).to(torch.bfloat16)
        assert (out[name].float() - expected.float()).abs().max() <= 2 ** -7 * expected.float().abs().max(), name
    assert os.path.exists(tmp_path / "out" / "config.json")
