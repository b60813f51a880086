"""Every touch of mergekit's internals, in one place, behind a version check.

mi_mergekit uses mergekit's public pieces (config, ``MergePlanner.plan_to_disk``,
``LoaderCache`` / ``LazyTensorLoader``, ``Executor``, the merge-method registry)
freely. What mergekit does not export — the helpers ``run_merge`` uses to write
the non-weight files of an output folder, and the two functions of
``mergekit.merge`` we wrap — is reached only through this module, so a mergekit
release that moves them breaks here, with a message naming the version, and
nowhere else.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any, Callable, List

#: mergekit releases whose internals this module was written against
TESTED = ("0.1.5",)


def mergekit_version() -> str:
    try:
        return importlib.metadata.version("mergekit")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
        import mergekit

        return getattr(mergekit, "__version__", "unknown")


def check_version() -> None:
    """Refuse a mergekit whose internals differ from the tested ones (major.minor)."""
    version = mergekit_version()
    if version.split(".")[:2] != TESTED[0].split(".")[:2]:
        raise ImportError(
            f"mi_mergekit needs mergekit {' / '.join(TESTED)} (found {version}); "
            f"install it with: pip install 'mergekit=={TESTED[-1]}'"
        )


check_version()


def planned_saves(config, arch, options, out_config=None) -> List[Any]:
    """The ``SaveTensor`` tasks of a merge, from mergekit's public ``plan_to_disk``.

    Each carries the output tensor name, its save dtype and the resolved merge
    task (``ExecuteMergeMethodTask``: inputs, per-tensor parameters). Nothing is
    written: the writer task is a value until an executor runs it.
    """
    from mergekit.io.tasks import SaveTensor
    from mergekit.plan import MergePlanner

    planner = MergePlanner(config.model_copy(deep=True), arch, options=options,
                           out_model_config=out_config)
    return [task for task in planner.plan_to_disk(out_path=os.devnull) if isinstance(task, SaveTensor)]


def output_config(config, arch, options):
    """The transformers config mergekit writes for this merge (``_model_out_config``)."""
    from mergekit.merge import _model_out_config

    return _model_out_config(config, arch, trust_remote_code=options.trust_remote_code)


def write_model_files(config, arch, cfg_out, folder: str, options, source: str, name: str,
                      tokenizer=None, log=None) -> None:
    """Everything ``mergekit.merge.run_merge`` writes after the weights, with its helpers:
    config.json, the model card and mergekit_config.yml, the tokenizer, tag-along files."""
    from mergekit.card import generate_card
    from mergekit.merge import (
        _copy_tagalong_files,
        _copy_tokenizer,
        _set_chat_template,
        _update_config_vocab,
    )

    if tokenizer is not None:
        pad = config.tokenizer.pad_to_multiple_of if config.tokenizer else None
        _update_config_vocab(cfg_out, arch, tokenizer, pad_to_multiple_of=pad)
    cfg_out.save_pretrained(folder)
    if options.write_model_card:
        card = generate_card(config=config, config_yaml=source, name=name)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)
        with open(os.path.join(folder, "mergekit_config.yml"), "w", encoding="utf-8") as handle:
            handle.write(source)
    if tokenizer is not None:
        _set_chat_template(tokenizer, config)
        tokenizer.save_pretrained(folder, safe_serialization=True)
    elif options.copy_tokenizer:
        try:
            _copy_tokenizer(config, folder, options=options)
        except Exception as exc:  # mergekit's policy: the weights are fine
            if log is not None:
                log.error("failed to copy the tokenizer into %s", folder, exc_info=exc)
    _copy_tagalong_files(config, folder, files=arch.tagalong_files or [], options=options)


def wrap_merge_module(module, make_run_merge: Callable, make_get_arch: Callable) -> None:
    """Replace ``mergekit.merge.run_merge`` and its architecture lookup by wrappers.

    ``make_run_merge(original)`` / ``make_get_arch(original)`` return the
    replacements; idempotent (a wrapped module is left alone).
    """
    if getattr(module.run_merge, "__mi_mergekit__", False):
        return
    original_run_merge = module.run_merge
    run_merge = make_run_merge(original_run_merge)
    run_merge.__doc__ = original_run_merge.__doc__
    run_merge.__wrapped__ = original_run_merge
    run_merge.__mi_mergekit__ = True
    module.get_architecture_info = make_get_arch(module.get_architecture_info)
    module.run_merge = run_merge

