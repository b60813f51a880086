"""Many λ outputs from one pass over the inputs: ``mi-mergekit sweep``.

A sweep of a ``model_interpolation`` recipe over λ₁ … λₙ writes ``n`` complete
model folders (weights, config, tokenizer, chat template, generation_config,
``mi_plan.json``), ``OUT_DIR/lambda_<λ>/``, while reading every input tensor
exactly once.

How: each λ is planned exactly as a single merge would be — :func:`build_plan`
(pre-flight checks, checkpoint-layout architecture, resolved per-tensor λ) and
mergekit's own ``MergePlanner.plan_to_disk`` — and the ``n`` task lists are
handed to *one* mergekit ``Executor``. mergekit tasks are immutable values,
so the ``LoadTensor`` / ``GatherTensors`` tasks of the ``n`` plans are equal
and the executor's task universe keeps one of each: every input tensor is
loaded once (through mergekit's ``LoaderCache`` / ``LazyTensorLoader``) and
feeds the ``n`` merge tasks of that tensor, each writing through its own
``TensorWriter``. The executor groups tasks by tensor name and frees an input
as soon as its last consumer has run, so at most one tensor's inputs are live.
The per-λ work is also shared: for each tensor one :class:`SharedDelta` task
aligns the two inputs to their common dtype and computes, once, the float32
``Θ_I`` and ``Θ_T − Θ_I``; the ``n`` :class:`SweepInterpolate` tasks then only
scale, add and round. These are the kernel's own float32 operations in the
kernel's order (``(Θ_T − Θ_I)·λ + Θ_I``, no fused multiply-add), with the same
NaN/inf checks, so each output is bit for bit the output of ``mergekit-yaml``
with that λ — for whole-model, layer-windowed and module-selective recipes
alike (unselected tensors are the Instruct tensor, written once per output).
The tests check this against separate single merges. Tensors whose inputs are
not plain ``GatherTensors`` (tokenizer-permuted embeddings, optional weights)
keep mergekit's own merge task, unshared but equally exact.

``--lambdas`` replaces the recipe's top-level ``lambda`` (which may be absent);
every other parameter (window, modules, placements, template_from) is kept.

Atomicity: every output is written into a hidden staging folder next to its
final place (:func:`mi_mergekit.integration.staged_directory`); all are renamed
into place only after every output is finished, and all are deleted on an
error or Ctrl-C. An interrupted sweep leaves no folder that looks complete.

Memory: like mergekit, each output's writer buffers tensors until a shard is
full (``--out-shard-size``, default 5B parameters), so peak memory is about
``n × min(model size, shard size)`` plus one tensor's inputs. Lower
``--out-shard-size`` for long sweeps of big models. ``--cuda`` / ``--device``
compute on the device; results are moved to the CPU for writing, as in mergekit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import click

from mi_mergekit.safety import overwrite_option

# Transparent huge pages for torch's CPU allocator, unless the user chose: a sweep
# allocates every output tensor afresh (each writer holds its tensors until their
# shard is written), and with 4 KiB pages the page faults cost more than the
# arithmetic (3-4x on large tensors). torch reads THP_MEM_ALLOC_ENABLE once, at
# its first allocation, so this only takes effect when torch is not loaded yet —
# as in `mi-mergekit sweep`. It changes speed, never values.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

LOG = logging.getLogger("mi_mergekit.sweep")

def parse_lambdas(spec: str) -> List[str]:
    """``"0.1:0.9:0.1"`` (inclusive range) or ``"0.2,0.5,0.8"`` -> exact decimal strings.

    The parsing is :func:`mi_mergekit.recipes.parse_lambdas` (exact decimals, so
    0.3, not 0.30000000000000004); folder names and the λ written to the plan are
    the numbers the user typed. Values may be outside [0, 1] (extrapolation).
    """
    from mi_mergekit.recipes import parse_lambdas as parse_decimals

    unique: List[str] = []
    for value in parse_decimals(spec):
        text = format_lambda(value)
        if text not in unique:
            unique.append(text)
    return unique


def format_lambda(value: Union[Decimal, float, str]) -> str:
    """Shortest plain decimal text of λ: 0.50 -> '0.5', 1.0 -> '1', -0.0 -> '0'."""
    if not isinstance(value, Decimal):
        value = Decimal(repr(float(value)) if isinstance(value, float) else str(value))
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def output_name(lam: Union[str, float]) -> str:
    """Folder name of one sweep output: ``lambda_0.5``."""
    return f"lambda_{format_lambda(lam) if not isinstance(lam, str) else lam}"


@dataclass
class SweepOutput:
    lam: float
    label: str  # λ as text, e.g. "0.3"
    path: str  # final folder
    config: Any  # MergeConfiguration with this λ
    source: str  # the recipe YAML with this λ (for mergekit_config.yml / the model card)
    plan: Any = None  # MergePlan
    stage: str = ""  # hidden staging folder while the sweep runs


def with_lambda(config, lam: float):
    """A copy of a MergeConfiguration whose top-level ``lambda`` is ``lam``."""
    parameters = {**(config.parameters or {}), "lambda": lam}
    return config.model_copy(update={"parameters": parameters}, deep=True)


def _source_with_lambda(source: Optional[str], config, lam: float) -> str:
    import yaml

    if source:
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict):
            data["parameters"] = {**(data.get("parameters") or {}), "lambda": lam}
            return yaml.safe_dump(data, sort_keys=False)
    return config.to_yaml()


def prepare_outputs(merge_config, lambdas: Sequence[str], out_dir: str, options,
                    config_source: Optional[str] = None) -> Tuple[List[SweepOutput], Any]:
    """Plan every λ with :func:`build_plan` (all pre-flight checks before writing anything)."""
    from mi_mergekit.plan import build_plan
    from mi_mergekit.safety import check_existing, check_output_path, model_inputs

    inputs = model_inputs(merge_config, options, "Instruct", "Thinking")
    check_output_path(out_dir, inputs, options, existing=False)
    for label in lambdas:
        check_existing(os.path.join(out_dir, output_name(label)))
    setting = (merge_config.parameters or {}).get("lambda")
    if setting is not None and not isinstance(setting, (int, float)):
        LOG.warning("the recipe's non-scalar lambda %r is replaced by each swept value", setting)
    outputs, arch = [], None
    for label in lambdas:
        lam = float(label)
        config = with_lambda(merge_config, lam)
        plan, arch_lam = build_plan(config, options)
        arch = arch or arch_lam
        outputs.append(
            SweepOutput(
                lam=lam,
                label=label,
                path=os.path.join(os.path.abspath(out_dir), output_name(label)),
                config=config,
                source=_source_with_lambda(config_source, config, lam),
                plan=plan,
            )
        )
    for warning in outputs[0].plan.warnings if outputs else ():
        if "no tensor is interpolated" in warning:
            LOG.warning(warning)
    return outputs, arch


def run_sweep(merge_config, lambdas: Sequence[Union[str, float]], out_dir: str, options=None,
              config_source: Optional[str] = None, progress: Optional[bool] = None,
              share: bool = True) -> List[SweepOutput]:
    """Write one complete model folder per λ under ``out_dir``; returns the outputs.

    ``lambdas`` are numbers or decimal strings (see :func:`parse_lambdas`).
    ``share=False`` runs mergekit's own merge task per (tensor, λ) instead of the
    shared-delta tasks (inputs are still read once); for comparison and tests.
    """
    import tqdm
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache, SaveTensor
    from mergekit.merge import _model_out_config
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner
    from mergekit.tokenizer import TokenizerInfo

    from mi_mergekit.integration import install, staged_directory

    install()
    options = options or MergeOptions()
    labels = [lam if isinstance(lam, str) else format_lambda(lam) for lam in lambdas]
    if not labels:
        raise ValueError("no λ values to sweep")
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate λ values in {labels}")
    outputs, arch = prepare_outputs(merge_config, labels, out_dir, options, config_source)
    if options.multi_gpu:
        LOG.warning("--multi-gpu is not supported by sweep; using one device (%s)", options.device)

    loader_cache = LoaderCache()
    loader_cache.setup(options=options)
    for model in merge_config.referenced_models():
        loader_cache.get(model)

    show = (not options.quiet) if progress is None else progress
    with contextlib.ExitStack() as stack:
        per_output, out_configs = [], []
        for output in outputs:
            stage = stack.enter_context(staged_directory(output.path))
            output.stage = stage
            cfg_out = _model_out_config(output.config, arch, trust_remote_code=options.trust_remote_code)
            out_configs.append(cfg_out)
            planner = MergePlanner(output.config.model_copy(deep=True), arch,
                                   options=options, out_model_config=cfg_out)
            per_output.append(planner.plan_to_disk(out_path=stage))
        targets = share_work(per_output, outputs) if share else [t for ts in per_output for t in ts]

        executor = Executor(
            targets=targets,
            math_device=options.device,
            storage_device=options.device if options.low_cpu_memory else "cpu",
        )
        LOG.info("sweep: %d outputs, %d tasks after sharing the inputs",
                 len(outputs), len(executor.schedule.tasks))
        saved: Dict[str, int] = {}
        tokenizer = None
        n_tensors = len(outputs[0].plan.tensors)
        try:
            with tqdm.tqdm(total=n_tensors, desc=f"Sweep ({len(outputs)} λ) tensors",
                           unit="tensor", disable=not show) as bar:
                for task, value in executor.run(quiet=True):
                    if isinstance(task, SaveTensor):
                        saved[task.tensor_name] = saved.get(task.tensor_name, 0) + 1
                        if saved[task.tensor_name] == len(outputs):
                            bar.update(1)
                            if bar.n == n_tensors:
                                LOG.info("writing the last shards of %d outputs", len(outputs))
                    elif isinstance(value, TokenizerInfo):
                        tokenizer = value.tokenizer
        finally:
            del executor, targets

        for output, cfg_out in zip(outputs, out_configs):
            finish_output(output, cfg_out, arch, tokenizer, options)
        # Leaving the ExitStack publishes the staged folders (last entered first).
    for output in outputs:
        LOG.info("λ=%s written to %s", output.label, output.path)
    return outputs



def _tasks():
    """Task classes, defined lazily so importing this module stays cheap."""
    global SharedDelta, SweepInterpolate
    if "SharedDelta" in globals():
        return SharedDelta, SweepInterpolate

    import torch
    from mergekit.common import ModelReference
    from mergekit.graph import Task
    from mergekit.io.tasks import GatherTensors
    from mergekit.merge_methods.buffers import copy_non_floating_buffer

    from mi_mergekit.methods.interpolation import (
        _all_finite,
        check_finite,
        check_lambda,
        interpolate_from_delta,
        task_vector,
    )

    class SharedDelta(Task[dict]):
        """Per tensor, once for all λ: aligned Θ_I, and float32 Θ_I and Θ_T − Θ_I."""

        gather_tensors: GatherTensors
        instruct: ModelReference
        thinking: ModelReference
        tensor_name: str
        need_delta: bool

        def arguments(self):
            return {"tensors": self.gather_tensors}

        def group_label(self):
            return self.gather_tensors.group_label()

        def uses_accelerator(self):
            return True

        def execute(self, tensors):
            i, t = tensors[self.instruct], tensors[self.thinking]
            buffer = copy_non_floating_buffer((i, t), self.tensor_name)
            if buffer is not None:
                return {"buffer": buffer}
            if i.shape != t.shape:
                raise ValueError(f"Tensor size mismatch for {self.tensor_name}: "
                                 f"{[tuple(i.shape), tuple(t.shape)]}")
            common = torch.promote_types(i.dtype, t.dtype)  # mergekit's align_dtype
            i, t = i.to(common), t.to(common)
            if not self.need_delta:
                check_finite(self.tensor_name, Instruct=i, Thinking=t)
                return {"instruct": i}
            delta = task_vector(i, t)  # Θ_T − Θ_I, exactly the kernel's first step
            return {"instruct": i, "delta": delta, "thinking": t}

    class SweepInterpolate(Task[torch.Tensor]):
        """One output tensor at one λ: (Θ_T − Θ_I)·λ + Θ_I, rounded to the input dtype."""

        shared: SharedDelta
        lam: float
        selected: bool

        def arguments(self):
            return {"shared": self.shared}

        def group_label(self):
            return self.shared.group_label()

        def uses_accelerator(self):
            return True

        def execute(self, shared):
            if "buffer" in shared:
                return shared["buffer"].clone()
            instruct = shared["instruct"]
            check_lambda(self.lam)
            if not self.selected:
                if "delta" in shared:
                    check_finite(self.shared.tensor_name, Instruct=instruct, Thinking=shared["thinking"])
                return instruct  # kept bit for bit
            # Θ_I + λ·(Θ_T − Θ_I), the kernel's blocked arithmetic on the shared delta
            merged = interpolate_from_delta(instruct, shared["delta"], self.lam, out_dtype=instruct.dtype)
            if not _all_finite(merged):
                name = self.shared.tensor_name
                check_finite(name, Instruct=instruct, Thinking=shared["thinking"])
                check_finite(name, merged=merged)
            return merged

    globals().update(SharedDelta=SharedDelta, SweepInterpolate=SweepInterpolate)
    return SharedDelta, SweepInterpolate


def share_work(per_output: List[list], outputs: List[SweepOutput]) -> list:
    """Replace each output's merge tasks by shared-delta tasks (see the module docstring).

    ``per_output[k]`` is ``plan_to_disk``'s task list for ``outputs[k]``.
    """
    from mergekit.io.tasks import FinalizeModel, GatherTensors, SaveTensor
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask

    SharedDelta, SweepInterpolate = _tasks()

    def eligible(task) -> bool:
        return (
            isinstance(task, ExecuteMergeMethodTask)
            and type(task.gather_tensors) is GatherTensors
            and not task.output_weight.optional
            and task.base_model is not None
            and len(task.model_order) == 2
        )

    def key(merge):
        # GatherTensors of different plans compare unequal (their ImmutableMap field
        # compares by identity), so the shared task is keyed by what determines its inputs
        # and one task *object* is used by every λ (the executor keeps one per object).
        gather = merge.gather_tensors
        inputs = tuple(sorted((str(m), w.name, w.force_dtype or "") for m, w in gather.weight_info.items()))
        return (merge.output_weight.name, inputs, gather.dtype, gather.device, str(merge.base_model))

    selected = [{t.name: t for t in output.plan.tensors} for output in outputs]
    need: dict = {}
    for k, tasks in enumerate(per_output):
        for task in tasks:
            if isinstance(task, SaveTensor) and eligible(task.tensor_task):
                kk = key(task.tensor_task)
                need[kk] = need.get(kk, False) or selected[k][task.tensor_name].interpolated
    shared_tasks: dict = {}

    result = []
    for k, tasks in enumerate(per_output):
        saves, others = [], []
        for task in tasks:
            if isinstance(task, SaveTensor) and eligible(task.tensor_task):
                merge = task.tensor_task
                (thinking,) = [m for m in merge.model_order if m != merge.base_model]
                plan = selected[k][task.tensor_name]
                kk = key(merge)
                shared = shared_tasks.get(kk)
                if shared is None:
                    shared = shared_tasks[kk] = SharedDelta(
                        gather_tensors=merge.gather_tensors, instruct=merge.base_model, thinking=thinking,
                        tensor_name=merge.output_weight.name, need_delta=need[kk])
                lam = dict(merge.parameters.items())["lambda"]
                task = task.model_copy(update={"tensor_task": SweepInterpolate(
                    shared=shared, lam=lam, selected=plan.interpolated)})
                saves.append(task)
            elif isinstance(task, SaveTensor):
                saves.append(task)
            else:
                others.append(task)
        for task in others:
            if isinstance(task, FinalizeModel):
                task = task.model_copy(update={"tensor_save_tasks": tuple(saves)})
            result.append(task)
        result.extend(saves)
    return result


def finish_output(output: SweepOutput, cfg_out, arch, tokenizer, options) -> None:
    """What mergekit's run_merge and our wrapper do after the weights (same helpers)."""
    from mergekit.card import generate_card
    from mergekit.merge import (
        _copy_tagalong_files,
        _copy_tokenizer,
        _set_chat_template,
        _update_config_vocab,
    )

    from mi_mergekit.integration import copy_template_files

    stage, config = output.stage, output.config
    if tokenizer is not None:
        pad = config.tokenizer.pad_to_multiple_of if config.tokenizer else None
        _update_config_vocab(cfg_out, arch, tokenizer, pad_to_multiple_of=pad)
    cfg_out.save_pretrained(stage)
    if options.write_model_card:
        card = generate_card(config=config, config_yaml=output.source,
                             name=os.path.basename(output.path))
        with open(os.path.join(stage, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(card)
        with open(os.path.join(stage, "mergekit_config.yml"), "w", encoding="utf-8") as handle:
            handle.write(output.source)
    if tokenizer is not None:
        _set_chat_template(tokenizer, config)
        tokenizer.save_pretrained(stage, safe_serialization=True)
    elif options.copy_tokenizer:
        try:
            _copy_tokenizer(config, stage, options=options)
        except Exception as exc:  # same policy as mergekit: the weights are fine
            LOG.error("failed to copy the tokenizer into %s", output.path, exc_info=exc)
    _copy_tagalong_files(config, stage, files=arch.tagalong_files or [], options=options)
    copy_template_files(config, output.plan, stage, options)
    output.plan.write_json(os.path.join(stage, "mi_plan.json"))


# --------------------------------------------------------------------------- CLI


def _merge_options(function):
    from mergekit.options import add_merge_options

    return add_merge_options(function)


@click.command("sweep")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--lambdas", "lambdas_spec", required=True, metavar="START:STOP:STEP|L1,L2,...",
              help="λ values: an inclusive range 0.1:0.9:0.1 and/or a comma list 0.4,0.5,0.8.")
@click.option("--model", "models", multiple=True, metavar="NAME=PATH",
              help="Use a local copy of a model named in the recipe (repeatable).")
@overwrite_option
@_merge_options
def sweep_command(merge_options, recipe: str, out_dir: str, lambdas_spec: str, models, overwrite: bool):
    """Write one model folder per λ (OUT_DIR/lambda_<λ>/) reading each input tensor once.

    RECIPE is a model_interpolation recipe; its window / module selection is kept
    and its `lambda` is replaced by each value of --lambdas. Each output equals
    `mergekit-yaml` of the recipe at that λ, bit for bit. Takes mergekit's
    options (--cuda, --device, --out-shard-size, ...).
    """
    from mi_mergekit import register
    from mi_mergekit.commands import load_recipe
    from mi_mergekit.errors import about
    from mi_mergekit.safety import allow_overwrite

    register()
    merge_options.apply_global_options()
    logging.getLogger("mi_mergekit").setLevel(logging.INFO)
    lambdas = parse_lambdas(lambdas_spec)
    config, source = load_recipe(recipe, models)
    with about(recipe), allow_overwrite(overwrite):
        outputs = run_sweep(config, lambdas, out_dir, merge_options, config_source=source)
    for output in outputs:
        click.echo(output.path)


__all__ = ["SweepOutput", "format_lambda", "output_name", "parse_lambdas", "run_sweep", "sweep_command"]


if __name__ == "__main__":  # pragma: no cover
    sweep_command()
