"""What an element-wise merge method declares, once, and what every engine reads from it.

A method is one file in :mod:`mi_mergekit.methods`: a subclass of
:class:`ElementwiseMethod` with

* ``spec`` — mergekit's :class:`~mergekit.merge_methods.base.MergeMethodSpec`: the
  name recipes use (``merge_method:``), the parameters and the input contract;
* ``roles`` — for a two-model method, the names of its base input and of the other
  one (``("Instruct", "Thinking")``), used in every message; ``None`` for a method
  over any number of models;
* :meth:`~ElementwiseMethod.setting` — from one output tensor's resolved parameters
  (mergekit's planner resolved filters, gradients and slices), everything its
  arithmetic needs, validated (e.g. λ, or "keep the base tensor");
* :meth:`~ElementwiseMethod.compute` — the arithmetic over aligned slices of its
  inputs, built on :mod:`mi_mergekit.merge.kernel`. Element-wise: any slice of a
  tensor computed on its own gives the same bits as the whole tensor.

Everything else is here, the same for every method: mergekit's executor calls
:meth:`~ElementwiseMethod.merge_group`; the streaming engine
(:mod:`mi_mergekit.merge.engine`), the mergekit-executor fallback
(:mod:`mi_mergekit.merge.mergekit_engine`), the sweep, the planner and pre-flight
(:mod:`mi_mergekit.merge.plan`) and the ``run_merge`` wrapper
(:mod:`mi_mergekit.integration`) call :meth:`~ElementwiseMethod.prepare` and
:meth:`~ElementwiseMethod.output`; none of them names a method. A method registered
in mergekit's registry (``mi_mergekit.methods`` registers ours) gets all of it.

Inputs reach :meth:`compute` in role order (base first) when the method has roles,
else in mergekit's model order. NaN/inf in an input or in the result is an error,
checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from mergekit.merge_methods.base import GroupMergeMethod, MergeMethodSpec, ParameterScope, TensorGroup

from mi_mergekit.merge.checks import all_finite, check_finite

#: ``workspace(numel, dtype, like)``: a scratch tensor an engine may reuse between slices
Workspace = Callable[[int, torch.dtype, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ResolvedTensor:
    """One output tensor and its parameters, as mergekit's planner resolved them."""

    name: str
    #: input ids (mergekit ``ModelReference``) in role order (base first) or model order
    inputs: Tuple[Any, ...]
    #: resolved shared parameters
    shared: Mapping[str, Any]
    #: resolved per-input parameters, one mapping per input, same order as ``inputs``
    per_input: Tuple[Mapping[str, Any], ...]
    #: index of the base input, -1 without one
    base: int = -1


