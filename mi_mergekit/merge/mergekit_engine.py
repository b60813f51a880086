"""Today's path through mergekit's own executor and writer (``MI_MERGEKIT_ENGINE=mergekit``).

Kept for recipes the streaming engine does not execute and as the reference it is
tested and benchmarked against. A sweep here plans each λ with mergekit's
``MergePlanner.plan_to_disk`` and hands the ``n`` task lists to *one* mergekit
``Executor``: mergekit tasks are immutable values, so the ``LoadTensor`` /
``GatherTensors`` tasks of the ``n`` plans are equal and every input tensor is
loaded once and feeds the ``n`` merge tasks of that tensor, each writing
through its own ``TensorWriter``. For each tensor one :class:`SharedDelta` task
aligns the two inputs and computes the float32 Θ_T − Θ_I once; the ``n``
:class:`SweepInterpolate` tasks then run the kernel. Tensors whose inputs are
not plain ``GatherTensors`` keep mergekit's own merge task.

Memory: like mergekit, each output's writer buffers tensors until a shard is
full (``--out-shard-size``, default 5B), so peak memory is about
``n × min(model size, shard size)`` plus one tensor's inputs.
"""

from __future__ import annotations

import logging
from typing import Dict, List

LOG = logging.getLogger("mi_mergekit.sweep")


def run_sweep(merge_config, outputs, arch, options, progress: bool, share: bool = True):
    """Write the weights of every output (already staged) with mergekit's executor;
    returns the tokenizer mergekit built, if any."""
    import tqdm
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache, SaveTensor
    from mergekit.plan import MergePlanner
    from mergekit.tokenizer import TokenizerInfo

    loader_cache = LoaderCache()
    loader_cache.setup(options=options)
    for model in merge_config.referenced_models():
        loader_cache.get(model)
    per_output = []
    for output in outputs:
        planner = MergePlanner(output.config.model_copy(deep=True), arch,
                               options=options, out_model_config=output.out_config)
        per_output.append(planner.plan_to_disk(out_path=output.stage))
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
                       unit="tensor", disable=not progress) as bar:
            for task, value in executor.run(quiet=True):
                if isinstance(task, SaveTensor):
                    saved[task.tensor_name] = saved.get(task.tensor_name, 0) + 1
                    if saved[task.tensor_name] == len(outputs):
                        bar.update(1)
                elif isinstance(value, TokenizerInfo):
                    tokenizer = value.tokenizer
    finally:
        del executor, targets
    return tokenizer


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

    from mi_mergekit.merge.checks import all_finite, check_finite, check_lambda
    from mi_mergekit.merge.kernel import interpolate_from_delta, task_vector

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
            delta = task_vector(i, t)  # Θ_T − Θ_I, once for every λ
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
                if self.shared.need_delta:
                    check_finite(self.shared.tensor_name, Instruct=instruct, Thinking=shared["thinking"])
                return instruct  # kept bit for bit
            merged = interpolate_from_delta(instruct, shared["delta"], self.lam, out_dtype=instruct.dtype,
                                            thinking=shared["thinking"])
            if not all_finite(merged):
                name = self.shared.tensor_name
                check_finite(name, Instruct=instruct, Thinking=shared["thinking"])
                check_finite(name, merged=merged)
            return merged

    globals().update(SharedDelta=SharedDelta, SweepInterpolate=SweepInterpolate)
    return SharedDelta, SweepInterpolate


def share_work(per_output: List[list], outputs: list) -> list:
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
