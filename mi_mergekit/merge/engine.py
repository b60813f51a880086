"""The streaming executor: read each input slice once, write every output slice in place.

mergekit's planner still resolves every parameter (filters, gradients, windows,
modules — the same ``SaveTensor`` tasks ``mergekit-yaml`` would run, see
:func:`mi_mergekit.mergekit_compat.planned_saves`); this module only executes
them, for ``model_interpolation`` (one output, or the n outputs of a sweep) and
``nway_interpolation``:

* inputs are resolved by mergekit's ``LoaderCache`` / ``LazyTensorLoader`` (hub
  ids, LoRA-merged models, sharded indexes); their safetensors files are read
  with positioned reads, a slice of ``CHUNK`` elements of one tensor at a time
  (:mod:`mi_mergekit.merge.safetensors_io`);
* every merge is element-wise, so each slice is computed on its own with the
  kernel (:mod:`mi_mergekit.merge.kernel`) — same operations, same bits as the
  whole tensor through mergekit's executor — once for all n outputs of a sweep
  (Θ_T − Θ_I is computed once per slice and scaled by each λ);
* every output slice is written at its final offset in pre-sized safetensors
  files (:class:`~mi_mergekit.merge.safetensors_io.StreamingWriter`).

Reading, arithmetic and writing run on three threads joined by bounded queues
(file I/O and torch release the GIL), so the three overlap. Memory is a few
slices in flight — ``READ_AHEAD`` input slices and ``WRITE_BUFFER`` bytes of
output — whatever the model size and the number of outputs.

Output layout: by default the output keeps the layout donor's files (the
Instruct checkpoint for ``model_interpolation``, the base or first model for
``nway_interpolation``): same file names, same tensor-to-file map, an index
file when the donor has one. An explicit ``--out-shard-size`` shards by size
with mergekit's file names instead.

``MI_MERGEKIT_ENGINE=mergekit`` runs mergekit's own executor and writer instead
(:mod:`mi_mergekit.merge.mergekit_engine`). So do recipes this engine does not
execute — they fall back with a log line: a ``tokenizer_source`` /
``tokenizer`` section (vocabulary permutation), ``--unsafe-truncate-embeddings``,
``--multi-gpu``, ``--no-safe-serialization``, inputs that are not safetensors,
and tensors mergekit would have to convert or skip.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.checks import all_finite, check_finite, check_lambda
from mi_mergekit.merge.kernel import interpolate_many, weighted_sum
from mi_mergekit.merge.safetensors_io import (
    OutputSpec,
    SafetensorsFile,
    StreamingWriter,
    check_free_space,
    shard_by_size,
)

LOG = logging.getLogger("mi_mergekit.engine")

ENGINE_ENV = "MI_MERGEKIT_ENGINE"
ENGINES = ("stream", "mergekit")
#: elements per slice (16 MiB of bf16 per input)
CHUNK = 1 << 23
#: input slices read ahead of the arithmetic
READ_AHEAD = 3
#: bytes of computed output slices waiting for the writer
WRITE_BUFFER = 256 << 20
#: mergekit's default --out-shard-size: when unchanged, the donor's layout is kept
DEFAULT_SHARD_SIZE = 5_000_000_000


def engine_name() -> str:
    value = os.environ.get(ENGINE_ENV, "stream").strip().lower() or "stream"
    if value not in ENGINES:
        raise MergeInputError(f"{ENGINE_ENV}={value!r}: use one of {', '.join(ENGINES)}")
    return value


class NotStreamable(Exception):
    """This merge runs on mergekit's engine instead (the message says why)."""


@dataclass
class Output:
    """One output folder: where its weights go and what each tensor gets there."""

    folder: str
    #: model_interpolation: tensor name -> λ (None = not selected: the Instruct tensor)
    lambdas: Optional[Dict[str, Optional[float]]] = None


