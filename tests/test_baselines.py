"""baselines/: the TA / TIES parameter mapping of baselines/README.md, guarded by oracles.

TA:   Θ_base + 0.7·(Θ_I − Θ_base) + 0.7·(Θ_T − Θ_base)
TIES: Θ_base + 0.5·disjoint_mean(top-80%(τ_I), top-80%(τ_T))   (TIES' λ = 0.5)
"""

import os

import pytest
import torch
import yaml

from common import load_model
from recipes_fixtures import (  # noqa: F401  (session fixtures)
    BASELINES,
    NAMES_4B,
    NAMES_30B,
    run_recipe,
    standins_4b,
    standins_30b,
    yaml_files,
)

BASELINE_FILES = [
    "ta.yaml", "ta_base.yaml", "ties.yaml", "ties_base.yaml",
    "ta_30b.yaml", "ta_base_30b.yaml", "ties_30b.yaml", "ties_base_30b.yaml",
]


def read(name):
    with open(os.path.join(BASELINES, name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def roles(name):
    names = NAMES_30B if name.endswith("_30b.yaml") else NAMES_4B
    base = names["base"] if "_base" in name else names["hybrid"]
    return names, base


def test_the_baseline_set():
    assert yaml_files(BASELINES) == sorted(BASELINE_FILES)


@pytest.mark.parametrize("name", BASELINE_FILES)
def test_parameters_are_the_documented_mapping(name):
    data = read(name)
    names, base = roles(name)
    assert data["base_model"] == base
    assert [m["model"] for m in data["models"]] == [names["instruct"], names["thinking"]]
    assert data["dtype"] == "float32" and data["out_dtype"] == "bfloat16"
    if name.startswith("ta"):
        assert data["merge_method"] == "task_arithmetic"
        assert all(m["parameters"] == {"weight": 0.7} for m in data["models"])
        assert data["parameters"] == {"normalize": False, "lambda": 1.0}
    else:
        assert data["merge_method"] == "ties"
        assert all(m["parameters"] == {"weight": 1.0, "density": 0.8} for m in data["models"])
        assert data["parameters"] == {"normalize": True, "rescale": False, "lambda": 0.5}


@pytest.mark.parametrize("name", BASELINE_FILES)
def test_the_files_are_what_the_generator_writes_for_the_paper_models(name):
    """baselines/ and mi_mergekit.merge.baselines (what the demo and `compare` merge) say the same."""
    from mi_mergekit.merge.baselines import baseline_recipe

    names, base = roles(name)
    method = name.split("_")[0].replace(".yaml", "")
    assert baseline_recipe(method, base, names["instruct"], names["thinking"]) == read(name)


def test_the_generator_takes_the_thinking_template_and_refuses_other_methods():
    from mi_mergekit.merge.baselines import baseline_recipe

    recipe = baseline_recipe("ties", "b", "i", "t", out_dtype=None, chat_template="{{ x }}")
    assert recipe["chat_template"] == "{{ x }}" and "out_dtype" not in recipe
    with pytest.raises(ValueError, match="unknown baseline 'dare'"):
        baseline_recipe("dare", "b", "i", "t")


# --------------------------------------------------------------------------- oracles


def ta_oracle(base, instruct, thinking):
    b = base.float()
    return (b + (0.7 * (instruct.float() - b) + 0.7 * (thinking.float() - b))).to(torch.bfloat16)


def ties_merge(base, task_vectors, lam=0.5):
    """TIES as the paper describes it, on already-trimmed task vectors: elect the sign of
    the sum, average the entries that agree with it (disjoint mean), scale by λ."""
    stacked = torch.stack(task_vectors)
    elected = torch.where(stacked.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(stacked) == elected).to(stacked.dtype)
    count = agree.sum(0)
    mean = (stacked * agree).sum(0) / torch.where(count == 0, torch.ones_like(count), count)
    return base + mean * lam


def trim(delta, density=0.8):
    """Keep the top `density` fraction by magnitude (mergekit's own trim, so that ties in
    magnitude break the same way)."""
    from mergekit.sparsify import SparsificationMethod, sparsify

    return sparsify(delta, density=density, method=SparsificationMethod.magnitude)


def ties_oracle(base, instruct, thinking):
    b = base.float()
    vectors = [trim(instruct.float() - b), trim(thinking.float() - b)]
    return ties_merge(b, vectors).to(torch.bfloat16)


def test_ties_oracle_and_mergekit_agree_on_a_hand_example():
    """Numbers worked out by hand; mergekit's stock `ties` is driven by ties.yaml's parameters."""
    from mergekit.merge_methods import registry
    from mergekit.merge_methods.base import TensorGroup

    base = torch.zeros(5)
    tau_i = torch.tensor([4.0, -3.0, 1.0, 2.0, 0.5])
    tau_t = torch.tensor([2.0, 3.0, -5.0, 0.1, 0.2])
    # top 80% = 4 of 5 entries: 0.5 and 0.1 are trimmed; signs elected from the sum
    # [6, 0, -4, 2, 0.2] -> [+, +, -, +, +]; disjoint means [3, 3, -5, 2, 0.2]; × 0.5
    expected = torch.tensor([1.5, 1.5, -2.5, 1.0, 0.1])
    assert torch.allclose(trim(tau_i), torch.tensor([4.0, -3.0, 1.0, 2.0, 0.0]))
    assert torch.allclose(ties_merge(base, [trim(tau_i), trim(tau_t)]), expected)

    data = read("ties.yaml")
    ids = ("base", "instruct", "thinking")
    group = TensorGroup.from_tensors([base, base + tau_i, base + tau_t], ids=ids, base_index=0)
    per_model = {key: {ids[i + 1]: m["parameters"][key] for i, m in enumerate(data["models"])}
                 for key in ("weight", "density")}
    out = registry.get(data["merge_method"]).merge_group(
        group, int8_mask=False, **per_model, **data["parameters"]
    )
    assert torch.allclose(out, expected)
    # the rejected mapping (0.5 as weight, normalize on) divides the 0.5 away: scaling 1.0
    halved = {"weight": {k: 0.5 for k in per_model["weight"]}, "density": per_model["density"]}
    out = registry.get("ties").merge_group(
        group, int8_mask=False, normalize=True, rescale=False, **{"lambda": 1.0}, **halved
    )
    assert torch.allclose(out, expected * 2)


def check(out, expected_of, names, base):
    b, i, t = (load_model(names[k]) for k in (base, "instruct", "thinking"))
    assert sorted(out) == sorted(b)
    for tensor in b:
        assert out[tensor].dtype == torch.bfloat16
        assert torch.equal(out[tensor], expected_of(b[tensor], i[tensor], t[tensor])), tensor


@pytest.mark.parametrize("name", ["ta.yaml", "ta_base.yaml"])
def test_task_arithmetic_equals_hand_computed_result(name, standins_4b, tmp_path):
    names, base = roles(name)
    out = run_recipe(os.path.join(BASELINES, name), standins_4b, str(tmp_path / "out"))
    paths = {k: standins_4b[v] for k, v in names.items()} | {"base_model": standins_4b[base]}
    check(out, ta_oracle, paths, "base_model")


@pytest.mark.parametrize("name", ["ties.yaml", "ties_base.yaml"])
def test_ties_equals_trim_elect_disjoint_mean_scaled_by_half(name, standins_4b, tmp_path):
    names, base = roles(name)
    out = run_recipe(os.path.join(BASELINES, name), standins_4b, str(tmp_path / "out"))
    paths = {k: standins_4b[v] for k, v in names.items()} | {"base_model": standins_4b[base]}
    check(out, ties_oracle, paths, "base_model")
    ta = run_recipe(os.path.join(BASELINES, name.replace("ties", "ta")), standins_4b, str(tmp_path / "ta"))
    assert any(not torch.equal(out[k], ta[k]) for k in out)


def test_30b_task_arithmetic_writes_fused_experts(standins_30b, tmp_path):
    """Stock mergekit on Qwen3-MoE: experts come out fused (transformers-5 layout), with the
    TA result of each expert in place: gate_up_proj[e] = cat(gate_e, up_e), down_proj[e] = down_e."""
    names = {k: standins_30b[v] for k, v in NAMES_30B.items()}
    out = run_recipe(os.path.join(BASELINES, "ta_30b.yaml"), standins_30b, str(tmp_path / "out"))
    b, i, t = (load_model(names[k]) for k in ("hybrid", "instruct", "thinking"))
    assert not any(".experts.0." in k for k in out)
    for tensor in b:
        if ".experts." not in tensor:
            assert torch.equal(out[tensor], ta_oracle(b[tensor], i[tensor], t[tensor])), tensor

    def expert(layer, e, proj):
        key = f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"
        return ta_oracle(b[key], i[key], t[key])

    experts = sorted({int(k.split(".experts.")[1].split(".")[0]) for k in b if ".experts." in k})
    for layer in range(48):
        gate_up = torch.stack([torch.cat([expert(layer, e, "gate_proj"), expert(layer, e, "up_proj")])
                               for e in experts])
        down = torch.stack([expert(layer, e, "down_proj") for e in experts])
        assert torch.equal(out[f"model.layers.{layer}.mlp.experts.gate_up_proj"], gate_up), layer
        assert torch.equal(out[f"model.layers.{layer}.mlp.experts.down_proj"], down), layer
