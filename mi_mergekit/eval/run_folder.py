"""What an eval run folder is, and the checks on the folders an evaluation is given before it
starts: the model (a readable model folder, or a cached / existing hub id) and ``--out`` (empty,
or a run of this format; writable), and the clean-up of a run that could not start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval import store as st
from mi_mergekit.runlock import LOCK_FILE

#: the format of the run.json this version writes (another is refused as --out)
FORMAT_VERSION = 1


class RunMismatchError(EvalInputError):
    """``out_dir`` holds a run with different generation settings."""


class ModelFolderError(EvalInputError):
    """The model to evaluate is not a readable model folder."""


class RunFolderError(EvalInputError, FileNotFoundError):
    """A folder given as an eval run is missing or not a (graded) run; also a
    ``FileNotFoundError``, as it was before it joined the family."""


#: what `mi-mergekit eval` writes into a run folder (anything else: not a run folder)
RUN_FOLDER_FILES = {st.RUN_FILE, st.PROMPTS_FILE, st.SAMPLES_FILE, st.GRADES_FILE, st.METRICS_FILE,
                    st.QUESTIONS_FILE, LOCK_FILE}


def check_model_folder(model_path: Union[str, Path]) -> str:
    """The folder (or hub id) to load for ``model_path``: a local model folder with a readable
    config.json; for a reference that is no folder here, the complete snapshot of that hub id
    in the local cache, or the hub id itself when the hub says it exists — decided at once,
    with no network wait (:func:`mi_mergekit.merge.hub.locate`)."""
    path = Path(model_path)
    if path.is_dir():
        config = path / "config.json"
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFolderError(f"the model folder has no config.json ({path})") from None
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"cannot read the model's config.json: {exc} ({config})") from None
        return str(model_path)
    if path.exists():
        raise ModelFolderError(f"--model must be a model folder, not a file ({path})")
    from mi_mergekit.errors import CheckpointFileError
    from mi_mergekit.merge.hub import locate

    try:
        found, _ = locate(str(model_path), what="model")
    except CheckpointFileError as exc:
        raise ModelFolderError(exc.format_message()) from None
    return found


def remove_failed_start(out: Path) -> None:
    """Remove a run folder this call created when nothing was stored in it (the run could
    not start: a backend that is not installed, a model that does not load …)."""
    try:
        leftovers = set(os.listdir(out))
    except OSError:
        return
    if leftovers <= {LOCK_FILE}:
        for name in leftovers:
            (out / name).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:
            pass


def check_run_folder(out: Path) -> None:
    """Refuse an --out folder that another command wrote (or a run.json eval did not write)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RunMismatchError(f"--out must be a folder, not a file ({out})")
    run_file = out / st.RUN_FILE
    if run_file.exists():
        try:
            config = st.read_json(run_file)
        except (OSError, ValueError) as exc:
            raise RunMismatchError(f"cannot read the run's settings: {exc} ({run_file})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT_VERSION or "benchmark" not in config:
            raise RunMismatchError(f"{st.RUN_FILE} was not written by this version of `mi-mergekit eval`; "
                                   f"use a new --out folder ({run_file})")
        return
    foreign = sorted(n for n in os.listdir(out) if n not in RUN_FOLDER_FILES
                     and not n.endswith(".tmp") and not n.startswith(".write-test-"))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise RunMismatchError(f"--out is not an eval run folder (it holds {shown}); "
                               f"use a new or empty folder ({out})")


def check_writable(out: Path) -> None:
    """Write and remove a probe file, so an unwritable --out fails before any generation."""
    probe = out / f".write-test-{os.getpid()}"
    with probe.open("wb") as handle:
        handle.write(b"ok")
        handle.flush()
        os.fsync(handle.fileno())
    probe.unlink()
