"""Start-up deferral: what mergekit's modules import when they load and a merge of safetensors
checkpoints never uses is imported on first use instead (:func:`deferred_imports`, around the
import of one mergekit module; :mod:`mi_mergekit.integration` applies it). Which imports are
deferred is mergekit-version knowledge (:data:`DEFERRED`); ``tests/test_startup.py`` checks that
those modules stay unimported through a merge and that every deferred name works when used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
import types
from typing import Callable, Dict, Iterator

#: What mergekit modules import when they load and a merge of safetensors checkpoints
#: never uses (seconds of start-up: transformers' modeling and weight-conversion code pull
#: in torch.distributed, dynamo and sympy). mergekit module -> [(module it imports, the
#: names it takes from it with ``from module import …``: functions or classes)].
DEFERRED = {
    # ModelReference.merged(), for `model+adapter` (LoRA) inputs
    "mergekit.common": [("peft", ())],
    # tied-weight discovery on a model instance (which imports modeling_utils itself)
    "mergekit.architecture.auto": [("transformers.modeling_utils", ("_get_tied_weight_keys",))],
    # checkpoint-key conversions (fused MoE experts and the like) in mergekit's loader
    "mergekit.architecture.conversion": [
        ("transformers.conversion_mapping", ("get_checkpoint_conversion_mapping",)),
        ("transformers.core_model_loading", ("WeightRenaming",)),
    ],
    # mergekit's task scheduler (the executor; our engine does not use it)
    "mergekit.graph": [("networkx", ())],
    "mergekit.multigpu_executor": [("networkx", ())],
    # pickle (.bin) checkpoints
    "mergekit.io.lazy_unpickle": [("accelerate", ())],
}
#: and ``transformers.PreTrainedModel``, which mergekit.common evaluates as a return
#: annotation of ``AutoClassProtocol``: left a forward reference (the string, as
#: ``from __future__ import annotations`` would leave it)
FORWARD_REFERENCES = {"mergekit.common": [("transformers", "PreTrainedModel", "transformers.modeling_utils")]}

_LOADING = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in for a module until it is used: ``import name`` costs nothing, the first
    attribute the stand-in does not have imports the real module and is read from it
    (so the stand-in behaves as the module; only the import happens later)."""

    def __init__(self, spec, **attributes):
        super().__init__(spec.name)
        self.__spec__, self.__loader__, self.__file__ = spec, spec.loader, spec.origin
        self.__package__ = spec.parent
        self.__dict__.update(attributes)

    def __getattr__(self, attr):
        if attr == "__path__" and self.__spec__.submodule_search_locations is None:
            raise AttributeError(attr)  # not a package: `from module import f` asks
        return getattr(load_deferred(self.__name__), attr)


def load_deferred(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only a stand-in was."""
    with _LOADING:
        if isinstance(sys.modules.get(name), DeferredModule):
            del sys.modules[name]
        return importlib.import_module(name)


def deferred_function(module: str, name: str) -> Callable:
    """``module.name``, a function, imported when first called."""

    def call(*args, **kwargs):
        return getattr(load_deferred(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = module
    return call


class _DeferredClass(type):
    """``module.name``, a class, imported when first used: instantiated, asked about
    (``isinstance``, ``issubclass``) or read from."""

    def _real(cls):
        return getattr(load_deferred(cls.__module__), cls.__name__)

    def __call__(cls, *args, **kwargs):
        return cls._real()(*args, **kwargs)

    def __instancecheck__(cls, instance):
        return isinstance(instance, cls._real())

    def __subclasscheck__(cls, subclass):
        return issubclass(subclass, cls._real())

    def __getattr__(cls, attr):
        return getattr(cls._real(), attr)


def _stand_in(name: str, names=()) -> Dict[str, DeferredModule]:
    """{name: a stand-in} to put in ``sys.modules`` — none when the module is already
    imported, not installed, or does not define one of ``names`` at top level (then
    mergekit's own ``except ImportError`` path, if any, must run: the real import does)."""
    if name in sys.modules:
        return {}
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return {}
    attributes = {}
    if names:
        try:
            with open(spec.origin, encoding="utf-8") as handle:
                source = handle.read()
        except OSError:
            return {}
        for attr in names:
            if f"\ndef {attr}(" in source:
                attributes[attr] = deferred_function(name, attr)
            elif f"\nclass {attr}(" in source:
                attributes[attr] = _DeferredClass(attr, (), {"__module__": name})
            else:
                return {}
    return {name: DeferredModule(spec, **attributes)}


@contextlib.contextmanager
def deferred_imports(module_name: str) -> Iterator[None]:
    """Around the import of the mergekit module ``module_name``: what it imports and a
    safetensors merge never uses (:data:`DEFERRED`, :data:`FORWARD_REFERENCES`) is
    imported on first use instead. The stand-ins are in ``sys.modules`` only while
    that module executes; anyone importing those modules later gets the real ones."""
    stand_ins: Dict[str, DeferredModule] = {}
    for name, names in DEFERRED.get(module_name, ()):
        stand_ins.update(_stand_in(name, names))
    forward = []
    for package, attr, source in FORWARD_REFERENCES.get(module_name, ()):
        module = sys.modules.get(package) or importlib.import_module(package)
        loaded = sys.modules.get(source)
        if (loaded is None or isinstance(loaded, DeferredModule)) and attr not in vars(module):
            setattr(module, attr, f"{package}.{attr}")
            forward.append((module, attr))
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
        for module, attr in forward:
            if vars(module).get(attr) == f"{module.__name__}.{attr}":
                delattr(module, attr)
