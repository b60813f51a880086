"""mergekit's own executor and writer (``MI_MERGEKIT_ENGINE=mergekit``), for n outputs.

Kept for recipes the streaming engine does not execute and as the reference it is
tested and benchmarked against. A sweep here plans each output with mergekit's
``MergePlanner.plan_to_disk`` and hands the ``n`` task lists to *one* mergekit
``Executor``: mergekit tasks are immutable values, so the ``LoadTensor`` /
``GatherTensors`` tasks of the ``n`` plans are equal and every input tensor is
loaded once and feeds the ``n`` merge tasks of that tensor, each writing
through its own ``TensorWriter``. For each tensor one :class:`SharedInputs` task
aligns the inputs and runs the method's ``prepare`` once (e.g. the float32
Θ_T − Θ_I of model_interpolation); the ``n`` :class:`OutputTensor` tasks then run
the method's ``output`` — the hooks of :class:`~mi_mergekit.merge.method.ElementwiseMethod`,
the same the streaming engine calls. Tensors whose inputs are not plain
``GatherTensors`` keep mergekit's own merge task.

Memory: like mergekit, each output's writer buffers tensors until a shard is
full (``--out-shard-size``, default 5B), so peak memory is about
``n × min(model size, shard size)`` plus one tensor's inputs.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

from mi_mergekit.errors import MergeInputError

LOG = logging.getLogger("mi_mergekit.sweep")


def write_weights(merge_config, outputs, arch, options, progress: bool, share: bool = True):
    """Write the weights of every output (already staged) with mergekit's executor;
    returns the tokenizer mergekit built, if any."""
    import tqdm
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.tokenizer import TokenizerInfo

    from mi_mergekit.mergekit_compat import is_save, plan_to_disk

    loader_cache = LoaderCache()
    loader_cache.setup(options=options)
    for model in merge_config.referenced_models():
        loader_cache.get(model)
    per_output = [plan_to_disk(output.config, arch, options, output.out_config, output.stage)
                  for output in outputs]
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
                if is_save(task):
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
    global SharedInputs, OutputTensor
    if "SharedInputs" in globals():
        return SharedInputs, OutputTensor

    import torch
    from mergekit.common import ModelReference
    from mergekit.graph import Task
    from mergekit.io.tasks import GatherTensors
    from mi_mergekit.merge.method import AlignedInputs, align_inputs, method_named

    class SharedInputs(Task[AlignedInputs]):
        """Per tensor, once for every output: the aligned inputs and the method's prepare."""

        gather_tensors: GatherTensors
        models: Tuple[ModelReference, ...]  # mergekit's model order
        base: int
        method_name: str
        tensor_name: str
        settings: Tuple[Any, ...]  # every output's setting for this tensor

        def arguments(self):
            return {"tensors": self.gather_tensors}

        def group_label(self):
            return self.gather_tensors.group_label()

        def uses_accelerator(self):
            return True

        def execute(self, tensors):
            chunks = [tensors[model] for model in self.models]
            if len({tuple(c.shape) for c in chunks}) != 1:
                raise MergeInputError(f"Tensor size mismatch for {self.tensor_name}: "
                                 f"{[tuple(c.shape) for c in chunks]}")
            return align_inputs(method_named(self.method_name), self.tensor_name, chunks, self.base, self.settings)

    class OutputTensor(Task[torch.Tensor]):
        """One output tensor: the method's output at this output's setting."""

        shared: SharedInputs
        setting: Any

        def arguments(self):
            return {"shared": self.shared}

        def group_label(self):
            return self.shared.group_label()

        def uses_accelerator(self):
            return True

        def execute(self, shared):
            return shared.result(self.setting)

    globals().update(SharedInputs=SharedInputs, OutputTensor=OutputTensor)
    return SharedInputs, OutputTensor


def share_work(per_output: List[list], outputs: list) -> list:
    """Replace each output's merge tasks by shared-input tasks (see the module docstring).

    ``per_output[k]`` is ``plan_to_disk``'s task list for ``outputs[k]``.
    """
    from mi_mergekit.merge.method import method_named
    from mi_mergekit.mergekit_compat import is_save, planned_tensor, with_saves, with_tensor_task

    SharedInputs, OutputTensor = _tasks()

    def planned(task):
        if not is_save(task):
            return None
        tensor = planned_tensor(task)
        eligible = not tensor.needs_mergekit and not tensor.optional and method_named(tensor.method)
        return tensor if eligible else None

    settings = [output.plan.settings for output in outputs]
    # GatherTensors of different plans compare unequal (their ImmutableMap field compares
    # by identity), so the shared task is keyed by what determines its inputs and one task
    # *object* is used by every output (the executor keeps one per object).
    every: Dict[Any, list] = {}
    for k, tasks in enumerate(per_output):
        for task in tasks:
            tensor = planned(task)
            if tensor is not None:
                every.setdefault(tensor.inputs_key, []).append(settings[k][tensor.name])
    shared_tasks: Dict[Any, Any] = {}

    result = []
    for k, tasks in enumerate(per_output):
        saves, others = [], []
        for task in tasks:
            tensor = planned(task)
            if tensor is not None:
                key = tensor.inputs_key
                shared = shared_tasks.get(key)
                if shared is None:
                    shared = shared_tasks[key] = SharedInputs(
                        gather_tensors=tensor.gather, models=tensor.models, base=tensor.base,
                        method_name=tensor.method, tensor_name=tensor.name, settings=tuple(every[key]))
                saves.append(with_tensor_task(task, OutputTensor(shared=shared, setting=settings[k][tensor.name])))
            elif is_save(task):
                saves.append(task)
            else:
                others.append(task)
        result.extend(with_saves(task, saves) for task in others)
        result.extend(saves)
    return result
