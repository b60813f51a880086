"""mi_mergekit: model interpolation between Instruct and Thinking checkpoints.

Importing this package is cheap (no torch, no mergekit). The merge methods are
registered with mergekit automatically when mergekit is imported (see
``mi_mergekit._autoload``), or explicitly with :func:`register`.
"""

__version__ = "0.1.0"


def register() -> None:
    """Register mi_mergekit's merge methods with mergekit (idempotent)."""
    from mi_mergekit.integration import install

    install()


__all__ = ["register", "__version__"]
