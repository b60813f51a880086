"""Train the toy Qwen3 base model and its Instruct / Thinking children (CPU).

    mi-mergekit toy train --out DIR                  # full run (~9 min measured, 1 thread)
    mi-mergekit toy train --out DIR --tiny --steps 5 # smoke test

Stages (all from one seed, deterministic on one machine). The shipped pair in
``mi_mergekit/toy/pair`` was made with ``--out mi_mergekit/toy/pair`` (see its MODEL_CARD.md).

1. base: a "hybrid" model (like Qwen/Qwen3-4B) trained from scratch on both
   formats: under the thinking template (prompt ends with ``<think>\\n``) it
   writes the step-by-step work, ``</think>`` and ``\\boxed{answer}``; under the
   instruct template (no ``<think>``) it writes ``\\boxed{answer}`` only.
2. thinking = base + a short, low-learning-rate fine-tune on thinking-template
   data only (always reasons).
3. instruct = base + a short, low-learning-rate fine-tune to answer directly
   under BOTH templates: after a prompt that ends with ``<think>\\n`` it still
   writes ``\\boxed{answer}`` and stops, with no ``</think>`` (Think #R = 0 under
   the thinking template, like Qwen3-4B-Instruct-2507 in the paper).

Both children start from the same base and move little, so they stay in one
basin and Θ_I + λ(Θ_T − Θ_I) is a working model for every λ. What flips as λ
grows is the first token after ``<think>\\n``: ``\\boxed`` (answer now) versus a
digit (start working) -- which produces the stage transition.

Output: ``DIR/base``, ``DIR/instruct``, ``DIR/thinking`` (HF folders: bf16
safetensors, config, tokenizer, chat template, generation_config) and, unless
``--no-eval``, the λ curve on the held-out set (printed, and stored with the
config and measured wall times in ``DIR/train_summary.json``).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mi_mergekit.runsum import collate
from mi_mergekit.toy import task
from mi_mergekit.toy.tokenizer import (
    ENDOFTEXT,
    IM_END,
    INSTRUCT_CHAT_TEMPLATE,
    INSTRUCT_SAMPLING,
    THINKING_CHAT_TEMPLATE,
    THINKING_SAMPLING,
    build_tokenizer,
    prompt_text,
)


@dataclass
class TrainConfig:
    seed: int = 0
    # model
    hidden_size: int = 96
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 24
    # base pre-training
    base_steps: int = 2400
    base_lr: float = 3e-3
    base_batch: int = 32
    warmup: int = 100
    # children fine-tuning (moderate: few steps, small learning rate)
    child_steps: int = 150
    child_lr: float = 3e-4
    child_batch: int = 32
    # weight decay / clipping
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    save_dtype: str = "bfloat16"


TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    base_batch=8,
    child_batch=8,
    warmup=2,
)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# data


def encode_example(tok, problem: task.Problem, thinking_template: bool, think: bool):
    """(input_ids, labels) for one chat example; loss only on the completion."""
    prompt = prompt_text(problem.question, thinking_template)
    completion = (problem.thinking_completion() if think else problem.instruct_completion()) + IM_END
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(completion, add_special_tokens=False)["input_ids"]
    return p_ids + c_ids, [-100] * len(p_ids) + c_ids


# The three data mixtures: (thinking_template, think) pairs to sample from.
MIXTURES = {
    "base": [(True, True), (True, True), (True, True), (False, False)],
    "thinking": [(True, True)],
    "instruct": [(False, False), (True, False)],
}


class Batches:
    """Endless training batches. Each batch has ONE format and ONE difficulty, so it
    needs (almost) no padding -- the cheapest way to spend a CPU budget."""

    def __init__(self, tok, mixture: str, batch: int, seed: int, exclude: set[str]):
        self.tok = tok
        self.kinds = MIXTURES[mixture]
        self.batch = batch
        self.rng = random.Random(seed)
        self.exclude = exclude

    def __next__(self):
        thinking_template, think = self.kinds[self.rng.randrange(len(self.kinds))]
        k = self.rng.randint(task.MIN_DIFFICULTY, task.MAX_DIFFICULTY)
        exs = []
        while len(exs) < self.batch:
            p = task.make_problem(self.rng, k)
            if p.question in self.exclude:
                continue
            exs.append(encode_example(self.tok, p, thinking_template, think))
        return collate(exs, self.tok.pad_token_id)


# ---------------------------------------------------------------------------
# model


def build_model(cfg: TrainConfig, tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tok.convert_tokens_to_ids(IM_END),
        pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(cfg.seed)
    model = Qwen3ForCausalLM(config)
    return model


def train_stage(model, batches, steps: int, lr: float, warmup: int, cfg: TrainConfig, name: str):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in n else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    ema = None
    bar = tqdm(range(steps), desc=name, file=sys.stdout, mininterval=5, disable=None)
    for step in bar:
        ids, labels, mask = next(batches)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        loss = out.loss.item()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        bar.set_postfix(loss=f"{ema:.4f}")
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f"[{name}] step {step + 1}/{steps} loss(ema) {ema:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"elapsed {time.time() - t0:.0f}s")
    model.eval()
    return ema


# ---------------------------------------------------------------------------
# saving


def save_child(model, tok_template: str, sampling: dict, out: Path, dtype: str, tok_for_ids):
    """Save a model folder: weights, config, tokenizer + chat template, generation_config."""
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    m = model.to(getattr(torch, dtype))
    m.config.dtype = dtype
    m.generation_config = GenerationConfig(
        bos_token_id=tok_for_ids.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=[tok_for_ids.convert_tokens_to_ids(IM_END), tok_for_ids.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=tok_for_ids.pad_token_id,
        do_sample=True,
        max_new_tokens=128,
        **sampling,
    )
    m.save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    build_tokenizer(tok_template).save_pretrained(out)


# ---------------------------------------------------------------------------


def config_from(seed: int = 0, tiny: bool = False, steps=None, base_steps=None, child_steps=None,
                child_lr=None, overrides=()) -> TrainConfig:
    """A TrainConfig: ``tiny`` sizes, ``steps`` for the base (children get a fifth, min 1), then
    explicit values and ``KEY=VALUE`` overrides of any field."""
    from mi_mergekit.errors import MiMergekitError

    cfg = TrainConfig(seed=seed)
    if tiny:
        for k, v in TINY.items():
            setattr(cfg, k, v)
    if steps is not None:
        cfg.base_steps = steps
        cfg.child_steps = max(1, steps // 5)
        cfg.warmup = min(cfg.warmup, max(1, steps // 10))
    if base_steps is not None:
        cfg.base_steps = base_steps
    if child_steps is not None:
        cfg.child_steps = child_steps
    if child_lr is not None:
        cfg.child_lr = child_lr
    for kv in overrides:
        key, _, value = kv.partition("=")
        if not hasattr(cfg, key):
            raise MiMergekitError(f"unknown config field {key!r} in --set {kv}")
        setattr(cfg, key, type(getattr(cfg, key))(value))
    return cfg


def compare_with_shipped(out: Path, cfg: TrainConfig) -> dict:
    """The tensor checksums of the three sides in ``out`` and, for the shipped settings (the
    default TrainConfig), whether each equals the shipped pair's (``pair/checksums.json``);
    one line says so."""
    from mi_mergekit.digest import tensor_digest
    from mi_mergekit.toy import CHECKSUMS_PATH, SIDES

    digests = {side: tensor_digest(out / side) for side in SIDES}
    if asdict(cfg) != asdict(TrainConfig()) or not CHECKSUMS_PATH.exists():
        log("checksums: " + ", ".join(f"{side} {d[:12]}…" for side, d in digests.items())
            + " (not the shipped settings: nothing to compare)")
        return {"checksums": digests}
    shipped = json.loads(CHECKSUMS_PATH.read_text())["digests"]
    same = {side: digests[side] == shipped[side] for side in SIDES}
    if all(same.values()):
        log("checksums: every side is bit for bit the shipped pair (" + ", ".join(
            f"{side} {d[:12]}…" for side, d in digests.items()) + ")")
    else:
        log("checksums: differ from the shipped pair (" + ", ".join(
            f"{side} {digests[side][:12]}… vs {shipped[side][:12]}…" for side in SIDES if not same[side])
            + "); see the model card for what a retrain reproduces")
    return {"checksums": digests, "matches_shipped": same}


def train_pair(out: Path, cfg: TrainConfig, evaluate: bool = True,
               eval_lambdas=(0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1), eval_n=None) -> dict:
    """Train the base and its two children into ``out`` (see the module docstring); with
    ``evaluate``, measure the λ curve; returns the summary written to ``train_summary.json``."""
    out = Path(out)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t_start = time.time()
    log(f"config: {json.dumps(asdict(cfg))}")
    tok = build_tokenizer()
    exclude = {r["question"] for r in task.load_heldout()} if task.HELDOUT_PATH.exists() else {
        p.question for p in task.make_heldout()
    }

    model = build_model(cfg, tok)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"Qwen3ForCausalLM: {n_params:,} parameters (tied embeddings), vocab {len(tok)}")

    train_stage(model, Batches(tok, "base", cfg.base_batch, cfg.seed + 1, exclude),
                cfg.base_steps, cfg.base_lr, cfg.warmup, cfg, "base")
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_child(model, THINKING_CHAT_TEMPLATE, THINKING_SAMPLING, out / "base", cfg.save_dtype, tok)

    child_warmup = max(1, cfg.child_steps // 10)
    for name, template, sampling, seed in (
        ("thinking", THINKING_CHAT_TEMPLATE, THINKING_SAMPLING, cfg.seed + 2),
        ("instruct", INSTRUCT_CHAT_TEMPLATE, INSTRUCT_SAMPLING, cfg.seed + 3),
    ):
        model.load_state_dict(base_state)
        torch.manual_seed(seed)
        train_stage(model, Batches(tok, name, cfg.child_batch, seed, exclude),
                    cfg.child_steps, cfg.child_lr, child_warmup, cfg, name)
        save_child(model, template, sampling, out / name, cfg.save_dtype, tok)

    train_time = time.time() - t_start
    log(f"training done in {train_time:.0f}s")
    summary = {"config": asdict(cfg), "n_params": n_params, "train_seconds": round(train_time, 1),
               "torch": torch.__version__, **compare_with_shipped(out, cfg)}

    if evaluate:
        from mi_mergekit.toy.curve import format_table, measure_curve

        lambdas = [float(x) for x in eval_lambdas]
        records = task.load_heldout() if task.HELDOUT_PATH.exists() else [p.to_record() for p in task.make_heldout()]
        if eval_n:
            records = records[:eval_n]
        t_eval = time.time()
        rows = measure_curve(out / "instruct", out / "thinking", records, lambdas, seed=cfg.seed)
        log(format_table(rows))
        summary["eval_seconds"] = round(time.time() - t_eval, 1)
        summary["curve"] = rows
    summary["total_seconds"] = round(time.time() - t_start, 1)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"total wall time {summary['total_seconds']:.0f}s")
    return summary
