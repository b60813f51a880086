"""Every touch of mergekit's internals, in one place, behind a version check.

mi_mergekit uses mergekit's public pieces (config, ``MergePlanner.plan_to_disk``,
``LoaderCache`` / ``LazyTensorLoader``, ``Executor``, the merge-method registry)
freely. What mergekit does not export is reached only through this module, so a
mergekit release that moves it breaks here, with a message naming the version,
and nowhere else:

* the fields of the planned tasks (``SaveTensor``, ``ExecuteMergeMethodTask``,
  ``GatherTensors``), read into a plain :class:`PlannedTensor`, and the copies of
  those tasks a sweep makes (:func:`with_tensor_task`, :func:`with_saves`);
* the helpers ``run_merge`` uses to write the non-weight files of an output folder;
* the pieces of mergekit's architecture inference that place tensors by depth
  (:func:`transformers_info`, :func:`template_substitution`);
* the two functions of ``mergekit.merge`` we wrap (:func:`wrap_merge_module`) and the
  ``mergekit-yaml`` click command we wrap (:func:`wrap_mergekit_yaml`).

The start-up deferral (what mergekit imports when it loads and a merge of safetensors
checkpoints never uses) is :mod:`mi_mergekit.deferred`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

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


@dataclass(frozen=True)
class TensorSource:
    """Where one input of a planned tensor comes from."""

    model: Any  # ModelReference
    names: Tuple[str, ...]  # the tensor's name in that checkpoint, then its aliases and tied names
    dtype: Optional[str]  # the recipe's `dtype:` (or the weight's forced dtype), cast on load


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor of a planned merge, read off mergekit's ``SaveTensor`` task."""

    name: str
    save_dtype: Optional[str]  # out_dtype / dtype written
    method: str  # merge_method name
    sources: Tuple[TensorSource, ...]  # in mergekit's model order
    base: int  # index of the base model in ``sources``, -1 without one
    shared: Dict[str, Any]  # resolved shared parameters
    per_input: Tuple[Dict[str, Any], ...]  # resolved per-input parameters, model order
    #: why only mergekit's executor can compute it (vocabulary permutation, …); None: plain inputs
    needs_mergekit: Optional[str]
    save: Any  # the SaveTensor task itself (for mergekit's executor)
    optional: bool = False  # the architecture marks the weight optional

    @property
    def models(self) -> Tuple[Any, ...]:
        return tuple(source.model for source in self.sources)

    @property
    def inputs_key(self) -> Tuple:
        """Equal for the tensors of two plans that read the same inputs the same way."""
        gather = self.save.tensor_task.gather_tensors
        return (self.name, tuple(sorted((str(s.model), s.names[0], s.dtype or "") for s in self.sources)),
                gather.dtype, gather.device, self.base >= 0 and str(self.models[self.base]))

    @property
    def gather(self):
        """The GatherTensors task that loads the inputs (mergekit's executor)."""
        return self.save.tensor_task.gather_tensors


def planned_tensor(save) -> PlannedTensor:
    """A :class:`PlannedTensor` from one ``SaveTensor`` task of ``plan_to_disk``."""
    from mergekit.io.tasks import GatherTensors
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask

    task = save.tensor_task
    if not isinstance(task, ExecuteMergeMethodTask):
        return PlannedTensor(save.tensor_name, save.dtype, "", (), -1, {}, (),
                             f"a {type(task).__name__} task", save)
    gather = task.gather_tensors
    needs = None if type(gather) is GatherTensors else f"a {type(gather).__name__} input task"
    if needs is not None:
        gather = getattr(gather, "gather_tensors", None)
        if type(gather) is not GatherTensors:
            return PlannedTensor(save.tensor_name, save.dtype, task.method_name, (), -1, {}, (), needs, save)
    sources = []
    for model in task.model_order:
        info = gather.weight_info[model]
        names = (info.name,) + tuple(info.aliases or ()) + tuple(info.tied_names or ())
        sources.append(TensorSource(model, names, info.force_dtype or gather.dtype))
    base = list(task.model_order).index(task.base_model) if task.base_model in task.model_order else -1
    per_input = tuple(dict(task.input_parameters[m].items()) if m in task.input_parameters else {}
                      for m in task.model_order)
    return PlannedTensor(save.tensor_name, save.dtype, task.method_name, tuple(sources), base,
                         dict(task.parameters.items()), per_input, needs, save,
                         bool(task.output_weight.optional))


def plan_to_disk(config, arch, options, out_config=None, out_path: str = os.devnull) -> List[Any]:
    """mergekit's task list for writing ``config`` into ``out_path`` (nothing runs yet)."""
    from mergekit.plan import MergePlanner

    planner = MergePlanner(config.model_copy(deep=True), arch, options=options, out_model_config=out_config)
    return planner.plan_to_disk(out_path=out_path)


def is_save(task) -> bool:
    from mergekit.io.tasks import SaveTensor

    return isinstance(task, SaveTensor)


def planned_tensors(config, arch, options, out_config=None) -> List[PlannedTensor]:
    """Every output tensor of a merge, from mergekit's public ``plan_to_disk``, with its
    resolved parameters. Nothing is written: the writer task is a value until run."""
    return [planned_tensor(task) for task in plan_to_disk(config, arch, options, out_config) if is_save(task)]


def with_tensor_task(save, tensor_task):
    """A copy of a ``SaveTensor`` task that saves what ``tensor_task`` computes."""
    return save.model_copy(update={"tensor_task": tensor_task})


