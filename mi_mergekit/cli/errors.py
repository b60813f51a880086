"""How a failure is shown on the command line.

:func:`guarded_main` wraps a click command's ``main`` (``mi-mergekit`` and, through
the autoload hook, ``mergekit-yaml``) so that *every* failure — ours, an ``OSError``
such as a full disk, a corrupt safetensors file, a YAML or pydantic error, or a bug
— ends in one line ``Error: <what> (<file>)`` (worded by
:func:`mi_mergekit.errors.explain`) and exit status 1; the traceback is printed only
with ``--verbose`` (``-v`` for mergekit-yaml) or ``MI_MERGEKIT_VERBOSE=1``. A usage
error (an unknown option, a bad option value) keeps click's own form and exit
status 2. The error types themselves are :mod:`mi_mergekit.errors`, which imports no click.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional

import click

from mi_mergekit.errors import explain, set_command

VERBOSE_ENV = "MI_MERGEKIT_VERBOSE"


def verbose_requested(args, flags=("--verbose",)) -> bool:
    """True if ``MI_MERGEKIT_VERBOSE`` is set or one of ``flags`` (``-v`` also as ``-vv``…) is given."""
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return True
    counted = "-v" in flags
    return any(a in flags or (counted and a[:2] == "-v" and set(a[1:]) == {"v"}) for a in args)


def quiet_hub_logs() -> None:
    """Keep the Hugging Face hub library's warnings (retries, offline fallbacks) off the
    terminal: what they mean ends in our one line. ``--verbose``/``-v`` keeps them."""
    import logging

    if "huggingface_hub" in sys.modules:
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    else:  # read when the library configures its logger
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")


def guarded_main(main: Callable, verbose_flags=("--verbose",), strip_flags=(),
                 applies: Callable[[BaseException], bool] = lambda exc: True,
                 name: Optional[str] = None, usage_hint: Callable[[click.UsageError], Optional[str]] = None
                 ) -> Callable:
    """A click command's ``main`` that ends every failure in one ``Error:`` line and exit
    status 1 (a usage error: click's message and exit status 2).

    ``strip_flags`` are removed from the arguments before click parses them (a
    global ``--verbose`` accepted anywhere). ``applies(exc)`` may return False to
    let an exception through unchanged (stock mergekit merges keep their own
    behaviour). ``name`` is the command (``mi-mergekit``: its subcommand is added), for
    :func:`command`; ``usage_hint(exc)`` may add a sentence to a usage error.
    """

    def guarded(args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        verbose = verbose_requested(args, verbose_flags)
        args = [a for a in args if a not in strip_flags]
        running = None
        if name:
            sub = next((a for a in args if not a.startswith("-")), None) if name == "mi-mergekit" else None
            running = f"{name} {sub}" if sub else name
        set_command(running, verbose_flags[0])
        if not verbose:
            quiet_hub_logs()
        if not standalone_mode:
            return main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as exc:
            hint = usage_hint(exc) if usage_hint else None
            if hint:
                exc.message = f"{exc.message} {hint}"
                if isinstance(exc, click.NoSuchOption):
                    exc.possibilities = None  # the hint says what to use instead
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the point: nothing escapes as a traceback
            if not applies(exc):
                raise
            if verbose:
                traceback.print_exception(exc)
            click.echo(f"Error: {explain(exc)}", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    return guarded
