"""A live transformers model whose weights are a merge of two checkpoints held in memory:
find-lambda's probes without writing a model folder (``--materialize memory``).

:class:`InMemoryInterpolation` loads the inputs once (mergekit's loader) and a live
transformers model, and re-materialises the merge of any recipe over those inputs into the
model's parameters — the recipe at a λ (:meth:`~InMemoryInterpolation.set_lambda`) or any
recipe of its family, e.g. a λ profile (:meth:`~InMemoryInterpolation.set_recipe`) — through
the recipe's method and the engines' input preparation
(:func:`~mi_mergekit.merge.method.align_inputs`), so the live weights equal the on-disk merge
bit for bit. Memory: both inputs plus the live model (about 3× one model; the non-base
inputs of tensors the first recipe keeps are loaded only when another recipe computes them).
Needs the checkpoint's tensor names to be the model's parameter names (dense models; not the
fused-expert MoE layout of transformers 5: use ``--materialize disk``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from mi_mergekit.errors import AnalysisInputError


class InMemoryInterpolation:
    """A live transformers model whose weights are set to the merge of a recipe over the same
    two inputs — the recipe at any λ (:meth:`set_lambda`), or any recipe of the family
    (:meth:`set_recipe`, e.g. a λ profile) — computed by the recipe's method, tensor by
    tensor, from the inputs held in memory (no files written)."""

    def __init__(self, merge_config, options=None, device: Optional[str] = None):
        from mergekit.common import ModelReference, dtype_from_name
        from mergekit.io.tasks import LoaderCache
        from mergekit.options import MergeOptions
        from transformers import AutoModelForCausalLM

        from mi_mergekit.errors import MergeInputError
        from mi_mergekit.merge.plan import build_plan, method_of

        self.options = options or MergeOptions()
        self.config = merge_config
        self.method = method_of(merge_config)
        plan, _ = build_plan(merge_config, self.options)
        self.plan = plan
        in_dtype = dtype_from_name(merge_config.dtype) if merge_config.dtype else None
        self.out_dtype = dtype_from_name(merge_config.out_dtype) if merge_config.out_dtype else None

        cache = LoaderCache()
        cache.setup(self.options)
        refs = [ModelReference.model_validate(model) for _, model in plan.inputs]
        self._loaders = [cache.get(ref) for ref in refs]
        self._in_dtype = in_dtype
        #: each tensor's inputs in the method's order, in the recipe's load dtype; where the
        #: recipe keeps the base tensor only the base, aligned (the others load when needed)
        self.inputs: Dict[str, List[Any]] = {}
        for tensor in plan.tensors:
            inputs = self._load(tensor.name)
            if not tensor.computed:
                from mi_mergekit.merge.method import align_inputs

                inputs = [align_inputs(self.method, tensor.name, inputs, 0, [tensor.setting]).result(tensor.setting)]
            self.inputs[tensor.name] = inputs
        for loader in self._loaders:
            loader.flush()

        path = refs[0].merged(cache_dir=self.options.lora_merge_cache,
                              trust_remote_code=self.options.trust_remote_code
                              ).local_path(cache_dir=self.options.transformers_cache)
        model_dtype = self.out_dtype or in_dtype or "auto"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=model_dtype)
        if device:
            self.model.to(device)
        self.model.eval()
        state = dict(self.model.named_parameters(remove_duplicate=False))
        state.update(dict(self.model.named_buffers()))
        missing = [n for n in self.inputs if n not in state]
        if missing:
            raise MergeInputError(
                f"{len(missing)} checkpoint tensor(s) have no parameter of that name in the "
                f"transformers model (e.g. {missing[:3]}; fused MoE experts?): use --materialize disk")
        self._targets = {n: state[n] for n in self.inputs}
        self.lam: Optional[float] = None
        self._tokenizer_donor = ModelReference.model_validate(plan.tokenizer_donor) if plan.tokenizer_donor else refs[0]
        self._set_generation_config()

    def tokenizer_donor_path(self) -> str:
        return self._tokenizer_donor.merged(cache_dir=self.options.lora_merge_cache,
                                  trust_remote_code=self.options.trust_remote_code
                                  ).local_path(cache_dir=self.options.transformers_cache)

    def _set_generation_config(self) -> None:
        from transformers import GenerationConfig

        donor = self.tokenizer_donor_path()
        if os.path.exists(os.path.join(donor, "generation_config.json")):
            self.model.generation_config = GenerationConfig.from_pretrained(donor)

    def _load(self, name: str) -> List[Any]:
        return [t if self._in_dtype is None else t.to(self._in_dtype)
                for t in (loader.get_tensor(name) for loader in self._loaders)]

    def merged_tensor(self, name: str, setting):
        """The tensor a merge with the method's ``setting`` writes for ``name`` (the same
        input preparation and arithmetic as the engines: :func:`align_inputs`)."""
        from mi_mergekit.merge.method import align_inputs

        inputs = self.inputs[name]
        if len(inputs) == 1:  # held as the kept base tensor
            if self.method.keeps_base(setting):
                value = inputs[0]
                return value.to(self.out_dtype) if self.out_dtype is not None else value
            inputs = self.inputs[name] = self._load(name)  # another recipe of the family computes it
        value = align_inputs(self.method, name, inputs, 0, [setting]).result(setting)
        return value.to(self.out_dtype) if self.out_dtype is not None else value

    def set_recipe(self, merge_config):
        """Write the merge of ``merge_config`` (same inputs) into the live model; returns the model."""
        import torch

        from mi_mergekit.merge.plan import build_plan

        plan, _ = build_plan(merge_config, self.options)
        if [model for _, model in plan.inputs] != [model for _, model in self.plan.inputs]:
            raise AnalysisInputError("set_recipe: the recipe merges other models than the live one holds")
        with torch.no_grad():
            for tensor in plan.tensors:
                self._targets[tensor.name].copy_(self.merged_tensor(tensor.name, tensor.setting))
        return self.model

    def set_lambda(self, lam: float):
        """Write the merge of the recipe at λ into the live model's parameters; returns the model."""
        from mi_mergekit.merge.sweep import with_lambda

        model = self.set_recipe(with_lambda(self.config, lam))
        self.lam = lam
        return model
