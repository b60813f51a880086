"""The transformers backend's continuous-batching decoder (``slots=N``) against ``generate`` and transformers' warpers."""

from __future__ import annotations

import json

import pytest

from mi_mergekit.eval import EvalTask, evaluate
from mi_mergekit.eval.backends.base import Chunk
from mi_mergekit.eval.backends.sampling import choose, kept
from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
from mi_mergekit.eval.decoding import PRESETS, Decoding
from test_cli_resume import run_cli
from tiny_model import stop_token, talkative_model

PROMPTS = ["w1", "What is 1+2? Put the answer in \\boxed{}.", "user assistant think about it; 0 1 2 3",
           "Write a short poem about the sea", "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) { } " * 4]


def _setup(tiny_model):
    """The talkative tiny model with a second EOS that stops some greedy traces mid-way, and the rendered prompts."""
    model = talkative_model(tiny_model)
    plain = TransformersBackend(str(tiny_model), model=model)
    rendered = [plain.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in PROMPTS]
    model.generation_config.eos_token_id = [plain.tokenizer.eos_token_id, stop_token(model, plain.tokenizer,
                                                                                     rendered[1])]
    return model, plain, rendered


def _by_chunk(backend, chunks, decoding, budget):
    return {(c.question_id, c.indices): completions for c, completions in backend.generate(chunks, decoding, budget)}


@pytest.mark.parametrize("slots, first_positions, group_rows", [(1, 512, 16), (3, 512, 16), (4, 2, 2)])
def test_greedy_slots_decoding_is_generate(tiny_model, monkeypatch, slots, first_positions, group_rows):
    """Oracle: transformers' generate, one prompt at a time. Prompts of different lengths, samples that stop at
    different steps and some at the budget, fewer slots than samples (rows handed on, moved, re-sorted), a cache
    that grows as rows get longer: the same texts, token counts and finish reasons."""
    from mi_mergekit.eval.backends import slots as slot_module

    monkeypatch.setattr(slot_module, "FIRST_POSITIONS", first_positions)
    monkeypatch.setattr(slot_module, "GROUP_ROWS", group_rows)
    sorts = []
    monkeypatch.setattr(slot_module, "_sort_pays", lambda lengths, pays=slot_module._sort_pays: sorts.append(
        pays(lengths)) or sorts[-1])
    model, plain, rendered = _setup(tiny_model)
    chunks = [Chunk(str(i), prompt, [], (0,), 7) for i, prompt in enumerate(rendered)]
    triples = [Chunk(c.question_id, c.prompt, [], (0, 1, 2), 7) for c in chunks]  # 3 samples a prompt here
    decoder = TransformersBackend(str(tiny_model), model=model, slots=slots)
    ends = set()
    for budget in (24, 4):
        expected = _by_chunk(plain, chunks, PRESETS["greedy"], budget)
        steps_before = len(decoder.step_rows)
        got = _by_chunk(decoder, triples, PRESETS["greedy"], budget)
        assert got == {(q, (0, 1, 2)): row * 3 for (q, _), row in expected.items()}
        # the occupancy trace: each decode step's rows, every token but a sample's first (from prefill)
        steps = decoder.step_rows[steps_before:]
        assert sum(steps) == sum(c.n_tokens - 1 for row in got.values() for c in row) and max(steps) <= slots
        ends |= {(c.finish_reason, c.n_tokens) for row in expected.values() for c in row}
    assert {reason for reason, _ in ends} == {"stop", "length"} and len({t for _, t in ends}) > 2, ends
    assert any(sorts) == (group_rows < slots)  # rows re-sorted by length where there are groups to sort into


