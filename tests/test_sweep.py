"""mi-mergekit sweep: n outputs from one pass, each bit for bit a single merge."""

import filecmp
import os
import sys
from collections import Counter

import pytest
import torch
import yaml

from common import config_from, load_model, merge, mi_config
from warm import run_warm
from mergekit.io.lazy_tensor_loader import LazyTensorLoader
from mergekit.options import MergeOptions
from mi_mergekit.merge.lambdas import LambdaSpecError, format_lambda, output_name, parse_lambdas
from mi_mergekit.merge.sweep import run_sweep

FILES = ("config.json", "mi_plan.json", "generation_config.json", "tokenizer.json",
         "tokenizer_config.json", "chat_template.jinja", "mergekit_config.yml")


def test_parse_lambdas_is_exact_and_inclusive():
    def labels(spec):
        return [format_lambda(v) for v in parse_lambdas(spec)]

    assert labels("0.1:0.9:0.1") == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert labels("0:1:0.25") == ["0", "0.25", "0.5", "0.75", "1"]
    assert labels("0.8, 0.5,0.50,1.0,-0.1") == ["0.8", "0.5", "1", "-0.1"]
    assert labels("0.2:0.3:0.1,0.9") == ["0.2", "0.3", "0.9"]
    assert format_lambda(0.30000000000000004) == "0.30000000000000004"
    assert output_name("0.5") == "lambda_0.5" and output_name(1.0) == "lambda_1"
    for bad in ("", "a", "0.1:0.9", "0.5:0.1:0.1", "0:1:0", "0:1:-0.1", "nan"):
        with pytest.raises(LambdaSpecError):
            parse_lambdas(bad)


def _single(data, lam, out):
    single = {**data, "parameters": {**data["parameters"], "lambda": lam}}
    merge(single, out)
    return out


def _assert_same_output(got, ref):
    a, b = load_model(str(got)), load_model(str(ref))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    # same tensors, same header: the weight files are identical byte for byte
    assert filecmp.cmp(got / "model.safetensors", ref / "model.safetensors", shallow=False)
    for name in FILES:
        assert os.path.exists(got / name) == os.path.exists(ref / name), name
        if os.path.exists(ref / name):
            assert filecmp.cmp(got / name, ref / name, shallow=False), name


RECIPES = {
    "whole": ("dense_pair", dict(dtype="bfloat16")),
    "window": ("untied_pair", dict(dtype="float32", out_dtype="bfloat16", layer_start=1, layer_end=2)),
    "modules": ("untied_pair", dict(dtype="bfloat16", exclude_modules="mlp", template_from="instruct")),
    "moe_attention": ("moe_pair", dict(dtype="bfloat16", modules="attention,moe", layer_start=-2)),
}


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_sweep_equals_single_merges_bitwise(kind, request, tmp_path):
    fixture, params = RECIPES[kind]
    instruct, thinking = request.getfixturevalue(fixture)
    data = mi_config(instruct, thinking, lam=0.8, **params)
    lambdas = ["0", "0.45", "1.2"]
    outputs = run_sweep(config_from(data), lambdas, str(tmp_path / "sweep"), MergeOptions(quiet=True))
    assert [o.path for o in outputs] == [str(tmp_path / "sweep" / f"lambda_{x}") for x in lambdas]
    assert sorted(os.listdir(tmp_path / "sweep")) == [f"lambda_{x}" for x in lambdas]  # no staging left
    for output in outputs:
        ref = _single(data, output.lam, tmp_path / f"ref_{output.label}")
        _assert_same_output(tmp_path / "sweep" / f"lambda_{output.label}", ref)
        plan = yaml.safe_load((ref / "mergekit_config.yml").read_text())
        assert plan["parameters"]["lambda"] == output.lam


def test_mergekit_engine_reads_each_input_tensor_once(untied_pair, tmp_path, monkeypatch):
    """MI_MERGEKIT_ENGINE=mergekit: one mergekit executor for all λ (see test_engine for ours)."""
    from mi_mergekit.merge import mergekit_engine

    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "mergekit")
    instruct, thinking = untied_pair
    reads = Counter()
    original = LazyTensorLoader.get_tensor

    def counting(self, key, *args, **kwargs):
        reads[(self.index.base_path, key)] += 1
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(LazyTensorLoader, "get_tensor", counting)
    # the per-tensor work (dtype alignment, Θ_T − Θ_I) is shared by all λ as well
    shared_cls, interp_cls = mergekit_engine._tasks()
    runs = Counter()
    for cls in (shared_cls, interp_cls):
        original_execute = cls.execute

        def execute(self, *args, _original=original_execute, _name=cls.__name__, **kwargs):
            runs[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "execute", execute)
    data = mi_config(instruct, thinking, lam=0.5, layer_start=2, dtype="bfloat16")
    outputs = run_sweep(config_from(data), ["0.1", "0.5", "0.9", "1"], str(tmp_path / "s"),
                        MergeOptions(quiet=True))
    names = {t.name for t in outputs[0].plan.tensors}
    expected = {(os.path.abspath(p), n) for p in (instruct, thinking) for n in names}
    assert {(os.path.abspath(p), n) for p, n in reads} == expected
    assert set(reads.values()) == {1}, [k for k, v in reads.items() if v != 1]
    assert len(outputs) == 4 and all(os.path.isdir(o.path) for o in outputs)
    # one output task per tensor and distinct setting (a kept tensor is one task for every λ)
    distinct = sum(len({o.plan.settings[n] for o in outputs}) for n in names)
    assert runs == {"SharedInputs": len(names), "OutputTensor": distinct} and distinct > 2 * len(names)


