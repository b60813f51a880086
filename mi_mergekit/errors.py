"""Errors with messages meant for the person running the merge.

They are ``click.ClickException`` subclasses, so the unchanged ``mergekit-yaml``
script (a click command) prints ``Error: <message>`` and exits with status 1
instead of a traceback; from Python they are ordinary ``ValueError``s.
"""

import click


class MiMergekitError(click.ClickException, ValueError):
    """Base class: bad input, explained."""


class MergeInputError(MiMergekitError):
    """The inputs of a merge are inconsistent; the message says what to fix."""


class SelectionError(MergeInputError):
    """Invalid layer window, depth placement or module selection."""


class UnclassifiedTensorError(MergeInputError):
    """A tensor name that no module rule recognises."""


class NonFiniteTensorError(MiMergekitError):
    """NaN or infinity in an input or in the merged result."""
