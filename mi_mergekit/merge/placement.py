"""Where every checkpoint tensor sits: before the first decoder layer, in layer i, or after the last.

The depth of a tensor comes from mergekit's architecture knowledge, the same lookup stock
mergekit merges with: its definition of the architecture (the JSON tables it ships, and
its Python ones such as GLM-4-MoE's), or, for an architecture it has no definition for,
its inference from the model (``infer_architecture_info``). A definition names each
decoder layer's tensors with a template (``model.layers.${layer_index}.…``); a tensor of
the checkpoint is in layer i when its name starts with that layer's prefix, whatever the
tensor itself is called — a fused ``gate_up_proj``, a per-expert weight, a Mamba mixer in a
hybrid stack (layers are counted as the config counts them). Tensors outside the layers sit
where the definition lists them (``pre_weights`` / ``post_weights``); for an inferred
architecture, which lists every loose tensor as "pre", their side is read off the model
transformers builds from the config (on the meta device: no memory), by the position of
the tensor relative to the decoder layers. A multimodal definition (Qwen3-VL, Gemma 3,
Mistral 3, Llama 4 …) has several modules; the decoder is the one whose layer count is the
text config's ``num_hidden_layers``, and the other modules' tensors (vision tower,
projector) sit before it, with the embeddings.

A tensor whose layer is past the config's last layer (a multi-token-prediction layer that
DeepSeek-V3 checkpoints store as layer 61 of 61) sits after the last layer. A tensor no
source places has no side; only a layer window needs sides, and refuses such tensors then.

Each tensor also gets its role (:mod:`mi_mergekit.merge.roles`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from mi_mergekit.merge.roles import Role, layer_role, outside_role

LOG = logging.getLogger(__name__)

PRE, LAYER, POST = "pre", "layer", "post"
_INDEX = re.compile(r"(?:^|\.)(\d+)\.")
_VISUAL = re.compile(r"(?:^|[._])(?:visual|vision|image|img|patch|projector|mm|vit)(?:[._]|$)")


@dataclass(frozen=True)
class Placement:
    """Where a tensor sits and what it does."""

    side: Optional[str]  # PRE, LAYER or POST; None: no source places it
    layer: Optional[int] = None  # the decoder layer (side LAYER)
    role: Optional[Role] = None  # None: no rule names its role
    vocabulary: bool = False  # indexed by token id (embeddings, lm_head): mergekit's vocabulary axis 0

    @property
    def part(self) -> Optional[str]:
        return self.role.part if self.role else None


@dataclass(eq=False)
class ModelLayout:
    """Every tensor of one checkpoint, placed."""

    architecture: str
    num_layers: int
    source: str  # where the depths come from, for messages and the plan
    placements: Dict[str, Placement] = field(default_factory=dict)
    num_layers_key: str = "num_hidden_layers"
    architectures: List[str] = field(default_factory=list)  # the config's
    model_type: str = ""
    tagalong_files: List[str] = field(default_factory=list)  # mergekit's, e.g. a VLM's preprocessor_config.json
    checked: Set = field(default_factory=set)  # selections already checked against it

    def __getitem__(self, name: str) -> Placement:
        return self.placements[name]

    def patterns(self, names: Sequence[str]) -> List[str]:
        """``names`` as patterns: layer and expert indices written ``N`` / ``E``."""
        return sorted({name_pattern(name) for name in names})

    def unplaced(self, what: str) -> List[str]:
        """Names with no side (``what="side"``) or no role (``"role"``)."""
        return [name for name, p in self.placements.items()
                if (p.side if what == "side" else p.role) is None]


def name_pattern(name: str) -> str:
    """``model.layers.12.mlp.experts.3.w1`` -> ``model.layers.N.mlp.experts.E.w1``."""
    first = [True]

    def sub(match) -> str:
        letter = "N" if first[0] else "E"
        first[0] = False
        return match.group(0).replace(match.group(1), letter)

    return _INDEX.sub(sub, name)


# --------------------------------------------------------------------------- mergekit's knowledge


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """mergekit's inference logs on the root logger ("Inferred 1 modules …") and transformers
    warns while it builds a meta model; the plan says what we found instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def mergekit_architecture(model, config, options):
    """(mergekit's ModelArchitecture for ``model``, whether it is a definition (True) or
    inferred (False)); (None, False) where mergekit can do neither."""
    from mergekit.architecture import arch_info_for_config
    from mergekit.architecture.auto import infer_architecture_info

    with _quiet():
        try:
            arch = arch_info_for_config(config)
        except Exception:  # noqa: BLE001 - no or several `architectures`: infer instead
            arch = None
        if arch is not None:
            return arch, True
        try:
            return infer_architecture_info((model,), model, options), False
        except Exception as exc:  # noqa: BLE001
            LOG.debug("mergekit cannot infer the architecture of %s: %s", model, exc)
            return None, False


