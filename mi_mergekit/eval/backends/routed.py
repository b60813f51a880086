"""A backend that routes each question to the backend of its λ (per-question model interpolation).

``RoutedBackend(grid={λ: Backend}, assignment={question_id: λ})`` generates every chunk of a
question with the backend of the λ it was assigned (:mod:`mi_mergekit.routing`), so a routed
run is an ordinary eval run: the runner plans, stores, resumes and grades it as any other,
and each stored sample carries the ``lambda`` it got and the ``model`` that made it
(:meth:`sample_fields`). The grid's backends are built once for the run — local transformers
models, each loaded once, or one OpenAI-compatible server per λ (a fleet), with
``parallel=True`` to keep every server busy at once.

Chunks keep their seeds and batch numbers; a prompt batch whose questions went to different
λ is generated as one batch per λ (fixed by the assignment, so a resumed run replays the
same calls). All grid backends must agree on ``chunk_size`` and ``prompt_batch`` (they fix
the chunks) and on the chat template (one prompt per question).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from mi_mergekit.errors import MiMergekitError
from mi_mergekit.eval.backends.base import Backend, Chunk, Completion
from mi_mergekit.eval.decoding import Decoding


class RoutingError(MiMergekitError):
    """The grid or the assignment cannot make a routed run."""


class RoutedBackend(Backend):
    name = "routed"

    def __init__(self, grid: Mapping[float, Backend], assignment: Mapping[str, float],
                 models: Optional[Mapping[float, str]] = None, router: Optional[dict] = None,
                 parallel: bool = False):
        if not grid:
            raise RoutingError("the λ grid of a routed run is empty")
        self.grid = {float(lam): backend for lam, backend in sorted(grid.items())}
        self.assignment = {qid: float(lam) for qid, lam in assignment.items()}
        unknown = sorted(set(self.assignment.values()) - set(self.grid))
        if unknown:
            raise RoutingError(f"questions are routed to λ {unknown}, which the grid {sorted(self.grid)} lacks")
        backends = list(self.grid.values())
        sizes = {b.chunk_size for b in backends}
        batches = {getattr(b, "prompt_batch", 1) for b in backends}
        if len(sizes) != 1 or len(batches) != 1:
            raise RoutingError(f"the grid's backends disagree on chunk_size {sorted(sizes)} or "
                               f"prompt_batch {sorted(batches)}")
        self.chunk_size, self.prompt_batch = sizes.pop(), batches.pop()
        templates = {getattr(b.tokenizer, "chat_template", None) for b in backends if b.tokenizer is not None}
        if len(templates) > 1:
            raise RoutingError("the grid's models have different chat templates; route between merges of one pair")
        self.tokenizer = next((b.tokenizer for b in reversed(backends) if b.tokenizer is not None), None)
        self.models = {lam: str((models or {}).get(lam, getattr(self.grid[lam], "model_path", lam)))
                       for lam in self.grid}
        self.router = dict(router or {})
        self.parallel = bool(parallel)

    def describe(self) -> dict:
        digest = hashlib.sha256(json.dumps(sorted(self.assignment.items())).encode()).hexdigest()
        return {"name": self.name, "chunk_size": self.chunk_size, "prompt_batch": self.prompt_batch,
                "grid": {f"{lam:g}": {"model": self.models[lam], **backend.describe()}
                         for lam, backend in self.grid.items()},
                "router": self.router, "assignment_sha256": "sha256:" + digest}

    def prepare(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> Optional[dict]:
        """Every λ's backend checks the run's decoding before anything is generated (a fleet: each
        server is probed); run.json's ``server`` holds each λ's record under ``grid``."""
        return _server_record({lam: backend.prepare(chunk, decoding, max_new_tokens)
                               for lam, backend in self.grid.items()})

    def report(self) -> Optional[dict]:
        return _server_record({lam: backend.report() for lam, backend in self.grid.items()})

    def sample_fields(self, chunk: Chunk) -> dict:
        lam = self.lambda_of(chunk)
        return {"lambda": lam, "model": self.models[lam]}

    def lambda_of(self, chunk: Chunk) -> float:
        try:
            return self.assignment[chunk.question_id]
        except KeyError:
            raise RoutingError(f"question {chunk.question_id!r} has no λ assigned") from None

    def generate(self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
                 ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        by_lambda: Dict[float, List[Chunk]] = {}
        for chunk in chunks:
            by_lambda.setdefault(self.lambda_of(chunk), []).append(chunk)
        if not self.parallel or len(by_lambda) < 2:
            for lam, group in sorted(by_lambda.items()):
                yield from self.grid[lam].generate(group, decoding, max_new_tokens)
            return
        yield from self._parallel(by_lambda, decoding, max_new_tokens)

    def _parallel(self, by_lambda, decoding, max_new_tokens):
        """Each λ's chunks on its own thread (a fleet: one server per λ); results as they come."""
        results: "queue.Queue" = queue.Queue()
        stop = threading.Event()
        done = object()

        def work(lam, group):
            try:
                for item in self.grid[lam].generate(group, decoding, max_new_tokens):
                    if stop.is_set():
                        break
                    results.put(item)
            except BaseException as exc:  # re-raised in the caller's thread
                results.put(exc)
            finally:
                results.put(done)

        threads = [threading.Thread(target=work, args=item, daemon=True, name=f"mi-route-{item[0]:g}")
                   for item in sorted(by_lambda.items())]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                item = results.get()
                if item is done:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=1)

    def close(self) -> None:
        for backend in self.grid.values():
            backend.close()


def _server_record(records: Mapping[float, Optional[dict]]) -> Optional[dict]:
    """The grid's server records as one: each λ's under ``grid``, and the sampling fields any
    server did not take (or took through --extra-body), which the report shows as deviations."""
    records = {f"{lam:g}": record for lam, record in records.items() if record is not None}
    if not records:
        return None
    not_sent: dict = {}
    via_extra_body: list = []
    for record in records.values():
        not_sent.update(record.get("not_sent") or {})
        via_extra_body += [f for f in record.get("via_extra_body") or () if f not in via_extra_body]
    return {"grid": records, "not_sent": not_sent, "via_extra_body": via_extra_body}