def test_unshared_path_and_mergekit_kernel_agree(untied_pair, tmp_path, monkeypatch):
    """share=False runs model_interpolation's own kernel per (tensor, λ): same bytes."""
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "mergekit")
    instruct, thinking = untied_pair
    data = mi_config(instruct, thinking, lam=0.8, dtype="float32", layer_end=2, exclude_modules="attention")
    for share in (True, False):
        run_sweep(config_from(data), ["0.3", "0.9"], str(tmp_path / f"s{share}"), MergeOptions(quiet=True),
                  share=share)
    for lam in ("0.3", "0.9"):
        assert filecmp.cmp(tmp_path / "sTrue" / f"lambda_{lam}" / "model.safetensors",
                           tmp_path / "sFalse" / f"lambda_{lam}" / "model.safetensors", shallow=False)


def test_non_finite_input_fails_the_sweep_without_output(dense_pair, copy_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    instruct, thinking = copy_pair(dense_pair)
    path = os.path.join(thinking, "model.safetensors")
    tensors = load_file(path)
    tensors["model.layers.3.mlp.up_proj.weight"][0, 0] = float("inf")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="NaN/inf"):
        run_sweep(config_from(mi_config(instruct, thinking, dtype="bfloat16")), ["0.2", "0.8"],
                  str(tmp_path / "s"), MergeOptions(quiet=True))
    assert os.listdir(tmp_path / "s") == []


@pytest.mark.parametrize("when", ["during_tensors", "during_tensors_mergekit", "after_weights"])
def test_interrupted_sweep_leaves_no_complete_looking_folder(dense_pair, tmp_path, monkeypatch, when):
    instruct, thinking = dense_pair
    out = tmp_path / "s"
    if when == "during_tensors":
        from mi_mergekit.merge.safetensors_io import StreamingWriter

        original, calls = StreamingWriter.write, []

        def write(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 20:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(StreamingWriter, "write", write)
    elif when == "during_tensors_mergekit":
        from mergekit.io.tensor_writer import TensorWriter

        monkeypatch.setenv("MI_MERGEKIT_ENGINE", "mergekit")
        original, calls = TensorWriter.save_tensor, []

        def save(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 20:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(TensorWriter, "save_tensor", save)
    else:
        import mi_mergekit.merge.run as run_module

        def boom(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(run_module, "finish_output", boom)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config_from(mi_config(instruct, thinking, dtype="bfloat16")), ["0.2", "0.8"],
                  str(out), MergeOptions(quiet=True))
    assert not out.exists() or os.listdir(out) == []


def test_sweep_command_as_a_subprocess(dense_pair, tmp_path):
    """`python -m mi_mergekit.cli sweep` (= `mi-mergekit sweep`) with --model substitution."""
    instruct, thinking = dense_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(mi_config("org/Instruct", "org/Thinking", lam=0.8,
                                               dtype="bfloat16", layer_start=1)))
    out = tmp_path / "sweep"
    result = run_warm([sys.executable, "-m", "mi_mergekit.cli", "sweep", str(recipe), "--lambdas", "0.2:0.6:0.2",
                  str(out), "--model", f"org/Instruct={instruct}", "--model", f"org/Thinking={thinking}"])
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["lambda_0.2", "lambda_0.4", "lambda_0.6"]
    assert "Sweep (3 λ)" in result.stderr and "B/s" in result.stderr  # progress bar in bytes/s
    data = mi_config(instruct, thinking, lam=0.8, dtype="bfloat16", layer_start=1)
    ref = _single(data, 0.4, tmp_path / "ref")
    a, b = load_model(str(out / "lambda_0.4")), load_model(str(ref))
    assert all(torch.equal(a[n], b[n]) for n in b) and a.keys() == b.keys()


def test_sweep_rejects_bad_recipe_before_writing(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    data = mi_config(instruct, thinking, layer_start=7)
    with pytest.raises(Exception, match="layer_start"):
        run_sweep(config_from(data), ["0.5"], str(tmp_path / "s"), MergeOptions(quiet=True))
    assert not (tmp_path / "s").exists()


def test_sharded_outputs_match_sharded_single_merges(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    data = mi_config(instruct, thinking, lam=0.8, dtype="bfloat16")
    options = dict(quiet=True, out_shard_size=20_000)
    run_sweep(config_from(data), ["0.25"], str(tmp_path / "s"), MergeOptions(**options))
    ref = tmp_path / "ref"
    run_merge_options = {**data, "parameters": {"lambda": 0.25}}
    merge(run_merge_options, ref, out_shard_size=20_000)
    got = tmp_path / "s" / "lambda_0.25"
    shards = sorted(n for n in os.listdir(ref) if n.endswith(".safetensors"))
    assert len(shards) > 1 and shards == sorted(n for n in os.listdir(got) if n.endswith(".safetensors"))
    for name in shards + ["model.safetensors.index.json"]:
        assert filecmp.cmp(got / name, ref / name, shallow=False), name
