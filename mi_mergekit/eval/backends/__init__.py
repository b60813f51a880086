"""Generation backends behind one interface (:class:`~.base.Backend`), and their registry.

``transformers`` (CPU/GPU, batched sampling), ``vllm`` (optional, GPU, n samples
per prompt, tensor parallel) and ``openai`` (any OpenAI-compatible server, e.g.
vLLM or SGLang, over HTTP). Backends import their heavy libraries lazily.

A backend is one class, registered here (:func:`register_backend`): it declares its
command-line options on itself (:class:`~.base.BackendOption`), from which ``cli/options.py``
builds ``--backend``'s choices and help, the options and the constructor's keywords, and
:func:`make_backend` constructs it. ``tests/eval/test_new_backend.py`` registers one from a
test file alone.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.backends.base import Backend, BackendOption, Chunk, Completion
from mi_mergekit.eval.backends.openai_http import OpenAIHTTPBackend
from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
from mi_mergekit.eval.backends.vllm_backend import VLLMBackend

#: name -> backend class, in registration order (the order of ``--backend``'s help)
BACKENDS: Dict[str, Type[Backend]] = {}
#: other name -> name
ALIASES: Dict[str, str] = {}
#: the values of a whole evaluation a backend may take beside its own options (``Backend.takes``)
TAKES = ("device", "seed")


def register_backend(backend: Type[Backend]) -> Type[Backend]:
    """Make ``backend`` (a :class:`Backend` subclass) known by its name and aliases (again: replaces it)."""
    unknown = sorted(set(backend.takes) - set(TAKES))
    if not backend.name or unknown:
        raise EvalInputError(f"a backend needs a name and takes only {list(TAKES)}; {backend.__name__} has "
                             f"name {backend.name!r}, takes {list(backend.takes)}")
    BACKENDS[backend.name] = backend
    for alias in backend.aliases:
        ALIASES[alias] = backend.name
    return backend


def find_backend(name: str) -> Optional[Type[Backend]]:
    """The backend registered as ``name`` (or an alias), None if none is."""
    return BACKENDS.get(ALIASES.get(name, name))


def backend_class(name: str) -> Type[Backend]:
    backend = find_backend(name)
    if backend is None:
        raise EvalInputError(f"unknown backend {name!r}; choose from {list(BACKENDS)}")
    return backend


def make_backend(name: str, model_path: str, **options) -> Backend:
    """Construct backend ``name`` for ``model_path``; ``options`` go to its constructor (None values dropped)."""
    backend = backend_class(name)
    options = {k: v for k, v in options.items() if v is not None}
    for option in backend.options:
        if option.required and option.keyword not in options:
            raise EvalInputError(f"the {backend.name} backend needs {option.required}")
    return backend(model_path, **options)


for _builtin in (TransformersBackend, VLLMBackend, OpenAIHTTPBackend):
    register_backend(_builtin)

__all__ = ["ALIASES", "BACKENDS", "Backend", "BackendOption", "Chunk", "Completion", "backend_class", "find_backend",
           "make_backend", "register_backend"]
