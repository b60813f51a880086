"""The streaming executor: read each input slice once, write every output slice in place.

mergekit's planner still resolves every parameter (filters, gradients, windows,
modules — the same ``SaveTensor`` tasks ``mergekit-yaml`` would run, see
:func:`mi_mergekit.mergekit_compat.planned_tensors`); this module only executes
them, for any :class:`~mi_mergekit.merge.method.ElementwiseMethod` (one output, or
the n outputs of a sweep), through the method's hooks — it names no method:

* inputs are resolved by mergekit's ``LoaderCache`` / ``LazyTensorLoader`` (hub
  ids, LoRA-merged models, sharded indexes); their safetensors files are read
  with positioned reads, a slice of ``CHUNK`` elements of one tensor at a time
  (:mod:`mi_mergekit.merge.safetensors_io`);
* every such merge is element-wise, so each slice is computed on its own by the
  method (:meth:`~mi_mergekit.merge.method.ElementwiseMethod.output`, built on
  :mod:`mi_mergekit.merge.kernel`) — same operations, same bits as the whole
  tensor through mergekit's executor — for all n outputs of a sweep from one read
  (inputs aligned and the work they share, such as Θ_T − Θ_I, done once:
  :func:`~mi_mergekit.merge.method.align_inputs`, as every other caller does);
* every output slice is written at its final offset in pre-sized safetensors
  files (:class:`~mi_mergekit.merge.safetensors_io.StreamingWriter`).

Reading, arithmetic and writing run on three threads joined by bounded queues
(file I/O and torch release the GIL), so the three overlap. Memory is a fixed
set of reused slice buffers — ``READ_AHEAD + 1`` slices per input and
``WRITE_SLOTS`` output slices — whatever the model size and the number of outputs.

Output layout: by default the output keeps the layout donor's files (the base
model — the Instruct checkpoint for ``model_interpolation`` — or else the first
model; not the tokenizer donor, :attr:`~mi_mergekit.merge.plan.MergePlan.tokenizer_donor`):
same file names, same tensor-to-file map, an index file when the layout donor
has one. An explicit ``--out-shard-size`` shards by size
with mergekit's file names instead.

``MI_MERGEKIT_ENGINE=mergekit`` runs mergekit's own executor and writer instead
(:mod:`mi_mergekit.merge.mergekit_engine`). So do recipes this engine does not
execute — they fall back with a warning: a ``tokenizer_source`` /
``tokenizer`` section (vocabulary permutation), ``--unsafe-truncate-embeddings``,
``--multi-gpu``, ``--no-safe-serialization``, inputs that are not safetensors,
and tensors mergekit would have to convert or skip.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.layout import natural_key
from mi_mergekit.merge.method import AlignedInputs, ElementwiseMethod, align_inputs, method_named
from mi_mergekit.merge.safetensors_io import (
    OutputSpec,
    SafetensorsFile,
    StreamingWriter,
    check_free_space,
    exceeds_page_cache,
    shard_by_size,
)

LOG = logging.getLogger("mi_mergekit.engine")

ENGINE_ENV = "MI_MERGEKIT_ENGINE"
ENGINES = ("stream", "mergekit")
#: elements per slice (64 MiB of bf16): large enough that the writes of the n outputs of
#: a sweep, interleaved, cost what sequential writes cost (16 MiB slices: 2.9× slower)
CHUNK = 1 << 25
#: input slices read ahead of the arithmetic
READ_AHEAD = 2
#: output slices computed or waiting for the writer (the outputs of a sweep take turns)
WRITE_SLOTS = 3


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
    #: tensor name -> the method's setting for this output (a sweep's λ); None: the
    #: settings of the recipe ``write_weights`` plans
    settings: Optional[Dict[str, Hashable]] = None


@dataclass
class Job:
    """One tensor name, computed slice by slice for every output."""

    name: str
    shape: Tuple[int, ...]
    numel: int
    sources: List[Tuple[SafetensorsFile, str]]  # per input, in mergekit's model order
    load_dtypes: List[Optional[torch.dtype]]  # the recipe's `dtype:` cast on load
    base: int  # index of the base model in sources, or -1
    method: ElementwiseMethod
    settings: List[Hashable]  # per output: the method's setting for this tensor
    out_dtypes: List[torch.dtype]  # per output: the save dtype, else the aligned input dtype


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


def plan_jobs(tensors: Sequence[Any], outputs: Sequence[Output], inputs: Inputs) -> List[Job]:
    """One :class:`Job` per planned tensor (:class:`~mi_mergekit.mergekit_compat.PlannedTensor`
    of the recipe; the outputs of a sweep differ only in their settings)."""
    jobs = []
    for tensor in tensors:
        if tensor.needs_mergekit:
            raise NotStreamable(f"tensor {tensor.name} needs {tensor.needs_mergekit}")
        method = method_named(tensor.method)
        if method is None:
            raise NotStreamable(f"{tensor.method!r} is not an element-wise method")
        sources = [inputs.entry(source.model, source.names) for source in tensor.sources]
        load_dtypes = [_dtype(source.dtype) for source in tensor.sources]
        entries = [handle.entries[name] for handle, name in sources]
        if len({entry.shape for entry in entries}) != 1:
            raise MergeInputError(f"Tensor size mismatch for {tensor.name}: "
                                  f"{[list(entry.shape) for entry in entries]}")
        recipe_setting = None
        settings = []
        for output in outputs:
            if output.settings is not None:
                settings.append(output.settings[tensor.name])
                continue
            if recipe_setting is None:
                recipe_setting = (method.setting(method.resolved(
                    tensor.name, tensor.models, tensor.base, tensor.shared, tensor.per_input)),)
            settings.append(recipe_setting[0])
        aligned = None
        for entry, load in zip(entries, load_dtypes):
            dtype = load or entry.dtype
            aligned = dtype if aligned is None else torch.promote_types(aligned, dtype)
        save_dtype = _dtype(tensor.save_dtype)
        jobs.append(Job(
            name=tensor.name, shape=entries[0].shape, numel=entries[0].numel, sources=sources,
            load_dtypes=load_dtypes, base=tensor.base, method=method, settings=settings,
            out_dtypes=[save_dtype or aligned] * len(settings),
        ))
    # Read the inputs in file order: sequential reads of the base (or first) model.
    lead = max(0, jobs[0].base) if jobs else 0
    jobs.sort(key=lambda job: (job.sources[lead][0].path, job.sources[lead][0].entries[job.sources[lead][1]].offset))
    return jobs


def output_files(jobs: Sequence[Job], k: int, layout_index, shard_size: int
                 ) -> Tuple[Dict[str, List[OutputSpec]], bool]:
    """(file name -> tensors, write an index?) of output ``k``: the layout donor's layout
    (same files, same tensor-to-file map; ``layout_index`` is its index) unless
    ``--out-shard-size`` was set or the output names are not the layout donor's."""
    from mergekit.options import MergeOptions

    specs = sorted((OutputSpec(job.name, job.out_dtypes[k], job.shape) for job in jobs),
                   key=lambda spec: natural_key(spec.name))
    default_size = MergeOptions.model_fields["out_shard_size"].default
    layout_paths = layout_index.tensor_paths if layout_index is not None else {}
    if shard_size == default_size and specs and all(s.name in layout_paths for s in specs):
        files: Dict[str, List[OutputSpec]] = {}
        for spec in specs:
            files.setdefault(layout_paths[spec.name], []).append(spec)
        has_index = os.path.exists(os.path.join(layout_index.base_path, "model.safetensors.index.json"))
        return files, has_index
    return shard_by_size(specs, shard_size), False