def _json_templates(info) -> Optional[List[str]]:
    definition = getattr(info, "definition", None)
    templates = getattr(getattr(definition, "layer_templates", None), "weights", None)
    if templates is None:
        return None
    names = []
    for weight in templates:
        names += [weight.name, *(weight.aliases or ())]
    return names


def layer_prefixes(module) -> Dict[str, int]:
    """``{"model.layers.7.": 7, …}`` for a configured mergekit module: the name prefix of
    each of its layers, from its templates (``${layer_index}``, ``${layer_index+1}`` …) or,
    for a module written in Python, from the layer's weight names."""
    try:
        count = int(module.num_layers())
    except Exception:  # noqa: BLE001 - a module the config does not size (e.g. no vision config)
        return {}
    from mi_mergekit.mergekit_compat import template_substitution

    prefix = module.weight_prefix or ""
    templates = _json_templates(module.info)
    found: Dict[str, int] = {}
    for index in range(count):
        if templates is not None:
            for template in templates:
                start = template.find("${layer_index")
                if start < 0:
                    continue
                end = template.index("}", start) + 1
                head = template[:end] + ("." if template[end:end + 1] == "." else "")
                found[prefix + template_substitution(head, count, index)] = index
        else:
            for weight in module.layer_weights(index) or ():
                match = re.search(rf"(?:^|\.){index}\.", weight.name)
                if match:
                    found[weight.name[:match.end()]] = index
    return found


@dataclass
class _Module:
    key: str
    prefixes: Dict[str, int]
    pre: Dict[str, bool]  # name -> indexed by token id
    post: Dict[str, bool]
    count: int
    tied: Dict[str, Tuple[str, bool]] = field(default_factory=dict)  # tied name -> side, vocab

    @property
    def visual(self) -> bool:
        return bool(_VISUAL.search(self.key)) or any(_VISUAL.search(p) for p in self.prefixes)


def _weights(weights, tied: bool = False) -> Dict[str, bool]:
    """name -> indexed by token id, for the weights' names and aliases (``tied``: the names
    of the tensors they are tied to instead)."""
    out: Dict[str, bool] = {}
    for weight in weights:
        names = (weight.tied_names or ()) if tied else (weight.name, *(weight.aliases or ()))
        for name in names:
            out.setdefault(name, weight.vocabulary_axis is not None)
    return out


def _modules(arch, config) -> List[_Module]:
    from mergekit.architecture import ConfiguredModelArchitecture

    configured = ConfiguredModelArchitecture(info=arch, config=config)
    modules = []
    for key in arch.modules:
        module = configured.get_module(key)
        prefixes = layer_prefixes(module)
        try:
            pre_weights, post_weights = module.pre_weights(), module.post_weights()
        except Exception:  # noqa: BLE001
            pre_weights, post_weights = [], []
        tied = {name: (PRE, vocab) for name, vocab in _weights(pre_weights, tied=True).items()}
        tied.update((name, (POST, vocab)) for name, vocab in _weights(post_weights, tied=True).items())
        modules.append(_Module(key, prefixes, _weights(pre_weights), _weights(post_weights),
                               len(set(prefixes.values())), tied))
    return modules


def _decoder(modules: List[_Module], num_layers: int) -> Optional[_Module]:
    """The language model's decoder: the module with the config's layer count (the one with
    the vocabulary tensors, where a vision tower happens to be as deep)."""
    candidates = [m for m in modules if m.count == num_layers] or [m for m in modules if m.count]
    if not candidates:
        return None
    candidates.sort(key=lambda m: (not any(m.pre.values()) and not any(m.post.values()), m.visual,
                                   -m.count))
    return candidates[0]


def _match_layer(name: str, prefixes: Dict[str, int]) -> Optional[Tuple[str, int]]:
    for match in _INDEX.finditer(name):
        head = name[:match.end()]
        if head in prefixes:
            return head, prefixes[head]
    return None


def _stack_stems(prefixes: Dict[str, int]) -> Set[str]:
    """``model.layers.`` for ``{"model.layers.0.": 0, …}``: where the layers are numbered."""
    return {re.sub(r"\d+\.$", "", p) for p in prefixes}


def _transformers_order(model, options) -> Tuple[List[str], Dict[str, int]]:
    """The state-dict names of the model transformers builds from the config (meta device),
    in module order, and which of them are indexed by token id."""
    from mi_mergekit.mergekit_compat import transformers_info

    with _quiet():
        try:
            _, _, vocabulary, names = transformers_info(model, options)
        except Exception as exc:  # noqa: BLE001
            LOG.debug("transformers cannot build %s on the meta device: %s", model, exc)
            return [], {}
    return list(names or []), dict(vocabulary or {})


# --------------------------------------------------------------------------- the layout