@dataclass
class Job:
    """One tensor name, computed slice by slice for every output."""

    name: str
    shape: Tuple[int, ...]
    numel: int
    sources: List[Tuple[SafetensorsFile, str]]  # per input, in mergekit's model order
    load_dtypes: List[Optional[torch.dtype]]  # the recipe's `dtype:` cast on load
    base: int  # index of the base model (Instruct) in sources, or -1
    method: str
    settings: List[Any]  # per output: λ or None (interpolation); weights (nway)
    save_dtypes: List[Optional[torch.dtype]]
    out_dtypes: List[torch.dtype] = field(default_factory=list)


def _dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if not name:
        return None
    from mergekit.common import dtype_from_name

    return dtype_from_name(name)


class Inputs:
    """The input checkpoints, resolved by mergekit's LoaderCache, opened for positioned reads."""

    def __init__(self, options):
        from mergekit.io.tasks import LoaderCache

        self.cache = LoaderCache()
        self.cache.setup(options=options)
        self.files: Dict[str, SafetensorsFile] = {}

    def index(self, model):
        index = self.cache.get(model).index
        if not index.is_safetensors:
            raise NotStreamable(f"model {model} is not stored as safetensors")
        return index

    def entry(self, model, names: Sequence[str]) -> Tuple[SafetensorsFile, str]:
        index = self.index(model)
        for name in names:
            if name in index.tensor_paths:
                path = os.path.join(index.base_path, index.tensor_paths[name])
                if path not in self.files:
                    self.files[path] = SafetensorsFile(path)
                if name not in self.files[path].entries:
                    raise MergeInputError(
                        f"the index of model {model} lists {name!r} in {path}, which does not hold it")
                return self.files[path], name
        raise NotStreamable(f"tensor {names[0]} is not stored under that name in {model}")

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
        self.files = {}


def plan_jobs(saves: Sequence[Any], outputs: Sequence[Output], inputs: Inputs,
              nway_weights=None) -> List[Job]:
    """One :class:`Job` per planned ``SaveTensor`` task (those of the first output;
    the outputs of a sweep differ only in their per-tensor λ)."""
    from mergekit.io.tasks import GatherTensors
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask

    jobs = []
    for save in saves:
        task = save.tensor_task
        if not isinstance(task, ExecuteMergeMethodTask) or type(task.gather_tensors) is not GatherTensors:
            raise NotStreamable(f"tensor {save.tensor_name} needs a mergekit input task "
                                f"({type(getattr(task, 'gather_tensors', task)).__name__})")
        gather = task.gather_tensors
        sources, load_dtypes = [], []
        for model in task.model_order:
            info = gather.weight_info[model]
            names = [info.name] + list(info.aliases or ()) + list(info.tied_names or ())
            sources.append(inputs.entry(model, names))
            load_dtypes.append(_dtype(info.force_dtype or gather.dtype))
        entries = [handle.entries[name] for handle, name in sources]
        if len({entry.shape for entry in entries}) != 1:
            raise MergeInputError(f"Tensor size mismatch for {save.tensor_name}: "
                                  f"{[list(entry.shape) for entry in entries]}")
        shape = entries[0].shape
        if task.method_name == "nway_interpolation":
            settings = [nway_weights(task, save.tensor_name)]
        else:
            settings = [output.lambdas[save.tensor_name] for output in outputs]
        aligned = None
        for entry, load in zip(entries, load_dtypes):
            dtype = load or entry.dtype
            aligned = dtype if aligned is None else torch.promote_types(aligned, dtype)
        save_dtype = _dtype(save.dtype)
        base = list(task.model_order).index(task.base_model) if task.base_model in task.model_order else -1
        jobs.append(Job(
            name=save.tensor_name, shape=shape, numel=entries[0].numel, sources=sources,
            load_dtypes=load_dtypes, base=base, method=task.method_name, settings=settings,
            save_dtypes=[save_dtype] * len(settings),
            out_dtypes=[save_dtype or aligned] * len(settings),
        ))
    # Read the inputs in file order: sequential reads of the base (or first) model.
    lead = max(0, jobs[0].base) if jobs else 0
    jobs.sort(key=lambda job: (job.sources[lead][0].path, job.sources[lead][0].entries[job.sources[lead][1]].offset))
    return jobs


