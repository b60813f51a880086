"""Bad input: a clear error naming the problem, and no output folder left behind."""

import os
import signal
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import mi_mergekit.merge.engine as engine
from common import merge, mi_config
from common import console
from warm import run_warm
from mi_mergekit.errors import MergeInputError, NonFiniteTensorError, OutputPathError
from synthetic import PairSpec, build_pair


def _edit_checkpoint(path, edit):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _assert_nothing_written(tmp_path, out):
    assert not os.path.exists(out)
    leftovers = [n for n in os.listdir(tmp_path) if ".incomplete-" in n]
    assert leftovers == []


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d, i, t: d.pop("base_model"), "needs `base_model:`"),
        (lambda d, i, t: d["models"].append({"model": os.path.dirname(i)}), "exactly one model besides"),
        (lambda d, i, t: d["models"].append({"model": i + "-copy"}), "instruct-copy not found: no such folder"),
        (lambda d, i, t: d.update(models=[{"model": i}]), "exactly one model besides"),
        (lambda d, i, t: d["parameters"].update(lamda=0.5), "unknown parameter"),
        (lambda d, i, t: d["parameters"].pop("lambda"), "lambda"),
        (lambda d, i, t: d["models"][0].update(parameters={"weight": 0.8}), "per-model parameters"),
        (lambda d, i, t: d["parameters"].update(layer_end=4), r"layer_end=4 is outside .*\[0, 3\]"),
        (lambda d, i, t: d["parameters"].update(layer_start=-9), "layer_start=-9 is outside"),
        (lambda d, i, t: d["parameters"].update(layer_start=3, layer_end=1), "empty layer window"),
        (lambda d, i, t: d["parameters"].update(exclude_modules="ffn"), "unknown module group 'ffn'"),
        (lambda d, i, t: d["parameters"].update(template_from="base"), "parameters.template_from: 'base' is not one of"),
        (lambda d, i, t: d["parameters"].update(**{"lambda": float("nan")}), "finite"),
    ],
)
def test_recipe_errors(dense_pair, tmp_path, mutate, message):
    instruct, thinking = dense_pair
    data = mi_config(instruct, thinking)
    mutate(data, instruct, thinking)
    with pytest.raises(MergeInputError, match=message):
        merge(data, tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_architectures_differ(dense_pair, moe_pair, tmp_path):
    with pytest.raises(MergeInputError, match="architectures differ"):
        merge(mi_config(dense_pair[0], moe_pair[1]), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_layer_counts_differ(dense_pair, tmp_path_factory, tmp_path):
    _, short = build_pair(str(tmp_path_factory.mktemp("short")), PairSpec(num_layers=3))
    with pytest.raises(MergeInputError, match="layer counts differ.* 4 .* 3"):
        merge(mi_config(dense_pair[0], short), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_tensor_missing_from_one_side(dense_pair, copy_pair, tmp_path):
    instruct, thinking = copy_pair(dense_pair)
    _edit_checkpoint(thinking, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(MergeInputError, match=r"only in Instruct \(1\): model.layers.2.mlp.up_proj"):
        merge(mi_config(instruct, thinking), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_shape_mismatch(dense_pair, copy_pair, tmp_path):
    instruct, thinking = copy_pair(dense_pair)
    name = "model.layers.1.self_attn.o_proj.weight"
    _edit_checkpoint(thinking, lambda t: t.update({name: t[name][:, :16].contiguous()}))
    with pytest.raises(MergeInputError, match=r"differ in shape.*o_proj.*\(32, 32\) vs \(32, 16\)"):
        merge(mi_config(instruct, thinking), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_tensor_without_a_role_refuses_only_module_selection(dense_pair, copy_pair, tmp_path):
    """An extra tensor in every layer that no role rule knows: the whole model and a window
    interpolate it with the rest; a module selection is refused, naming its pattern."""
    instruct, thinking = copy_pair(dense_pair)
    name = "model.layers.{}.adapter.weight"
    for k, path in enumerate((instruct, thinking)):
        _edit_checkpoint(path, lambda t: t.update({name.format(i): torch.full((4,), 1.0 + k) for i in range(4)}))
    whole = merge(mi_config(instruct, thinking, 0.25), tmp_path / "whole")
    assert torch.equal(whole[name.format(2)], torch.full((4,), 1.25))
    window = merge(mi_config(instruct, thinking, 0.25, layer_start=2), tmp_path / "window")
    assert torch.equal(window[name.format(1)], torch.full((4,), 1.0))
    assert torch.equal(window[name.format(2)], torch.full((4,), 1.25))
    with pytest.raises(MergeInputError, match=r"exclude_modules: mlp.*model\.layers\.N\.adapter\.weight"):
        merge(mi_config(instruct, thinking, exclude_modules="mlp"), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input(dense_pair, copy_pair, tmp_path, value):
    instruct, thinking = copy_pair(dense_pair)
    name = "model.layers.3.mlp.down_proj.weight"

    def poison(t):
        t[name] = t[name].clone()
        t[name][0, 0] = value

    _edit_checkpoint(thinking, poison)
    with pytest.raises(NonFiniteTensorError, match=f"Thinking tensor '{name}' contains 1 NaN/inf"):
        merge(mi_config(instruct, thinking), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_non_finite_input_outside_the_window_is_still_an_error(dense_pair, copy_pair, tmp_path):
    instruct, thinking = copy_pair(dense_pair)
    name = "model.layers.0.mlp.down_proj.weight"
    _edit_checkpoint(instruct, lambda t: t.update({name: torch.full_like(t[name], float("nan"))}))
    with pytest.raises(NonFiniteTensorError, match="Instruct tensor"):
        merge(mi_config(instruct, thinking, layer_start=2), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_non_finite_output(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    with pytest.raises(NonFiniteTensorError, match="merged tensor"):
        merge(mi_config(instruct, thinking, lam=1e39, dtype="float32", extrapolate=True), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_interrupted_run_leaves_nothing(dense_pair, tmp_path, monkeypatch):
    instruct, thinking = dense_pair
    calls = []
    real = engine.align_slice

    def interrupt_on_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "align_slice", interrupt_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        merge(mi_config(instruct, thinking), tmp_path / "out")
    _assert_nothing_written(tmp_path, tmp_path / "out")


def test_killed_process_leaves_no_finished_looking_folder(dense_pair, tmp_path):
    """SIGKILL mid-merge: at most a hidden '.out.incomplete-*' folder without config.json."""
    instruct, thinking = dense_pair
    recipe = tmp_path / "r.yaml"
    from synthetic import recipe as make_recipe

    recipe.write_text(make_recipe(instruct, thinking))
    script = (
        "import os, signal, sys\n"
        "import mi_mergekit.merge.engine as k\n"
        "real = k.align_slice; n = [0]\n"
        "def f(*a, **kw):\n"
        "    n[0] += 1\n"
        "    if n[0] == 10: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **kw)\n"
        "k.align_slice = f\n"
        "from mergekit.scripts.run_yaml import main\n"
        "sys.argv = ['mergekit-yaml', sys.argv[1], sys.argv[2]]\n"
        "main()\n"
    )
    result = run_warm([sys.executable, "-c", script, str(recipe), str(tmp_path / "out")])
    assert result.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "out")
    for name in os.listdir(tmp_path):
        if name.startswith("."):
            assert ".incomplete-" in name
            assert not os.path.exists(tmp_path / name / "config.json")


def test_output_path_is_a_file(dense_pair, tmp_path):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        merge(mi_config(*dense_pair), target)
    assert target.read_text() == "not a folder"


def test_mergekit_yaml_prints_a_clean_error_and_exits_nonzero(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    from synthetic import recipe as make_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(make_recipe(instruct, thinking, layer_end=40))
    result = run_warm([console("mergekit-yaml"), str(recipe), str(tmp_path / "out")])
    assert result.returncode == 1
    assert "Error: layer_end=40 is outside the model's decoder layers [0, 3]" in result.stderr
    assert "Traceback" not in result.stderr
    _assert_nothing_written(tmp_path, tmp_path / "out")
