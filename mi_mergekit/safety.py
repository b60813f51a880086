"""Never lose a user's model: where a merge may write, and how it replaces a folder.

Three rules, all checked before the first tensor is read:

1. The output folder must not be, contain, or lie inside an input model folder
   (paths compared after resolving symlinks; a hub model is resolved to its
   local cache snapshot when it is cached), nor lie inside the Hugging Face cache.
2. An existing output folder is replaced only if it is empty or was written by
   mi-mergekit: it carries :data:`MARKER`, which lists the files that merge wrote,
   and holds nothing else. Anything else needs an explicit opt-in:
   ``--overwrite`` on ``mi-mergekit merge`` / ``sweep``, or
   ``MI_MERGEKIT_OVERWRITE=1`` for ``mergekit-yaml`` and the Python API (or
   :func:`allow_overwrite`).
3. The new model is written into a hidden staging folder next to the output
   (``.<name>.incomplete-*``, carrying :data:`STAGE_MARKER`) and swapped in whole
   (:func:`publish`): files are fsynced, then the staging folder
   and the old folder are exchanged with one ``renameat2(RENAME_EXCHANGE)`` where
   the OS offers it (Linux ≥ 3.15 on local file systems), else the old folder is
   renamed aside, the new one renamed into place, and the old one deleted. At
   every instant the output path holds the complete old model or the complete
   new one, never a mix; with the fallback a crash between the two renames
   leaves the old model intact under ``.<name>.replaced-*`` (reported on the next run).
   An error or Ctrl-C deletes the staging folder; a run that was killed outright
   (SIGKILL, power loss) cannot, so the next run into the same output removes the
   staging folders that killed runs left (:func:`remove_stale_stages`) and says how
   many bytes that freed. The published folder gets the permissions a plain ``mkdir``
   would give it (the umask), not the staging folder's private ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple


from mi_mergekit.errors import OutputPathError

LOG = logging.getLogger("mi_mergekit")

#: hidden file in every output folder mi-mergekit writes: the list of its files
MARKER = ".mi_mergekit_output.json"
OVERWRITE_ENV = "MI_MERGEKIT_OVERWRITE"
STAGE_TAG = ".incomplete-"
ASIDE_TAG = ".replaced-"
#: file in every staging folder, locked (flock) by the process writing it; free: stale
STAGE_MARKER = ".mi_mergekit_staging.json"

_OVERWRITE: contextvars.ContextVar = contextvars.ContextVar("mi_mergekit_overwrite", default=False)


# ---------------------------------------------------------------------------- opt-in


def overwrite_allowed() -> bool:
    """True under :func:`allow_overwrite` or with ``MI_MERGEKIT_OVERWRITE=1``."""
    return _OVERWRITE.get() or os.environ.get(OVERWRITE_ENV, "").strip() not in ("", "0")


@contextlib.contextmanager
def allow_overwrite(allowed: bool = True) -> Iterator[None]:
    """Within this block, an existing output folder with foreign files may be replaced."""
    token = _OVERWRITE.set(allowed)
    try:
        yield
    finally:
        _OVERWRITE.reset(token)


# ---------------------------------------------------------------------------- paths


def real(path: str) -> str:
    """Absolute path with every existing symlink resolved (the path need not exist)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(str(path))))


def _within(inner: str, outer: str) -> bool:
    return os.path.commonpath([inner, outer]) == outer


def model_folders(model, options=None) -> List[str]:
    """Local folders a mergekit ``ModelReference`` reads from (model and LoRA), resolved.

    A hub id counts only when it is already in the local cache (found without any
    network access); a model that is not on this machine cannot be overwritten.
    """
    folders = []
    for ref in (model.model, model.lora):
        if ref is None:
            continue
        if os.path.isdir(ref.path):
            folders.append(real(ref.path))
            continue
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                ref.path,
                revision=ref.revision,
                cache_dir=getattr(options, "transformers_cache", None),
                local_files_only=True,
            )
        except Exception:  # not cached, not a repo id: nothing local to protect
            continue
        folders.append(real(local))
    return folders


def hub_cache_folders(options=None) -> List[str]:
    folders = []
    try:
        from huggingface_hub import constants

        folders.append(real(constants.HF_HUB_CACHE))
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    if getattr(options, "transformers_cache", None):
        folders.append(real(options.transformers_cache))
    return folders


def check_output_path(out_path: str, inputs: Sequence[Tuple[str, str]], options=None,
                      overwrite: Optional[bool] = None, existing: bool = True) -> str:
    """Refuse an unsafe output folder; returns its resolved path.

    ``inputs`` are ``(role, folder)`` pairs (e.g. ``("Instruct", "/models/i")``).
    ``existing=False`` skips the rule about an existing folder's files (for a
    folder that only receives new subfolders, like a sweep's).
    """
    out = real(out_path)
    ancestor = os.path.dirname(out)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputPathError(f"the output path lies under {ancestor}, which is a file, not a folder",
                              path=out_path)
    for role, folder in inputs:
        folder = real(folder)
        if out == folder:
            raise OutputPathError(
                f"the output folder is the {role} model's folder; writing there would destroy "
                "the input — choose a new output folder", path=out_path)
        if _within(out, folder):
            raise OutputPathError(
                f"the output folder lies inside the {role} model's folder {folder} — "
                "choose a folder outside every input model", path=out_path)
        if _within(folder, out):
            raise OutputPathError(
                f"the output folder contains the {role} model's folder {folder}; replacing it "
                "would delete the input — choose a new output folder", path=out_path)
    for cache in hub_cache_folders(options):
        if _within(out, cache):
            raise OutputPathError(
                f"the output folder lies inside the Hugging Face cache {cache} — "
                "choose a folder outside it", path=out_path)
    if existing:
        check_existing(out_path, overwrite)
    elif os.path.lexists(out) and not os.path.isdir(out):
        raise OutputPathError(
            "the output path exists and is not a folder — remove it or choose another path",
            path=out_path)
    return out