def output_files(jobs: Sequence[Job], k: int, donor_index, shard_size: int
                 ) -> Tuple[Dict[str, List[OutputSpec]], bool]:
    """(file name -> tensors, write an index?) of output ``k``: the donor's layout
    (same files, same tensor-to-file map) unless ``--out-shard-size`` was set or the
    output names are not the donor's."""
    specs = [OutputSpec(job.name, job.out_dtypes[k], job.shape) for job in jobs]
    donor_paths = donor_index.tensor_paths if donor_index is not None else {}
    if shard_size == DEFAULT_SHARD_SIZE and specs and all(s.name in donor_paths for s in specs):
        files: Dict[str, List[OutputSpec]] = {}
        for spec in sorted(specs, key=lambda s: _natural(s.name)):
            files.setdefault(donor_paths[spec.name], []).append(spec)
        has_index = os.path.exists(os.path.join(donor_index.base_path, "model.safetensors.index.json"))
        return files, has_index
    return shard_by_size(sorted(specs, key=lambda s: _natural(s.name)), shard_size), False


def _natural(name: str):
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


# --------------------------------------------------------------------------- arithmetic


def _buffer(job: Job, chunks: List[torch.Tensor]) -> Optional[torch.Tensor]:
    """mergekit's copy_non_floating_buffer: an integer/bool buffer must agree across inputs."""
    if all(chunk.is_floating_point() for chunk in chunks):
        return None
    first = chunks[0]
    if any(c.dtype != first.dtype or not torch.equal(c, first) for c in chunks[1:]):
        raise MergeInputError(
            f"Non-floating buffer {job.name!r} differs between inputs; resolve it explicitly before merging")
    return first


def compute(job: Job, chunks: List[torch.Tensor]) -> List[torch.Tensor]:
    """The output slices (one per output) of one input slice, before the save cast."""
    chunks = [c if d is None or c.dtype == d else c.to(d) for c, d in zip(chunks, job.load_dtypes)]
    buffer = _buffer(job, chunks)
    if buffer is not None:
        return [buffer] * len(job.settings)
    common = chunks[0].dtype
    for chunk in chunks[1:]:
        common = torch.promote_types(common, chunk.dtype)
    chunks = [c.to(common) for c in chunks]
    if job.method == "nway_interpolation":
        merged = weighted_sum(chunks, job.settings[0])
        if not all_finite(merged):
            check_finite(job.name, **{f"input {i}": c for i, c in enumerate(chunks)})
            check_finite(job.name, merged=merged)
        return [merged.to(common)]

    instruct = chunks[job.base]
    (thinking,) = [c for i, c in enumerate(chunks) if i != job.base]
    results: List[Optional[torch.Tensor]] = [None] * len(job.settings)
    selected = [(k, lam) for k, lam in enumerate(job.settings) if lam is not None]
    if len(selected) < len(job.settings):
        check_finite(job.name, Instruct=instruct, Thinking=thinking)
        for k, lam in enumerate(job.settings):
            if lam is None:
                results[k] = instruct  # kept bit for bit
    if selected:
        merged = interpolate_many(instruct, thinking, [lam for _, lam in selected], out_dtype=common)
        for (k, _), value in zip(selected, merged):
            if not all_finite(value):
                check_finite(job.name, Instruct=instruct, Thinking=thinking)
                check_finite(job.name, merged=value)
            results[k] = value
    return results


# --------------------------------------------------------------------------- pipeline


