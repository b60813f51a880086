"""Generation backends behind one interface (:class:`~.base.Backend`).

``transformers`` (CPU/GPU, batched sampling), ``vllm`` (optional, GPU, n samples
per prompt, tensor parallel) and ``openai`` (any OpenAI-compatible server, e.g.
vLLM or SGLang, over HTTP). Backends import their heavy libraries lazily.
"""

from __future__ import annotations

from mi_mergekit.errors import EvalInputError
from mi_mergekit.eval.backends.base import Backend, Chunk, Completion

BACKENDS = ("transformers", "vllm", "openai")


def make_backend(name: str, model_path: str, **options) -> Backend:
    """Construct backend ``name`` for ``model_path``; ``options`` go to its constructor (None values dropped)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name == "transformers":
        from mi_mergekit.eval.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_path, **options)
    if name == "vllm":
        from mi_mergekit.eval.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, **options)
    if name in ("openai", "http"):
        from mi_mergekit.eval.backends.openai_http import OpenAIHTTPBackend

        if "base_url" not in options:
            raise EvalInputError("the openai backend needs a base URL (--base-url http://HOST:PORT/v1)")
        return OpenAIHTTPBackend(model_path, **options)
    raise EvalInputError(f"unknown backend {name!r}; choose from {list(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Chunk", "Completion", "make_backend"]
