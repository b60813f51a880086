"""Many outputs from one pass over the inputs: ``mi-mergekit sweep``.

A sweep of a ``model_interpolation`` recipe over λ₁ … λₙ writes ``n`` complete
model folders (weights, config, tokenizer, chat template, generation_config,
``mi_plan.json``), ``OUT_DIR/lambda_<λ>/``, while reading every input tensor
exactly once.

Each λ is planned exactly as a single merge would be (:func:`build_plan`:
pre-flight checks, checkpoint-layout architecture, resolved per-tensor λ).
The streaming engine (:mod:`mi_mergekit.merge.engine`) then reads each input
slice once, computes Θ_T − Θ_I once per slice and writes the ``n`` outputs'
slices in place — each output bit for bit the output of ``mergekit-yaml`` at
that λ, for whole-model, layer-windowed and module-selective recipes alike;
memory is a few slices, whatever n is. ``MI_MERGEKIT_ENGINE=mergekit`` runs
the same sweep through mergekit's executor (:mod:`mi_mergekit.merge.mergekit_engine`).

A sweep can also be a family of recipes over the same two models (λ profiles, windows,
module selections: :func:`run_family`), each written to ``OUT_DIR/<recipe name>/``.

``--lambdas`` replaces the recipe's ``lambda`` — the method's ``sweep_parameter``,
wherever the recipe sets it (top level, slices, models) — by one top-level value;
every other parameter (window, modules, placements, template_from) is kept.

Atomicity: every output is written into a hidden staging folder next to its
final place (:func:`mi_mergekit.safety.staged_directory`); all are renamed
into place only after every output is finished, and all are deleted on an
error or Ctrl-C. An interrupted sweep leaves no folder that looks complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, List, Optional, Sequence, Tuple, Union

from mi_mergekit.errors import MergeInputError
from mi_mergekit.merge.checks import extrapolation_note
from mi_mergekit.merge.lambdas import format_lambda, output_name
from mi_mergekit.merge.run import PlannedOutput

# Transparent huge pages for torch's CPU allocator, unless the user chose: with
# 4 KiB pages the page faults of fresh output tensors cost more than the
# arithmetic (3-4x on large tensors). torch reads THP_MEM_ALLOC_ENABLE once, at
# its first allocation, so this only takes effect when torch is not loaded yet —
# as in `mi-mergekit sweep`. It changes speed, never values.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

LOG = logging.getLogger("mi_mergekit.sweep")

#: the outputs of a sweep (one planned output per λ)
SweepOutput = PlannedOutput


def _with_value(data: dict, name: str, value) -> dict:
    """Recipe data with ``name`` set once, at the top level (removed everywhere else)."""
    def strip(entry):
        if isinstance(entry, dict) and isinstance(entry.get("parameters"), dict):
            entry["parameters"] = {k: v for k, v in entry["parameters"].items() if k != name} or None
            if entry["parameters"] is None:
                del entry["parameters"]
        return entry

    for entry in data.get("models") or []:
        strip(entry)
    for out_slice in data.get("slices") or []:
        strip(out_slice)
        for source in out_slice.get("sources") or []:
            strip(source)
    data["parameters"] = {**(data.get("parameters") or {}), name: value}
    return data


def sweep_parameter(config) -> str:
    from mi_mergekit.merge.plan import method_of

    method = method_of(config)
    if not method.sweep_parameter:
        raise MergeInputError(f"{method.spec.name} has no parameter to sweep")
    return method.sweep_parameter


def with_lambda(config, lam: float):
    """A copy of a MergeConfiguration with its swept parameter (``lambda``) set to ``lam``."""
    from mergekit.config import MergeConfiguration

    data = config.model_dump(mode="json", exclude_defaults=True)
    return MergeConfiguration.model_validate(_with_value(data, sweep_parameter(config), lam))


def _source_with_lambda(source: Optional[str], config, lam: float) -> str:
    import yaml

    if source:
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict):
            return yaml.safe_dump(_with_value(data, sweep_parameter(config), lam), sort_keys=False)
    return config.to_yaml()


@dataclass
class Member:
    """One output of a family: its recipe (models resolved), its folder under the sweep's
    OUT_DIR and the recipe as its model card shows it."""

    label: str  # λ as text, or the recipe's name
    folder: str
    config: Any
    source: str
    card: Any
    lam: Optional[float] = None


def prepare_outputs(members: Sequence[Member], out_dir: str, options) -> Tuple[List[PlannedOutput], Any]:
    """Plan every member with :func:`build_plan` (all pre-flight checks before writing anything);
    the members must merge the same models."""
    from mi_mergekit.merge.plan import build_plan, method_of
    from mi_mergekit.safety import check_existing, check_output_path, model_inputs

    first = members[0].config
    inputs = model_inputs(first, options, *(method_of(first).roles or ("base", "input")))
    check_output_path(out_dir, inputs, options, existing=False)
    for member in members:
        check_existing(os.path.join(out_dir, member.folder))
    outputs, arch = [], None
    for member in members:
        plan, arch_member = build_plan(member.config, options)
        if outputs and plan.inputs != outputs[0].plan.inputs:
            raise MergeInputError(
                f"{member.label} merges {[m for _, m in plan.inputs]}, not the models of {outputs[0].label} "
                f"({[m for _, m in outputs[0].plan.inputs]}): a sweep reads one set of inputs once")
        arch = arch or arch_member
        outputs.append(PlannedOutput(config=member.config, plan=plan,
                                     path=os.path.join(os.path.abspath(out_dir), member.folder),
                                     source=member.source, lam=member.lam, label=member.label,
                                     card_config=member.card))
    for warning in outputs[0].plan.warnings if outputs else ():
        if "no tensor is interpolated" in warning:
            LOG.warning(warning)
    note = extrapolation_note([output.lam for output in outputs if output.lam is not None])
    if note:  # one line for the whole sweep
        LOG.warning(note)
    for output in outputs:  # members given as recipes: their own line each
        for warning in output.plan.warnings if output.lam is None else ():
            if "lies outside [0, 1]" in warning:
                LOG.warning("%s: %s", output.label, warning)
    return outputs, arch


def lambda_members(merge_config, labels: Sequence[str], options, config_source: Optional[str] = None
                   ) -> List[Member]:
    """The recipe at each λ of ``labels`` (its ``lambda`` replaced, everything else kept)."""
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.mergekit_compat import with_absolute_local_paths

    name = sweep_parameter(merge_config)
    setting = (merge_config.parameters or {}).get(name)
    if setting is not None and not isinstance(setting, (int, float)):
        LOG.warning("the recipe's non-scalar %s %r is replaced by each swept value", name, setting)
    written = with_absolute_local_paths(merge_config)  # the recipe as the model cards show it
    resolved, _ = resolve_models(merge_config, options)  # cached hub ids: no network
    members = []
    for label in labels:
        lam = float(label)
        card = with_lambda(written, lam)
        members.append(Member(label, output_name(label), with_lambda(resolved, lam),
                              _source_with_lambda(config_source, card, lam), card, lam))
    return members


def recipe_members(recipes: Sequence[Tuple[str, Any, str]], options) -> List[Member]:
    """Recipes as they are, ``(name, config, source)`` each, one folder per name (a family of
    λ profiles, say)."""
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.mergekit_compat import with_absolute_local_paths

    names = [name for name, _, _ in recipes]
    if len(set(names)) != len(names):
        raise MergeInputError(f"two recipes of the sweep have the same name: {sorted(names)}")
    return [Member(name, name, resolve_models(config, options)[0], source, with_absolute_local_paths(config))
            for name, config, source in recipes]


def write_family(members: Sequence[Member], out_dir: str, options, progress: Optional[bool] = None,
                 share: bool = True) -> List[PlannedOutput]:
    """Write one complete model folder per member under ``out_dir``, reading each input tensor
    once; all are published together, or none."""
    from mi_mergekit.merge.checks import resolve_device
    from mi_mergekit.merge.run import write_outputs
    from mi_mergekit.safety import staged_directory

    resolve_device(options.device)
    outputs, arch = prepare_outputs(members, out_dir, options)
    if options.multi_gpu:
        LOG.warning("--multi-gpu is not supported by sweep; using one device (%s)", options.device)
    with contextlib.ExitStack() as stack:
        for output in outputs:
            output.stage = stack.enter_context(staged_directory(output.path))
        write_outputs(members[0].config, outputs, arch, options, progress=progress, share=share)
        # Leaving the ExitStack publishes the staged folders (last entered first).
    for output in outputs:
        LOG.info("%s written to %s", output.label, output.path)
    return outputs


def run_sweep(merge_config, lambdas: Sequence[Union[str, float, Decimal]], out_dir: str,
              options=None, config_source: Optional[str] = None, progress: Optional[bool] = None,
              share: bool = True) -> List[PlannedOutput]:
    """Write one complete model folder per λ under ``out_dir``; returns the outputs.

    ``lambdas`` are numbers, decimals or decimal strings. ``share=False`` (only
    with ``MI_MERGEKIT_ENGINE=mergekit``) runs mergekit's own merge task per
    (tensor, λ) instead of the shared-delta tasks; for comparison and tests.
    """
    from mergekit.options import MergeOptions

    options = options or MergeOptions()
    labels = [format_lambda(lam) for lam in lambdas]
    if not labels:
        raise MergeInputError("no λ values to sweep")
    if len(set(labels)) != len(labels):
        raise MergeInputError(f"duplicate λ values in {labels}")
    return write_family(lambda_members(merge_config, labels, options, config_source), out_dir, options,
                        progress=progress, share=share)


def run_family(recipes: Sequence[Tuple[str, Any, str]], out_dir: str, options=None,
               progress: Optional[bool] = None) -> List[PlannedOutput]:
    """Write one complete model folder per recipe, ``OUT_DIR/<name>``, reading the inputs once:
    the recipes (``(name, config, source)``) must merge the same models — a family of λ
    profiles, windows or module selections."""
    from mergekit.options import MergeOptions

    options = options or MergeOptions()
    if not recipes:
        raise MergeInputError("no recipes to sweep")
    return write_family(recipe_members(recipes, options), out_dir, options, progress=progress)


__all__ = ["Member", "SweepOutput", "prepare_outputs", "run_family", "run_sweep", "with_lambda", "write_family"]