def with_saves(task, saves):
    """``task`` with its ``FinalizeModel`` waiting for ``saves`` instead (others unchanged)."""
    from mergekit.io.tasks import FinalizeModel

    if isinstance(task, FinalizeModel):
        return task.model_copy(update={"tensor_save_tasks": tuple(saves)})
    return task


def map_model_paths(config, change: Callable[[str, Optional[str]], Tuple[str, Optional[str]]]):
    """``config`` with every model and LoRA path (and revision) replaced by
    ``change(path, revision)``; model references are serialised as
    ``path[@revision][+lora[@revision]]`` (mergekit's string form)."""
    from mergekit.config import MergeConfiguration

    def mapped(reference: str) -> str:
        parts = []
        for part in reference.split("+"):
            path, _, revision = part.partition("@")
            path, revision = change(path, revision or None)
            parts.append(path + (f"@{revision}" if revision else ""))
        return "+".join(parts)

    def patch(value):
        if isinstance(value, list):
            return [patch(v) for v in value]
        if isinstance(value, dict):
            return {k: mapped(v) if k in ("model", "base_model") and isinstance(v, str) else patch(v)
                    for k, v in value.items()}
        return value

    return MergeConfiguration.model_validate(patch(config.model_dump(mode="json")))


def with_absolute_local_paths(config):
    """``config`` with every model or LoRA path that exists on this machine made absolute.

    The same folders, so the same merge; but mergekit's model card asks the hub whether
    a relative ``dir/name`` path is a repository (``card.is_hf``), which fails offline
    after the merge is done — e.g. ``mergekit-multi -I work`` names its stages
    ``work/<name>``."""
    def absolute(path: str, revision: Optional[str]):
        if os.path.exists(path) and not os.path.isabs(path):
            return os.path.abspath(path), revision
        return path, revision

    return map_model_paths(config, absolute)


def transformers_info(model, options):
    """mergekit's view of the model transformers builds from ``model``'s config on the meta
    device: (keys ignored on save, tied keys, {name: vocabulary axis}, state-dict names in
    module order); Nones where transformers cannot build it."""
    from mergekit.architecture.auto import get_transformers_info

    return get_transformers_info(model, options)


def template_substitution(template: str, num_layers: int, index: int) -> str:
    """A mergekit architecture template (``model.layers.${layer_index}.``) for one layer."""
    from mergekit.architecture.json_definitions import _template_substitution

    return _template_substitution(template, num_layers, index)


def write_card(config, source: str, folder: str, name: str) -> None:
    """mergekit's model card (README.md) of ``config`` in ``folder``."""
    from mergekit.card import generate_card

    card = generate_card(config=config, config_yaml=source, name=name)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(card)


class _MergekitDeprecations(logging.Filter):
    """Drops transformers' "`torch_dtype` is deprecated" warning, which mergekit 0.1.5's own code
    (``res.torch_dtype = …`` in ``_model_out_config``, ``torch_dtype=`` for LoRA merges) triggers on
    every merge: nothing a user can change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`torch_dtype` is deprecated" not in str(record.msg)


#: the transformers loggers that report it
DEPRECATION_LOGGERS = ("transformers.configuration_utils", "transformers.modeling_utils")


def quiet_mergekit_deprecations() -> None:
    """Install :class:`_MergekitDeprecations` (idempotent; imports nothing)."""
    for name in DEPRECATION_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MergekitDeprecations) for f in logger.filters):
            logger.addFilter(_MergekitDeprecations())


def output_config(config, arch, options):
    """The transformers config mergekit writes for this merge (``_model_out_config``)."""
    from mergekit.merge import _model_out_config

    return _model_out_config(config, arch, trust_remote_code=options.trust_remote_code)


def write_model_files(config, arch, cfg_out, folder: str, options, source: str, name: str,
                      tokenizer=None, log=None, card_config=None) -> None:
    """Everything ``mergekit.merge.run_merge`` writes after the weights, with its helpers:
    config.json, the model card (of ``card_config``, default ``config``) and
    mergekit_config.yml, the tokenizer, tag-along files."""
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
        write_card(card_config or config, source, folder, name)
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


def wrap_mergekit_yaml(command, make_callback: Callable, make_main: Callable) -> None:
    """Wrap the ``mergekit-yaml`` click command: its callback by ``make_callback(original)``
    and its ``main`` by ``make_main(original)``; idempotent."""
    if getattr(command.callback, "__mi_mergekit__", False):
        return
    for attribute, make in (("callback", make_callback), ("main", make_main)):
        original = getattr(command, attribute)
        wrapper = make(original)
        wrapper.__mi_mergekit__ = True
        wrapper.__wrapped__ = original
        setattr(command, attribute, wrapper)


def wrap_merge_module(module, make_run_merge: Callable, make_get_arch: Callable) -> None:
    """Replace ``mergekit.merge.run_merge`` and its architecture lookup by wrappers.

    ``make_run_merge(original)`` / ``make_get_arch(original)`` return the
    replacements; idempotent (a wrapped module is left alone).
    """
    if getattr(module.run_merge, "__mi_mergekit__", False):
        return
    quiet_mergekit_deprecations()
    original_run_merge = module.run_merge
    run_merge = make_run_merge(original_run_merge)
    run_merge.__doc__ = original_run_merge.__doc__
    run_merge.__wrapped__ = original_run_merge
    run_merge.__mi_mergekit__ = True
    module.get_architecture_info = make_get_arch(module.get_architecture_info)
    module.run_merge = run_merge
