"""A routed eval run: signals → router → :class:`RoutedBackend` → :func:`mi_mergekit.eval.evaluate`.

    from mi_mergekit.routing.run import GridBackends, routed_evaluate

    with GridBackends({0.4: "models/mi_0.4", 1.0: "models/mi_1"}, batch_size=4) as grid:   # loaded once
        routed_evaluate(router, grid, EvalTask("test.jsonl"), "runs/routed", values=signal_values)

A grid entry is a model folder (transformers, loaded once for all the runs made with the
:class:`GridBackends`) or the URL of an OpenAI-compatible server serving that λ's merge (a
fleet: each λ its own server; the requests of different λ run in parallel).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping, Optional

from mi_mergekit.eval.backends import Backend
from mi_mergekit.eval.backends.routed import RoutedBackend, RoutingError
from mi_mergekit.routing.policy import Router, check_disjoint

_URL = re.compile(r"^https?://", re.IGNORECASE)


def is_url(spec: str) -> bool:
    return bool(_URL.match(str(spec)))


def parse_grid(specs) -> Dict[float, str]:
    """``["0.4=models/mi_0.4", "1=http://host:8000/v1"]`` → ``{0.4: ..., 1.0: ...}``."""
    grid: Dict[float, str] = {}
    for spec in specs:
        lam, sep, where = str(spec).partition("=")
        try:
            value = float(lam)
        except ValueError:
            value = None
        if not sep or not where or value is None:
            raise RoutingError(f"expected LAMBDA=PATH or LAMBDA=URL, got {spec!r}")
        if value in grid:
            raise RoutingError(f"λ {value:g} is given twice")
        grid[value] = where
    if not grid:
        raise RoutingError("give the grid's models: --model LAMBDA=PATH (or LAMBDA=URL), once per λ")
    return grid


def parse_served_models(value: Optional[str], grid: Mapping[float, str]) -> Optional[Dict[float, str]]:
    """``--served-model`` of a fleet: one NAME for every server, or ``LAMBDA=NAME,…`` for each
    (servers pinned to one model each, such as `transformers serve FOLDER`, answer only to their
    own name); None when not given (then each λ is ``mi_<λ>``)."""
    if not value:
        return None
    if "=" not in value:
        return {lam: value for lam in grid}
    try:
        named = parse_grid(part.strip() for part in value.split(",") if part.strip())
    except RoutingError as exc:
        raise RoutingError(f"--served-model: {exc} (LAMBDA=NAME,… for each λ, or one NAME for all)") from None
    missing = sorted(lam for lam, where in grid.items() if is_url(where) and lam not in named)
    extra = sorted(set(named) - set(grid))
    if missing or extra:
        raise RoutingError(f"--served-model LAMBDA=NAME: name every served λ of the grid once "
                           f"(missing {[f'{v:g}' for v in missing]}, not in the grid {[f'{v:g}' for v in extra]})")
    return named


class _Shared(Backend):
    """A grid backend lent to one routed run: its close() leaves the model loaded."""

    def __init__(self, backend: Backend):
        self.inner = backend
        self.name, self.chunk_size = backend.name, backend.chunk_size
        self.prompt_batch = getattr(backend, "prompt_batch", 1)
        self.tokenizer = backend.tokenizer

    def generate(self, chunks, decoding, max_new_tokens):
        return self.inner.generate(chunks, decoding, max_new_tokens)

    def prepare(self, chunk, decoding, max_new_tokens):
        return self.inner.prepare(chunk, decoding, max_new_tokens)

    def report(self):
        return self.inner.report()

    def describe(self) -> dict:
        return self.inner.describe()


class GridBackends:
    """One backend per grid λ, built once and lent to every routed run until :meth:`close`."""

    def __init__(self, grid: Mapping[float, str], *, batch_size: int = 4, prompt_batch: int = 1,
                 device: Optional[str] = None, tokenizer_path: Optional[str] = None,
                 served_models: Optional[Mapping[float, str]] = None, http_options: Optional[dict] = None,
                 compact: bool = False, slots: int = 0, dtype: str = "auto"):
        self.models = {float(lam): str(where) for lam, where in grid.items()}
        self.backends: Dict[float, Backend] = {}
        served = {float(k): v for k, v in (served_models or {}).items()}
        self.fleet = any(is_url(where) for where in self.models.values())
        try:
            for lam, where in sorted(self.models.items()):
                if is_url(where):
                    from mi_mergekit.eval.backends.openai_http import OpenAIHTTPBackend

                    if not tokenizer_path:
                        raise RoutingError("a λ served over HTTP needs the merges' tokenizer locally: --tokenizer DIR")
                    self.backends[lam] = OpenAIHTTPBackend(served.get(lam, f"mi_{lam:g}"), where,
                                                           tokenizer_path=tokenizer_path,
                                                           samples_per_request=batch_size, **(http_options or {}))
                else:
                    from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
                    from mi_mergekit.eval.run_folder import check_model_folder

                    check_model_folder(where)
                    self.backends[lam] = TransformersBackend(where, batch_size=batch_size, prompt_batch=prompt_batch,
                                                             device=device, compact=compact, slots=slots,
                                                             dtype=dtype)
        except BaseException:
            self.close()
            raise

    def routed(self, assignment: Mapping[str, float], router: Optional[dict] = None) -> RoutedBackend:
        return RoutedBackend({lam: _Shared(b) for lam, b in self.backends.items()}, assignment,
                             models=self.models, router=router, parallel=self.fleet)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def routed_evaluate(router: Router, grid: GridBackends, task, out_dir, *, values: Mapping[str, float],
                    label: Optional[str] = None, allow_calibration_overlap: bool = False,
                    progress: bool = True) -> Path:
    """Route every question of ``task`` (an :class:`~mi_mergekit.eval.task.EvalTask`) by its signal
    ``values`` and evaluate the routed run.

    Refuses questions of the router's calibration split (unless ``allow_calibration_overlap``, which
    ``find-lambda`` uses: it tunes the router on its own calibration set).
    """
    from mi_mergekit.eval import evaluate
    from mi_mergekit.eval.prompts import build_message

    if set(router.grid) - set(grid.backends):
        raise RoutingError(f"the router routes to λ {sorted(router.grid)}; the grid has {sorted(grid.backends)}")
    kind = task.bench.kind
    examples = task.examples()
    if not allow_calibration_overlap:
        check_disjoint(router, [build_message(kind, e)[0] for e in examples])
    missing = [e.id for e in examples if e.id not in values]
    if missing:
        raise RoutingError(f"{len(missing)} questions have no {router.signal} value (e.g. {missing[0]!r}); "
                           "compute the signals of this dataset")
    assignment = router.assign({e.id: values[e.id] for e in examples})
    backend = grid.routed(assignment, router.describe())
    name = label or router.fit.get("name") or f"routed:{router.signal}"
    return evaluate(f"routed:{name}", task, out_dir, backend, label=name, progress=progress)
