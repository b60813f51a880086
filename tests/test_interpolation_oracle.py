"""model_interpolation against independent oracles: stock mergekit methods and the formula."""

import re

import pytest
import torch

from common import load_model, merge, mi_config, oracle
from mi_mergekit.merge.kernel import interpolate


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8, 1.0])
def test_equals_stock_task_arithmetic_bitwise(dense_pair, tmp_path, lam):
    instruct, thinking = dense_pair
    ours = merge(mi_config(instruct, thinking, lam=lam, dtype="float32"), tmp_path / "mi")
    stock = merge(
        {
            "merge_method": "task_arithmetic",
            "base_model": instruct,
            "models": [{"model": thinking, "parameters": {"weight": lam}}],
            "dtype": "float32",
        },
        tmp_path / "ta",
    )
    assert set(ours) == set(stock)
    for name in ours:
        assert ours[name].dtype == torch.float32
        assert torch.equal(ours[name], stock[name]), name


def test_equals_stock_linear_within_2e7(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    lam = 0.8
    ours = merge(mi_config(instruct, thinking, lam=lam, dtype="float32"), tmp_path / "mi")
    stock = merge(
        {
            "merge_method": "linear",
            "models": [
                {"model": instruct, "parameters": {"weight": 1 - lam}},
                {"model": thinking, "parameters": {"weight": lam}},
            ],
            "dtype": "float32",
        },
        tmp_path / "linear",
    )
    # (1-λ)·I + λ·T and I + λ(T-I) round differently: equal up to the last bit
    for name in ours:
        assert torch.allclose(ours[name], stock[name], rtol=0, atol=2e-7), name


def test_matches_formula_and_lambda_endpoints(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    for lam in (0.0, 1.0, 0.5):
        out = merge(mi_config(instruct, thinking, lam=lam, dtype="float32"), tmp_path / f"l{lam}")
        for name in i:
            assert torch.allclose(out[name], oracle(i[name], t[name], lam), rtol=0, atol=1e-6)
            if lam == 0.0:
                assert torch.equal(out[name], i[name].float()), name
            if lam == 1.0:
                assert torch.equal(out[name], t[name].float()), name


def test_bf16_output_is_float32_result_rounded_once(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    full = merge(mi_config(instruct, thinking, lam=0.8, dtype="float32"), tmp_path / "fp32")
    rounded = merge(
        mi_config(instruct, thinking, lam=0.8, dtype="float32", out_dtype="bfloat16"),
        tmp_path / "bf16",
    )
    native = merge(mi_config(instruct, thinking, lam=0.8, dtype=None), tmp_path / "native")
    for name in full:
        assert rounded[name].dtype == torch.bfloat16
        assert torch.equal(rounded[name], full[name].to(torch.bfloat16)), name
        # bf16 checkpoints merged without a dtype: computed in fp32, rounded once
        assert native[name].dtype == torch.bfloat16
        assert torch.equal(native[name], full[name].to(torch.bfloat16)), name


def test_kernel_does_not_touch_its_inputs():
    a = torch.randn(8, 8)
    b = torch.randn(8, 8)
    a0, b0 = a.clone(), b.clone()
    out = interpolate(a, b, 0.25)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    assert out.dtype == torch.float32
    assert torch.equal(out, (b - a) * 0.25 + a)


def test_extrapolation_is_allowed_and_logged(dense_pair, tmp_path, caplog):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    with caplog.at_level("WARNING"):
        out = merge(mi_config(instruct, thinking, lam=1.25, dtype="float32"), tmp_path / "x")
    name = "model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(out[name], oracle(i[name], t[name], 1.25), rtol=0, atol=1e-6)
    said = [r.getMessage() for r in caplog.records if "outside [0, 1]" in r.getMessage()]
    assert said == ["λ = 1.25 lies outside [0, 1]: extrapolating beyond the Thinking model"]  # one line, once


@pytest.mark.parametrize("lam, hint", [(80, "a percentage? did you mean 0.8?"), (8, "did you mean 0.8?"),
                                       (-5, "did you mean -0.5?"), (250, "far outside [0, 1] (0 = the Instruct")])
def test_an_implausible_lambda_is_refused_with_the_likely_intent(dense_pair, tmp_path, lam, hint):
    from mi_mergekit.errors import MergeInputError

    instruct, thinking = dense_pair
    with pytest.raises(MergeInputError, match="parameters.lambda: λ = .*" + re.escape(hint)):
        merge(mi_config(instruct, thinking, lam=lam, dtype="float32"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_far_extrapolation_when_asked_for(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, lam=3.0, dtype="float32", extrapolate=True), tmp_path / "x")
    name = "model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(out[name], oracle(i[name], t[name], 3.0), rtol=0, atol=1e-5)


def test_lambda_gradient_across_layers(dense_pair, tmp_path):
    """λ can vary by layer the way every mergekit parameter can (a gradient list)."""
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, lam=[0.0, 0.9], dtype="float32"), tmp_path / "g")
    for layer, lam in enumerate([0.0, 0.3, 0.6, 0.9]):
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        assert torch.allclose(out[name], oracle(i[name], t[name], lam), rtol=0, atol=1e-6), layer


def test_lambda_by_filter_like_any_mergekit_parameter(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    i, t = load_model(instruct), load_model(thinking)
    lam = [{"filter": "mlp", "value": 0.25}, {"value": 0.75}]
    out = merge(mi_config(instruct, thinking, lam=lam, dtype="float32"), tmp_path / "f")
    for name in i:
        expected = 0.25 if ".mlp." in name else 0.75
        assert torch.equal(out[name], oracle(i[name], t[name], expected)), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_blocked_kernel_equals_whole_tensor_arithmetic(monkeypatch, dtype):
    """The cache-blocked CPU kernel does the same element-wise operations: same bits."""
    import mi_mergekit.merge.kernel as kernel

    monkeypatch.setattr(kernel, "BLOCK", 1000)  # many blocks and a ragged last one
    a = torch.randn(37, 129).to(dtype)
    b = (a.double() + 0.01 * torch.randn(37, 129, dtype=torch.float64)).to(dtype)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    expected = (b.to(compute) - a.to(compute)) * 0.8 + a.to(compute)
    assert torch.equal(kernel.interpolate(a, b, 0.8), expected)
    rounded = kernel.interpolate(a, b, 0.8, out_dtype=dtype)
    assert rounded.dtype == dtype and torch.equal(rounded, expected.to(dtype))
    assert kernel.interpolate(a[:0], b[:0], 0.8).shape == (0, 129)
    # a sweep's shared delta: each λ equal to its own whole-tensor computation
    many = kernel.interpolate_many(a, b, [0.8, 0.3, 1.5], out_dtype=dtype)
    for lam, value in zip([0.8, 0.3, 1.5], many):
        whole = ((b.to(compute) - a.to(compute)) * lam + a.to(compute)).to(dtype)
        assert torch.equal(value, whole), lam
    # any slice computed on its own gives the same bits (the streaming engine's slices)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    pieces = [kernel.interpolate(flat_a[s:s + 1234], flat_b[s:s + 1234], 0.8, out_dtype=dtype)
              for s in range(0, flat_a.numel(), 1234)]
    assert torch.equal(torch.cat(pieces), rounded.reshape(-1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_finiteness_check_sees_every_non_finite_value(dtype, value):
    from mi_mergekit.merge.checks import all_finite as _all_finite

    x = torch.randn(1000).to(dtype)
    assert _all_finite(x) and _all_finite(x[:0])
    x[617] = value
    assert not _all_finite(x)
    assert not _all_finite(x.view(10, 100)[:, 10:20].t())  # non-contiguous views too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_end_points_are_the_inputs_bit_for_bit(dtype):
    """λ = 0 is Θ_I and λ = 1 is Θ_T exactly, also where Θ_I + 1·(Θ_T − Θ_I) rounds
    (float32: 1 + (1e-8 − 1) = 0) and for signed zeros; every path of the kernel."""
    from mi_mergekit.merge.kernel import interpolate_from_delta, interpolate_many, task_vector

    instruct = torch.tensor([1.0, -0.0, 3.0, 1e30, 0.1], dtype=dtype)
    thinking = torch.tensor([1e-8, 2.0, -0.0, -3.5, 0.7], dtype=dtype)
    for lam, expected in ((0.0, instruct), (1.0, thinking), (1, thinking)):
        outs = [interpolate(instruct, thinking, lam, out_dtype=dtype),
                interpolate_many(instruct, thinking, [0.5, lam], out_dtype=dtype)[1],
                interpolate_from_delta(instruct, task_vector(instruct, thinking), lam, out_dtype=dtype,
                                       thinking=thinking)]
        for out in outs:
            assert out.view(torch.uint8).tolist() == expected.view(torch.uint8).tolist(), (lam, out)
    if dtype == torch.float32:  # the plain formula is not exact there: why the ends are copied
        assert (instruct + (thinking - instruct))[0].item() == 0.0
