"""mergekit's ``slices:`` recipe form: bit for bit stock ``task_arithmetic``, both engines.

Every recipe below is written twice, in the same slices layout: with
``model_interpolation`` (λ per slice, per source or as a gradient) and with stock
``task_arithmetic`` (base Instruct, the Thinking source's ``weight`` = λ). In float32
the two give the same bits, through the streaming engine and through mergekit's own
executor. Layouts that cannot mean an Instruct/Thinking interpolation are refused.
"""

import pytest
import torch

from common import merge

LAYERS = 4  # the dense pair


def slices_recipe(instruct, thinking, spans, method="model_interpolation"):
    """``spans``: [(start, end, {where: value})] with where in slice | source."""
    key = "lambda" if method == "model_interpolation" else "weight"
    slices = []
    for start, end, where in spans:
        out_slice = {"sources": [{"model": instruct, "layer_range": [start, end]},
                                 {"model": thinking, "layer_range": [start, end]}]}
        if "slice" in where:
            if method == "model_interpolation":
                out_slice["parameters"] = {"lambda": where["slice"]}
            else:  # task_arithmetic: λ is the Thinking side's weight
                out_slice["sources"][1]["parameters"] = {"weight": where["slice"]}
        if "source" in where:
            out_slice["sources"][1]["parameters"] = {key: where["source"]}
        slices.append(out_slice)
    return {"merge_method": method, "base_model": instruct, "slices": slices, "dtype": "float32"}


CASES = {
    "one-slice": [(0, LAYERS, {"slice": 0.7})],
    "two-slices": [(0, 2, {"slice": 0.3}), (2, LAYERS, {"slice": 0.8})],
    "per-source": [(0, 1, {"source": 0.6}), (1, LAYERS, {"source": 0.25})],
    "gradient": [(0, 3, {"slice": [0.0, 1.0]}), (3, LAYERS, {"source": 0.5})],
}


@pytest.mark.parametrize("engine", ["stream", "mergekit"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_slices_equal_stock_task_arithmetic_bitwise(case, engine, dense_pair, tmp_path, monkeypatch):
    instruct, thinking = dense_pair
    stock = merge(slices_recipe(instruct, thinking, CASES[case], "task_arithmetic"), tmp_path / "ta")
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", engine)
    ours = merge(slices_recipe(instruct, thinking, CASES[case]), tmp_path / "mi")
    assert ours.keys() == stock.keys()
    for name in ours:
        assert ours[name].dtype == torch.float32 and torch.equal(ours[name], stock[name]), name
    from common import load_model

    i = load_model(instruct)
    assert sum(not torch.equal(ours[n], i[n].float()) for n in i) > len(i) // 2


def test_slices_and_models_forms_agree(dense_pair, tmp_path):
    from common import mi_config

    instruct, thinking = dense_pair
    a = merge(slices_recipe(instruct, thinking, [(0, LAYERS, {"slice": 0.7})]), tmp_path / "slices")
    b = merge(mi_config(instruct, thinking, lam=0.7), tmp_path / "models")
    assert all(torch.equal(a[n], b[n]) for n in b) and a.keys() == b.keys()


def _refused(recipe, message, tmp_path):
    from mi_mergekit.errors import MergeInputError

    with pytest.raises(MergeInputError, match=message):
        merge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_layer_stacking_is_refused(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    stacked = slices_recipe(instruct, thinking, [(0, 3, {"slice": 0.5}), (2, LAYERS, {"slice": 0.5})])
    _refused(stacked, "slice 1 starts at layer 2, not 3: slices that repeat, skip or reorder layers", tmp_path)


def test_unequal_ranges_are_refused(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    recipe = slices_recipe(instruct, thinking, [(0, LAYERS, {"slice": 0.5})])
    recipe["slices"][0]["sources"][1]["layer_range"] = [1, LAYERS + 1]
    _refused(recipe, r"slice 0: the sources' layer ranges differ \(\[0, 4\], \[1, 5\]\)", tmp_path)


def test_dropped_layers_are_refused(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    _refused(slices_recipe(instruct, thinking, [(0, 2, {"slice": 0.5})]),
             "the slices end at layer 2 but the models have 4 decoder layers", tmp_path)


def test_a_slice_from_one_model_is_refused(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    recipe = slices_recipe(instruct, thinking, [(0, 2, {"slice": 0.5}), (2, LAYERS, {"slice": 0.5})])
    recipe["slices"][1]["sources"] = recipe["slices"][1]["sources"][:1]
    _refused(recipe, "slice 1 takes layers from", tmp_path)


def test_lambda_on_the_instruct_source_is_refused(dense_pair, tmp_path):
    instruct, thinking = dense_pair
    recipe = slices_recipe(instruct, thinking, [(0, LAYERS, {"slice": 0.5})])
    recipe["slices"][0]["sources"][0]["parameters"] = {"lambda": 0.2}
    _refused(recipe, r"per-source parameters \(\['lambda'\] on", tmp_path)
