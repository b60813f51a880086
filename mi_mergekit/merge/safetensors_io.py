"""Positioned reads and writes of safetensors files, without mapping them.

The streaming engine reads every input tensor in slices and writes every output
tensor in slices, each at its byte offset, so no whole shard — and no whole
tensor — ever has to be in memory.

Reading: :class:`SafetensorsFile` parses the header (8-byte little-endian
length, then JSON: dtype, shape, ``data_offsets`` per tensor) and reads element
ranges with ``os.preadv`` straight into a torch buffer. ``safetensors.safe_open``
would work too, but it maps the whole file: every page the merge touches then
counts as memory of the process (RSS grows to the size of both checkpoints),
which is what a user watching ``top`` — or a memory limit — sees.

Beyond the page cache: when the inputs and outputs of a merge do not fit in the memory
the page cache can use (:func:`exceeds_page_cache`), the pages of input ranges already
read and of output ranges already written are dropped (``posix_fadvise(DONTNEED)``;
for the output this also starts their writeback early), so the merge does not evict
everything else cached — the rest of its own inputs included — for pages it will not
read again. Inputs are opened with ``POSIX_FADV_SEQUENTIAL`` (a larger read-ahead).

Writing: every output tensor's name, dtype and shape is known before the first
byte is computed, so :class:`StreamingWriter` checks the free space
(:func:`check_free_space`: a disk that cannot hold the outputs fails before any
arithmetic, not an hour later), writes each file's header, sizes the file, then
writes each slice at its offset with ``os.pwritev``, in any order, from any thread. The
layout is the one ``safetensors.torch.save_file`` produces (header padded with
spaces to 8 bytes, ``{"format": "pt"}`` metadata, tensors ordered by dtype size
then name), so the files load with safetensors, transformers and mergekit.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from mi_mergekit.errors import CheckpointFileError

#: safetensors dtype names <-> torch dtypes
DTYPES: Dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
NAMES: Dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}


class SafetensorsFormatError(CheckpointFileError):
    """A file that is not a complete safetensors file (``path``: the file)."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: absolute byte offset in its file, dtype, shape."""

    path: str
    offset: int
    dtype: torch.dtype
    shape: Tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _read_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:]], offset + done)
        if n == 0:
            raise SafetensorsFormatError("the file ends before the tensor data does (truncated)")
        done += n


def _write_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    done = 0
    while done < len(buffer):
        done += os.pwritev(fd, [buffer[done:]], offset + done)


def as_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a contiguous CPU tensor (no copy)."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def _advise(fd: int, offset: int, length: int, advice_name: str) -> None:
    """``posix_fadvise`` where the platform has it (a hint: never an error)."""
    advice = getattr(os, advice_name, None)
    if advice is not None and hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, advice)
        except OSError:
            pass


def exceeds_page_cache(nbytes: int) -> bool:
    """True when ``nbytes`` (what a merge reads and writes) is more than the memory the page
    cache can use now (``MemAvailable``); False where that is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return nbytes > int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return False


class SafetensorsFile:
    """One safetensors file opened for positioned reads (``drop_read``: drop the pages of
    each range once read — see the module doc)."""

    def __init__(self, path: str):
        self.path = path
        self.drop_read = False
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            self.entries = self._parse_header()
        except SafetensorsFormatError as exc:
            os.close(self.fd)
            exc.path = exc.path or str(path)
            raise
        except Exception:
            os.close(self.fd)
            raise
        _advise(self.fd, 0, 0, "POSIX_FADV_SEQUENTIAL")

    def _parse_header(self) -> Dict[str, TensorEntry]:
        size = os.fstat(self.fd).st_size
        head = os.pread(self.fd, 8, 0)
        if len(head) < 8:
            raise SafetensorsFormatError("shorter than a safetensors header (truncated or empty)")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8 or length > 100_000_000:
            raise SafetensorsFormatError("header length exceeds the file (truncated or not safetensors)")
        try:
            header = json.loads(os.pread(self.fd, length, 8))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsFormatError(f"unreadable header ({exc})") from None
        base = 8 + length
        entries = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = DTYPES[info["dtype"]]
                begin, end = info["data_offsets"]
                shape = tuple(int(s) for s in info["shape"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsFormatError(f"bad header entry for {name!r}: {info}") from None
            entry = TensorEntry(self.path, base + begin, dtype, shape)
            if end - begin != entry.nbytes or base + end > size:
                raise SafetensorsFormatError(
                    f"tensor {name!r} lies outside the file (truncated or corrupt)")
            entries[name] = entry
        return entries

    def read(self, name: str, start: int, stop: int,
             buffer: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor ``name`` as a 1-D tensor,
        in a new tensor or at the start of ``buffer`` (a large enough uint8 tensor)."""
        entry = self.entries[name]
        item = entry.dtype.itemsize
        size = (stop - start) * item
        out = torch.empty(size, dtype=torch.uint8) if buffer is None else buffer[:size]
        if size:
            try:
                _read_exactly(self.fd, memoryview(out.numpy()), entry.offset + start * item)
            except SafetensorsFormatError as exc:
                exc.path = exc.path or str(self.path)
                raise
            if self.drop_read:
                _advise(self.fd, entry.offset + start * item, size, "POSIX_FADV_DONTNEED")
        return out.view(entry.dtype)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class OutputSpec:
    """One tensor to be written: name, dtype, shape."""

    name: str
    dtype: torch.dtype
    shape: Tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for size in self.shape:
            n *= size
        return n