# --------------------------------------------------------------------------- arithmetic


def align_slice(job: Job, chunks: List[torch.Tensor]) -> AlignedInputs:
    """One input slice in the recipe's load dtypes, then as the method sees it (:func:`align_inputs`)."""
    chunks = [c if d is None or c.dtype == d else c.to(d) for c, d in zip(chunks, job.load_dtypes)]
    return align_inputs(job.method, job.name, chunks, job.base, job.settings, workspace)


_scratch = threading.local()


def workspace(numel: int, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """A reused slice buffer of this thread (the state the outputs of one slice share)."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.device != like.device or buffer.numel() < numel * dtype.itemsize:
        buffer = _scratch.buffer = torch.empty(max(numel, CHUNK) * dtype.itemsize, dtype=torch.uint8,
                                               device=like.device)
    return buffer[: numel * dtype.itemsize].view(dtype)


# --------------------------------------------------------------------------- pipeline


class _Pool:
    """A fixed set of reusable byte buffers: bounded memory, no page faults per slice."""

    def __init__(self, count: int, nbytes: int):
        self.free: queue.Queue = queue.Queue()
        for _ in range(count):
            self.free.put(torch.empty(nbytes, dtype=torch.uint8))

    def get(self, stop: threading.Event) -> Optional[torch.Tensor]:
        while not stop.is_set():
            try:
                return self.free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def put(self, buffer: torch.Tensor) -> None:
        self.free.put(buffer)


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def arithmetic_threads() -> int:
    """torch threads for the arithmetic: the cores left to it by the reader and the writer
    (each keeps one busy copying between the page cache and the slice buffers). On a
    2-core machine one thread: two made each slice 3–10× slower there, the threads of one
    element-wise op waiting for each other behind the I/O threads
    (``benchmarks/bench_kernel.py``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - 2))


