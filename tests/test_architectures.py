"""Every architecture: whole-model, layer-window and module-excluded interpolation of tiny random
pairs of 34 families, each tensor against the oracle a + λ(b − a), with the expected layer,
depth and sub-layer of each tensor written in tests/architectures.py (not read from
mi_mergekit), the output's tensor names against the input's, and the plan.

Also: DeepSeek-V3 beside stock mergekit (which drops the routed experts), a DeepSeek-V3
checkpoint with a multi-token-prediction layer past the config's last layer, the refusal of
a module selection on tensors no rule names, a Qwen3-VL checkpoint (vision tower, windows
over the language model, the Thinking side's preprocessor), and the README's table.
"""

import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from architectures import ARCHS, BY_KEY, LAYERS, build_arch_pair, depth_of, in_ffn, layer_of
from common import config_from, console, load_model, merge, mi_config, oracle
from warm import run_warm

from mi_mergekit.errors import SelectionError
from mi_mergekit.merge.placement import name_pattern
from mi_mergekit.merge.plan import build_plan

LAM = 0.8
WINDOW = (1, LAYERS - 1)  # keeps layer 0 and what sits before the layers


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Pairs built on first use, one folder per architecture, shared by this module's tests."""
    root = tmp_path_factory.mktemp("archs")
    built = {}

    def get(key):
        if key not in built:
            built[key] = build_arch_pair(str(root / key), BY_KEY[key])
        return built[key]

    return get


def check(out, i, t, interpolated, what):
    """Every input tensor is in the output (and nothing else), interpolated or Instruct bit for bit."""
    assert sorted(out) == sorted(i), f"{what}: the output's tensor names differ from the input's"
    kept = merged = 0
    for name in i:
        if interpolated(name):
            assert torch.equal(out[name], oracle(i[name], t[name], LAM)), f"{what}: {name} is not interpolated"
            merged += 1
        else:
            assert torch.equal(out[name], i[name].float()), f"{what}: {name} is not the Instruct tensor"
            kept += 1
    return merged, kept


@pytest.mark.parametrize("key", [a.key for a in ARCHS])
def test_whole_window_and_no_mlp(key, pairs, tmp_path):
    arch = BY_KEY[key]
    instruct, thinking = pairs(key)
    i, t = load_model(instruct), load_model(thinking)
    assert {layer_of(arch, n) for n in i} - {None} == set(range(LAYERS)), "the oracle's layer pattern"

    whole = merge(mi_config(instruct, thinking, LAM), tmp_path / "whole")
    check(whole, i, t, lambda name: True, "whole model")

    a, b = WINDOW
    window = merge(mi_config(instruct, thinking, LAM, layer_start=a, layer_end=b), tmp_path / "window")
    merged, kept = check(window, i, t, lambda name: a <= depth_of(arch, name) <= b, f"window {WINDOW}")
    assert merged and kept

    no_mlp = merge(mi_config(instruct, thinking, LAM, exclude_modules="mlp"), tmp_path / "no_mlp")
    merged, kept = check(no_mlp, i, t, lambda name: not in_ffn(arch, name), "exclude_modules: mlp")
    assert merged and (kept or arch.key == "mamba")  # Mamba has no feed-forward block

    plan = json.loads((tmp_path / "no_mlp" / "mi_plan.json").read_text())
    assert sorted(p["name"] for p in plan["tensors"]) == sorted(i)
    for entry in plan["tensors"]:
        assert entry["layer"] == layer_of(arch, entry["name"]), entry
        assert entry["depth"] == depth_of(arch, entry["name"]), entry
        assert entry["interpolated"] == (not in_ffn(arch, entry["name"])), entry


@pytest.mark.parametrize("key", ["phi3", "deepseek_v3", "qwen3_next", "gpt_oss", "jamba"])
def test_attention_only(key, pairs, tmp_path):
    """``modules: attention``: fused qkv, MLA, linear attention, sinks and the norms in front of
    the token mixer; a Mamba layer's mixer is not attention."""
    arch = BY_KEY[key]
    instruct, thinking = pairs(key)
    i, t = load_model(instruct), load_model(thinking)
    out = merge(mi_config(instruct, thinking, LAM, modules="attention"), tmp_path / "attn")

    def head(name):
        match = arch.layer_pattern.match(name)
        return (int(match.group(1)), name[match.end():].split(".", 1)[0]) if match else (None, None)

    attention_layers = {layer for layer, h in map(head, i) if h in ("self_attn", "linear_attn")}

    def attention(name):
        layer, h = head(name)
        if h == "input_layernorm":  # in front of attention, unless the layer mixes tokens otherwise
            return layer in attention_layers
        return h in ("self_attn", "linear_attn")

    merged, kept = check(out, i, t, attention, "modules: attention")
    assert merged and kept


