"""The ``mi-mergekit`` command.

Subcommands live next to the code they drive and are attached lazily, so
``mi-mergekit --help`` stays fast and an optional extra that is not installed
only disables its own subcommands.
"""

from __future__ import annotations

import importlib
import sys

import click

from mi_mergekit.errors import guard

# subcommand name -> "module:attribute" of a click command
SUBCOMMANDS = {
    "plan": "mi_mergekit.commands:plan_command",
    "merge": "mi_mergekit.commands:merge_command",
    "recipes": "mi_mergekit.recipes:recipes_command",
    "sweep": "mi_mergekit.sweep:sweep_command",
    "diverge": "mi_mergekit.analysis.divergence:diverge_command",
    "stages": "mi_mergekit.analysis.stages:stages_command",
    "find-lambda": "mi_mergekit.analysis.lambda_search:find_lambda_command",
    "eval": "mi_mergekit.eval.cli:eval_command",
    "report": "mi_mergekit.eval.cli:report_command",
    "demo": "mi_mergekit.toy.demo:demo_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)

            @click.command(name, help=f"(unavailable: {missing} is not installed)")
            def unavailable():
                raise click.ClickException(
                    f"`mi-mergekit {name}` needs {missing!r}, which is not installed. "
                    "Install the extra: pip install 'mi-mergekit[eval]'"
                )

            return unavailable
        return getattr(module, attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mi-mergekit")
def main():
    """Model interpolation between Instruct and Thinking checkpoints (arXiv 2510.10977).

    A failure ends in one line `Error: <what> (<file>)` and exit status 1; add
    --verbose anywhere on the command line (or set MI_MERGEKIT_VERBOSE=1) to also
    see the traceback.
    """


guard(main, verbose_flags=("--verbose",), strip_flags=("--verbose",))


if __name__ == "__main__":
    sys.exit(main())
