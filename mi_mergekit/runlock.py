"""One writer per run folder.

An eval run folder (and the ``--out`` of ``demo`` and ``find-lambda``) is written by one
process at a time: :func:`run_lock` takes an exclusive ``flock`` on ``<folder>/.mi_mergekit.lock``
before anything is generated, and a second process (a relaunched cluster job while the first
still runs) stops at once with one ``Error:`` line naming the process that holds it. The kernel
drops the lock when its process ends however it ends, so a lock left by a killed process is
simply taken over; the holder writes its pid, host, command and start time into the file and
empties it on a clean exit, so a non-empty file found free means its writer died, which is
said in one line. ``flock`` also holds between hosts on NFSv4 (Linux maps it to a POSIX lock).
The file is emptied, never deleted: deleting it would let a third process lock a new file
while a second still holds the old one.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Union

from mi_mergekit.errors import MiMergekitError

LOCK_FILE = ".mi_mergekit.lock"
log = logging.getLogger(__name__)


class FolderBusyError(MiMergekitError):
    """Another live process is writing the folder."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['started']})")
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(folder: Union[str, Path], what: str = "") -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for this process; see the module docstring."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{_holder(_read(fd))} is writing this folder; wait for it to end, or stop it and run "
                "the same command again to resume", path=folder) from None
        previous = _read(fd)
        if previous.strip():
            log.warning("taking over %s from %s, which ended without releasing it", folder, _holder(previous))
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": what or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        try:
            yield folder
        finally:
            os.ftruncate(fd, 0)  # a clean release: the next holder has nothing to take over
    finally:
        os.close(fd)  # drops the flock


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace")


_HELD: dict = {}


def hold(folder: Union[str, Path], what: str = "") -> None:
    """Hold ``folder`` until this process ends (for one-shot commands: ``demo``, ``find-lambda``);
    a second call for the same folder in the same process does nothing."""
    import atexit

    key = str(Path(folder).resolve())
    if key in _HELD:
        return
    lock = run_lock(folder, what)
    lock.__enter__()
    _HELD[key] = lock
    atexit.register(lambda: _HELD.pop(key).__exit__(None, None, None) if key in _HELD else None)
