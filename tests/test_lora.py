"""LoRA model references (``base+adapter``): pre-flight, both engines, stock task_arithmetic.

The Thinking side is the shipped SmolLM2 adapter (``mi_mergekit/real/adapter``, rank 8 on
every projection of a 30-layer SmolLM2-135M) applied to a tiny base of the same layer
shapes with 2 layers (mergekit merges the adapter with peft into ``--lora-merge-cache``;
the adapter's other 28 layers have no module to go to). The Instruct side is that base.
"""

import json
import os

import pytest
import torch
import yaml

from common import console, load_model, merge
from warm import run_warm
from mi_mergekit import real

ADAPTER = os.path.join(os.path.dirname(real.__file__), "adapter")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from synthetic import build_tokenizer

    folder = tmp_path_factory.mktemp("lora") / "base"
    config = LlamaConfig(vocab_size=64, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         tie_word_embeddings=True, max_position_embeddings=256)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(folder)
    build_tokenizer(64).save_pretrained(folder)
    return str(folder)


def recipes(base, lam=0.6):
    thinking = f"{base}+{ADAPTER}"
    mi = {"merge_method": "model_interpolation", "base_model": base, "models": [{"model": thinking}],
          "parameters": {"lambda": lam}, "dtype": "float32"}
    ta = {"merge_method": "task_arithmetic", "base_model": base,
          "models": [{"model": thinking, "parameters": {"weight": lam}}], "dtype": "float32"}
    return mi, ta


def test_shipped_adapter_names_its_real_base_model():
    with open(os.path.join(ADAPTER, "adapter_config.json")) as handle:
        assert json.load(handle)["base_model_name_or_path"] == real.HUB_ID


@pytest.mark.parametrize("engine", ["stream", "mergekit"])
def test_lora_thinking_side_equals_stock_task_arithmetic(engine, tiny_base, tmp_path, monkeypatch):
    cache = str(tmp_path / "lora-cache")
    mi, ta = recipes(tiny_base)
    stock = merge(ta, tmp_path / "ta", lora_merge_cache=cache)
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", engine)
    ours = merge(mi, tmp_path / "mi", lora_merge_cache=cache)
    assert ours.keys() == stock.keys()
    for name in ours:
        assert torch.equal(ours[name], stock[name]), name
    base = load_model(tiny_base)
    changed = [n for n in base if not torch.equal(ours[n], base[n].float())]
    assert len(changed) == 2 * 7  # the adapter's 7 projections in each of the 2 layers


def test_mergekit_yaml_and_plan_take_a_lora_reference(tiny_base, tmp_path):
    mi, _ = recipes(tiny_base)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(mi))
    cache = str(tmp_path / "lora-cache")
    result = run_warm([console("mi-mergekit"), "plan", str(path), "--lora-merge-cache", cache])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Thinking={tiny_base}+{ADAPTER}" in result.stdout
    result = run_warm([console("mergekit-yaml"), str(path), str(tmp_path / "out"), "--lora-merge-cache", cache])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "mi_plan.json").exists()


def test_a_lora_reference_without_a_merge_cache_is_one_line(tiny_base, tmp_path):
    mi, _ = recipes(tiny_base)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(mi))
    result = run_warm([console("mergekit-yaml"), str(path), str(tmp_path / "out")])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: model {tiny_base}+{ADAPTER} applies a LoRA adapter: pass --lora-merge-cache DIR "
        f"(mergekit merges the adapter into the model there, once) ({ADAPTER})")
    assert not (tmp_path / "out").exists()
