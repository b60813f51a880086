"""The streaming engine against mergekit's executor and writer (MI_MERGEKIT_ENGINE=mergekit).

Every case runs the same recipe through both engines and compares every output
tensor bit for bit (and its dtype); then the stream engine's own promises: the
Instruct checkpoint's shard layout, safetensors files as ``save_file`` writes
them, slices read once each and never more than CHUNK elements at a time.
"""

import json
import os
import shutil

import pytest
import torch
from common import config_from, console, load_model, merge, mi_config
from warm import run_warm
from mergekit.merge import MergeOptions
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mi_mergekit.merge import engine as engine_module
from mi_mergekit.merge.safetensors_io import SafetensorsFile
from mi_mergekit.merge.sweep import run_sweep


def shard(src: str, dst: str, parts: int = 3) -> str:
    """A copy of the model folder ``src`` with its weights split over ``parts`` files + index."""
    shutil.copytree(src, dst)
    os.remove(os.path.join(dst, "model.safetensors"))
    tensors = load_file(os.path.join(src, "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for k in range(parts):
        file_name = f"model-{k + 1:05d}-of-{parts:05d}.safetensors"
        chunk = {n: tensors[n] for n in names[k::parts]}
        save_file(chunk, os.path.join(dst, file_name), metadata={"format": "pt"})
        weight_map.update({n: file_name for n in chunk})
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as handle:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, handle)
    return dst


@pytest.fixture(scope="module")
def sharded_pair(dense_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    return tuple(shard(p, str(root / os.path.basename(p))) for p in dense_pair)


def assert_same_tensors(a_dir, b_dir):
    a, b = load_model(str(a_dir)), load_model(str(b_dir))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


CASES = {
    "whole": dict(lam=0.7),
    "window": dict(lam=0.8, layer_start=1, layer_end=2),
    "no-mlp": dict(lam=0.8, exclude_modules="mlp"),
    "attention-only": dict(lam=0.6, modules="attention", layer_end=2),
    "bf16-extrapolate": dict(lam=1.3, dtype="bfloat16"),
    "f32-to-f16": dict(lam=0.4, dtype="float32", out_dtype="float16"),
}
PAIRS = ["dense_pair", "untied_pair", "moe_pair", "sharded_pair"]


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_run_merge_engines_write_identical_tensors(pair, case, request, tmp_path, monkeypatch):
    instruct, thinking = request.getfixturevalue(pair)
    params = dict(CASES[case])
    out_dtype = params.pop("out_dtype", None)
    data = mi_config(instruct, thinking, **params)
    if out_dtype:
        data["out_dtype"] = out_dtype
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "mergekit")
    merge(data, str(tmp_path / "mergekit"))
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "stream")
    merge(data, str(tmp_path / "stream"))
    assert_same_tensors(tmp_path / "mergekit", tmp_path / "stream")
    # the same non-weight files (config, tokenizer, card, plan) with the same content
    skip = {".mi_mergekit_output.json"}
    listing = {p for p in os.listdir(tmp_path / "mergekit") if p not in skip and "safetensors" not in p}
    assert listing == {p for p in os.listdir(tmp_path / "stream") if p not in skip and "safetensors" not in p}
    for name in listing - {"README.md"}:
        assert (tmp_path / "mergekit" / name).read_bytes() == (tmp_path / "stream" / name).read_bytes(), name


@pytest.mark.parametrize("pair", ["dense_pair", "moe_pair", "sharded_pair"])
def test_sweep_engines_write_identical_tensors(pair, request, tmp_path, monkeypatch):
    instruct, thinking = request.getfixturevalue(pair)
    data = mi_config(instruct, thinking, layer_start=1, exclude_modules="attention", dtype="bfloat16")
    lambdas = ["0", "0.3", "0.55", "1"]
    for engine in ("mergekit", "stream"):
        monkeypatch.setenv("MI_MERGEKIT_ENGINE", engine)
        run_sweep(config_from(data), lambdas, str(tmp_path / engine), MergeOptions(quiet=True))
    for lam in lambdas:
        assert_same_tensors(tmp_path / "mergekit" / f"lambda_{lam}", tmp_path / "stream" / f"lambda_{lam}")
    # λ = 0 keeps every Instruct tensor bit for bit (outside the window too)
    assert_same_tensors(tmp_path / "stream" / "lambda_0", instruct)


def test_whole_model_sweep_ends_are_the_inputs(moe_pair, tmp_path):
    instruct, thinking = moe_pair
    run_sweep(config_from(mi_config(instruct, thinking, dtype="bfloat16")), ["0", "1"],
              str(tmp_path / "s"), MergeOptions(quiet=True))
    assert_same_tensors(tmp_path / "s" / "lambda_0", instruct)
    assert_same_tensors(tmp_path / "s" / "lambda_1", thinking)


