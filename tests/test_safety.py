"""Output safety: the atomic swap, the foreign-file rule, and the sample store's all-or-nothing append."""

import errno
import json
import os

import pytest

from mi_mergekit import safety
from mi_mergekit.errors import OutputPathError
from mi_mergekit.eval.store import SampleStore


def _folder(path, files):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path):
    return {n: (path / n).read_text() for n in sorted(os.listdir(path)) if n != safety.MARKER}


@pytest.mark.parametrize("swap", ["renameat2", "fallback"])
def test_publish_replaces_an_output_whole(tmp_path, monkeypatch, swap):
    if swap == "fallback":
        monkeypatch.setattr(safety, "exchange", lambda a, b: False)
    out = tmp_path / "out"
    with safety.staged_directory(str(out)) as stage:
        (open(os.path.join(stage, "model-1.safetensors"), "w")).write("old-1")
        (open(os.path.join(stage, "model-2.safetensors"), "w")).write("old-2")
    assert _contents(out) == {"model-1.safetensors": "old-1", "model-2.safetensors": "old-2"}
    marker = json.loads((out / safety.MARKER).read_text())
    assert marker["files"] == ["model-1.safetensors", "model-2.safetensors"]

    with safety.staged_directory(str(out)) as stage:  # ours: replaced without opt-in
        (open(os.path.join(stage, "model.safetensors"), "w")).write("new")
    assert _contents(out) == {"model.safetensors": "new"}  # no stale shard survives
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or aside folder left


def test_exchange_swaps_two_folders(tmp_path):
    a, b = _folder(tmp_path / "a", {"x": "1"}), _folder(tmp_path / "b", {"y": "2"})
    assert safety.exchange(str(a), str(b)) is True  # Linux: renameat2(RENAME_EXCHANGE)
    assert _contents(a) == {"y": "2"} and _contents(b) == {"x": "1"}


def test_a_failure_while_publishing_leaves_the_old_model(tmp_path, monkeypatch):
    out = _folder(tmp_path / "out", {"model.safetensors": "old"})
    monkeypatch.setattr(safety, "exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def crash_on_second_rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # after moving the old folder aside, before moving the new in
            raise OSError(errno.EIO, "simulated crash")
        real_rename(src, dst)

    monkeypatch.setattr(safety.os, "rename", crash_on_second_rename)
    with safety.allow_overwrite(), pytest.raises(OSError, match="simulated crash"):
        with safety.staged_directory(str(out)) as stage:
            (open(os.path.join(stage, "model.safetensors"), "w")).write("new")
    aside = [n for n in os.listdir(tmp_path) if safety.ASIDE_TAG in n]
    assert len(aside) == 1 and _contents(tmp_path / aside[0]) == {"model.safetensors": "old"}
    assert not [n for n in os.listdir(tmp_path) if safety.STAGE_TAG in n]


def test_failure_inside_the_block_touches_nothing(tmp_path):
    out = _folder(tmp_path / "out", {"model.safetensors": "old"})
    with safety.allow_overwrite(), pytest.raises(RuntimeError):
        with safety.staged_directory(str(out)) as stage:
            (open(os.path.join(stage, "model.safetensors"), "w")).write("half")
            raise RuntimeError("merge failed")
    assert _contents(out) == {"model.safetensors": "old"}
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_foreign_files_need_an_opt_in(tmp_path, monkeypatch):
    out = _folder(tmp_path / "out", {"README.md": "my model card"})
    with pytest.raises(OutputPathError, match=r"did not write \(README.md\).*--overwrite"):
        safety.check_existing(str(out))
    monkeypatch.setenv(safety.OVERWRITE_ENV, "1")
    safety.check_existing(str(out))  # allowed now
    monkeypatch.delenv(safety.OVERWRITE_ENV)
    with safety.allow_overwrite():
        safety.check_existing(str(out))
    (tmp_path / "empty").mkdir()
    safety.check_existing(str(tmp_path / "empty"))  # an empty folder is fine


@pytest.mark.parametrize("out, fragment", [
    ("m", "is the input model's folder"),
    ("m/sub/out", "lies inside the input model's folder"),
    (".", "contains the input model's folder"),
    ("link", "is the input model's folder"),
])
def test_inputs_are_never_outputs(tmp_path, out, fragment):
    model = _folder(tmp_path / "m", {"config.json": "{}"})
    os.symlink(model, tmp_path / "link")
    with pytest.raises(OutputPathError, match=fragment):
        safety.check_output_path(str(tmp_path / out), [("input", str(model))])


def test_a_failed_append_is_cut_back_and_never_duplicated(tmp_path, monkeypatch):
    path = tmp_path / "samples.jsonl"
    store = SampleStore(path)
    record = lambda q, i: {"question_id": q, "sample_index": i, "text": f"{q}{i}"}  # noqa: E731
    assert store.append([record("a", 0)]) == 1
    before = path.read_bytes()

    real_write = os.write

    def full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as failure:
        store.append([record("a", 1), record("b", 0)])
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(path)
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before  # the torn bytes are gone
    assert ("a", 1) not in store and len(store) == 1

    assert store.append([record("a", 0), record("a", 1), record("b", 0)]) == 2
    reread = SampleStore(path)
    assert [(r["question_id"], r["sample_index"]) for r in reread.samples()] == [("a", 0), ("a", 1), ("b", 0)]
    assert len(path.read_text().splitlines()) == 3
