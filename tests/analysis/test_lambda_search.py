"""λ search: synthetic monotone responses, and in-memory materialisation on a tiny model."""

import json
import math
import sys

import pytest
import torch

from common import config_from, load_model, merge, mi_config
from warm import run_warm
from mi_mergekit.analysis.lambda_search import Target, find_lambda
from mi_mergekit.analysis.live_merge import InMemoryInterpolation
from mi_mergekit.errors import MiMergekitError


def logistic(x, center, k):
    return 1.0 / (1.0 + math.exp(-k * (x - center)))


def synthetic(center=0.52, k=30.0, calls=None):
    """Think #R logistic in λ; tokens dip in stage 2 then grow; accuracy saturates."""

    def evaluate(lam):
        if calls is not None:
            calls.append(lam)
        return {
            "think_ratio": logistic(lam, center, k),
            "tokens_mean": 12000 - 6000 * math.exp(-((lam - 0.5) / 0.12) ** 2) + 10000 * max(0.0, lam - 0.5),
            "mean": 0.45 + 0.35 * logistic(lam, 0.55, 12.0),
        }

    return evaluate


def threshold_lambda(level, center=0.52, k=30.0):
    return center + math.log(level / (1 - level)) / k


def test_target_parsing():
    assert Target.parse("think_ratio>=0.95") == Target("think_ratio", ">=", 0.95)
    assert Target.parse("think>=95%") == Target("think_ratio", ">=", 0.95)
    assert Target.parse("tokens<=12000") == Target("tokens_mean", "<=", 12000.0)
    assert Target.parse("accuracy >= 0.7") == Target("mean", ">=", 0.7)
    for bad in ("think<=0.9", "speed>=1", "tokens>=5", ""):
        with pytest.raises(MiMergekitError, match="think_ratio>="):
            Target.parse(bad)


@pytest.mark.parametrize("level", [0.5, 0.95, 0.99])
def test_bisection_finds_the_threshold_within_tol(level, tmp_path):
    calls = []
    log = tmp_path / "probes.jsonl"
    result = find_lambda(synthetic(calls=calls), Target("think_ratio", ">=", level),
                         tol=0.01, max_probes=20, log_path=str(log))
    exact = threshold_lambda(level)
    assert result.best is not None and result.best.feasible
    assert exact <= result.best.lam <= exact + 0.01
    assert len(calls) <= 2 + math.ceil(math.log2(1 / 0.01))  # bracket + bisection steps
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [l["lambda"] for l in lines] == [p.lam for p in result.probes] == calls
    assert all({"probe", "lambda", "phase", "feasible", "metrics", "seconds"} <= set(l) for l in lines)
    assert lines[0]["phase"] == "bracket" and lines[-1]["phase"] == "bisect"


def test_bisection_reports_unreachable_and_trivial_targets():
    r = find_lambda(synthetic(), Target("think_ratio", ">=", 0.95), lo=0.0, hi=0.4)
    assert r.best is None and "not met even at hi" in r.reason and len(r.probes) == 2
    r = find_lambda(synthetic(), Target("think_ratio", ">=", 0.95), lo=0.7, hi=1.0)
    assert r.best.lam == 0.7 and len(r.probes) == 1
    r = find_lambda(synthetic(), Target("think_ratio", ">=", 0.95), tol=1e-4, max_probes=4)
    assert len(r.probes) == 4 and "budget" in r.reason


def test_budget_target_picks_best_accuracy_under_budget():
    evaluate = synthetic()
    budget = 9000.0
    result = find_lambda(evaluate, Target("tokens_mean", "<=", budget), tol=0.01, max_probes=25, grid=5)
    assert result.best is not None and result.best.metrics["tokens_mean"] <= budget
    # brute force on a fine grid: the best feasible accuracy
    fine = [i / 1000 for i in range(1001)]
    feasible = [l for l in fine if evaluate(l)["tokens_mean"] <= budget]
    best = max(evaluate(l)["mean"] for l in feasible)
    assert result.best.metrics["mean"] >= best - 0.01
    assert {p.phase for p in result.probes} == {"grid", "refine"}


def test_accuracy_target_fewest_tokens():
    result = find_lambda(synthetic(), Target("mean", ">=", 0.7), tol=0.01, max_probes=25)
    assert result.best.metrics["mean"] >= 0.7
    assert all(p.metrics["tokens_mean"] >= result.best.metrics["tokens_mean"] for p in result.probes if p.feasible)


# ------------------------------------------------------------- live model, end to end

PROBE = "model.layers.1.mlp.down_proj.weight"


@pytest.mark.parametrize("recipe", [dict(dtype="bfloat16"), dict(dtype="float32", out_dtype="bfloat16",
                                                                  layer_start=1, exclude_modules="attention")])