def test_nway_engines_write_identical_tensors(dense_pair, tmp_path, monkeypatch):
    instruct, thinking = dense_pair
    data = {
        "merge_method": "nway_interpolation",
        "models": [{"model": instruct, "parameters": {"weight": 0.3}},
                   {"model": thinking, "parameters": {"weight": 0.7}}],
        "dtype": "bfloat16",
    }
    calls = []
    original = engine_module.execute
    monkeypatch.setattr(engine_module, "execute", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "mergekit")
    merge(data, str(tmp_path / "mergekit"))
    assert calls == []
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "stream")
    merge(data, str(tmp_path / "stream"))
    assert calls == [1]
    assert_same_tensors(tmp_path / "mergekit", tmp_path / "stream")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["mergekit-yaml", "mi-mergekit"])
def test_console_scripts_engines_write_identical_tensors(command, moe_pair, tmp_path):
    import yaml

    instruct, thinking = moe_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(mi_config(instruct, thinking, lam=0.8, layer_start=2, dtype="bfloat16")))
    outputs = {}
    for engine in ("mergekit", "stream"):
        out = tmp_path / engine
        args = [console("mergekit-yaml"), str(recipe), str(out)] if command == "mergekit-yaml" else \
            [console("mi-mergekit"), "merge", str(recipe), str(out)]
        result = run_warm(args, env={**os.environ, "MI_MERGEKIT_ENGINE": engine})
        assert result.returncode == 0, result.stderr
        outputs[engine] = result.stderr
    assert_same_tensors(tmp_path / "mergekit", tmp_path / "stream")
    assert "Merging" in outputs["stream"] and "B/s" in outputs["stream"]  # bytes/s progress bar


def test_output_keeps_the_instruct_shard_layout(sharded_pair, tmp_path):
    instruct, thinking = sharded_pair
    merge(mi_config(instruct, thinking, lam=0.5, dtype="bfloat16"), str(tmp_path / "out"))
    with open(os.path.join(instruct, "model.safetensors.index.json")) as handle:
        expected = json.load(handle)["weight_map"]
    with open(tmp_path / "out" / "model.safetensors.index.json") as handle:
        index = json.load(handle)
    assert index["weight_map"] == expected
    files = sorted(p for p in os.listdir(tmp_path / "out") if p.endswith(".safetensors"))
    assert files == sorted(set(expected.values()))
    sizes = sum(os.path.getsize(tmp_path / "out" / f) for f in files)
    assert 0 < index["metadata"]["total_size"] < sizes
    for file_name in files:  # each file holds exactly the tensors the index says
        with safe_open(str(tmp_path / "out" / file_name), "pt") as handle:
            assert set(handle.keys()) == {n for n, f in expected.items() if f == file_name}


def test_out_shard_size_shards_like_mergekit(dense_pair, tmp_path, monkeypatch):
    instruct, thinking = dense_pair
    data = mi_config(instruct, thinking, lam=0.5, dtype="bfloat16")
    for engine in ("mergekit", "stream"):
        monkeypatch.setenv("MI_MERGEKIT_ENGINE", engine)
        merge(data, str(tmp_path / engine), out_shard_size=20_000)
    listing = [sorted(p for p in os.listdir(tmp_path / e) if "safetensors" in p) for e in ("mergekit", "stream")]
    assert len(listing[1]) > 2 and "model.safetensors.index.json" in listing[1]
    assert listing[0] == listing[1]
    assert_same_tensors(tmp_path / "mergekit", tmp_path / "stream")


