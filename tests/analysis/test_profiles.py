"""λ profiles as recipes, their zero-shot estimators, a family swept in one pass, and the
profile search. Expected per-tensor λ come from this file's own table of the Qwen3 layout
(which sub-module belongs to which group, where the tensors outside the layers sit)."""

import json
import math
import os
import re

import pytest
import torch
import yaml

from common import config_from, console, load_model, merge, mi_config, oracle
from warm import run_warm

from mi_mergekit.analysis import profiles
from mi_mergekit.analysis.estimators import normalized_mutual_information
from mi_mergekit.analysis.lambda_search import Target, find_profile
from mi_mergekit.errors import AnalysisInputError
from mi_mergekit.merge.plan import build_plan

LAYERS = 4
ATTENTION = ("self_attn.", "input_layernorm.")
MLP = ("mlp.", "post_attention_layernorm.")


def expected(name: str, profile: profiles.Profile) -> float:
    """λ of a Qwen3 tensor under ``profile``, from this file's table."""
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if not match:
        layer = 0 if "embed_tokens" in name else LAYERS - 1
        return profile.default[layer]
    layer, inner = int(match.group(1)), match.group(2)
    group = "attention" if inner.startswith(ATTENTION) else "mlp" if inner.startswith(MLP) else None
    return profile.at(group, layer)


def _round(value):
    return round(value, 6)  # recipes carry 6 decimals


def plan_of(data):
    plan, _ = build_plan(config_from(data))
    return plan


def layout_and_table(pair):
    from mergekit.common import ModelReference
    from mergekit.options import MergeOptions

    from mi_mergekit.merge.layout import CheckpointIndex
    from mi_mergekit.merge.placement import known_layout

    plan_of(mi_config(*pair, 0.5))
    ref = ModelReference.model_validate(pair[0])
    layout = known_layout(ref)
    return layout, profiles.cells(layout, CheckpointIndex.read(ref, MergeOptions()).shapes)


@pytest.mark.parametrize("make", [
    lambda: profiles.Profile.ramp(0.3, 0.9, LAYERS),
    lambda: profiles.Profile.modules({"attention": 0.6, "mlp": 0.95}, LAYERS),
    lambda: profiles.Profile(LAYERS, {"attention": [0.1, 0.2, 0.3, 0.4], "mlp": [0.9, 0.8, 0.7, 0.6]},
                             [0.5, 0.55, 0.6, 0.65], "per layer and module"),
], ids=["ramp", "modules", "layer-x-module"])
def test_profile_recipe_sets_every_tensor(untied_pair, tmp_path, make):
    layout, _ = layout_and_table(untied_pair)
    profile = make()
    data = profiles.profile_recipe(mi_config(*untied_pair, 0.8, layer_start=1, exclude_modules="mlp"),
                                   profile, layout)
    assert "layer_start" not in data["parameters"] and "exclude_modules" not in data["parameters"]
    plan = plan_of(data)
    for tensor in plan.tensors:
        assert tensor.value == pytest.approx(expected(tensor.name, profile), abs=1e-6), tensor.name
    # mergekit-yaml's own run of the written recipe: each tensor is I + λ(T − I) at its λ
    path = tmp_path / "p.yaml"
    profiles.write_recipe(str(path), data, profile)
    assert yaml.safe_load(path.read_text()) == data and path.read_text().startswith("# λ profile:")
    out = merge(yaml.safe_load(path.read_text()), tmp_path / "out")
    i, t = load_model(untied_pair[0]), load_model(untied_pair[1])
    for name in ("model.layers.2.self_attn.q_proj.weight", "model.layers.3.mlp.up_proj.weight", "lm_head.weight"):
        assert torch.equal(out[name], oracle(i[name], t[name], _round(expected(name, profile)))), name


def test_hybrid_norms_follow_each_layers_mixer(tmp_path_factory):
    """Jamba: the norm in front of a Mamba layer's mixer takes the mixer's λ, the one in front
    of an attention layer attention's: per-layer filters where the layers disagree."""
    from architectures import BY_KEY, build_arch_pair

    pair = build_arch_pair(str(tmp_path_factory.mktemp("jamba")), BY_KEY["jamba"])
    layout, _ = layout_and_table(pair)
    profile = profiles.Profile(LAYERS, {"attention": [0.2] * 4, "mixer": [0.7] * 4, "mlp": [0.9] * 4},
                               [0.5] * 4, "hybrid")
    plan = plan_of(profiles.profile_recipe(mi_config(*pair, 0.8), profile, layout))
    names = {t.name for t in plan.tensors}
    for tensor in plan.tensors:
        match = re.fullmatch(r"model\.layers\.(\d+)\.input_layernorm\.weight", tensor.name)
        if match:
            attention = f"model.layers.{match.group(1)}.self_attn.q_proj.weight" in names
            assert tensor.value == pytest.approx(0.2 if attention else 0.7), tensor.name


