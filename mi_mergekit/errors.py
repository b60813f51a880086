"""The errors the package raises, and the helpers that word their messages.

One hierarchy: every error the package raises is a :class:`MiMergekitError` (a
``ValueError``) that may name the file it is about (``path``), shown as
``Error: <what> (<file>)``. Library code raises these and never a click error;
the commands in :mod:`mi_mergekit.cli` turn the few that are about one option value
into click's usage errors. ``tests/test_errors.py`` checks that the package raises no
bare ``ValueError``/``RuntimeError``/``Exception`` and that this module imports no click.

This module holds no presentation: how a failure is shown on the command line
(the one ``Error:`` line, exit statuses, the traceback with ``--verbose``) is
:mod:`mi_mergekit.cli.errors`. What is here builds messages: :func:`explain` words
any failure as one line ``<what> (<file>)`` (a message may embed the cause it
wraps), :func:`did_you_mean` is the one close-match helper for names a user types
(methods, parameters, module groups, dtypes, benchmarks, folders), and
:func:`command` says which command line is running (set by the command-line guard,
None from the Python API), so that a message can name the fix that fits it.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import errno
import os
from typing import Iterable, Optional

#: the command line being run: "mergekit-yaml", "mi-mergekit merge", … (None: the Python API)
_COMMAND: contextvars.ContextVar = contextvars.ContextVar("mi_mergekit_command", default=None)
#: the flag that adds the traceback, as the running command spells it
_VERBOSE_FLAG: contextvars.ContextVar = contextvars.ContextVar("mi_mergekit_verbose_flag", default="--verbose")


def command() -> Optional[str]:
    """The command line being run (``"mergekit-yaml"``, ``"mi-mergekit merge"`` …), or None."""
    return _COMMAND.get()


def set_command(name: Optional[str], verbose_flag: str = "--verbose") -> None:
    """Record the command line being run and the flag that adds the traceback (the
    command-line guard, :func:`mi_mergekit.cli.errors.guarded_main`, calls this)."""
    _COMMAND.set(name)
    _VERBOSE_FLAG.set(verbose_flag)


def _is_click_error(exc: BaseException) -> bool:
    """A click exception (``ClickException`` and its usage errors), without importing click."""
    return any(cls.__name__ == "ClickException" and cls.__module__.split(".")[0] == "click"
               for cls in type(exc).__mro__)


def did_you_mean(name, choices: Iterable[str], quote: bool = True) -> str:
    """`` — did you mean 'x'?`` for the known name closest to ``name`` (difflib), or ``""``."""
    text = str(name)
    choices = [str(c) for c in choices]
    by_case = {c.lower(): c for c in choices}
    if text.lower() in by_case and by_case[text.lower()] != text:
        match = [by_case[text.lower()]]
    else:
        match = difflib.get_close_matches(text, choices, n=1, cutoff=0.6) or difflib.get_close_matches(
            text.lower(), list(by_case), n=1, cutoff=0.6)
        match = [by_case.get(m, m) for m in match]
    if not match:
        return ""
    return f" — did you mean {match[0]!r}?" if quote else f" — did you mean {match[0]}?"


class MiMergekitError(ValueError):
    """Base class: bad input, explained."""

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def format_message(self) -> str:
        return f"{self.message} ({self.path})" if self.path else self.message


class MergeInputError(MiMergekitError):
    """The inputs of a merge are inconsistent; the message says what to fix."""


class SelectionError(MergeInputError):
    """Invalid layer window, depth placement or module selection."""


class PlacementError(SelectionError):
    """A layer window or module selection needs what the architecture does not say about some
    tensors (their depth, their role); the message names every such tensor pattern."""


class NonFiniteTensorError(MiMergekitError):
    """NaN or infinity in an input or in the merged result."""


class OutputPathError(MiMergekitError):
    """The output folder is unsafe to write (an input, or holds someone else's files)."""


class CheckpointFileError(MergeInputError):
    """An input file is missing, truncated or not what its name says."""


class OutputWriteError(MiMergekitError):
    """Writing the output failed (disk full, permissions, file size limit …)."""


class EvalInputError(MiMergekitError):
    """Bad input to an evaluation: a dataset, a run folder, a setting."""


class AnalysisInputError(MiMergekitError):
    """Bad input to an analysis (runs without λ, a model pair that does not match …)."""


class ContractError(MiMergekitError, RuntimeError):
    """Another component did not do what this package relies on (a backend returned the wrong
    number of completions, another package registered a different merge method under one of
    our names). Also a ``RuntimeError``, as it was before it joined the family."""


_ERRNO_TEXT = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EIO: "input/output error",
}
#: errnos that mean "the output could not be written", whatever file raised them
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
# How the Rust safetensors library reports an OSError inside its own message.
_RUST_OS_ERROR = ("os error ", ")")