class _ByteBudget:
    """At most ``limit`` bytes of output slices queued for the writer (one slice always fits)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit and not stop.is_set():
                self.cond.wait(0.1)
            self.used += n

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def execute(jobs: Sequence[Job], writers: Sequence[StreamingWriter], device: str = "cpu",
            progress: bool = True, desc: str = "Merging") -> None:
    """Run the jobs: reader thread -> arithmetic (this thread) -> writer thread."""
    import tqdm

    stop = threading.Event()
    errors: List[BaseException] = []
    slices: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    writes: queue.Queue = queue.Queue()
    budget = _ByteBudget(WRITE_BUFFER)
    total = sum(w.total_bytes for w in writers)
    bar = tqdm.tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                    disable=not progress, dynamic_ncols=True)

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def read() -> None:
        try:
            for job in jobs:
                for start in range(0, max(job.numel, 1), CHUNK):
                    stop_at = min(start + CHUNK, job.numel)
                    chunks = [handle.read(name, start, stop_at) for handle, name in job.sources]
                    if not _put(slices, (job, start, chunks), stop):
                        return
            _put(slices, None, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            fail(exc)

    def write() -> None:
        try:
            while True:
                item = writes.get()
                if item is None:
                    return
                k, name, start, data = item
                if not stop.is_set():
                    bar.update(writers[k].write(name, start, data))
                budget.release(data.numel() * data.element_size())
        except BaseException as exc:  # noqa: BLE001
            fail(exc)
            while writes.get() is not None:  # keep the producer from blocking
                pass

    reader = threading.Thread(target=read, name="mi-mergekit-read", daemon=True)
    writer = threading.Thread(target=write, name="mi-mergekit-write", daemon=True)
    reader.start()
    writer.start()
    try:
        while not stop.is_set():
            try:
                item = slices.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            job, start, chunks = item
            if device != "cpu":
                chunks = [c.to(device) for c in chunks]
            for k, value in enumerate(compute(job, chunks)):
                save = job.save_dtypes[k]
                if save is not None and value.dtype != save:
                    value = value.to(save)
                value = value.to("cpu").contiguous()
                size = value.numel() * value.element_size()
                budget.acquire(size, stop)
                writes.put((k, job.name, start, value))
    except BaseException as exc:
        fail(exc)
    finally:
        writes.put(None)
        writer.join()
        stop.set()
        reader.join()
        bar.close()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- entry point


def check_streamable(config, options) -> None:
    """Raise NotStreamable for what only mergekit's engine does."""
    if config.tokenizer_source or config.tokenizer:
        raise NotStreamable("the recipe rebuilds the tokenizer (vocabulary permutation)")
    if options.unsafe_truncate_embeddings:
        raise NotStreamable("--unsafe-truncate-embeddings")
    if options.multi_gpu:
        raise NotStreamable("--multi-gpu")
    if not options.safe_serialization:
        raise NotStreamable("--no-safe-serialization (pickle output)")


def write_weights(config, arch, outputs: Sequence[Output], options, out_config=None,
                  donor=None, nway_weights=None, desc: str = "Merging") -> None:
    """Plan with mergekit, then stream every output's weights into its folder.

    Raises :class:`NotStreamable` (before anything is written) for merges only
    mergekit's engine runs.
    """
    from mi_mergekit.mergekit_compat import planned_saves

    check_streamable(config, options)
    saves = planned_saves(config, arch, options, out_config)
    inputs = Inputs(options)
    try:
        jobs = plan_jobs(saves, outputs, inputs, nway_weights)
        for output in outputs:
            for lam in {v for v in (output.lambdas or {}).values() if v is not None}:
                check_lambda(lam)
        donor_index = inputs.index(donor) if donor is not None else None
        layouts = [output_files(jobs, k, donor_index, options.out_shard_size) for k in range(len(outputs))]
        check_free_space(outputs[0].folder, sum(spec.nbytes for files, _ in layouts
                                               for specs in files.values() for spec in specs))
        writers: List[StreamingWriter] = []
        try:
            for output, (files, index) in zip(outputs, layouts):
                writers.append(StreamingWriter(output.folder, files, index=index))
            execute(jobs, writers, device=options.device or "cpu",
                    progress=not options.quiet, desc=desc)
        finally:
            for writer in writers:
                writer.close()
        for writer in writers:
            writer.finish()
    finally:
        inputs.close()
