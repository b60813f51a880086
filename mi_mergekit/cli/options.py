"""Option sets shared by the ``mi-mergekit`` commands, declared once.

Library code raises mi_mergekit's errors; these callbacks turn the ones that are
about a single option value into click's usage errors (``Error: Invalid value
for '--lambdas': …``, exit 2).
"""

from __future__ import annotations

import click

from mi_mergekit.merge.config import SubstitutionError, parse_substitutions
from mi_mergekit.merge.lambdas import LambdaSpecError, parse_lambdas


def check_models(ctx, param, value):
    try:
        parse_substitutions(value)
    except SubstitutionError as exc:
        raise click.BadParameter(str(exc).removeprefix("--model: "), ctx, param) from None
    return value


def check_lambdas(ctx, param, value):
    if value is None:
        return None
    try:
        parse_lambdas(value)
    except LambdaSpecError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


#: ``--model NAME=PATH`` (repeatable): a local copy of a model named in the recipe
model_option = click.option(
    "--model", "models", multiple=True, metavar="NAME=PATH", callback=check_models,
    help="Use a local copy of a model named in the recipe (repeatable), e.g. "
    "--model Qwen/Qwen3-4B-Instruct-2507=/data/instruct",
)


def lambdas_option(*, required: bool = False, help: str = "λ values"):
    """``--lambdas START:STOP:STEP|L1,L2,...`` (validated; the value stays the text)."""
    return click.option(
        "--lambdas", "lambdas_spec", required=required, metavar="START:STOP:STEP|L1,L2,...",
        callback=check_lambdas,
        help=f"{help}: an inclusive range 0.1:0.9:0.1 and/or a comma list 0.4,0.5,0.8.",
    )


#: ``--overwrite``: replace an existing output folder that we did not write
overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace an existing output folder even if it holds files mi-mergekit did not "
    "write (the whole folder is replaced, atomically).",
)


def merge_options(function):
    """mergekit's own merge options (--cuda, --device, --out-shard-size, …)."""
    from mergekit.options import add_merge_options

    return add_merge_options(function)
