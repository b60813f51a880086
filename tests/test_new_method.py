"""A merge method defined in this file alone runs everywhere ours do.

``clipped_task_vector`` — Θ_I + clamp(Θ_T − Θ_I, −c, c), the Thinking model's change
clipped element-wise — is declared below (name, parameter, arithmetic on the kernel)
and registered with mergekit; no file of the package knows it. It then runs through
``mergekit-yaml`` (this file is the script: ``python test_new_method.py RECIPE OUT``),
the streaming engine, mergekit's executor (``MI_MERGEKIT_ENGINE=mergekit``), the plan,
the pre-flight checks and the output-safety rules, against an oracle written here.
"""

import json
import os
import sys

import pytest
import torch
import yaml
from mergekit.merge_methods.base import (
    BasePolicy,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
)

from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.kernel import apply_task_vector, task_vector
from mi_mergekit.merge.method import ElementwiseMethod


class ClippedTaskVector(ElementwiseMethod):
    """Θ_I + clamp(Θ_T − Θ_I, −clip, clip), computed in float32."""

    spec = MergeMethodSpec(
        name="clipped_task_vector",
        parameters=(ParameterSpec("clip", float, ParameterScope.SHARED),),
        contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=2, max_inputs=2),
    )
    roles = ("Instruct", "Thinking")
    value_name = value_label = "clip"

    def setting(self, tensor):
        clip = float(tensor.shared["clip"])
        if not clip >= 0:
            raise MergeInputError(f"clip must be >= 0, got {clip}")
        return clip

    def compute(self, inputs, setting, state=None, out=None):
        instruct, thinking = inputs
        delta = task_vector(instruct, thinking).clamp_(-setting, setting)
        return apply_task_vector(instruct, delta, 1.0).to(instruct.dtype)


clipped_task_vector = ClippedTaskVector()


def register():
    from mi_mergekit.methods import register as register_method

    register_method(clipped_task_vector)


if __name__ == "__main__":  # `mergekit-yaml RECIPE OUT`, with the method above registered
    register()
    from mergekit.scripts.run_yaml import main

    sys.argv = ["mergekit-yaml", *sys.argv[1:]]
    main()


CLIP = 0.01


def oracle(i: torch.Tensor, t: torch.Tensor, clip: float = CLIP) -> torch.Tensor:
    return (i.float() + (t.float() - i.float()).clamp(-clip, clip)).to(i.dtype)


def recipe(instruct, thinking, clip=CLIP, dtype="bfloat16"):
    return {"merge_method": "clipped_task_vector", "base_model": instruct,
            "models": [{"model": thinking}], "parameters": {"clip": clip}, "dtype": dtype}


@pytest.fixture(autouse=True)
def registered():
    register()


def check_output(out, instruct, thinking):
    from common import load_model

    i, t, o = load_model(instruct), load_model(thinking), load_model(str(out))
    assert o.keys() == i.keys()
    changed = 0
    for name in i:
        assert o[name].dtype == i[name].dtype and torch.equal(o[name], oracle(i[name], t[name])), name
        changed += not torch.equal(o[name], i[name])
    assert changed > len(i) // 2  # the clip is small enough to matter and large enough to change things
    plan = json.loads((out / "mi_plan.json").read_text())
    assert plan["method"] == "clipped_task_vector" and plan["clip"] == CLIP
    assert (out / ".mi_mergekit_output.json").exists()
    return o


def test_mergekit_yaml_runs_a_method_defined_in_a_test_file(dense_pair, tmp_path):
    from common import run

    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(instruct, thinking)))
    result = run([sys.executable, __file__, str(path), str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr[-3000:]
    check_output(tmp_path / "out", instruct, thinking)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("pair", ["dense_pair", "moe_pair"])
def test_both_engines_run_it_bit_for_bit(pair, request, tmp_path, monkeypatch):
    from common import merge

    from mi_mergekit.merge import engine

    instruct, thinking = request.getfixturevalue(pair)
    calls = []
    original = engine.execute
    monkeypatch.setattr(engine, "execute", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    outputs = {}
    for name in ("stream", "mergekit"):
        monkeypatch.setenv("MI_MERGEKIT_ENGINE", name)
        merge(recipe(instruct, thinking), tmp_path / name)
        outputs[name] = check_output(tmp_path / name, instruct, thinking)
    assert calls == [1]  # the streaming engine ran once, mergekit's executor the other time
    assert all(torch.equal(outputs["stream"][n], outputs["mergekit"][n]) for n in outputs["stream"])


def test_plan_and_preflight_read_the_method(dense_pair, tmp_path):
    from common import config_from, merge

    from mi_mergekit.merge.plan import build_plan

    instruct, thinking = dense_pair
    plan, _ = build_plan(config_from(recipe(instruct, thinking)))
    assert plan.inputs == [("Instruct", instruct), ("Thinking", thinking)]
    assert {t.value for t in plan.tensors} == {CLIP} and plan.whole_model
    assert "clipped_task_vector: Instruct=" in plan.table() and "clip shown per tensor group" in plan.table()
    for data, message in ((recipe(instruct, thinking, clip=-1.0), "clip must be >= 0"),
                          ({**recipe(instruct, thinking), "parameters": {"clip": 1, "lambda": 1}},
                           "unknown parameter"),
                          ({**recipe(instruct, thinking), "parameters": {}}, "needs `parameters: {clip")):
        with pytest.raises(MergeInputError, match=message):
            merge(data, tmp_path / "bad")
        assert not (tmp_path / "bad").exists()


def test_output_safety_rules_apply(dense_pair, copy_pair, tmp_path):
    from common import merge
    from safetensors.torch import load_file, save_file

    from mi_mergekit.errors import NonFiniteTensorError, OutputPathError

    instruct, thinking = copy_pair(dense_pair)
    with pytest.raises(OutputPathError, match="the output folder is the Thinking model's folder"):
        merge(recipe(instruct, thinking), thinking)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x")
    with pytest.raises(OutputPathError, match="did not write"):
        merge(recipe(instruct, thinking), tmp_path / "notes")
    assert os.listdir(tmp_path / "notes") == ["mine.txt"]
    path = os.path.join(thinking, "model.safetensors")
    tensors = load_file(path)
    tensors["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(NonFiniteTensorError, match="Thinking tensor 'model.layers.2.mlp.up_proj.weight'"):
        merge(recipe(instruct, thinking), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [n for n in os.listdir(tmp_path) if ".incomplete-" in n]