def _add_mtp_layer(folder: str, seed: int) -> None:
    """A DeepSeek-V3 multi-token-prediction layer, stored as layer ``num_hidden_layers`` as the
    real checkpoints store layer 61 of 61 (transformers does not build it)."""
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    g = torch.Generator().manual_seed(seed)
    mtp = f"model.layers.{LAYERS}."
    for name, shape in (("enorm.weight", (32,)), ("hnorm.weight", (32,)), ("eh_proj.weight", (32, 64)),
                        ("shared_head.norm.weight", (32,)), ("shared_head.head.weight", (128, 32)),
                        ("self_attn.q_a_proj.weight", (16, 32)), ("mlp.experts.0.up_proj.weight", (16, 32))):
        tensors[mtp + name] = torch.randn(shape, generator=g).to(torch.bfloat16)
    save_file(tensors, path, metadata={"format": "pt"})


def test_deepseek_v3_beside_stock_mergekit(pairs, tmp_path):
    """Stock task_arithmetic and linear exit 0 and drop the routed experts (and the MTP layer);
    model_interpolation keeps every tensor in the checkpoint's per-expert layout."""
    import shutil

    instruct, thinking = pairs("deepseek_v3")
    for side, seed in ((instruct, 1), (thinking, 2)):
        target = tmp_path / os.path.basename(side)
        shutil.copytree(side, target)
        _add_mtp_layer(str(target), seed)
    instruct, thinking = str(tmp_path / "instruct"), str(tmp_path / "thinking")
    i, t = load_model(instruct), load_model(thinking)
    routed = [n for n in i if re.search(r"mlp\.experts\.\d+\.", n)]
    assert len(routed) == 3 * 4 * (LAYERS - 1) + 1

    stock = merge({"merge_method": "task_arithmetic", "base_model": instruct,
                   "models": [{"model": thinking, "parameters": {"weight": LAM}}], "dtype": "float32"},
                  tmp_path / "stock")
    dropped = sorted(set(i) - set(stock))
    assert set(routed) <= set(dropped) and f"model.layers.{LAYERS}.enorm.weight" in dropped
    for name in stock:  # what it does write is right
        assert torch.equal(stock[name], oracle(i[name], t[name], LAM)), name

    ours = merge(mi_config(instruct, thinking, LAM), tmp_path / "ours")
    check(ours, i, t, lambda name: True, "whole model")
    nway = merge({"merge_method": "nway_interpolation", "base_model": instruct, "dtype": "float32",
                  "models": [{"model": instruct, "parameters": {"weight": 1 - LAM}},
                             {"model": thinking, "parameters": {"weight": LAM}}]}, tmp_path / "nway")
    assert sorted(nway) == sorted(i)  # nway_interpolation keeps them too

    # the MTP layer sits after the last layer: in a window that ends there, not in one that does not
    last = merge(mi_config(instruct, thinking, LAM, layer_start=LAYERS - 1), tmp_path / "last")
    check(last, i, t, lambda name: (layer_of(BY_KEY["deepseek_v3"], name) or 0) >= LAYERS - 1
          or name in ("model.norm.weight", "lm_head.weight"), "last layer")
    first = merge(mi_config(instruct, thinking, LAM, layer_end=LAYERS - 2), tmp_path / "first")
    check(first, i, t, lambda name: (layer_of(BY_KEY["deepseek_v3"], name) or 0) <= LAYERS - 2
          and name not in ("model.norm.weight", "lm_head.weight"), "first layers")

    # a module selection needs roles: the MTP layer's own tensors have none, so it is refused,
    # naming each pattern, before anything is written
    with pytest.raises(SelectionError) as info:
        merge(mi_config(instruct, thinking, LAM, exclude_modules="mlp"), tmp_path / "refused")
    message = info.value.message
    for pattern in ("model.layers.N.enorm.weight", "model.layers.N.hnorm.weight", "model.layers.N.eh_proj.weight",
                    "model.layers.N.shared_head.norm.weight", "model.layers.N.shared_head.head.weight"):
        assert pattern in message
    assert "self_attn" not in message and "whole-model form" in message and "filter" in message
    assert not (tmp_path / "refused").exists()


