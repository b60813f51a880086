"""The transformers backend's opt-in compacting decode loop (``compact=True``) against ``generate``."""

from __future__ import annotations

import json

import pytest

from mi_mergekit.eval import EvalTask, evaluate
from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
from mi_mergekit.eval.decoding import PRESETS, Decoding
from tiny_model import stop_token, talkative_model

PROMPTS = ["w1", "What is 1+2? Put the answer in \\boxed{}.", "user assistant think about it; 0 1 2 3"]


# top-k 1 samples through every warper (temperature, top-k, top-p) yet draws the argmax: generate allows n > 1 there
TOP1 = Decoding("top1", temperature=0.6, top_p=0.95, top_k=1)


@pytest.mark.parametrize("decoding, n", [(PRESETS["greedy"], 1), (TOP1, 3)], ids=["greedy", "top1-n3"])
def test_deterministic_compact_decoding_is_generate(tiny_model, decoding, n):
    """Oracle: transformers' generate. Deterministic decoding, prompts of different lengths (left padding),
    sequences that stop at different steps and some that hit the budget: the same texts, token counts and finish
    reasons, in generate's order (n per prompt)."""
    model = talkative_model(tiny_model)
    plain = TransformersBackend(str(tiny_model), model=model)
    compact = TransformersBackend(str(tiny_model), model=model, compact=True)
    rendered = [plain.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in PROMPTS]
    # an EOS that the second prompt's greedy trace first emits at its 5th step or later
    stop = stop_token(model, plain.tokenizer, rendered[1])
    model.generation_config.eos_token_id = [plain.tokenizer.eos_token_id, stop]
    ends = set()
    for budget in (24, 4):
        expected = plain.complete_many(rendered, n, 7, decoding, budget)
        assert compact.complete_many(rendered, n, 7, decoding, budget) == expected
        assert compact.complete(rendered[0], n, 7, decoding, budget) == expected[0]
        ends |= {(c.finish_reason, c.n_tokens) for row in expected for c in row}
    assert {reason for reason, _ in ends} == {"stop", "length"} and len({t for _, t in ends}) > 2, ends


def test_sampled_compact_decoding_is_seeded_and_recorded(tmp_path, fixtures, tiny_model):
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=16, seed=5)
    common = dict(progress=False, backend_options={"batch_size": 2, "prompt_batch": 2, "compact": True})
    first = evaluate(tiny_model, task, tmp_path / "a", **common)
    again = evaluate(tiny_model, task, tmp_path / "b", **common)
    rows = [json.loads(line) for line in (first / "samples.jsonl").read_text().splitlines()]
    assert (first / "samples.jsonl").read_text() == (again / "samples.jsonl").read_text()
    assert len(rows) == 12 and all(1 <= r["n_tokens"] <= 16 for r in rows)
    assert all((r["finish_reason"] == "length") == (r["n_tokens"] == 16) for r in rows if r["n_tokens"] == 16)
    assert json.loads((first / "run.json").read_text())["backend"]["compact"] is True


def test_compact_refuses_a_generation_config_it_would_not_apply(tiny_model):
    from mi_mergekit.errors import EvalInputError

    backend = TransformersBackend(str(tiny_model), model=talkative_model(tiny_model), compact=True)
    backend.model.generation_config.repetition_penalty = 1.3
    with pytest.raises(EvalInputError, match="repetition_penalty.*generate without compact"):
        backend.complete("w1", 1, 0, PRESETS["greedy"], 4)