def header_bytes(specs: Sequence[OutputSpec]) -> Tuple[bytes, Dict[str, int]]:
    """(header, data offset of each tensor) in ``safetensors.torch.save_file``'s layout."""
    ordered = sorted(specs, key=lambda s: (-s.dtype.itemsize, s.name))
    header: Dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offsets, position = {}, 0
    for spec in ordered:
        header[spec.name] = {
            "dtype": NAMES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [position, position + spec.nbytes],
        }
        offsets[spec.name] = position
        position += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text, offsets


def check_free_space(folder: str, needed: int) -> None:
    """Fail before any arithmetic when the disk cannot hold ``needed`` more bytes.

    (``posix_fallocate`` would reserve the space for real, but writing into its
    unwritten extents is ~10× slower on common filesystems; a disk filled by
    someone else mid-merge still fails the write, and nothing is published.)
    """
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    if needed > free:
        raise OSError(errno.ENOSPC, f"No space left on device: the output needs {needed / 2**30:.2f} GiB, "
                                    f"{free / 2**30:.2f} GiB are free", folder)


class StreamingWriter:
    """The weight files of one output folder, written slice by slice at fixed offsets.

    ``files`` maps each file name to the tensors it holds. ``index`` writes
    ``model.safetensors.index.json`` (always for more than one file). ``drop_written``:
    start the writeback of each range as soon as it is written and drop its pages
    ``DROP_LAG`` writes later (see the module doc).
    """

    #: writes between starting a range's writeback and dropping its (by then clean) pages
    DROP_LAG = 4

    def __init__(self, folder: str, files: Dict[str, List[OutputSpec]], index: bool = False,
                 index_metadata: Optional[dict] = None, drop_written: bool = False):
        self.folder = folder
        self.drop_written = drop_written
        self._written: "collections.deque[Tuple[int, int, int]]" = collections.deque()
        self.files = files
        self.index = index or len(files) > 1
        self.index_metadata = index_metadata or {}
        self.locations: Dict[str, Tuple[int, int]] = {}  # name -> (fd, absolute data offset)
        self.total_bytes = 0
        self._fds: List[int] = []
        try:
            for file_name, specs in files.items():
                head, offsets = header_bytes(specs)
                fd = os.open(os.path.join(folder, file_name),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
                self._fds.append(fd)
                data = sum(spec.nbytes for spec in specs)
                os.ftruncate(fd, len(head) + data)  # sized now; EFBIG here, not mid-merge
                _write_exactly(fd, memoryview(head), 0)
                for spec in specs:
                    self.locations[spec.name] = (fd, len(head) + offsets[spec.name])
                self.total_bytes += data
        except BaseException:
            self.close()
            raise

    def write(self, name: str, start: int, chunk: torch.Tensor) -> int:
        """Write the 1-D ``chunk`` as elements [start, start+len) of tensor ``name``."""
        fd, offset = self.locations[name]
        data = as_bytes(chunk)
        position = offset + start * chunk.element_size()
        _write_exactly(fd, data, position)
        if self.drop_written and len(data):
            _advise(fd, position, len(data), "POSIX_FADV_DONTNEED")  # dirty: starts its writeback
            self._written.append((fd, position, len(data)))
            if len(self._written) > self.DROP_LAG:
                _advise(*self._written.popleft(), "POSIX_FADV_DONTNEED")  # written back by now: dropped
        return len(data)

    def finish(self) -> None:
        """Close the files and write the index (the staging folder's publish fsyncs)."""
        self.close()
        if self.index:
            weight_map = {spec.name: file_name for file_name, specs in self.files.items()
                          for spec in specs}
            content = {
                "metadata": {**self.index_metadata, "total_size": self.total_bytes},
                "weight_map": dict(sorted(weight_map.items())),
            }
            with open(os.path.join(self.folder, "model.safetensors.index.json"), "w",
                      encoding="utf-8") as handle:
                json.dump(content, handle, indent=2)
                handle.write("\n")

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def shard_by_size(specs: Iterable[OutputSpec], max_bytes: int) -> Dict[str, List[OutputSpec]]:
    """mergekit's ``--out-shard-size`` sharding: fill shards in order, HF file names."""
    shards: List[List[OutputSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and max_bytes > 0 and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    if len(shards) == 1:
        return {"model.safetensors": shards[0]}
    total = len(shards)
    return {f"model-{k + 1:05d}-of-{total:05d}.safetensors": shard for k, shard in enumerate(shards)}