def test_scaled_meets_the_mean_in_bounds(untied_pair):
    _, table = layout_and_table(untied_pair)
    weights = {"attention": [1.0, 2.0, 3.0, 4.0], "mlp": [8.0, 8.0, 1.0, 1.0], "default": [1.0, 1.0, 1.0, 1.0]}
    for mean in (0.2, 0.8, 0.95):
        profile = profiles.scaled(weights, table, mean, "test", {})
        assert profiles.mean_lambda(profile, table) == pytest.approx(mean, abs=1e-6)
        values = [v for vs in list(profile.values.values()) + [profile.default] for v in vs]
        assert all(0.0 <= v <= 1.0 for v in values)
        # unclipped cells keep the shape: λ proportional to the weight
        ratios = {round(profile.values[g][k] / weights[g][k], 9) for g in ("attention", "mlp")
                  for k in range(LAYERS) if profile.values[g][k] < 1.0}
        assert len(ratios) == 1
    with pytest.raises(AnalysisInputError, match="mean λ must be in"):
        profiles.scaled(weights, table, 1.5, "test", {})


def test_normalized_mutual_information():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    assert normalized_mutual_information(x, x) == pytest.approx(1.0, abs=1e-9)
    assert normalized_mutual_information(x, x ** 3) == pytest.approx(1.0, abs=1e-9)  # monotone: same bins
    assert normalized_mutual_information(x, torch.randn(20000, generator=g)) < 0.02
    noisy = normalized_mutual_information(x, x + 0.5 * torch.randn(20000, generator=g))
    assert 0.1 < noisy < 0.9


def test_estimators_through_the_command(dense_pair, tmp_path):
    """`mi-mergekit profile` as a user runs it: each estimator's recipe plans at the mean λ
    asked for, says how it was made, and the divergence shape is diverge's distances."""
    from mi_mergekit.analysis.divergence import divergence

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(*dense_pair, 0.8)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"w{k} w{k + 1} w{k + 2}"}) + "\n" for k in range(6)))
    _, table = layout_and_table(dense_pair)
    for estimator, extra in (("acm", ["--prompts", str(prompts)]), ("fisher", ["--sequences", "2"]),
                             ("divergence", [])):
        out = tmp_path / f"{estimator}.yaml"
        result = run_warm([console("mi-mergekit"), "profile", str(recipe), "--estimator", estimator,
                      "--mean-lambda", "0.7", "--out", str(out), *extra])
        assert result.returncode == 0, result.stderr
        assert "mean λ (parameter-weighted): 0.7000" in result.stdout
        text = out.read_text()
        assert f"# estimator: {estimator}" in text and "# seconds:" in text
        plan = plan_of(yaml.safe_load(text))
        total = sum(table[t.name].parameters for t in plan.tensors)
        mean = sum(t.value * table[t.name].parameters for t in plan.tensors) / total
        assert mean == pytest.approx(0.7, abs=1e-5), estimator
        if estimator == "divergence":
            doc = divergence(*dense_pair)
            attention = [layer["groups"]["attention"]["relative_distance"] for layer in doc["layers"]]
            values = [t.value for t in plan.tensors if re.fullmatch(r"model\.layers\.\d+\.self_attn\.q_proj\.weight",
                                                                     t.name)]
            assert [v / a for v, a in zip(values, attention) if v < 1] == pytest.approx(
                [values[0] / attention[0]] * sum(v < 1 for v in values), rel=1e-4)


def test_profile_command_refuses_mixed_choices(dense_pair, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(*dense_pair, 0.8)))
    result = run_warm([console("mi-mergekit"), "profile", str(recipe), "--ramp", "0.5,1", "--modules", "mlp=1",
                  "--out", str(tmp_path / "x.yaml")])
    assert result.returncode == 2 and "choose one of --estimator, --ramp or --modules" in result.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_a_family_of_profiles_in_one_pass_equals_each_merge(untied_pair, tmp_path):
    from mi_mergekit.merge.sweep import run_family
    from mergekit.options import MergeOptions

    layout, _ = layout_and_table(untied_pair)
    family = {"ramp": profiles.Profile.ramp(0.2, 1.0, LAYERS),
              "modules": profiles.Profile.modules({"attention": 0.4, "mlp": 0.9}, LAYERS)}
    recipes = [(name, config_from(profiles.profile_recipe(mi_config(*untied_pair, 0.8), p, layout)), "")
               for name, p in family.items()]
    outputs = run_family(recipes, str(tmp_path / "family"), MergeOptions(quiet=True))
    assert [os.path.basename(o.path) for o in outputs] == ["ramp", "modules"]
    for name, config, _ in recipes:
        single = merge(yaml.safe_load(config.to_yaml()), tmp_path / f"single-{name}")
        swept = load_model(str(tmp_path / "family" / name))
        assert single.keys() == swept.keys()
        assert all(torch.equal(single[n], swept[n]) for n in single), name