def test_a_sample_depends_on_its_seed_alone(tiny_model):
    """Sampled decoding: a chunk's samples are the same with any number of slots, with other chunks around it
    or alone, so resumed and uninterrupted runs agree."""
    model, _, rendered = _setup(tiny_model)
    chunks = [Chunk(str(i), prompt, [], (0, 1, 2), 100 + i) for i, prompt in enumerate(rendered)]
    decoding = PRESETS["thinking"]
    every = _by_chunk(TransformersBackend(str(tiny_model), model=model, slots=4), chunks, decoding, 16)
    assert every == _by_chunk(TransformersBackend(str(tiny_model), model=model, slots=9), chunks, decoding, 16)
    alone = _by_chunk(TransformersBackend(str(tiny_model), model=model, slots=2), chunks[3:4], decoding, 16)
    assert alone == {key: every[key] for key in alone}
    texts = [c.text for row in every.values() for c in row]
    assert len(set(texts)) > len(texts) * 2 // 3  # each sample its own draw (short ones may coincide)


@pytest.mark.parametrize("decoding", [
    Decoding("thinking", temperature=0.6, top_p=0.95, top_k=20),
    Decoding("nucleus", temperature=1.3, top_p=0.5),
    Decoding("min-p", temperature=0.7, top_p=0.9, top_k=50, min_p=0.2),
    Decoding("plain", temperature=1.0),
], ids=lambda d: d.name)
def test_kept_distribution_is_transformers_warpers(decoding):
    """Oracle: transformers' warpers in generate's order over the whole vocabulary. The top-k-first filter
    leaves the same probabilities on the same tokens (every other token 0)."""
    import torch
    from transformers import LogitsProcessorList
    from transformers.generation.logits_process import (
        MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(0)
    logits = torch.randn(6, 500) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(decoding.temperature)])
    if decoding.top_k:
        warpers.append(TopKLogitsWarper(decoding.top_k))
    if decoding.top_p < 1:
        warpers.append(TopPLogitsWarper(decoding.top_p))
    if decoding.min_p:
        warpers.append(MinPLogitsWarper(decoding.min_p))
    expected = torch.softmax(warpers(None, logits.clone()), dim=-1)
    probs, ids = kept(logits, decoding)
    got = torch.zeros_like(expected).scatter(1, ids, probs)
    assert torch.allclose(got, expected, atol=1e-6)
    left = (expected > 0).sum(-1)
    assert left.max() > 1 and (left.max() < 500 or decoding.name == "plain")  # the filters cut, and not to one
    # the draw reads the kept tokens off u, most likely first
    assert torch.equal(choose(logits, decoding, torch.zeros(6)), ids[:, 0])
    second = probs[:, 0] + probs[:, 1] / 2
    assert torch.equal(choose(logits, decoding, second)[left > 1], ids[left > 1, 1])


def test_slots_run_is_recorded_and_resumes_to_the_same_samples(tmp_path, fixtures, tiny_model):
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=4, max_new_tokens=12, seed=5)
    common = dict(progress=False, backend_options={"batch_size": 2, "slots": 3})
    first = evaluate(tiny_model, task, tmp_path / "a", **common)
    samples = (first / "samples.jsonl").read_text().splitlines()
    assert json.loads((first / "run.json").read_text())["backend"]["slots"] == 3
    resumed = tmp_path / "b"
    resumed.mkdir()
    for name in ("run.json", "prompts.jsonl"):
        (resumed / name).write_text((first / name).read_text())
    (resumed / "samples.jsonl").write_text("\n".join(samples[::3]) + "\n")  # an interrupted run
    evaluate(tiny_model, task, resumed, **common)

    def rows(run):
        return sorted(json.dumps(json.loads(line), sort_keys=True)
                      for line in (run / "samples.jsonl").read_text().splitlines())

    assert rows(resumed) == rows(first) and len(rows(first)) == 12


def test_slots_and_compact_together_is_one_error_line(tmp_path, fixtures, tiny_model):
    result = run_cli("eval", "--model", tiny_model, "--dataset", fixtures / "boxed.jsonl", "--out", tmp_path / "run",
                     "-n", "1", "--max-new-tokens", "4", "--slots", "4", "--compact", "--no-progress")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and "--slots or --compact" in lines[-1] and "Traceback" not in result.stderr
