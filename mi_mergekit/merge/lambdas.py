"""λ lists: the one parser (``0.1:0.9:0.1``, ``0.4,0.5,0.8``) and the one formatter.

λ values are exact decimals, so ``0.1:0.9:0.1`` gives 0.3, not
0.30000000000000004, and file and folder names carry the number the user typed.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import List, Union

from mi_mergekit.errors import MergeInputError

#: how many λ values a ``START:STOP:STEP`` range may expand to
MAX_LAMBDAS = 1000


class LambdaSpecError(MergeInputError):
    """A λ list that cannot be parsed (the CLI shows it as a bad --lambdas value)."""


def parse_lambdas(spec: str) -> List[Decimal]:
    """``0.1:0.9:0.1`` (inclusive range), ``0.4,0.5,0.8`` or a mix -> unique exact decimals.

    Values may lie outside [0, 1] (extrapolation); duplicates (0.5, 0.50) count once.
    """
    values: List[Decimal] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        try:
            fields = [Decimal(f) for f in item.split(":")]
        except InvalidOperation:
            raise LambdaSpecError(f"{item!r} is not a number or START:STOP:STEP") from None
        if any(not f.is_finite() for f in fields):
            raise LambdaSpecError(f"{item!r} is not finite")
        if len(fields) == 1:
            values.append(fields[0])
        elif len(fields) == 3:
            start, stop, step = fields
            if step <= 0 or start > stop:
                raise LambdaSpecError(f"range {item!r} needs START <= STOP and STEP > 0")
            count = int((stop - start) / step) + 1
            if count > MAX_LAMBDAS:
                raise LambdaSpecError(f"range {item!r} expands to {count} values (at most {MAX_LAMBDAS})")
            values.extend(start + k * step for k in range(count))
        else:
            raise LambdaSpecError(f"{item!r}: use a number or START:STOP:STEP")
    unique: List[Decimal] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    if not unique:
        raise LambdaSpecError("no λ values given")
    return unique


def format_lambda(value: Union[Decimal, float, str], point: bool = False) -> str:
    """Shortest plain decimal text of λ: 0.50 -> '0.5', 1 -> '1', -0.0 -> '0'.

    ``point=True`` keeps a decimal point on whole numbers ('1.0', '0.0'), the
    recipe file-name style (mi_1.0.yaml).
    """
    if not isinstance(value, Decimal):
        value = Decimal(repr(float(value)) if isinstance(value, float) else str(value))
    text = format(value.normalize(), "f")
    if text.startswith("-") and Decimal(text) == 0:
        text = text[1:]
    if point and "." not in text:
        text += ".0"
    return text


def output_name(lam: Union[Decimal, float, str]) -> str:
    """Folder name of one sweep output: ``lambda_0.5``."""
    return f"lambda_{format_lambda(lam)}"
