"""How mi_mergekit plugs into an unmodified mergekit 0.1.5.

mergekit has no plugin entry points, so ``mi_mergekit._autoload`` (installed by a
``.pth`` file) calls into this module right after two mergekit modules import:

* ``mergekit.merge_methods`` → :func:`on_merge_methods_loaded` registers our methods
  in mergekit's registry, so ``merge_method: model_interpolation`` resolves;
* ``mergekit.merge`` → :func:`on_merge_loaded` wraps ``run_merge`` (and the
  architecture lookup it uses). For recipes that use one of *our* methods the
  wrapper adds, around the unchanged mergekit engine:

  1. pre-flight checks with clear errors before anything is written
     (:func:`mi_mergekit.plan.build_plan`);
  2. an architecture made of the checkpoint's own tensor names, so MoE outputs
     keep the per-expert layout of their inputs (:mod:`mi_mergekit.layout`);
  3. an atomic output folder: mergekit writes into a hidden staging folder that
     is renamed into place only after the merge succeeded, and deleted on error
     or Ctrl-C — an interrupted run never leaves a folder that looks finished;
  4. the Thinking model's tokenizer, chat template and generation_config in the
     output (``template_from: instruct`` keeps mergekit's default, the base's);
  5. ``mi_plan.json``: the resolved per-tensor λ plan, for auditing.

Merges with any other method go straight to mergekit's original functions.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
from typing import Iterator, Optional

LOG = logging.getLogger("mi_mergekit")

# The files mergekit copies from its tokenizer donor, plus vocab.json (GPT-2 style BPE).
TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# Files that make up a model's weights; replaced as a whole when publishing.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")

_ACTIVE_ARCH: contextvars.ContextVar = contextvars.ContextVar("mi_mergekit_arch", default=None)


def on_merge_methods_loaded(module=None) -> None:
    import sys

    if "mi_mergekit.methods" in sys.modules:
        # Our methods package is importing (it triggered mergekit's import) or done:
        # it registers itself at the end of its own import.
        return
    import mi_mergekit.methods  # noqa: F401  (registers on import)


def on_merge_loaded(module) -> None:
    patch_merge_module(module)


def install() -> None:
    """Register methods and patch ``mergekit.merge`` now (idempotent)."""
    import mergekit.merge

    from mi_mergekit.methods import register_all

    register_all()
    patch_merge_module(mergekit.merge)


def _is_ours(config) -> bool:
    from mi_mergekit import METHOD_NAMES

    return getattr(config, "merge_method", None) in METHOD_NAMES


def patch_merge_module(module) -> None:
    if getattr(module.run_merge, "__mi_mergekit__", False):
        return
    original_run_merge = module.run_merge
    original_get_arch = module.get_architecture_info

    def get_architecture_info(config, options):
        if not _is_ours(config):
            return original_get_arch(config, options)
        arch = _ACTIVE_ARCH.get()
        if arch is None:
            from mi_mergekit.plan import build_plan

            _, arch = build_plan(config, options)
        return arch

    def run_merge(merge_config, out_path, options, config_source: Optional[str] = None):
        if not _is_ours(merge_config):
            return original_run_merge(merge_config, out_path, options, config_source)
        return run_interpolation_merge(
            original_run_merge, merge_config, out_path, options, config_source
        )

    run_merge.__doc__ = original_run_merge.__doc__
    run_merge.__wrapped__ = original_run_merge
    run_merge.__mi_mergekit__ = True
    module.get_architecture_info = get_architecture_info
    module.run_merge = run_merge


def run_interpolation_merge(engine, merge_config, out_path, options, config_source=None):
    """Check, plan, run mergekit's engine into a staging folder, finish, publish."""
    from mi_mergekit.plan import build_plan

    if os.path.exists(out_path) and not os.path.isdir(out_path):
        from mi_mergekit.errors import MergeInputError

        raise MergeInputError(f"output path {out_path!r} exists and is not a directory")
    plan, arch = build_plan(merge_config, options)
    LOG.info("resolved plan:\n%s", plan.table())
    for warning in plan.warnings:
        LOG.warning(warning)
    if config_source is None:
        config_source = merge_config.to_yaml()
    token = _ACTIVE_ARCH.set(arch)
    try:
        with staged_directory(out_path) as stage:
            engine(merge_config, stage, options, config_source)
            copy_template_files(merge_config, plan, stage, options)
            plan.write_json(os.path.join(stage, "mi_plan.json"))
    finally:
        _ACTIVE_ARCH.reset(token)
    return plan


def copy_template_files(merge_config, plan, out_dir: str, options) -> None:
    """Give the output the chosen donor's tokenizer, chat template and generation_config."""
    from mergekit.common import ModelReference

    donor = ModelReference.model_validate(
        plan.thinking if plan.template_from == "thinking" else plan.instruct
    )
    rebuilt = bool(
        merge_config.tokenizer_source or merge_config.tokenizer or merge_config.chat_template
    )
    if not rebuilt and not options.copy_tokenizer:
        return
    source_dir = donor.merged(
        cache_dir=options.lora_merge_cache, trust_remote_code=options.trust_remote_code
    ).local_path(cache_dir=options.transformers_cache)
    # When mergekit rebuilt the tokenizer (tokenizer_source / chat_template set), keep
    # it and only add the donor's generation_config, which mergekit then omits.
    files = ("generation_config.json",) if rebuilt else TOKENIZER_FILES
    for name in files:
        source, target = os.path.join(source_dir, name), os.path.join(out_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, target)
        elif os.path.exists(target) and not rebuilt:
            os.remove(target)  # the base's file would shadow the donor's tokenizer config
    LOG.info("tokenizer/chat template/generation_config taken from %s", donor)


@contextlib.contextmanager
def staged_directory(out_path: str) -> Iterator[str]:
    """Yield a hidden sibling folder; publish it as ``out_path`` only on success."""
    out_path = os.path.abspath(out_path)
    parent, base = os.path.split(out_path.rstrip(os.sep))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{base}.incomplete-", dir=parent)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    publish(stage, out_path)


def publish(stage: str, out_path: str) -> None:
    if not os.path.exists(out_path):
        os.replace(stage, out_path)
        return
    # Re-running into an existing folder: the old weights are replaced as a whole
    # (a stale shard must not survive next to a new index); other files are kept
    # unless the new output has a file of the same name.
    for name in os.listdir(out_path):
        if name.endswith(_WEIGHT_SUFFIXES):
            os.remove(os.path.join(out_path, name))
    for name in os.listdir(stage):
        os.replace(os.path.join(stage, name), os.path.join(out_path, name))
    os.rmdir(stage)
