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


# ---------------------------------------------------------------------------- killed runs

# mergekit-yaml with a hook: at the 10th output slice the process signals itself. SIGINT gets
# Python's Ctrl-C handler back first: a job started in the background by a non-interactive shell
# (`pytest ... &` in a script, as CI may run) inherits SIGINT ignored, and so would the child.
KILL_AT_SLICE = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "import mi_mergekit.merge.engine as engine\n"
    "real, n, sig = engine.align_slice, [0], getattr(signal, sys.argv[3])\n"
    "def align_slice(*a, **k):\n"
    "    n[0] += 1\n"
    "    if n[0] == 10: os.kill(os.getpid(), sig)\n"
    "    return real(*a, **k)\n"
    "engine.align_slice = align_slice\n"
    "from mergekit.scripts.run_yaml import main\n"
    "sys.argv = ['mergekit-yaml', sys.argv[1], sys.argv[2]]\n"
    "main()\n"
)


def _hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_sigkill_mid_write_then_the_next_run_leaves_no_hidden_folder(dense_pair, tmp_path):
    import signal
    import sys

    from common import console, load_model
    from warm import run_warm
    from synthetic import recipe

    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8))
    out = tmp_path / "out"
    assert run_warm([console("mergekit-yaml"), str(path), str(out)]).returncode == 0
    before = load_model(str(out))

    killed = run_warm([sys.executable, "-c", KILL_AT_SLICE, str(path), str(out), "SIGKILL"])
    assert killed.returncode == -signal.SIGKILL
    (stage,) = _hidden(tmp_path)  # what a kill -9 leaves: the staging folder, and the old model whole
    assert stage.startswith(".out.incomplete-") and not (tmp_path / stage / "config.json").exists()
    left = safety.tree_size(str(tmp_path / stage))
    assert left > 0
    assert all(torch_equal(load_model(str(out))[n], before[n]) for n in before)

    again = run_warm([console("mergekit-yaml"), str(path), str(out)])
    assert again.returncode == 0, again.stderr
    assert _hidden(tmp_path) == []
    lines = [line for line in again.stderr.splitlines() if "left by a killed run" in line]
    assert len(lines) == 1 and f"({left} bytes)" in lines[0] and stage in lines[0], again.stderr[-2000:]


def test_ctrl_c_removes_the_staging_folder(dense_pair, tmp_path):
    import sys

    from warm import run_warm
    from synthetic import recipe

    instruct, thinking = dense_pair
    path = tmp_path / "r.yaml"
    path.write_text(recipe(instruct, thinking, 0.8))
    interrupted = run_warm([sys.executable, "-c", KILL_AT_SLICE, str(path), str(tmp_path / "out"), "SIGINT"])
    why = f"exit {interrupted.returncode}, left {os.listdir(tmp_path)}, stderr:\n{interrupted.stderr[-3000:]}"
    assert interrupted.returncode != 0 and "Traceback" not in interrupted.stderr, why
    assert os.listdir(tmp_path) == ["r.yaml"], why


def test_a_live_runs_staging_folder_is_left_alone(tmp_path):
    out = tmp_path / "out"
    with safety.staged_directory(str(out)) as stage:
        with open(os.path.join(stage, "x.safetensors"), "w") as handle:
            handle.write("data")
        assert safety.remove_stale_stages(str(out)) == 0  # our own, running
        foreign = tmp_path / ".out.incomplete-notours"  # no marker: not ours to delete
        foreign.mkdir()
    assert foreign.exists() and _hidden(tmp_path) == [".out.incomplete-notours"]


def test_published_folder_has_the_umask_permissions(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        with safety.staged_directory(str(tmp_path / "out")) as stage:
            open(os.path.join(stage, "f"), "w").close()
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "out").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode) == 0o755


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
