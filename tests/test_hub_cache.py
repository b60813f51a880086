"""Recipes that name hub ids run from a complete local Hugging Face cache, with no network.

A cache is built in a temporary ``HF_HOME`` in the layout ``hf download`` writes
(``models--org--name/{blobs,snapshots/<commit>,refs}``): one repository whose ``main``
is the Instruct model and whose ``thinking`` ref (a revision) is the Thinking model.
The hub endpoint is a closed local port, so any network access fails at once. Every
command runs, with and without ``HF_HUB_OFFLINE``; a model that is neither cached nor
reachable is one ``Error:`` line saying how to get it.
"""

import hashlib
import os

import pytest
import torch
import yaml

from common import console, load_model, run

REPO = "tiny-org/pair"
COMMITS = {"main": "a" * 40, "thinking": "b" * 40}


def cache(home, repo_id, refs):
    """Put ``refs`` ({ref: (commit, local folder)}) of ``repo_id`` in the cache under ``home``
    the way ``hf download`` does: content-addressed blobs, snapshot symlinks, refs."""
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    for ref, (commit, folder) in refs.items():
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for name in sorted(os.listdir(folder)):
            data = open(os.path.join(folder, name), "rb").read()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hf_home(dense_pair, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-home")
    cache(home, REPO, {ref: (commit, folder) for (ref, commit), folder in zip(COMMITS.items(), dense_pair)})
    return str(home)


def env(hf_home, offline):
    values = {"HF_HOME": hf_home, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1",
              "HF_HUB_OFFLINE": "1" if offline else "0", "HTTPS_PROXY": "http://127.0.0.1:9"}
    return values


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def mi_recipe(thinking=f"{REPO}@thinking"):
    return {"merge_method": "model_interpolation", "base_model": REPO, "models": [{"model": thinking}],
            "parameters": {"lambda": 0.8}, "dtype": "float32"}


def ta_recipe():
    return {"merge_method": "task_arithmetic", "base_model": REPO,
            "models": [{"model": f"{REPO}@thinking", "parameters": {"weight": 0.8}}], "dtype": "float32"}


def expected(dense_pair):
    i, t = (load_model(p) for p in dense_pair)
    return {n: (t[n].float() - i[n].float()) * 0.8 + i[n].float() for n in i}


def assert_merged(out, dense_pair):
    want, got = expected(dense_pair), load_model(str(out))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[n], want[n]) for n in want)


@pytest.mark.parametrize("offline", [False, True], ids=["no-HF_HUB_OFFLINE", "HF_HUB_OFFLINE=1"])
def test_mergekit_yaml_reads_hub_ids_from_the_cache(offline, hf_home, dense_pair, tmp_path):
    for name, recipe in (("mi", mi_recipe()), ("ta", ta_recipe())):  # ours, and a stock method
        result = run([console("mergekit-yaml"), str(write(tmp_path, f"{name}.yaml", recipe)),
                      str(tmp_path / name)], env=env(hf_home, offline))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "torch_dtype" not in result.stderr  # transformers' deprecation of mergekit's own code: filtered
        assert_merged(tmp_path / name, dense_pair)
        card = (tmp_path / name / "README.md").read_text()
        assert REPO in card and "snapshots" not in card  # the card names the hub ids


def test_mi_mergekit_commands_read_hub_ids_from_the_cache(hf_home, dense_pair, tmp_path):
    recipe = str(write(tmp_path, "mi.yaml", mi_recipe()))
    result = run([console("mi-mergekit"), "merge", recipe, str(tmp_path / "merged")], env=env(hf_home, False))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch_dtype" not in result.stderr and "WARNING" not in result.stderr, result.stderr
    assert_merged(tmp_path / "merged", dense_pair)
    result = run([console("mi-mergekit"), "sweep", recipe, str(tmp_path / "sweep"), "--lambdas", "0.8,1"],
                 env=env(hf_home, False))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_merged(tmp_path / "sweep" / "lambda_0.8", dense_pair)
    result = run([console("mi-mergekit"), "plan", recipe], env=env(hf_home, False))
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]  # the dry run says nothing else
    assert COMMITS["thinking"] in result.stdout  # the revision in the recipe is honoured


@pytest.mark.parametrize("offline", [False, True], ids=["no-HF_HUB_OFFLINE", "HF_HUB_OFFLINE=1"])
def test_a_model_neither_cached_nor_reachable_is_one_line(offline, hf_home, tmp_path):
    recipe = str(write(tmp_path, "r.yaml", mi_recipe(thinking="tiny-org/missing")))
    result = run([console("mergekit-yaml"), recipe, str(tmp_path / "out")], env=env(hf_home, offline))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]]  # that line alone
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: model tiny-org/missing not found: no folder "), last
    assert "no complete snapshot in the Hugging Face cache" in last
    assert ("HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached (http://127.0.0.1:9") in last
    assert "download it with `hf download tiny-org/missing`" in last
    assert "mergekit-yaml has no --model option, `mi-mergekit merge RECIPE OUT --model tiny-org/missing=PATH`" in last
    assert not (tmp_path / "out").exists()
    result = run([console("mi-mergekit"), "plan", recipe], env=env(hf_home, offline))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "map it to a local copy with --model tiny-org/missing=PATH" in last, last


def test_the_headline_command_runs_from_the_cache(tmp_path):
    """`mergekit-yaml recipes/mi_0.8_last2of3.yaml out/`, the recipe unchanged, with the two
    Qwen3-4B-2507 names in the cache (36-layer stand-ins) and no network."""
    from recipes_fixtures import NAMES_4B, RECIPES, SPEC_4B
    from synthetic import build_pair

    instruct, thinking = build_pair(str(tmp_path / "standins"), SPEC_4B)
    home = tmp_path / "hf-home"
    cache(home, NAMES_4B["instruct"], {"main": ("c" * 40, instruct)})
    cache(home, NAMES_4B["thinking"], {"main": ("d" * 40, thinking)})
    result = run([console("mergekit-yaml"), os.path.join(RECIPES, "mi_0.8_last2of3.yaml"), str(tmp_path / "out")],
                 env=env(str(home), False), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    plan = json.loads((tmp_path / "out" / "mi_plan.json").read_text())
    assert {t["layer"] for t in plan["tensors"] if t["interpolated"] and t["layer"] is not None} == set(range(12, 36))
    i, out = load_model(instruct), load_model(str(tmp_path / "out"))
    assert all(torch.equal(out[n], i[n]) for n in i if ".layers.0." in n)  # outside the window: Instruct
