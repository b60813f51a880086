"""A mergekit architecture made of the checkpoint's own tensor names.

mergekit 0.1.5 plans a Qwen3-MoE merge in the transformers-5 model layout: it reads
per-expert tensors and writes fused ``mlp.experts.gate_up_proj`` tensors. The real
Qwen3-30B-A3B checkpoints and the serving engines use per-expert names, and an
interpolated model must be a drop-in replacement for its inputs. So for our methods
the architecture is read off the checkpoint itself: every tensor the Instruct
checkpoint stores, under the same name, grouped by decoder layer. The Thinking
checkpoint must store exactly the same names with the same shapes.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mergekit.architecture.base import (
    ModelArchitecture,
    ModuleArchitecture,
    ModuleDefinition,
    WeightInfo,
)
from mergekit.common import ModelReference
from mergekit.options import MergeOptions

from mi_mergekit.errors import CheckpointFileError, MergeInputError, explain

@dataclass(frozen=True)
class CheckpointIndex:
    """Tensor names (and shapes, where the header gives them) of one checkpoint."""

    model: ModelReference
    shapes: Dict[str, Optional[Tuple[int, ...]]]

    @classmethod
    def read(cls, model: ModelReference, options: MergeOptions) -> "CheckpointIndex":
        local = merged_model(model, options)
        try:
            index = local.lazy_loader(
                cache_dir=options.transformers_cache, lazy_unpickle=options.lazy_unpickle
            ).index
        except Exception as exc:
            raise CheckpointFileError(
                f"cannot read the weights of model {model}: {explain(exc)}", path=model.model.path
            ) from None
        shapes: Dict[str, Optional[Tuple[int, ...]]] = dict.fromkeys(index.tensor_paths)
        if index.is_safetensors:
            import safetensors

            by_shard = defaultdict(list)
            for name, shard in index.tensor_paths.items():
                by_shard[shard].append(name)
            for shard, names in by_shard.items():
                path = os.path.join(index.base_path, shard)
                try:
                    with safetensors.safe_open(path, framework="pt") as handle:
                        for name in names:
                            shapes[name] = tuple(handle.get_slice(name).get_shape())
                except safetensors.SafetensorError as exc:
                    raise CheckpointFileError(
                        f"truncated or corrupt safetensors file ({exc}) of model {model}", path=path
                    ) from None
                except OSError as exc:
                    raise CheckpointFileError(
                        f"cannot read a weight file of model {model}: {exc.strerror}", path=path
                    ) from None
        return cls(model=model, shapes=shapes)


def merged_model(model: ModelReference, options: MergeOptions) -> ModelReference:
    """``model`` itself, or for a LoRA reference (``base+adapter``) the merged model that
    mergekit writes into ``--lora-merge-cache`` (once; later runs reuse it)."""
    if model.lora is None:
        return model
    if not options.lora_merge_cache:
        raise CheckpointFileError(
            f"model {model} applies a LoRA adapter: pass --lora-merge-cache DIR (mergekit merges the "
            "adapter into the model there, once)", path=model.lora.path)
    try:
        return model.merged(cache_dir=options.lora_merge_cache, trust_remote_code=options.trust_remote_code,
                            lora_merge_dtype=options.lora_merge_dtype)
    except Exception as exc:
        raise CheckpointFileError(f"cannot apply the LoRA adapter of model {model}: {explain(exc)}",
                                  path=model.lora.path) from None


def model_config(model: ModelReference, options: MergeOptions):
    """The transformers config of ``model``, or a CheckpointFileError naming the file."""
    try:
        return model.config(trust_remote_code=options.trust_remote_code)
    except Exception as exc:
        folder = model.model.path
        if not os.path.isdir(folder):
            from mi_mergekit.merge.hub import hub_problem, not_found_message

            raise CheckpointFileError(
                f"model {model} is not a local folder and could not be loaded from the Hugging Face "
                f"hub or its local cache ({hub_problem(exc)}): {not_found_message(model)}",
                path=folder) from None
        config = os.path.join(folder, "config.json")
        if not os.path.isfile(config):
            raise CheckpointFileError(f"model {model} has no config.json", path=folder) from None
        raise CheckpointFileError(f"cannot read the config of model {model}: {explain(exc)}",
                                  path=config) from None


def compare_indexes(instruct: CheckpointIndex, thinking: CheckpointIndex,
                    names: Tuple[str, str] = ("Instruct", "Thinking")) -> None:
    """Raise MergeInputError unless both checkpoints store the same tensors and shapes."""
    only_i = sorted(set(instruct.shapes) - set(thinking.shapes))
    only_t = sorted(set(thinking.shapes) - set(instruct.shapes))
    if only_i or only_t:
        lines = []
        for who, missing in zip(names, (only_i, only_t)):
            if missing:
                shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
                lines.append(f"  only in {who} ({len(missing)}): {shown}")
        raise MergeInputError(
            "the two checkpoints do not store the same tensors:\n" + "\n".join(lines)
        )
    mismatched = [
        (name, instruct.shapes[name], thinking.shapes[name])
        for name in instruct.shapes
        if instruct.shapes[name] and thinking.shapes[name]
        and instruct.shapes[name] != thinking.shapes[name]
    ]
    if mismatched:
        shown = "; ".join(f"{n}: {a} vs {b}" for n, a, b in mismatched[:5])
        raise MergeInputError(
            f"{len(mismatched)} tensor(s) differ in shape between {names[0]} and {names[1]}: {shown}"
        )


class CheckpointModuleArchitecture(ModuleArchitecture):
    """Pre-layer, per-layer and post-layer weights exactly as the checkpoint names them,
    placed by :mod:`mi_mergekit.merge.placement` (tensors it cannot place go last)."""

    def __init__(self, layout):
        pre, post = [], []
        layers: Dict[int, List[WeightInfo]] = defaultdict(list)
        for name in sorted(layout.placements, key=natural_key):
            placement = layout.placements[name]
            info = WeightInfo(name=name, vocabulary_axis=0 if placement.vocabulary else None)
            if placement.side == "layer":
                layers[placement.layer].append(info)
            elif placement.side == "pre":
                pre.append(info)
            else:
                post.append(info)
        missing = [i for i in range(layout.num_layers) if i not in layers]
        if missing:
            raise MergeInputError(
                f"the config says {layout.num_layers} decoder layers but the checkpoint has no tensors for layers "
                f"{missing} ({layout.source} names the layers of this {layout.architecture} checkpoint)")
        self._pre, self._post, self._layers = pre, post, dict(layers)
        self._num_layers = layout.num_layers
        self._key = layout.num_layers_key

    def pre_weights(self, config) -> List[WeightInfo]:
        return list(self._pre)

    def post_weights(self, config) -> List[WeightInfo]:
        return list(self._post)

    def layer_weights(self, index: int, config) -> List[WeightInfo]:
        return list(self._layers[index])

    def num_layers_config_key(self) -> str:
        return self._key

    def num_layers(self, config) -> int:
        return self._num_layers


def checkpoint_architecture(layout) -> ModelArchitecture:
    """A mergekit architecture with the checkpoint's own tensor names, placed by ``layout``."""
    return ModelArchitecture(
        modules={"default": ModuleDefinition(architecture=CheckpointModuleArchitecture(layout))},
        architectures=layout.architectures,
        model_type=layout.model_type,
        tagalong_files=layout.tagalong_files or None,
    )


def natural_key(name: str):
    """Sort key that orders layer 2 before layer 10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
