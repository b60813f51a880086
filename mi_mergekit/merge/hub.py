"""Hub ids in a recipe, resolved from the local Hugging Face cache without the network.

mergekit reads a hub model by listing the repository online (``list_repo_files``)
before it looks at the cache, so a recipe that names ``Qwen/Qwen3-4B-Instruct-2507``
cannot run on a machine without network — a GPU node — even when ``hf download``
put the whole model in the cache. :func:`resolve_models` replaces every hub id whose
snapshot (at the recipe's revision, default ``main``) is complete in the cache
(``HF_HOME`` / ``HF_HUB_CACHE``, or ``--transformers-cache``) by that snapshot's
folder: the same files, so the same merge, and no network at all, with or without
``HF_HUB_OFFLINE``. A model that is neither local nor cached is left to mergekit,
which downloads it where the hub is reachable; where it is not, the first read fails
with one line naming the repo and how to get it (:mod:`mi_mergekit.merge.layout`).
Local paths are made absolute (see ``mergekit_compat.with_absolute_local_paths``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Tuple

LOG = logging.getLogger("mi_mergekit")

#: weight files that make a snapshot complete, with the index that lists their shards
WEIGHTS = (("model.safetensors.index.json", "model.safetensors"),
           ("pytorch_model.bin.index.json", "pytorch_model.bin"))


def complete(folder: str) -> bool:
    """True if ``folder`` holds a config and every weight file its index names."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return False
    for index, single in WEIGHTS:
        if os.path.isfile(os.path.join(folder, single)):
            return True
        path = os.path.join(folder, index)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as handle:
                    shards = set(json.load(handle)["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return False
            return all(os.path.isfile(os.path.join(folder, shard)) for shard in shards)
    return False


def cached_snapshot(repo_id: str, revision: Optional[str], cache_dir: Optional[str] = None) -> Optional[str]:
    """The folder of ``repo_id`` at ``revision`` in the local cache if it is complete, else None."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except Exception:  # not cached, not a repo id, or a revision the cache does not know
        return None
    return folder if complete(folder) else None


def resolve_models(config, options=None):
    """``(config, changed)``: hub ids with a complete cached snapshot replaced by its folder,
    local paths made absolute."""
    from mi_mergekit import mergekit_compat

    cache_dir = getattr(options, "transformers_cache", None)
    changed = []

    def local(path: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
        if os.path.exists(path):
            return (path if os.path.isabs(path) else os.path.abspath(path)), revision
        folder = cached_snapshot(path, revision, cache_dir)
        if folder is None:
            return path, revision
        changed.append((path + (f"@{revision}" if revision else ""), folder))
        return folder, None

    resolved = mergekit_compat.map_model_paths(config, local)
    for name, folder in dict(changed).items():
        LOG.info("%s: the complete snapshot in the local Hugging Face cache (%s)", name, folder)
    return resolved, bool(changed)


def hub_problem(exc: BaseException) -> str:
    """Why a model could not be read from the hub, in a few words."""
    from mi_mergekit.errors import explain

    first, seen, text = exc, set(), ""
    while exc is not None and id(exc) not in seen:  # the root cause of a wrapped error
        seen.add(id(exc))
        name, text = type(exc).__name__, str(exc)
        if name == "OfflineModeIsEnabled" or "offline mode is enabled" in text.lower():
            return "HF_HUB_OFFLINE is set"
        if name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
            return text.splitlines()[0] if text else name
        if "ConnectError" in name or "ConnectionError" in name or "Timeout" in name:
            return f"the hub cannot be reached ({text.splitlines()[0] if text else name})"
        exc = exc.__cause__ or exc.__context__
    return explain(first)


def not_found_message(model) -> str:
    """How to get a model that is neither local nor in the cache."""
    repo = model.model.path
    revision = f" --revision {model.model.revision}" if model.model.revision else ""
    return (f"download it with `hf download {repo}{revision}` (it is read from the local cache "
            f"afterwards, with no network), or map it to a local copy with --model {model}=PATH")
