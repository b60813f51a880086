"""Zero-shot λ profiles from the two endpoint models (no labels): the shape of a profile is
estimated, then scaled to a chosen mean λ (:func:`mi_mergekit.analysis.profiles.scaled`).

Three estimators, each a weight per decoder layer (× group where it has one); a larger
weight gives the layer more of the Thinking side:

``acm`` — activations, in the spirit of ACM (Yao et al., "Activation-Guided Consensus
    Merging", arXiv 2505.14009): both endpoints read the same unlabeled prompts (each
    rendered with the Thinking side's chat template, as merged models are prompted); for each
    decoder layer l the two models' hidden states at the layer's output, value by value, are
    binned into 32 equal-frequency bins each and their normalised mutual information
    NMI_l = I(h_I; h_T) / sqrt(H(h_I) H(h_T)) estimated from the joint histogram; the
    weight is w_l = 1 − NMI_l: where the two models' activations share less, the layer
    takes more of the Thinking side. *Departs from ACM*: ACM compares a pre-trained model
    with each fine-tuned one and scales Task Arithmetic / TIES task vectors per layer; here
    the two interpolation endpoints are compared and the weights set the per-layer λ.

``fisher`` — Fisher information on random tokens, in the spirit of FIM-Merging (Xia,
    "Data-Free Layer-Adaptive Merging via Fisher Information for Long-to-Short Reasoning
    LLMs", arXiv 2603.21705), which estimates a diagonal Fisher per layer from random token
    inputs: for each endpoint X, sequences of uniformly random token ids (seeded), labels
    drawn from the model's own next-token distribution (the true Fisher, not the empirical
    one), F_X,l = mean over the parameters of layer l of E[(∂ log p / ∂θ)²]. The weight is
    Fisher-weighted averaging per layer (Matena & Raffel, arXiv 2111.09832):
    w_l = F_T,l / (F_I,l + F_T,l), the layer leaning towards the side whose parameters the
    output is more sensitive to. *Departs from FIM-Merging*: its own mapping from Fisher to
    coefficients (and its TIES combination) is not reproduced; the Fisher is per layer and
    the weights set λ of an interpolation.

``divergence`` — weight divergence per layer × group (no model run): w_l,g = ‖Θ_T − Θ_I‖ /
    ‖Θ_I‖ over the group's tensors in layer l, as ``mi-mergekit diverge`` measures it: a
    layer and group the Thinking side moved further gets more of it. No paper; the
    hypothesis is ours.

Every estimator returns the raw weights with its cost (seconds) for the provenance.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mi_mergekit.errors import AnalysisInputError

ESTIMATORS = ("acm", "fisher", "divergence")
BINS = 32
MAX_PAIRS = 200_000  # activation values per layer entering the histogram (seeded subsample)

Weights = Dict[str, List[float]]


def _load(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model


def _prompt_ids(tokenizer, prompts: Sequence[str], max_tokens: int) -> List[List[int]]:
    ids = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True)
            tokens = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            tokens = tokenizer(prompt)["input_ids"]
        ids.append(tokens[:max_tokens])
    return ids


def normalized_mutual_information(x, y, bins: int = BINS) -> float:
    """NMI of paired samples ``x``, ``y`` (1-D tensors), equal-frequency bins on each side."""
    import torch

    def codes(v):
        edges = torch.quantile(v, torch.linspace(0, 1, bins + 1, dtype=v.dtype)[1:-1])
        return torch.bucketize(v, edges)

    cx, cy = codes(x.double()), codes(y.double())
    joint = torch.zeros(bins * bins, dtype=torch.float64)
    joint.index_add_(0, cx * bins + cy, torch.ones_like(cx, dtype=torch.float64))
    joint = joint.view(bins, bins) / joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * (joint[nz] / (px[:, None] * py[None, :])[nz]).log()).sum())
    hx = float(-(px[px > 0] * px[px > 0].log()).sum())
    hy = float(-(py[py > 0] * py[py > 0].log()).sum())
    return mi / math.sqrt(hx * hy) if hx > 0 and hy > 0 else 1.0


def activation_weights(instruct: str, thinking: str, prompts: Sequence[str], num_layers: int,
                       max_tokens: int = 256, seed: int = 0) -> Tuple[Weights, Dict[str, object]]:
    """``acm``: w_l = 1 − NMI(h_I,l, h_T,l) over the prompts' tokens (see the module docstring)."""
    import torch

    from mi_mergekit.eval.backends.base import load_tokenizer

    if not prompts:
        raise AnalysisInputError("the acm estimator needs prompts (--prompts FILE)")
    tokenizer = load_tokenizer(thinking)
    ids = _prompt_ids(tokenizer, prompts, max_tokens)
    states: List[List] = [[], []]
    for k, path in enumerate((instruct, thinking)):
        model = _load(path)
        with torch.no_grad():
            for tokens in ids:
                hidden = model(torch.tensor([tokens]), output_hidden_states=True).hidden_states
                if len(hidden) != num_layers + 1:
                    raise AnalysisInputError(f"{path}: {len(hidden)} hidden states for {num_layers} layers")
                states[k].append([h[0].reshape(-1) for h in hidden[1:]])
        del model
    generator = torch.Generator().manual_seed(seed)
    nmi = []
    for layer in range(num_layers):
        x = torch.cat([s[layer] for s in states[0]])
        y = torch.cat([s[layer] for s in states[1]])
        if x.numel() > MAX_PAIRS:
            pick = torch.randperm(x.numel(), generator=generator)[:MAX_PAIRS]
            x, y = x[pick], y[pick]
        nmi.append(normalized_mutual_information(x, y))
    weights = [max(1e-6, 1.0 - v) for v in nmi]
    return {"default": weights}, {"nmi": [round(v, 6) for v in nmi], "prompts": len(ids),
                                  "tokens": sum(len(t) for t in ids)}