def build_layout(model, options, names: Sequence[str], config) -> ModelLayout:
    """Place every name of ``names`` (the checkpoint's tensors) for ``model``."""
    text = getattr(config, "text_config", None) or config
    num_layers = int(text.num_hidden_layers)
    architecture = (config.architectures or [config.model_type])[0]
    arch, defined = mergekit_architecture(model, config, options)
    modules = _modules(arch, config) if arch is not None else []
    decoder = _decoder(modules, num_layers)
    source = ("mergekit's definition" if defined else "mergekit's inference") if decoder else "no layer source"
    layout = ModelLayout(
        architecture=architecture, num_layers=num_layers, source=source,
        num_layers_key="text_config.num_hidden_layers" if text is not config else "num_hidden_layers",
        architectures=list(config.architectures or []), model_type=config.model_type,
        tagalong_files=list(getattr(arch, "tagalong_files", None) or []))

    sides: Dict[str, Tuple[str, str, bool]] = {}  # name -> side, module key, indexed by token id
    in_layer: Dict[str, Tuple[int, str]] = {}
    loose: List[str] = []
    stems = _stack_stems(decoder.prefixes) if decoder else set()
    for name in names:
        hit = _match_layer(name, decoder.prefixes) if decoder else None
        if hit is not None:
            in_layer[name] = (hit[1], name[len(hit[0]):])
            continue
        other = next((m for m in modules if m is not decoder and _match_layer(name, m.prefixes)), None)
        if other is not None:
            sides[name] = (PRE, other.key, False)
            continue
        match = _INDEX.search(name)
        if match and name[:match.start(1)] in stems:  # a layer past the config's last
            in_layer[name] = (int(match.group(1)), name[match.end():])
            continue
        listed = None
        if defined:  # where the definition lists it (under its own name before a tied one's)
            for module in modules:
                for side, weights in ((PRE, module.pre), (POST, module.post)):
                    if listed is None and name in weights:
                        listed = (side if module is decoder else PRE, module.key, weights[name])
            for module in modules:
                if listed is None and name in module.tied:
                    side, vocabulary = module.tied[name]
                    listed = (side if module is decoder else PRE, module.key, vocabulary)
        if listed is not None:
            sides[name] = listed
        else:
            loose.append(name)

    if loose and decoder is not None:
        order, vocabulary = _transformers_order(model, options)
        positions = [k for k, n in enumerate(order) if _match_layer(n, decoder.prefixes)]
        index = {n: k for k, n in enumerate(order)}
        for name in loose:
            k = index.get(name)
            if k is None or not positions or positions[0] <= k <= positions[-1]:
                continue
            sides[name] = (PRE if k < positions[0] else POST, decoder.key, name in vocabulary)

    siblings: Dict[int, List[str]] = defaultdict(list)
    for layer, suffix in in_layer.values():
        siblings[layer].append(suffix)
    for name in names:
        if name in in_layer:
            layer, suffix = in_layer[name]
            role = layer_role(suffix, siblings[layer])
            placement = (Placement(LAYER, layer, role) if layer < num_layers else Placement(POST, None, role))
        elif name in sides:
            side, module_key, vocabulary = sides[name]
            module = next((m for m in modules if m.key == module_key), None)
            if module is not None and module is not decoder:
                role = Role("vision") if module.visual or _VISUAL.search(name) else None
            elif _VISUAL.search(name) and side == PRE:
                role = Role("vision")
            else:
                role = outside_role(name, side, vocabulary)
            placement = Placement(side, None, role, vocabulary)
        else:
            placement = Placement(None, None, None)
        layout.placements[name] = placement
    return layout


_LAYOUTS: Dict[str, ModelLayout] = {}  # the last layout of each model, for known_layout
_BUILT: Dict[Tuple, ModelLayout] = {}  # every layout built, by what it was built from


def layout_of(model, options=None, names: Optional[Sequence[str]] = None, config=None) -> ModelLayout:
    """The placed tensors of ``model`` (a mergekit ``ModelReference``), computed now and kept
    for :func:`known_layout`; ``names``/``config`` when the caller has already read them."""
    from mergekit.options import MergeOptions

    from mi_mergekit.merge.layout import CheckpointIndex, merged_model, model_config

    options = options or MergeOptions()
    if config is None:
        config = model_config(model, options)
    if names is None:
        names = list(CheckpointIndex.read(model, options).shapes)
    key = (str(model), bool(options.trust_remote_code), options.transformers_cache, tuple(names),
           config.to_json_string(use_diff=False))
    if key not in _BUILT:  # a sweep plans the same model once per λ: place it once
        _BUILT[key] = build_layout(merged_model(model, options), options, list(names), config)
    layout = _LAYOUTS[str(model)] = _BUILT[key]
    return layout


def known_layout(model) -> ModelLayout:
    """The layout the last plan computed for ``model`` (with its options), else computed now
    with mergekit's default options (a caller that bypasses the pre-flight)."""
    layout = _LAYOUTS.get(str(model))
    return layout if layout is not None else layout_of(model)