def test_files_are_what_safetensors_itself_writes(untied_pair, tmp_path):
    """Byte for byte the file safetensors.torch.save_file writes for the same tensors."""
    instruct, thinking = untied_pair
    merge(mi_config(instruct, thinking, lam=0.5, dtype="bfloat16", out_dtype="float32"), str(tmp_path / "out"))
    path = tmp_path / "out" / "model.safetensors"
    save_file(load_file(str(path)), str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    assert path.read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_outputs_load_in_transformers_and_mergekit(moe_pair, tmp_path):
    import transformers
    from mergekit.common import ModelReference

    instruct, thinking = moe_pair
    out = str(tmp_path / "out")
    merged = merge(mi_config(instruct, thinking, lam=0.5, dtype="bfloat16"), out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    state = model.state_dict()
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(state[name], merged[name])
    loader = ModelReference.model_validate(out).lazy_loader()
    assert torch.equal(loader.get_tensor(name), merged[name])


def test_each_slice_is_read_once_and_never_more_than_a_chunk(moe_pair, tmp_path, monkeypatch):
    instruct, thinking = moe_pair
    monkeypatch.setattr(engine_module, "CHUNK", 1000)
    monkeypatch.setattr(engine_module, "READ_AHEAD", 1)
    monkeypatch.setattr(engine_module, "WRITE_SLOTS", 1)  # fewer slots than outputs: they take turns
    reads = []
    original = SafetensorsFile.read

    def read(self, name, start, stop, buffer=None):
        reads.append((os.path.dirname(self.path), name, start, stop))
        return original(self, name, start, stop, buffer)

    monkeypatch.setattr(SafetensorsFile, "read", read)
    data = mi_config(instruct, thinking, lam=0.5, dtype="bfloat16")
    outputs = run_sweep(config_from(data), ["0.2", "0.5", "0.8"], str(tmp_path / "s"), MergeOptions(quiet=True))
    assert all(stop - start <= 1000 for *_, start, stop in reads)
    assert len(reads) == len(set(reads))  # no slice read twice
    for folder in (instruct, thinking):  # every element of every tensor read exactly once
        tensors = load_file(os.path.join(folder, "model.safetensors"))
        for name, tensor in tensors.items():
            ranges = sorted((a, b) for f, n, a, b in reads if f == folder and n == name)
            assert ranges[0][0] == 0 and ranges[-1][1] == tensor.numel(), name
            assert all(r[1] == s[0] for r, s in zip(ranges, ranges[1:])), name
    reference = merge({**data, "parameters": {"lambda": 0.5}}, str(tmp_path / "ref"))
    got = load_model(outputs[1].path)
    assert all(torch.equal(got[n], reference[n]) for n in reference)


def test_unknown_engine_is_refused_before_writing(dense_pair, tmp_path, monkeypatch):
    instruct, thinking = dense_pair
    monkeypatch.setenv("MI_MERGEKIT_ENGINE", "turbo")
    with pytest.raises(ValueError, match="MI_MERGEKIT_ENGINE='turbo'"):
        merge(mi_config(instruct, thinking), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_failing_write_leaves_nothing(dense_pair, tmp_path, monkeypatch):
    import errno

    instruct, thinking = dense_pair
    calls = []
    real = os.pwritev

    def pwritev(*args):
        calls.append(1)
        if len(calls) == 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(os, "pwritev", pwritev)
    with pytest.raises(Exception, match="disk full|No space"):
        run_sweep(config_from(mi_config(instruct, thinking, dtype="bfloat16")), ["0.2", "0.8"],
                  str(tmp_path / "s"), MergeOptions(quiet=True))
    assert not (tmp_path / "s").exists() or os.listdir(tmp_path / "s") == []


def test_beyond_the_page_cache_drops_what_was_read_and_written(sharded_pair, tmp_path, monkeypatch):
    """A merge larger than the page cache drops the pages of every input range once read and
    of every output range once written (posix_fadvise DONTNEED), and writes the same bits."""
    from mi_mergekit.merge import safetensors_io

    instruct, thinking = sharded_pair
    data = mi_config(instruct, thinking, dtype="bfloat16")
    merge(data, str(tmp_path / "cached"))
    monkeypatch.setattr(engine_module, "CHUNK", 1000)
    monkeypatch.setattr(engine_module, "exceeds_page_cache", lambda nbytes: nbytes > 0)
    dropped = []
    advise = os.posix_fadvise

    def spy(fd, offset, length, advice):
        if advice == os.POSIX_FADV_DONTNEED:
            dropped.append((os.path.realpath(f"/proc/self/fd/{fd}"), offset, offset + length))
        return advise(fd, offset, length, advice)

    monkeypatch.setattr(safetensors_io.os, "posix_fadvise", spy)
    merge(data, str(tmp_path / "beyond"))
    assert_same_tensors(tmp_path / "cached", tmp_path / "beyond")

    def covered(path, ranges):
        """Every byte of the file's tensor data lies in one of the ranges."""
        entries = SafetensorsFile(path).entries.values()
        position, end = min(e.offset for e in entries), os.path.getsize(path)
        for start, stop in sorted(ranges):
            if start <= position:
                position = max(position, stop)
        return position >= end

    inputs = {os.path.realpath(folder) for folder in (instruct, thinking)}
    for folder in inputs:
        for name in (n for n in os.listdir(folder) if n.endswith(".safetensors")):
            path = os.path.join(folder, name)
            assert covered(path, [(a, b) for p, a, b in dropped if p == path]), path
    for name in (n for n in os.listdir(tmp_path / "beyond") if n.endswith(".safetensors")):
        written = [(a, b) for p, a, b in dropped if os.path.dirname(p) not in inputs and p.endswith(name)]
        assert covered(str(tmp_path / "beyond" / name), written), name
