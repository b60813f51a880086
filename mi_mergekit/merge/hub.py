"""Hub ids in a recipe, resolved from the local Hugging Face cache without the network.

mergekit reads a hub model by listing the repository online (``list_repo_files``)
before it looks at the cache, so a recipe that names ``Qwen/Qwen3-4B-Instruct-2507``
cannot run on a machine without network — a GPU node — even when ``hf download``
put the whole model in the cache. :func:`resolve_models` replaces every hub id whose
snapshot (at the recipe's revision, default ``main``) is complete in the cache
(``HF_HOME`` / ``HF_HUB_CACHE``, or ``--transformers-cache``) by that snapshot's
folder: the same files, so the same merge, and no network at all, with or without
``HF_HUB_OFFLINE``. A model that is neither local nor cached is decided at once
(:func:`locate`): a reference that cannot be a hub id (``/data/x``, ``./x``, ``a/b/c``) is
a missing folder; otherwise one request of a few seconds, without retries, asks the hub
whether the repository exists (none with ``HF_HUB_OFFLINE``). Only a repository the hub
says exists is left to mergekit (or transformers), which downloads it; anything else is
one line naming the reference, the folder and the cache looked in, and the fix that fits
the command being run. Local paths are made absolute (see
``mergekit_compat.with_absolute_local_paths``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from typing import Callable, List, Optional, Tuple

from mi_mergekit.errors import CheckpointFileError, command, did_you_mean

LOG = logging.getLogger("mi_mergekit")

#: seconds the hub has to answer whether a repository exists (one request, no retries)
HUB_TIMEOUT_ENV = "MI_MERGEKIT_HUB_TIMEOUT"
HUB_TIMEOUT = 4.0
#: what the hub accepts as a repository id: ``name`` or ``namespace/name``
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")

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


def could_be_hub_id(reference: str) -> bool:
    """True if ``reference`` has the form of a hub repository id (``org/name``, ``name``)
    and not of a path (``/data/x``, ``./x``, ``~/x``, ``a/b/c``)."""
    return bool(_REPO_ID.match(reference)) and ".." not in reference and not reference.endswith((".", "-"))


def hub_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(HUB_TIMEOUT_ENV, HUB_TIMEOUT)))
    except ValueError:
        return HUB_TIMEOUT


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def ask_hub(repo_id: str, revision: Optional[str] = None, kind: str = "models") -> Tuple[Optional[bool], str]:
    """Does the hub hold ``repo_id`` (at ``revision``)? ``(True, "")``; ``(False, why)`` when
    the hub says no; ``(None, why)`` when it cannot be asked: ``HF_HUB_OFFLINE``, no
    connection, or no answer within :func:`hub_timeout` seconds. One request, no retries;
    it runs on a daemon thread, so a hanging name lookup cannot hold the command either."""
    if hub_offline():
        return None, "HF_HUB_OFFLINE is set"
    if _UNREACHABLE:  # asked already in this process, in vain: do not wait again
        return None, _UNREACHABLE[0]
    import socket
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{_endpoint()}/api/{kind}/{repo_id}"
    if revision:
        url += f"/revision/{urllib.parse.quote(revision, safe='')}"
    headers = {"User-Agent": "mi-mergekit"}
    try:
        from huggingface_hub import get_token

        token = get_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
    except Exception:  # noqa: BLE001 - no token is fine
        pass
    timeout = hub_timeout()
    answer: List[Tuple[Optional[bool], str]] = []

    def request():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers, method="GET"),
                                        timeout=timeout):
                answer.append((True, ""))
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 404):  # the hub answers 401 for a repository it does not have
                what = "revision" if revision and exc.headers.get("X-Error-Code") == "RevisionNotFound" else "repository"
                answer.append((False, f"the hub has no {what} {repo_id}" + (f"@{revision}" if what == "revision" else "")))
            else:  # reachable; let the hub library say what it says
                answer.append((True, ""))
        except Exception as exc:  # noqa: BLE001 - DNS, refused, reset, timeout, TLS, proxy …
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
                answer.append((None, silent))
            else:
                answer.append((None, f"the hub cannot be reached ({_endpoint()}: {reason})"))

    silent = f"the hub did not answer within {timeout:g} s ({_endpoint()}; {HUB_TIMEOUT_ENV} sets the wait)"
    worker = threading.Thread(target=request, name="mi-mergekit-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    found = answer[0] if answer else (None, silent)
    if found[0] is None:
        _UNREACHABLE.append(found[1])
    return found


#: why the hub could not be asked, once it could not (one wait per process at most)
_UNREACHABLE: List[str] = []


def siblings_hint(reference: str, folders: bool = True) -> str:
    """`` — did you mean 'out/mi_0.8'?`` when the folder part of ``reference`` exists and
    holds a folder (``folders=False``: a file) with a close name."""
    parent, name = os.path.split(os.path.normpath(os.path.expanduser(reference)))
    try:
        names = [n for n in os.listdir(parent or ".") if os.path.isdir(os.path.join(parent or ".", n)) == folders]
    except OSError:
        return ""
    hint = did_you_mean(name, names)
    if not hint:
        return ""
    close = hint.split("'")[1]
    return f" — did you mean {os.path.join(parent, close)!r}?"


def _parent_is_here(reference: str) -> bool:
    """``out/mi_0.88`` with a folder ``out/`` here: a path, not a hub id."""
    namespace, slash, _ = reference.partition("/")
    return bool(slash) and os.path.isdir(namespace)


@contextlib.contextmanager
def offline():
    """The hub libraries in offline mode (cache only, no request) inside this block."""
    import sys

    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    patched = []
    for module, attribute in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                              ("datasets.config", "HF_DATASETS_OFFLINE")):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, attribute):
            patched.append((loaded, attribute, getattr(loaded, attribute)))
            setattr(loaded, attribute, True)
    try:
        yield
    finally:
        for loaded, attribute, value in patched:
            setattr(loaded, attribute, value)
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def cache_folder(cache_dir: Optional[str] = None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def default_fix(reference: str, revision: Optional[str]) -> str:
    """How to get a model that is not here, for the command being run."""
    rev = f" --revision {revision}" if revision else ""
    download = f"download it with `hf download {reference}{rev}` where the hub is reachable (then it is read " \
               "from the cache, with no network)"
    running = command() or ""
    if running == "mergekit-yaml":
        return (f"put the model's local folder in the recipe, or {download}; mergekit-yaml has no --model option, "
                f"`mi-mergekit merge RECIPE OUT --model {reference}=PATH` maps it without editing the recipe")
    if running.startswith("mi-mergekit eval") or running.startswith("mi-mergekit route"):
        return f"check the folder name, or {download}"
    if running.startswith("mi-mergekit"):
        return f"map it to a local copy with --model {reference}=PATH, or {download}"
    return f"put the model's local folder in the recipe, or {download}"


def locate(reference: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
           what: str = "model", fix: Optional[Callable[[str, Optional[str]], str]] = None) -> Tuple[str, Optional[str]]:
    """``(path, revision)`` of a model reference: a local folder (made absolute), the folder
    of its complete snapshot in the local cache, or — only if the hub says the repository
    exists — the hub id itself. Anything else raises a :class:`CheckpointFileError` naming
    the reference, the folder and the cache looked in, and the fix (``fix(reference,
    revision)``, default :func:`default_fix`), with no network wait: see :func:`ask_hub`."""
    if os.path.exists(reference):
        return (reference if os.path.isabs(reference) else os.path.abspath(reference)), revision
    folder = None
    if could_be_hub_id(reference):
        folder = cached_snapshot(reference, revision, cache_dir)
    if folder is not None:
        return folder, None
    named = reference + (f"@{revision}" if revision else "")
    absolute = os.path.abspath(os.path.expanduser(reference))
    near = siblings_hint(reference)
    if not could_be_hub_id(reference) or _parent_is_here(reference):
        raise CheckpointFileError(f"{what} {named} not found: no such folder{near}", path=absolute)
    exists, why = ask_hub(reference, revision)
    if exists:
        return reference, revision
    fix = (fix or default_fix)(reference, revision)
    looked = f"no folder {absolute}, no complete snapshot in the Hugging Face cache ({cache_folder(cache_dir)})"
    raise CheckpointFileError(f"{what} {named} not found: {looked}, and {why}{near}; {fix}", path=reference)


def resolve_models(config, options=None):
    """``(config, changed)``: hub ids with a complete cached snapshot replaced by its folder,
    local paths made absolute; a model found nowhere is an error (:func:`locate`)."""
    from mi_mergekit import mergekit_compat

    cache_dir = getattr(options, "transformers_cache", None)
    changed = []

    missing: List[CheckpointFileError] = []

    def local(path: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
        try:
            found, found_revision = locate(path, revision, cache_dir)
        except CheckpointFileError as exc:
            missing.append(exc)
            return path, revision
        if found != path and not os.path.exists(path):
            changed.append((path + (f"@{revision}" if revision else ""), found))
        return found, found_revision

    resolved = mergekit_compat.map_model_paths(config, local)
    if missing:  # the base model's first; every other one named too
        base = str(getattr(config, "base_model", None) or "")
        missing.sort(key=lambda exc: not base.startswith(str(exc.path)))
        first = missing[0]
        others = [str(exc.path) for exc in missing[1:] if exc.path != first.path]
        if others:
            first.message += f" (also not found: {', '.join(others)})"
        raise first
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
    """How to get a model that is neither local nor in the cache (for the command being run)."""
    return default_fix(model.model.path, model.model.revision)