def test_refused_module_selection_through_the_console_scripts(pairs, tmp_path):
    """``plan`` refuses it as the merge would, and mergekit-yaml says it in one line."""
    import shutil
    import yaml

    instruct, thinking = pairs("deepseek_v3")
    for side, seed in ((instruct, 1), (thinking, 2)):
        shutil.copytree(side, tmp_path / os.path.basename(side))
        _add_mtp_layer(str(tmp_path / os.path.basename(side)), seed)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(str(tmp_path / "instruct"), str(tmp_path / "thinking"), LAM,
                                               exclude_modules="mlp")))
    for command in ([console("mi-mergekit"), "plan", str(recipe)],
                    [console("mergekit-yaml"), str(recipe), str(tmp_path / "out")]):
        result = run_warm(command)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "model.layers.N.enorm.weight" in errors[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_qwen3_vl(pairs, tmp_path):
    """A vision-language checkpoint: the vision tower is interpolated with the whole model, sits
    with the embeddings for a window, is a group of its own, and the output keeps the Thinking
    side's preprocessor and loads in transformers."""
    from transformers import AutoModelForImageTextToText

    instruct, thinking = pairs("qwen3_vl")
    i, t = load_model(instruct), load_model(thinking)
    vision = [n for n in i if n.startswith("model.visual.")]
    assert vision and any(".blocks." in n for n in vision)

    out = merge(mi_config(instruct, thinking, LAM, exclude_modules="vision"), tmp_path / "novision")
    check(out, i, t, lambda name: not name.startswith("model.visual."), "exclude_modules: vision")
    assert json.loads((tmp_path / "novision" / "preprocessor_config.json").read_text()) == \
        json.loads(open(os.path.join(thinking, "preprocessor_config.json")).read())
    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "novision"))
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 5, 9]])).logits).all()

    out = merge(mi_config(instruct, thinking, LAM, template_from="instruct"), tmp_path / "instruct_side")
    assert json.loads((tmp_path / "instruct_side" / "preprocessor_config.json").read_text()) == \
        json.loads(open(os.path.join(instruct, "preprocessor_config.json")).read())


def test_plan_names_every_part_of_a_hybrid(pairs):
    """The dry run's table for a hybrid stack (Mamba + attention + MoE) shows its groups."""
    instruct, thinking = pairs("granitemoehybrid")
    plan, _ = build_plan(config_from(mi_config(instruct, thinking, LAM, exclude_modules="mixer")))
    table = plan.table()
    assert "mixer" in table and "experts" in table and "placed by mergekit's definition" in table
    assert {t.part for t in plan.tensors if not t.computed} == {"mixer", "input_layernorm"}
    assert all(t.layer in (0, 2) for t in plan.tensors if not t.computed)  # the Mamba layers


# --------------------------------------------------------------------------- the README's table

TABLE_START = "<!-- architectures table: generated by tests/test_architectures.py -->"
TABLE_END = "<!-- end of architectures table -->"


def stock_outcome(instruct: str, thinking: str, ours, out) -> str:
    """What stock mergekit's task_arithmetic (base Instruct, weight λ) does with the pair."""
    try:
        stock = merge({"merge_method": "task_arithmetic", "base_model": instruct,
                       "models": [{"model": thinking, "parameters": {"weight": LAM}}], "dtype": "float32"}, out)
    except Exception as exc:  # noqa: BLE001 - the outcome is the point
        missing = re.search(r"Tensor (\S+) required but not present", str(exc))
        return f"stops: `{name_pattern(missing.group(1))}` required but not present" if missing else \
            f"stops: {type(exc).__name__}"
    if sorted(stock) == sorted(ours):
        same = all(torch.equal(stock[n], ours[n]) for n in ours)
        return "identical tensors" if same else "same names, other values"
    dropped, added = set(ours) - set(stock), set(stock) - set(ours)
    if added:
        return f"rewrites {len(dropped)} tensors in transformers' layout (as {len(added)}: fused experts)"
    return f"drops {len(dropped)} of {len(ours)} tensors"


def architecture_table(pairs, tmp) -> str:
    """The README's table: per architecture, where its layers come from, its groups, and what
    stock mergekit makes of the same whole-model merge."""
    from mergekit.common import ModelReference

    from mi_mergekit.merge.placement import layout_of

    rows = ["| architecture | released pairs (examples) | layers placed by | whole | window | module groups "
            "| stock `task_arithmetic`, same merge |",
            "|---|---|---|:-:|:-:|---|---|"]
    for arch in ARCHS:
        instruct, thinking = pairs(arch.key)
        layout = layout_of(ModelReference.model_validate(instruct))
        tags = set().union(*(p.role.tags for p in layout.placements.values() if p.role))
        groups = ", ".join(g for g in ("attention", "mlp", "moe", "mixer", "vision") if g in tags)
        ours = merge(mi_config(instruct, thinking, LAM), tmp / arch.key / "ours")
        stock = stock_outcome(instruct, thinking, ours, tmp / arch.key / "stock")
        rows.append(f"| `{layout.architecture}` | {arch.examples} | {layout.source} | ✓ | ✓ | {groups} | {stock} |")
    return "\n".join(rows)


def test_readme_architecture_table(pairs, tmp_path):
    """README.md carries the table these pairs produce (MI_UPDATE_README=1 rewrites it)."""
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    text = open(readme, encoding="utf-8").read()
    table = architecture_table(pairs, tmp_path)
    block = f"{TABLE_START}\n{table}\n{TABLE_END}"
    if os.environ.get("MI_UPDATE_README"):
        start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
        open(readme, "w", encoding="utf-8").write(text[:start] + block + text[end:])
        text = open(readme, encoding="utf-8").read()
    assert block in text, "README's architecture table is stale: rerun with MI_UPDATE_README=1"