def fisher_weights(instruct: str, thinking: str, layer_of: Callable[[str], Optional[int]], num_layers: int,
                   sequences: int = 8, length: int = 64, seed: int = 0) -> Tuple[Weights, Dict[str, object]]:
    """``fisher``: w_l = F_T,l / (F_I,l + F_T,l), diagonal Fisher on random tokens (see above)."""
    import torch

    fisher = []
    for path in (instruct, thinking):
        model = _load(path)
        vocab = model.get_input_embeddings().weight.shape[0]
        generator = torch.Generator().manual_seed(seed)
        sums = [0.0] * num_layers
        counts = [0] * num_layers
        params = [(layer_of(name), p) for name, p in model.named_parameters()]
        for _ in range(sequences):
            tokens = torch.randint(0, vocab, (1, length), generator=generator)
            logits = model(tokens).logits[0, :-1].float()
            labels = torch.multinomial(logits.softmax(-1).detach(), 1, generator=generator).squeeze(-1)
            loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
            model.zero_grad(set_to_none=True)
            loss.backward()
            for layer, p in params:
                if layer is not None and p.grad is not None:
                    sums[layer] += float(p.grad.double().pow(2).sum()) / sequences
        for layer, p in params:
            if layer is not None:
                counts[layer] += p.numel()
        fisher.append([s / max(1, c) for s, c in zip(sums, counts)])
        del model
    weights = [t / (i + t) if i + t > 0 else 0.5 for i, t in zip(*fisher)]
    return {"default": weights}, {"fisher_instruct": [f"{v:.4g}" for v in fisher[0]],
                                  "fisher_thinking": [f"{v:.4g}" for v in fisher[1]],
                                  "sequences": sequences, "length": length, "seed": seed}


def divergence_weights(instruct: str, thinking: str, groups: Sequence[str]) -> Tuple[Weights, Dict[str, object]]:
    """``divergence``: w_l,g = ‖Θ_T − Θ_I‖ / ‖Θ_I‖ of group g in layer l (``diverge``)."""
    from mi_mergekit.analysis.divergence import divergence

    doc = divergence(instruct, thinking)
    weights: Weights = {}
    for group in list(groups) + ["all"]:
        values = [layer["groups"].get(group, {}).get("relative_distance") for layer in doc["layers"]]
        if all(v is None for v in values):
            continue
        weights["default" if group == "all" else group] = [v if v is not None else 0.0 for v in values]
    return weights, {"relative_distance": {g: [round(v, 6) for v in w] for g, w in weights.items()}}


def estimate(estimator: str, instruct: str, thinking: str, layout, *, prompts: Sequence[str] = (),
             max_tokens: int = 256, sequences: int = 8, length: int = 64, seed: int = 0
             ) -> Tuple[Weights, Dict[str, object]]:
    """(weights, provenance) of ``estimator`` for the local pair ``instruct`` / ``thinking``."""
    from mi_mergekit.analysis.profiles import GROUPS

    start = time.perf_counter()
    if estimator == "acm":
        weights, info = activation_weights(instruct, thinking, prompts, layout.num_layers, max_tokens, seed)
    elif estimator == "fisher":
        def layer_of(name: str) -> Optional[int]:
            placement = layout.placements.get(name)
            return placement.layer if placement is not None and placement.side == "layer" else None

        weights, info = fisher_weights(instruct, thinking, layer_of, layout.num_layers, sequences, length, seed)
    elif estimator == "divergence":
        weights, info = divergence_weights(instruct, thinking, GROUPS)
    else:
        raise AnalysisInputError(f"unknown estimator {estimator!r}: choose from {', '.join(ESTIMATORS)}")
    return weights, {"estimator": estimator, **info, "seconds": round(time.perf_counter() - start, 2)}