@contextlib.contextmanager
def writing(out_path: str):
    """Turn a failure to write the output (disk full, quota, size limit, read-only)
    into an :class:`OutputWriteError` naming the output folder."""
    try:
        yield
    except Exception as exc:
        code = errno_of(exc)
        if code not in WRITE_ERRNOS or isinstance(exc, MiMergekitError) or _is_click_error(exc):
            raise
        raise OutputWriteError(f"{_ERRNO_TEXT[code]} while writing the output", path=out_path) from exc


@contextlib.contextmanager
def about(path):
    """Errors of ours raised inside this block that name no file are about ``path``."""
    try:
        yield
    except MiMergekitError as exc:
        if exc.path is None and path:
            exc.path = str(path)
        raise


def errno_of(exc: BaseException) -> Optional[int]:
    """The errno of an OSError, or of an I/O error wrapped by safetensors' Rust code."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    text = str(exc)
    start = text.find(_RUST_OS_ERROR[0])
    if start >= 0:
        digits = text[start + len(_RUST_OS_ERROR[0]):].split(_RUST_OS_ERROR[1])[0]
        if digits.isdigit():
            return int(digits)
    if "StorageFull" in text:
        return errno.ENOSPC
    return None


def os_problem(exc: OSError) -> str:
    """What went wrong, without the file name (for a message that names the file itself)."""
    code = errno_of(exc)
    return _ERRNO_TEXT.get(code) or (exc.strerror or str(exc)).lower()


def is_safetensors_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "SafetensorError"


def explain(exc: BaseException) -> str:
    """One line ``<what> (<file>)`` for any failure."""
    if isinstance(exc, MiMergekitError) or _is_click_error(exc):
        return _one_line(exc.format_message())
    code = errno_of(exc)
    if isinstance(exc, OSError):
        if exc.errno is None:
            return _one_line(str(exc))
        what = _ERRNO_TEXT.get(code) or exc.strerror or str(exc)
        files = [str(f) for f in (exc.filename, exc.filename2) if f]
        return _one_line(what + (f" ({' -> '.join(files)})" if files else ""))
    if isinstance(exc, ImportError):
        if "pip install" in str(exc):
            return _one_line(str(exc))
        return _one_line(f"missing dependency {exc.name or exc}: install the extra that provides it, "
                         "e.g. pip install 'mi-mergekit[eval]'")
    if is_safetensors_error(exc):
        if code is not None:
            return _ERRNO_TEXT.get(code) or os.strerror(code).lower()
        return _one_line(f"truncated or corrupt safetensors file: {exc}")
    try:
        import yaml

        if isinstance(exc, yaml.YAMLError):
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            return _one_line(f"recipe is not valid YAML{where}: {problem}")
    except ImportError:  # pragma: no cover
        pass
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            return validation_summary(exc)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ValueError, KeyError, TypeError)) and type(exc).__module__.startswith("mi_mergekit"):
        return _one_line(str(exc))
    return _one_line(f"unexpected {type(exc).__name__}: {exc} — rerun with {_VERBOSE_FLAG.get()} for the traceback")


def key_path(loc) -> str:
    """A pydantic location as a recipe key path: ``("models", 0, "model")`` -> ``models[0].model``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in str(part) or "(" in str(part):  # a union member's tag, e.g. list[float]
            continue
        else:
            text += ("." if text else "") + str(part)
    return text


def validation_summary(exc, where: str = "") -> str:
    """A pydantic ValidationError as one line: the key path, the problem and the value given
    for the first error, and how many more. ``where`` prefixes the key path (a
    parameter validated on its own has none)."""
    problems = exc.errors()
    first = problems[0] if problems else {"loc": (), "msg": str(exc)}
    loc = ".".join(p for p in (where, key_path(first.get("loc", ()))) if p)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    given = ""
    if "input" in first and first.get("type") != "missing" and not isinstance(first["input"], (dict, list)):
        given = f", got {first['input']!r}"
    elif first.get("type") == "missing" and isinstance(first.get("input"), dict) and first.get("loc"):
        typo = did_you_mean(first["loc"][-1], [str(k) for k in first["input"]])  # {modle: …} for model
        if typo:
            given = f" (the recipe has {typo.split(chr(39))[1]!r} there: a typo?)"
    place = f"{loc}: " if loc else ""
    return _one_line(f"recipe is not a valid mergekit config: {place}{first['msg']}{given}{more}")


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip()).replace(":;", ":")
