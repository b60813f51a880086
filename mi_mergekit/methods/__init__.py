"""mi_mergekit's merge methods, one concept a file (like mergekit's merge_methods/)."""

from mi_mergekit.methods.interpolation import METHOD_NAME, model_interpolation
from mi_mergekit.methods.nway import nway_interpolation

METHODS = (model_interpolation, nway_interpolation)


def register_all() -> None:
    """Add our methods to mergekit's registry; already-registered names are left alone."""
    from mergekit.merge_methods import registry

    for method in METHODS:
        existing = {m.spec.name: m for m in registry.registered_methods()}.get(
            method.spec.name
        )
        if existing is None:
            registry.register(method)
        elif type(existing) is not type(method):
            raise RuntimeError(
                f"mergekit already has a different merge method named {method.spec.name!r}"
            )


register_all()

__all__ = ["METHODS", "METHOD_NAME", "model_interpolation", "nway_interpolation", "register_all"]