def check_existing(out_path: str, overwrite: Optional[bool] = None) -> None:
    """Refuse to replace a folder holding files mi-mergekit did not write, unless allowed."""
    out = real(out_path)
    parent, base = os.path.split(out)
    if os.path.isdir(parent) and not os.path.lexists(out):
        asides = sorted(n for n in os.listdir(parent) if n.startswith(f".{base}{ASIDE_TAG}"))
        if asides:
            LOG.warning("an earlier run was interrupted while replacing %s; its previous "
                        "contents are in %s", out, os.path.join(parent, asides[0]))
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out):
        raise OutputPathError(
            "the output path exists and is not a folder — remove it or choose another path",
            path=out_path)
    foreign = foreign_files(out)
    if not foreign:
        return
    if overwrite if overwrite is not None else overwrite_allowed():
        LOG.warning("replacing %s, which holds files mi-mergekit did not write (%s)",
                    out, _shown(foreign))
        return
    raise OutputPathError(
        f"the output folder already holds files mi-mergekit did not write ({_shown(foreign)}); "
        f"choose a new folder, or replace the whole folder with --overwrite "
        f"({OVERWRITE_ENV}=1 for mergekit-yaml)", path=out_path)


def foreign_files(folder: str) -> List[str]:
    """Entries of ``folder`` not listed in its :data:`MARKER` (all entries if it has none)."""
    entries = sorted(os.listdir(folder))
    ours = set()
    try:
        with open(os.path.join(folder, MARKER), encoding="utf-8") as handle:
            ours = set(json.load(handle)["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return [name for name in entries if name not in ours]


def _shown(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------------------- staging


@contextlib.contextmanager
def staged_directory(out_path: str) -> Iterator[str]:
    """Yield a hidden sibling folder; publish it as ``out_path`` only on success.

    On any exception (or Ctrl-C) the staging folder is deleted and the output
    path is untouched. Staging folders of ``out_path`` left by killed runs are
    removed first.
    """
    out = real(out_path)
    parent, base = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    remove_stale_stages(out)
    stage = tempfile.mkdtemp(prefix=f".{base}{STAGE_TAG}", dir=parent)
    marker = None
    try:
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp's folder is private (0700)
        # held locked while the folder is written: the kernel drops the lock when this
        # process ends, however it ends, so a stage whose marker is free is stale
        marker = open(os.path.join(stage, STAGE_MARKER), "w", encoding="utf-8")
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, marker)
        marker.flush()
        yield stage
        os.remove(os.path.join(stage, STAGE_MARKER))
        marker.close()
        marker = None
        publish(stage, out)
    except BaseException:
        if marker is not None:
            marker.close()
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


def _stale(stage: str) -> bool:
    """True if ``stage`` is one of ours whose writer is gone: its marker is not locked."""
    try:
        with open(os.path.join(stage, STAGE_MARKER), "r+", encoding="utf-8") as marker:
            try:
                fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live run holds it
            return True
    except OSError:
        return False  # no marker: not ours


def tree_size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def remove_stale_stages(out_path: str) -> int:
    """Delete the staging folders of ``out_path`` whose writer is gone (a killed run),
    recognised by :data:`STAGE_MARKER`; log one line with the bytes freed; return them."""
    out = real(out_path)
    parent, base = os.path.split(out)
    if not os.path.isdir(parent):
        return 0
    stale = [os.path.join(parent, name) for name in sorted(os.listdir(parent))
             if name.startswith(f".{base}{STAGE_TAG}") and _stale(os.path.join(parent, name))]
    freed = 0
    for path in stale:
        freed += tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        LOG.warning("removed %d staging folder%s of %s left by a killed run (%s): %s freed",
                    len(stale), "s" if len(stale) > 1 else "", out,
                    ", ".join(os.path.basename(p) for p in stale), _bytes(freed))
    return freed


def _bytes(n: int) -> str:
    """``410.2 MB (410234567 bytes)``."""
    value, unit = float(n), "bytes"
    for bigger in ("KB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({n} bytes)"


def publish(stage: str, out_path: str) -> None:
    """Mark, fsync and swap the finished ``stage`` folder in as ``out_path`` (see module doc)."""
    out = real(out_path)
    check_existing(out)  # files may have appeared in the output while we merged
    _write_marker(stage)
    _fsync_tree(stage)
    parent, base = os.path.split(out)
    if not os.path.lexists(out):
        os.rename(stage, out)
    elif exchange(stage, out):
        shutil.rmtree(stage)  # now holds the old model
    else:
        aside = tempfile.mkdtemp(prefix=f".{base}{ASIDE_TAG}", dir=parent)
        os.rmdir(aside)
        os.rename(out, aside)
        os.rename(stage, out)
        shutil.rmtree(aside)
    _fsync(parent)


def _write_marker(stage: str) -> None:
    files = sorted(n for n in os.listdir(stage) if n != MARKER)
    from mi_mergekit import __version__

    with open(os.path.join(stage, MARKER), "w", encoding="utf-8") as handle:
        json.dump({"written_by": f"mi-mergekit {__version__}", "files": files}, handle, indent=1)
        handle.write("\n")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False where the OS or file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


def model_inputs(config, options=None, base_role: str = "base", other_role: str = "input"
                 ) -> List[Tuple[str, str]]:
    """``(role, folder)`` for every local folder a merge recipe reads."""
    found = {}
    for model in config.referenced_models():
        role = base_role if model == config.base_model else other_role
        for folder in model_folders(model, options):
            found.setdefault(folder, role)
    return [(role, folder) for folder, role in found.items()]