class ElementwiseMethod(GroupMergeMethod):
    """A merge whose output element depends only on the same element of its inputs."""

    spec: MergeMethodSpec
    #: (base role, other role) of a two-model method; None: any number of models
    roles: Optional[Tuple[str, str]] = None
    #: plan on the checkpoint's own tensor names (True, :mod:`mi_mergekit.merge.layout`)
    #: or on mergekit's architecture tables (False)
    checkpoint_layout: bool = True
    #: name of the per-tensor value in ``mi_plan.json`` and in the plan table
    value_name: str = "value"
    value_label: str = "value"
    #: the parameter ``mi-mergekit sweep --lambdas`` replaces; None: no sweep
    sweep_parameter: Optional[str] = None

    # ------------------------------------------------------------ what a method defines

    def setting(self, tensor: ResolvedTensor) -> Hashable:
        """Everything :meth:`compute` needs for ``tensor``, validated (raise
        :class:`~mi_mergekit.errors.MergeInputError` with the reason)."""
        raise NotImplementedError

    def compute(self, inputs: Sequence[torch.Tensor], setting: Hashable, state: Any = None,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output slice, in the inputs' (aligned) dtype — written into ``out`` when
        given (``out`` has that dtype). ``state`` is :meth:`shared_state`'s value."""
        raise NotImplementedError

    # ------------------------------------------------------------ optional hooks

    def keeps_base(self, setting: Hashable) -> bool:
        """True where the output is the base input, bit for bit (no arithmetic)."""
        return False

    def shared_state(self, inputs: Sequence[torch.Tensor], settings: Sequence[Hashable],
                     workspace: Optional[Workspace] = None) -> Any:
        """Work shared by several outputs of one slice (a sweep): computed once."""
        return None

    def plan_value(self, setting: Hashable) -> Any:
        """The JSON value the plan shows for a tensor."""
        return setting

    def plan_fields(self, tensor: ResolvedTensor, setting: Hashable) -> Dict[str, Any]:
        """Extra per-tensor fields of the plan (e.g. a depth)."""
        return {}

    def plan_warnings(self, settings: Sequence[Hashable]) -> List[str]:
        return []

    def layout_warnings(self, layout) -> List[str]:
        """Warnings about the recipe against the checkpoint's placed tensors
        (:class:`~mi_mergekit.merge.placement.ModelLayout`), e.g. a group that selects nothing."""
        return []

    def check_recipe(self, config) -> None:
        """Recipe-level checks beyond the spec (before any tensor is planned). This one:
        every value the recipe sets for a parameter has the parameter's type (an error names
        its key path and the value given); a method that adds checks calls it first."""
        check_parameter_types(self, config)

    def tokenizer_donor(self, config) -> Optional[Tuple[str, Any]]:
        """(label, model) whose tokenizer, chat template and generation_config the output
        carries; None keeps mergekit's choice. (The output's shard layout is the base's.)"""
        return None

    # ------------------------------------------------------------ what engines call

    def role_names(self, count: int) -> List[str]:
        return list(self.roles) if self.roles else [f"input {i}" for i in range(count)]

    def ordered(self, items: Sequence[Any], base: int) -> List[Any]:
        """``items`` (in mergekit's model order) in the order :meth:`compute` takes them."""
        items = list(items)
        if self.roles and base > 0:
            items.insert(0, items.pop(base))
        return items

    def prepare(self, name: str, inputs: Sequence[torch.Tensor], settings: Sequence[Hashable],
                workspace: Optional[Workspace] = None) -> Any:
        """Once per slice, for the outputs' ``settings``: input checks, then the shared state."""
        if any(self.keeps_base(s) for s in settings):
            # the output copies the base: a non-finite input would go unseen otherwise
            check_finite(name, **dict(zip(self.role_names(len(inputs)), inputs)))
        if len(settings) > 1:
            return self.shared_state(inputs, settings, workspace)
        return None

    def output(self, name: str, inputs: Sequence[torch.Tensor], setting: Hashable, state: Any = None,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The checked output slice (in ``out`` when given)."""
        if self.keeps_base(setting):
            value = inputs[0]
        else:
            value = self.compute(inputs, setting, state, out)
            if not all_finite(value):
                check_finite(name, **dict(zip(self.role_names(len(inputs)), inputs)))
                check_finite(name, merged=value)
        if out is not None and value is not out:
            return out.copy_(value)
        return value

    # ------------------------------------------------------------ mergekit's executor

    def resolved(self, name: str, inputs: Sequence[Any], base: int, shared: Mapping[str, Any],
                 per_input: Sequence[Mapping[str, Any]]) -> ResolvedTensor:
        """A :class:`ResolvedTensor` from inputs in mergekit's model order."""
        return ResolvedTensor(name=name, inputs=tuple(self.ordered(inputs, base)), shared=dict(shared),
                              per_input=tuple(self.ordered(per_input, base)),
                              base=0 if self.roles and base >= 0 else base)

    def merge_group(self, group: TensorGroup, /, **parameters: Any) -> torch.Tensor:
        entries = list(group.entries)
        base = next((i for i, entry in enumerate(entries) if entry.is_base), -1)
        shared = {p.name: parameters[p.name] for p in self.spec.parameters if p.scope == ParameterScope.SHARED}
        per_input = [
            {p.name: parameters[p.name][entry.id] for p in self.spec.input_parameters
             if p.name in parameters and entry.id in parameters[p.name]}
            for entry in entries
        ]
        name = group.metadata.name or ""
        tensor = self.resolved(name, [entry.id for entry in entries], base, shared, per_input)
        setting = self.setting(tensor)
        inputs = self.ordered([entry.tensor for entry in entries], base)
        return self.output(name, inputs, setting, self.prepare(name, inputs, [setting]))


@dataclass
class AlignedInputs:
    """One slice of one tensor's inputs as a method computes on them, and what the outputs of
    that slice share; made by :func:`align_inputs`, the one input preparation every caller
    uses (the streaming engine, mergekit's executor, find-lambda's in-memory merge)."""

    method: ElementwiseMethod
    name: str
    inputs: List[torch.Tensor]  # in the method's order, one dtype
    state: Any = None  # the method's shared state (a sweep's Θ_T − Θ_I)
    buffer: Optional[torch.Tensor] = None  # a non-floating buffer: copied, not computed

    def result(self, setting: Hashable, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output slice at ``setting`` (the method's checked output), in ``out`` when
        given — of any dtype: computed in the inputs' dtype, then cast, as mergekit saves."""
        if self.buffer is not None:
            return self.buffer.clone() if out is None else out.copy_(self.buffer)
        target = out if out is not None and out.dtype == self.inputs[0].dtype else None
        value = self.method.output(self.name, self.inputs, setting, self.state, out=target)
        if out is not None and target is None:
            return out.copy_(value)
        return value


def align_inputs(method: ElementwiseMethod, name: str, chunks: Sequence[torch.Tensor], base: int,
                 settings: Sequence[Hashable], workspace: Optional[Workspace] = None) -> AlignedInputs:
    """``chunks`` (one slice of each input, in mergekit's model order, already in the recipe's
    load dtype) as the method sees them: a non-floating buffer copied (mergekit's rule: the
    inputs must agree), else aligned to the inputs' common dtype (mergekit's ``align_dtype``)
    and put in the method's order; then the method's :meth:`~ElementwiseMethod.prepare` for
    the outputs' ``settings``."""
    from mergekit.merge_methods.buffers import copy_non_floating_buffer

    buffer = copy_non_floating_buffer(list(chunks), name)
    if buffer is not None:
        return AlignedInputs(method, name, [], buffer=buffer)
    common = chunks[0].dtype
    for chunk in chunks[1:]:
        common = torch.promote_types(common, chunk.dtype)
    inputs = method.ordered([c.to(common) for c in chunks], base)
    return AlignedInputs(method, name, inputs, method.prepare(name, inputs, settings, workspace))


def recipe_parameters(config) -> Iterator[Tuple[str, Mapping[str, Any]]]:
    """``(key path, parameters)`` of every level of a recipe that may set parameters."""
    yield "parameters", config.parameters or {}
    for i, model in enumerate(config.models or []):
        yield f"models[{i}].parameters", model.parameters or {}
    for k, out_slice in enumerate(config.slices or []):
        yield f"slices[{k}].parameters", out_slice.parameters or {}
        for j, source in enumerate(out_slice.sources):
            yield f"slices[{k}].sources[{j}].parameters", source.parameters or {}


def setting_values(path: str, setting: Any) -> Iterator[Tuple[str, Any]]:
    """``(key path, value)`` of each value in one parameter's setting: a scalar, a gradient
    list, mergekit filters (``[{filter: …, value: …}, …]``)."""
    from mergekit.config import ConditionalParameter

    if isinstance(setting, ConditionalParameter):
        yield from setting_values(f"{path}.value", setting.value)
    elif isinstance(setting, (list, tuple)):
        for i, item in enumerate(setting):
            yield from setting_values(f"{path}[{i}]", item)
    else:
        yield path, setting


def parameter_values(config, name: str) -> List[Tuple[str, Any]]:
    """Every value a recipe sets for parameter ``name``, with its key path."""
    return [found for path, params in recipe_parameters(config) if name in params
            for found in setting_values(f"{path}.{name}", params[name])]


def check_parameter_types(method: "ElementwiseMethod", config) -> None:
    """Each value set for one of ``method``'s parameters has its type, or a MergeInputError
    naming the key path, the value and the type (mergekit would say only "Input should be a
    valid number", while planning the first tensor)."""
    from pydantic import ValidationError

    from mi_mergekit.errors import MergeInputError

    for spec in method.spec.parameters:
        for path, value in parameter_values(config, spec.name):
            try:
                spec.validate(value)
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                raise MergeInputError(f"{path}: {problem}, got {value!r}") from None


def method_named(name: Optional[str]) -> Optional[ElementwiseMethod]:
    """The registered :class:`ElementwiseMethod` called ``name``, or None (a stock method,
    or none registered under that name)."""
    if not name:
        return None
    from mergekit import merge_methods

    try:
        method = merge_methods.get(name)
    except RuntimeError:
        return None
    return method if isinstance(method, ElementwiseMethod) else None


# Importing mergekit above may have run mi_mergekit's autoload hook while this module was only
# half defined (e.g. `import mi_mergekit.merge.engine` first): the hook could not register our
# methods, which build on this module, and left it to now.
from mi_mergekit.integration import registration_now  # noqa: E402

registration_now()
