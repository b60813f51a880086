"""mi_mergekit's merge methods, one file each (like mergekit's merge_methods/).

Each declares its name, parameters and element-wise arithmetic once
(:class:`mi_mergekit.merge.method.ElementwiseMethod`); to add one, write its file and
add its instance to ``METHODS``. Nothing else names a method.
"""

from mi_mergekit.errors import ContractError
from mi_mergekit.methods.interpolation import model_interpolation
from mi_mergekit.methods.nway import nway_interpolation

METHODS = (model_interpolation, nway_interpolation)


def register(method) -> None:
    """Add ``method`` to mergekit's registry; an already-registered instance is left alone."""
    from mergekit.merge_methods import registry

    existing = {m.spec.name: m for m in registry.registered_methods()}.get(method.spec.name)
    if existing is None:
        registry.register(method)
    elif type(existing) is not type(method):
        raise ContractError(f"mergekit already has a different merge method named {method.spec.name!r}")


def register_all() -> None:
    """Add our methods to mergekit's registry; already-registered names are left alone."""
    for method in METHODS:
        register(method)


register_all()

__all__ = ["METHODS", "model_interpolation", "nway_interpolation", "register", "register_all"]
