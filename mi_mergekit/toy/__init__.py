"""A trained toy Instruct/Thinking pair (tiny Qwen3) that shows the paper's λ stages.

Cheap to import (no torch). See ``mi_mergekit.toy.task`` (problem generator and
answer checker), ``mi_mergekit.toy.train`` (the training script),
``mi_mergekit.toy.curve`` (plain-torch λ sweep) and ``pair/MODEL_CARD.md``.
"""

from pathlib import Path

TOY_DIR = Path(__file__).resolve().parent
PAIR_DIR = TOY_DIR / "pair"
INSTRUCT_DIR = PAIR_DIR / "instruct"
THINKING_DIR = PAIR_DIR / "thinking"
BASE_DIR = PAIR_DIR / "base"
HELDOUT_PATH = TOY_DIR / "data" / "heldout.jsonl"
#: the shipped pair's tensor checksums (:func:`mi_mergekit.digest.tensor_digest` per side)
CHECKSUMS_PATH = PAIR_DIR / "checksums.json"
SIDES = ("base", "instruct", "thinking")

__all__ = ["TOY_DIR", "PAIR_DIR", "INSTRUCT_DIR", "THINKING_DIR", "BASE_DIR", "HELDOUT_PATH", "CHECKSUMS_PATH",
           "SIDES"]
