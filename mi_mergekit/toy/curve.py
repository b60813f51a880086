"""Measure the λ curve of the toy pair in memory, without writing merged models.

Θ(λ) = Θ_I + λ(Θ_T − Θ_I), every tensor, in float32, computed by the merge's kernel
(:func:`mi_mergekit.merge.kernel.interpolate`: λ = 1 is the Thinking model exactly). Each merged model is run
with the THINKING chat template (the prompt ends with ``<think>\\n``) and the
Thinking generation_config (temperature 0.6, top_p 0.95, top_k 20), seeded;
``greedy=True`` decodes greedily instead. Metrics per λ: Think #R (% of
responses containing ``</think>``), Token #N (mean generated tokens, counting
the end-of-turn token), accuracy (:func:`mi_mergekit.toy.task.is_correct`),
and accuracy per difficulty.

    mi-mergekit toy curve mi_mergekit/toy/pair      # prints the table
"""

from __future__ import annotations

from pathlib import Path

import torch

from mi_mergekit.errors import MergeInputError, MiMergekitError
from mi_mergekit.toy import task
from mi_mergekit.toy.tokenizer import THINKING_SAMPLING, build_tokenizer, prompt_text

PAIR_DIR = Path(__file__).resolve().parent / "pair"
DEFAULT_LAMBDAS = [round(0.1 * i, 1) for i in range(11)]


def load_state(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = Path(folder)
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update({k: v.to(torch.float32) for k, v in load_file(str(f)).items()})
    return state


def interpolate(instruct: dict, thinking: dict, lam: float) -> dict[str, torch.Tensor]:
    """Θ(λ) of every tensor, with the merge's own kernel (the same bits as a float32 merge)."""
    from mi_mergekit.merge import kernel

    if instruct.keys() != thinking.keys():
        raise MergeInputError("state dicts have different tensors")
    return {k: kernel.interpolate(instruct[k], thinking[k], lam) for k in instruct}


def load_model(folder: str | Path, state: dict | None = None):
    """A float32 Qwen3ForCausalLM from ``folder``'s config, with ``state`` if given."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if state is None:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise MiMergekitError(f"state mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


@torch.no_grad()
def generate(model, tok, questions: list[str], *, thinking_template: bool = True, greedy: bool = False,
             seed: int = 0, sampling: dict | None = None, max_new_tokens: int = 128,
             batch_size: int = 256) -> list[tuple[str, int]]:
    """(decoded completion, number of generated tokens) per question."""
    sampling = dict(THINKING_SAMPLING if sampling is None else sampling)
    eos_ids = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    tok.padding_side = "left"
    out: list[tuple[str, int]] = []
    torch.manual_seed(seed)
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        enc = tok([prompt_text(q, thinking_template) for q in chunk], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        kwargs = dict(do_sample=False) if greedy else dict(do_sample=True, **sampling)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                             pad_token_id=tok.pad_token_id, **kwargs)
        gen = gen[:, enc["input_ids"].shape[1] :]
        for row in gen.tolist():
            n = len(row)
            for j, t in enumerate(row):
                if t in eos_ids:
                    n = j + 1
                    break
            out.append((tok.decode(row[:n], skip_special_tokens=True), n))
    return out


def score(records: list[dict], outputs: list[tuple[str, int]]) -> dict:
    n = len(records)
    think = [task.has_thinking(t) for t, _ in outputs]
    correct = [task.is_correct(t, r["answer"]) for r, (t, _) in zip(records, outputs)]
    by_diff: dict[int, list[bool]] = {}
    for r, c in zip(records, correct):
        by_diff.setdefault(int(r["difficulty"]), []).append(c)
    return {
        "n": n,
        "think_pct": 100.0 * sum(think) / n,
        "mean_tokens": sum(k for _, k in outputs) / n,
        "accuracy_pct": 100.0 * sum(correct) / n,
        "accuracy_by_difficulty": {str(d): round(100.0 * sum(v) / len(v), 1) for d, v in sorted(by_diff.items())},
    }


def measure_curve(instruct_dir, thinking_dir, records: list[dict], lambdas=DEFAULT_LAMBDAS, *,
                  seed: int = 0, greedy: bool = False) -> list[dict]:
    tok = build_tokenizer()
    s_i, s_t = load_state(instruct_dir), load_state(thinking_dir)
    rows = []
    for lam in lambdas:
        model = load_model(thinking_dir, interpolate(s_i, s_t, lam))
        outputs = generate(model, tok, [r["question"] for r in records], seed=seed, greedy=greedy)
        row = {"lambda": lam, **score(records, outputs)}
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    diffs = list(rows[0]["accuracy_by_difficulty"]) if rows else []
    head = "| λ | Think #R % | Token #N | Acc % | " + " | ".join(f"acc k={d}" for d in diffs) + " |"
    sep = "|" + "---|" * (4 + len(diffs))
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r['lambda']:.1f} | {r['think_pct']:.1f} | {r['mean_tokens']:.1f} | {r['accuracy_pct']:.1f} | "
            + " | ".join(f"{r['accuracy_by_difficulty'][d]:.0f}" for d in diffs) + " |"
        )
    return "\n".join(lines)