def test_profile_search_finds_the_best_under_a_budget(tmp_path):
    """Synthetic response over (a, b): tokens grow with a + b, accuracy peaks at (0.75, 0.5)."""
    def evaluator(knob):
        a, b = knob
        return {"tokens_mean": 100 * (a + b), "mean": 1 - (a - 0.75) ** 2 - (b - 0.5) ** 2,
                "think_ratio": 1.0, "lambda_mean": (a + b) / 2}

    log = tmp_path / "probes.jsonl"
    result = find_profile(evaluator, Target.parse("tokens<=130"), tol=0.1, max_probes=20, grid=3,
                          log_path=str(log))
    assert result.best.params == pytest.approx([0.75, 0.5])
    assert sum(1 for p in result.probes if p.phase == "grid") == 9
    assert all(p.metrics["tokens_mean"] <= 130 for p in result.probes if p.feasible)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == len(result.probes) and rows[0]["params"] == [0.0, 0.0]
    assert "best profile = 0.75,0.5" in result.table("profile")


def test_find_lambda_searches_a_profile_on_the_live_model(tmp_path):
    """find-lambda --profile end to end on the shipped toy pair (2 questions, 2 probes)."""
    from mi_mergekit.toy import HELDOUT_PATH, INSTRUCT_DIR, THINKING_DIR

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(str(INSTRUCT_DIR), str(THINKING_DIR), 0.8)))
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(open(HELDOUT_PATH).readlines()[:2]))
    out = tmp_path / "search"
    result = run_warm([console("mi-mergekit"), "find-lambda", str(recipe), "--profile", "ramp", "--target", "tokens<=1000",
                  "--dataset", str(calib), "-n", "1", "--max-new-tokens", "8", "--grid", "2", "--max-probes", "2",
                  "--out", str(out)])
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["searched"] == "ramp profile" and len(doc["probes"]) == 2
    # the recipe's static λ first (the ramp 0.8 -> 0.8), then the grid
    assert [p["phase"] for p in doc["probes"]] == ["start", "grid"]
    assert sorted(os.listdir(out / "runs")) == ["ramp_0.8_0.8", "ramp_0_0"]
    best = yaml.safe_load((out / "profile.yaml").read_text())
    assert plan_of(best).tensors and doc["params"] in ([0.8, 0.8], [0.0, 0.0])
    assert math.isfinite(doc["lambda"])


def test_profile_search_bisects_toward_a_sharp_transition():
    """Thinking switches on between grid points (as on the SmolLM2 triple): off, a profile answers
    in 9 tokens at 15%; on (mean λ ≥ 0.66), at 70% with 60 + 200 (m − 0.66) tokens. Under a
    64-token budget only mean λ in [0.66, 0.68] is both on and affordable; no 3 × 3
    grid point is. The search must reach that band, not refine around the best grid point."""
    def evaluator(knob):
        a, b = knob
        m = (a + b) / 2
        on = m >= 0.66
        return {"tokens_mean": 60 + 200 * (m - 0.66) if on else 9.0, "mean": 0.7 if on else 0.15 - 0.05 * m,
                "think_ratio": 1.0 if on else 0.0, "lambda_mean": m}

    result = find_profile(evaluator, Target.parse("tokens<=64"), tol=0.02, max_probes=16, grid=3)
    assert result.best.metrics["mean"] == 0.7 and result.best.metrics["tokens_mean"] <= 64
    assert 0.66 <= result.best.lam <= 0.68
    assert any(p.phase == "boundary" for p in result.probes)


def test_profile_search_starts_from_the_static_lambda():
    """With the recipe's static λ as the start, the answer never ranks below it: here no grid or
    boundary point beats (0.8, 0.8), the static profile, under the budget."""
    def evaluator(knob):
        a, b = knob
        return {"tokens_mean": 50 + 40 * abs(a - b) + 10 * (a + b), "mean": 0.9 - abs(a - 0.8) - abs(b - 0.8),
                "think_ratio": 1.0, "lambda_mean": (a + b) / 2}

    result = find_profile(evaluator, Target.parse("tokens<=66"), tol=0.05, max_probes=10, grid=2, start=(0.8, 0.8))
    assert result.probes[0].phase == "start" and result.probes[0].params == [0.8, 0.8]
    assert result.best.params == [0.8, 0.8]
    without = find_profile(evaluator, Target.parse("tokens<=66"), tol=0.05, max_probes=10, grid=2)
    assert without.best.metrics["mean"] < 0.9  # the corners and their refinement miss it
