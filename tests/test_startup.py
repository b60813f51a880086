"""Start-up: a safetensors merge does not import what only LoRA inputs need.

mergekit imports ``peft`` and ``transformers.modeling_utils`` when it loads
(``mergekit.common``, ``mergekit.architecture.auto``); a merge of safetensors
checkpoints never uses them. The autoload hook defers them
(:func:`mi_mergekit.deferred.deferred_imports`) until first use; a LoRA
input still merges, with peft, as before.
"""

import json
import os
import sys

import pytest
import torch
import yaml
from common import console, load_model, run

HEAVY = ("peft.tuners", "transformers.modeling_utils", "transformers.core_model_loading", "torch.distributed.tensor",
         "networkx", "accelerate")

PROBE = r"""
import json, sys
from mergekit.scripts.run_yaml import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps({name: name in sys.modules for name in %r}))
""" % (HEAVY,)


def write_recipe(path, instruct, thinking, **parameters):
    data = {"merge_method": "model_interpolation", "base_model": instruct, "models": [{"model": thinking}],
            "parameters": {"lambda": 0.7, **parameters}, "dtype": "float32"}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def imported(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_safetensors_merge_imports_neither_peft_nor_modeling_utils(dense_pair, tmp_path):
    recipe = write_recipe(tmp_path / "mi.yaml", *dense_pair)
    result = run([sys.executable, "-c", PROBE, recipe, str(tmp_path / "out")])
    assert imported(result) == {name: False for name in HEAVY}
    assert load_model(str(tmp_path / "out")).keys() == load_model(dense_pair[0]).keys()


def test_deferred_modules_load_on_first_use():
    """After mergekit loaded with the deferral, what it deferred is the real thing when used:
    `import peft`, transformers.PreTrainedModel, the deferred functions and classes."""
    code = """
import sys
import mergekit.merge, mergekit.common, mergekit.graph, mergekit.architecture.conversion as conversion
assert "transformers.modeling_utils" not in sys.modules and "networkx" not in sys.modules
import networkx, peft, transformers
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_utils import PreTrainedModel
assert transformers.PreTrainedModel is PreTrainedModel
assert mergekit.common.peft.PeftModel is peft.PeftModel and mergekit.graph.networkx.DiGraph is networkx.DiGraph
transforms = conversion.get_checkpoint_conversion_mapping("mixtral")
renames = [isinstance(t, conversion.WeightRenaming) for t in transforms]
assert renames == [isinstance(t, WeightRenaming) for t in transforms] and any(renames) and not all(renames)
assert issubclass(WeightRenaming, conversion.WeightRenaming)
import mergekit.architecture.auto as auto
print(auto._get_tied_weight_keys.__name__, type(peft).__name__, type(sys.modules["peft"]).__name__)
"""
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["_get_tied_weight_keys", "module", "module"]


def test_autoload_watches_every_deferring_module():
    from mi_mergekit import _autoload, deferred

    assert set(_autoload._AROUND) == set(deferred.DEFERRED) | set(deferred.FORWARD_REFERENCES)


@pytest.fixture(scope="module")
def lora(dense_pair, tmp_path_factory):
    """A peft LoRA adapter on the Instruct model (random A and B) and, as the oracle,
    the model peft's own merge_and_unload makes of it."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    instruct = dense_pair[0]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(instruct),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"],
                                      init_lora_weights=False))
    adapter = str(root / "adapter")
    model.save_pretrained(adapter)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(instruct), adapter)
    oracle = str(root / "merged")
    merged.merge_and_unload().save_pretrained(oracle)
    return instruct, adapter, oracle


def test_lora_input_still_merges(dense_pair, lora, tmp_path):
    """Thinking = Instruct + LoRA (mergekit's `model+adapter`): mergekit-yaml loads peft when it
    meets the adapter, and the result equals the merge with peft's merged model as Thinking."""
    instruct, adapter, oracle = lora
    with_lora = write_recipe(tmp_path / "lora.yaml", instruct, f"{instruct}+{adapter}", template_from="instruct")
    result = run([sys.executable, "-c", PROBE, with_lora, str(tmp_path / "out"),
                  "--lora-merge-cache", str(tmp_path / "cache")])
    assert imported(result)["peft.tuners"]
    expected = run([console("mergekit-yaml"), write_recipe(tmp_path / "oracle.yaml", instruct, oracle,
                                                           template_from="instruct"), str(tmp_path / "expected")])
    assert expected.returncode == 0, expected.stderr[-3000:]
    got, want = load_model(str(tmp_path / "out")), load_model(str(tmp_path / "expected"))
    assert got.keys() == want.keys()
    changed = 0
    for name in want:
        assert torch.equal(got[name], want[name]), name
        changed += not torch.equal(got[name], load_model(instruct)[name].float())
    assert changed >= 8  # the adapted q_proj and up_proj of 4 layers moved
    assert os.listdir(tmp_path / "cache")  # mergekit merged the adapter itself


REFUSAL_PROBE = r"""
import json, sys
from mi_mergekit.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except Exception as error:
    print(type(error).__name__, error, file=sys.stderr)
finally:
    print(json.dumps({name: name in sys.modules for name in ("torch", "transformers", "mergekit")}))
"""


@pytest.mark.parametrize("argv", [
    ["eval", "--model", "{tmp}/no-model", "--dataset", "{data}", "--out", "{tmp}/run"],
    ["stages", "{tmp}/no-runs"],
], ids=["eval-missing-model", "stages-missing-run"])
def test_a_refused_command_answers_before_loading_torch(tmp_path, argv):
    """A mistake these commands can see in their arguments is answered in a fraction of a second:
    neither torch, transformers nor mergekit is imported first (before, 1.9 s and 3 s)."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "1+1", "answer": "2"}) + "\n")
    args = [a.format(tmp=tmp_path, data=data) for a in argv]
    result = run([sys.executable, "-c", REFUSAL_PROBE, *args])
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "no-model" in result.stderr or "no-runs" in result.stderr, result.stderr[-2000:]
    assert loaded == {"torch": False, "transformers": False, "mergekit": False}, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()
