"""Checksums of files and of checkpoints, shared by the two shipped pairs' builders
(``smollm2 build`` verifies the SmolLM2 pair with them, ``toy train`` compares a retrained
toy pair with the shipped one)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def tensor_digest(folder: Path) -> str:
    """sha256 over every tensor of a safetensors folder: name, dtype, shape, raw bytes, in name order.

    Independent of how the files are split or what metadata the writer put in the header.
    """
    import contextlib

    import torch
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        where = {}  # tensor name -> the open file that holds it
        for file in sorted(Path(folder).glob("*.safetensors")):
            handle = stack.enter_context(safe_open(str(file), "pt"))
            where.update(dict.fromkeys(handle.keys(), handle))
        digest = hashlib.sha256()
        for name in sorted(where):
            tensor = where[name].get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