def test_in_memory_materialisation_equals_on_disk_merge(untied_pair, tmp_path, recipe):
    instruct, thinking = untied_pair
    data = mi_config(instruct, thinking, lam=0.8, **recipe)
    live = InMemoryInterpolation(config_from(data))
    for lam in (0.3, 0.75):
        model = live.set_lambda(lam)
        state = model.state_dict()
        disk = merge({**data, "parameters": {**data["parameters"], "lambda": lam}}, tmp_path / f"m{lam}")
        assert disk.keys() <= state.keys()
        for name, tensor in disk.items():
            assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), (lam, name)


def test_in_memory_recipe_of_the_family_equals_on_disk_merge(untied_pair, tmp_path):
    """Any recipe over the same inputs goes through the method: a λ profile (per-module λ by a
    filter, per-layer λ by a gradient), including tensors the first recipe kept at Instruct."""
    instruct, thinking = untied_pair
    first = mi_config(instruct, thinking, lam=0.8, dtype="bfloat16", layer_start=2)
    live = InMemoryInterpolation(config_from(first))
    profile = mi_config(instruct, thinking, dtype="bfloat16",
                        lam=[{"filter": "mlp", "value": [0.2, 0.9]}, {"value": 0.6}])
    state = live.set_recipe(config_from(profile)).state_dict()
    disk = merge(profile, tmp_path / "profile")
    for name, tensor in disk.items():
        assert torch.equal(state[name], tensor), name
    name = "model.layers.0.mlp.up_proj.weight"  # kept by the first recipe, interpolated by the profile
    assert not torch.equal(disk[name].float(), load_model(instruct)[name].float())


def test_find_lambda_end_to_end_with_a_cheap_evaluator_on_the_live_model(dense_pair, tmp_path):
    """Alternate materialise + 'eval': the fake eval reads the live weights only."""
    instruct, thinking = dense_pair
    data = mi_config(instruct, thinking, lam=0.5, dtype="bfloat16")
    live = InMemoryInterpolation(config_from(data))
    i, t = load_model(instruct)[PROBE].double(), load_model(thinking)[PROBE].double()
    direction = t - i
    seen = []

    def evaluator(lam):
        model = live.set_lambda(lam)
        w = dict(model.named_parameters())[PROBE].detach().double()
        position = float(((w - i) * direction).sum() / (direction * direction).sum())  # ≈ λ
        seen.append((lam, position))
        return {"think_ratio": logistic(position, 0.55, 30.0), "tokens_mean": 1000 + 5000 * position,
                "mean": position}

    log = tmp_path / "probes.jsonl"
    result = find_lambda(evaluator, Target("think_ratio", ">=", 0.95), tol=0.01, max_probes=12,
                         log_path=str(log))
    exact = 0.55 + math.log(19) / 30.0
    assert abs(result.best.lam - exact) <= 0.02
    assert all(abs(position - lam) < 0.01 for lam, position in seen)  # weights really moved with λ
    assert len(log.read_text().splitlines()) == len(result.probes)
    # the live model at the answer is the on-disk merge at the answer, bit for bit
    state = live.set_lambda(result.best.lam).state_dict()
    disk = merge({**data, "parameters": {**data["parameters"], "lambda": result.best.lam}}, tmp_path / "best")
    assert all(torch.equal(state[n], disk[n]) for n in disk)


def test_find_lambda_command_with_the_real_harness(dense_pair, tmp_path):
    """`mi-mergekit find-lambda` on a random tiny model (no thinking ever)."""
    import yaml

    instruct, thinking = dense_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(instruct, thinking, lam=0.5, dtype="bfloat16")))
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"id": "a", "prompt": "w1 w2", "answer": "3"}\n{"id": "b", "prompt": "w3", "answer": "4"}\n')
    out = tmp_path / "search"
    result = run_warm([sys.executable, "-m", "mi_mergekit.cli", "find-lambda", str(recipe),
                  "--dataset", str(dataset), "--out", str(out), "--target", "think_ratio>=0.5",
                  "-n", "2", "--max-new-tokens", "3", "--batch-size", "2", "--device", "cpu"],
                 env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "find-lambda probes" in result.stderr and "2/10" in result.stderr  # the progress bar
    doc = json.loads((out / "result.json").read_text())
    assert doc["lambda"] is None and "not met even at hi" in doc["reason"]  # random weights never emit </think>
    probes = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert [p["lambda"] for p in probes] == [0.0, 1.0]
    for p in probes:
        assert p["metrics"]["think_ratio"] == 0.0 and p["metrics"]["tokens_mean"] > 0
        assert (out / "runs" / f"lambda_{p['lambda']:g}" / "metrics.json").is_file()
    assert not (out / "models").exists()  # memory materialisation wrote no model
