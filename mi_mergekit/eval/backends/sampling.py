"""One decoding step's token choice for a batch of rows, top-k first, each row with its own random stream.

transformers' warpers (:mod:`transformers.generation.logits_process`) apply temperature, top-k,
top-p and min-p to the whole vocabulary and then ``torch.multinomial`` draws from one random
stream shared by the batch. Here the same filters run in the same order on the ``top_k``
largest logits only (the rest would get probability 0 anyway): top-p and min-p keep or drop
exactly the tokens the warpers keep or drop, without sorting or normalising 49k-entry rows.
A row's token is then read off its own uniform number (inverse CDF over the kept tokens,
largest first), so what a sample draws depends on its seed alone, not on what shares its
batch. With ``top_k`` unset the whole vocabulary is sorted, as transformers does.

The one difference from transformers: its top-k keeps every logit tied with the k-th largest;
this keeps exactly k (ties at float32 are rare, and a tie only changes which of two equal
logits may be drawn).
"""

from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import torch

from mi_mergekit.eval.decoding import Decoding


def sample_seed(chunk_seed: int, index: int) -> int:
    """The seed of the ``index``-th sample of a chunk seeded ``chunk_seed`` (63 bits, stable across processes)."""
    digest = hashlib.sha256(f"{chunk_seed}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def uniforms(seed: int, steps: int) -> torch.Tensor:
    """The random stream of one sample: one uniform number in [0, 1) per decoding step."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(steps, generator=generator, dtype=torch.float64)


def kept(logits: torch.Tensor, decoding: Decoding) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(probs, ids)``, each ``[rows, k]``: the distribution that temperature, top-k, top-p and min-p
    (transformers' order) leave over each row of ``logits [rows, vocab]``, on its ``k`` largest logits
    (largest first; a dropped token has probability 0)."""
    scores = logits.float() / decoding.temperature
    if decoding.top_k:
        scores, ids = torch.topk(scores, min(decoding.top_k, scores.shape[-1]), dim=-1)  # sorted, largest first
    else:
        scores, ids = torch.sort(scores, dim=-1, descending=True)
    keep = torch.ones_like(scores, dtype=torch.bool)
    if decoding.top_p < 1.0:
        # transformers drops a token when the mass of it and every less likely token is <= 1 - top_p
        tail = torch.softmax(scores, dim=-1).flip(-1).cumsum(-1).flip(-1)
        keep &= tail > 1 - decoding.top_p
    if decoding.min_p:
        # on the distribution top-p left, as transformers' MinPLogitsWarper sees it
        left = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        keep &= left >= decoding.min_p * left[:, :1]
    keep[:, 0] = True  # every filter keeps at least the most likely token
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1), ids


def choose(logits: torch.Tensor, decoding: Decoding, u: Optional[torch.Tensor]) -> torch.Tensor:
    """Token ids ``[rows]`` for ``logits [rows, vocab]``: the argmax when ``decoding`` is greedy, else the
    token of :func:`kept`'s distribution at which the cumulative probability first reaches ``u [rows]``."""
    if decoding.temperature == 0:
        return logits.argmax(dim=-1)
    probs, ids = kept(logits, decoding)
    cdf = probs.double().cumsum(-1)
    pick = (cdf < u[:, None].double() * cdf[:, -1:]).sum(-1)
    # rounding can put u past the last kept token: take that token
    pick = torch.minimum(pick, (probs > 0).sum(-1) - 1)
    return ids.gather(1, pick[:, None]).squeeze(1)