def execute(jobs: Sequence[Job], writers: Sequence[StreamingWriter], device: str = "cpu",
            progress: bool = True, desc: str = "Merging") -> None:
    """Run the jobs: reader thread -> arithmetic (this thread) -> writer thread.

    Memory: ``READ_AHEAD + 1`` slices of every input and ``WRITE_SLOTS`` output
    slices, each at most ``CHUNK`` elements — whatever the model size and the
    number of outputs.
    """
    import tqdm

    n_inputs = max((len(job.sources) for job in jobs), default=1)
    in_bytes = CHUNK * max((e[0].entries[e[1]].dtype.itemsize for job in jobs for e in job.sources), default=1)
    out_bytes = CHUNK * max((d.itemsize for job in jobs for d in job.out_dtypes), default=1)
    in_pool = _Pool((READ_AHEAD + 1) * n_inputs, in_bytes)
    out_pool = _Pool(WRITE_SLOTS, out_bytes)
    stop = threading.Event()
    errors: List[BaseException] = []
    slices: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    writes: queue.Queue = queue.Queue()
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
                    buffers, chunks = [], []
                    for handle, name in job.sources:
                        buffer = in_pool.get(stop)
                        if buffer is None:
                            return
                        buffers.append(buffer)
                        chunks.append(handle.read(name, start, stop_at, buffer))
                    if not _put(slices, (job, start, stop_at, chunks, buffers), stop):
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
                k, name, start, data, buffer = item
                if not stop.is_set():
                    bar.update(writers[k].write(name, start, data))
                out_pool.put(buffer)
        except BaseException as exc:  # noqa: BLE001
            fail(exc)
            while writes.get() is not None:  # keep the producer from blocking
                pass

    reader = threading.Thread(target=read, name="mi-mergekit-read", daemon=True)
    writer = threading.Thread(target=write, name="mi-mergekit-write", daemon=True)
    reader.start()
    writer.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(arithmetic_threads())
    try:
        while not stop.is_set():
            try:
                item = slices.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                break
            job, start, stop_at, chunks, in_buffers = item
            if device != "cpu":
                chunks = [c.to(device) for c in chunks]
            n = stop_at - start
            aligned = align_slice(job, chunks)
            for k, dtype in enumerate(job.out_dtypes):
                buffer = out_pool.get(stop)
                if buffer is None:
                    break
                out = buffer[: n * dtype.itemsize].view(dtype)
                target = out if device == "cpu" else torch.empty(n, dtype=dtype, device=device)
                aligned.result(job.settings[k], out=target)
                if target is not out:
                    out.copy_(target)  # the per-slice transfer back from the device
                writes.put((k, job.name, start, out, buffer))
            del aligned, chunks
            for buffer in in_buffers:
                in_pool.put(buffer)
    except BaseException as exc:
        fail(exc)
    finally:
        torch.set_num_threads(threads)
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
                  layout_donor=None, desc: str = "Merging") -> None:
    """Plan with mergekit, then stream every output's weights into its folder.

    ``layout_donor`` is the model whose shard layout the outputs keep. Raises
    :class:`NotStreamable` (before anything is written) for merges only mergekit's
    engine runs.
    """
    from mi_mergekit.mergekit_compat import planned_tensors

    check_streamable(config, options)
    tensors = planned_tensors(config, arch, options, out_config)
    inputs = Inputs(options)
    try:
        jobs = plan_jobs(tensors, outputs, inputs)
        layout_index = inputs.index(layout_donor) if layout_donor is not None else None
        layouts = [output_files(jobs, k, layout_index, options.out_shard_size) for k in range(len(outputs))]
        out_bytes = sum(spec.nbytes for files, _ in layouts for specs in files.values() for spec in specs)
        check_free_space(outputs[0].folder, out_bytes)
        # more than the page cache holds: drop what was read and written (see safetensors_io)
        in_bytes = sum(entry.nbytes for handle in inputs.files.values() for entry in handle.entries.values())
        beyond_cache = exceeds_page_cache(in_bytes + out_bytes)
        for handle in inputs.files.values():
            handle.drop_read = beyond_cache
        writers: List[StreamingWriter] = []
        try:
            for output, (files, index) in zip(outputs, layouts):
                writers.append(StreamingWriter(output.folder, files, index=index, drop_written=beyond_cache))
            execute(jobs, writers, device=options.device or "cpu",
                    progress=not options.quiet, desc=desc)
        finally:
            for writer in writers:
                writer.close()
        for writer in writers:
            writer.finish()
    finally:
        inputs.close()
