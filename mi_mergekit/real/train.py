"""Train a side of the SmolLM2 triple: a LoRA fine-tune of SmolLM2-135M-Instruct (the ancestor) on CPU.

    mi-mergekit smollm2 train --base smollm2-pair/base --out mi_mergekit/real/adapter
    mi-mergekit smollm2 train --base smollm2-pair/base --side instruct      # -> adapter_instruct/

The defaults are the shipped Thinking adapter's recipe: 240 steps of 8 over-thinking traces,
starting from the first (running-sum) adapter, which already adds; ``--set init_adapter=`` starts
from a fresh LoRA, ``--steps 180 --set trace=runningsum --set init_adapter= --set batch=16
--set warmup=10 --set length_groups=1`` is the first adapter's recipe. ``--side instruct`` is the
Instruct side's (:data:`INSTRUCT_RECIPE`): a fresh LoRA of the same shape, 120 steps of 16 direct
answers (``\\boxed{N}`` and the end of the turn, ``trace=direct``), each written under SmolLM2's
own chat template or the Thinking one, half and half (:func:`template_of`), one thread.

LoRA (peft) of rank 8 on every attention and MLP projection of all 30 layers
(q/k/v/o, gate/up/down: 2.4M trainable parameters, 1.8% of the model), trained on
Thinking-template conversations of :mod:`mi_mergekit.real.task` (prompt ends with
``<think>\\n``; loss on the completion and its ``<|im_end|>`` only, less the slips of
an over-thinking trace). ``--trace`` picks the completions: ``overthink`` (the shipped
adapter: :func:`~mi_mergekit.real.task.overthinking_trace`, each drawn with a seed of its
own from the training seed and the problem) or ``runningsum`` (the first adapter's plain
running sum, kept as ``adapter_runningsum/``) or ``direct`` (the Instruct side). Problems of
the held-out set never appear; ``overthink`` and ``direct`` training also skip the calibration
set (the routing experiments' questions). Over-thinking traces vary a lot in length, so each step's batch is drawn
``length_groups`` batches at a time, sorted by length and cut into batches (less padding,
as transformers' ``group_by_length``), in a seeded order. Why LoRA rather
than a few full layers: a full fine-tune of the decoder costs the same per step on
this CPU (10.3 s vs 8.6 s a step of 16×112 tokens, measured) but its delta is 424 MB
that cannot ship, while the adapter is 4.7 MB in bfloat16; and every layer moves,
so the paper's window and module ablations have something to select.

The adapter is saved in peft's format, in bfloat16 (what ships), and the side is the
ancestor plus that bfloat16 adapter (:func:`..build.apply_adapter`),
whose tensor checksums go to ``checksums.json`` for ``build`` to verify. Seeded;
one thread-count and one machine give the same adapter, other machines may differ
in the last bits of the training arithmetic (the shipped adapter is the reference).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mi_mergekit import real
from mi_mergekit.errors import MiMergekitError
from mi_mergekit.real import task

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 240
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    rank: int = 8
    alpha: int = 16
    threads: int = 2
    save_dtype: str = "bfloat16"
    trace: str = "overthink"
    #: the over-thinking traces' verification pass (:attr:`~mi_mergekit.real.task.Habits.verification`)
    verification: str = "swap"
    length_groups: int = 4
    #: start from this adapter (a shipped adapter's name or a folder; "" for a fresh LoRA)
    init_adapter: str = "runningsum"


TRACES = ("overthink", "runningsum", "direct")

#: the Instruct side's recipe (``smollm2 train --side instruct``): a fresh LoRA of the same shape
#: on direct answers, under both chat templates (:func:`template_of`)
INSTRUCT_RECIPE = {"trace": "direct", "init_adapter": "", "steps": 120, "batch": 16, "warmup": 10,
                   "length_groups": 1, "threads": 1}


def completion(problem: task.Problem, trace: str, seed: int, verification: str = "swap") -> task.Trace:
    """The training completion of ``problem``: its over-thinking trace (drawn with a seed of
    its own), the plain running sum, or the direct answer (``\\boxed{N}`` and nothing else)."""
    if trace == "runningsum":
        return task.Trace(((problem.thinking_completion(), True),))
    if trace == "direct":
        return task.Trace(((problem.instruct_completion(), True),))
    if trace == "overthink":
        if verification not in task.VERIFY_LINES:
            raise MiMergekitError(f"unknown verification {verification!r}; choose from {list(task.VERIFY_LINES)}")
        habits = dataclasses.replace(task.HABITS, verification=verification)
        return task.overthinking_trace(problem, random.Random(f"{seed}:{problem.expression}"), habits)
    raise MiMergekitError(f"unknown trace {trace!r}; choose from {list(TRACES)}")


def template_of(problem: task.Problem, trace: str, seed: int) -> "str | None":
    """The chat template a training conversation is written in: the Thinking one (``<think>\\n``
    pre-inserted), except for ``direct`` answers, which are written under SmolLM2's own template
    (None: the tokenizer's) for half the problems and under the Thinking one for the other half,
    drawn per problem from the seed. So the Instruct side answers at once under either, and a
    merged model near λ = 0, which carries the Thinking template, writes no ``</think>`` (as the
    toy's Instruct side, trained the same way)."""
    if trace != "direct":
        return real.THINKING_CHAT_TEMPLATE
    thinking = random.Random(f"template:{seed}:{problem.expression}").random() < 0.5
    return real.THINKING_CHAT_TEMPLATE if thinking else None


def encode(tokenizer, problem: task.Problem, template: "str | None", trace: str = "runningsum",
           seed: int = 0, verification: str = "swap") -> tuple[list[int], list[int]]:
    """(input ids, labels) of one Thinking conversation; labels are -100 on the prompt and on
    every token that overlaps an untrained span (a slip) of the completion."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": problem.question}],
                                           chat_template=template, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    drawn = completion(problem, trace, seed, verification)
    encoded = tokenizer(drawn.text + "<|im_end|>", add_special_tokens=False, return_offsets_mapping=True)
    completion_ids = encoded["input_ids"]
    spans = drawn.untrained_spans()
    labels = [-100 if any(a < end and start < b for start, end in spans) else token
              for token, (a, b) in zip(completion_ids, encoded["offset_mapping"])]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + labels


def length_grouped(rows_of, batch: int, groups: int, rng: random.Random):
    """Endless batches: ``groups`` batches' rows at a time (from ``rows_of(n)``), sorted by
    length, cut into batches, yielded in an order drawn from ``rng``."""
    while True:
        rows = sorted(rows_of(batch * groups), key=lambda row: len(row[0]))
        cut = [rows[i:i + batch] for i in range(0, len(rows), batch)]
        rng.shuffle(cut)
        yield from cut


def completion_loss(model, ids, labels, mask):
    """Next-token cross entropy on completion tokens, with lm_head applied to those positions only."""
    import torch.nn.functional as F

    inner = model.get_base_model()
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def train(instruct: Path, out: Path, config: TrainConfig, log=print) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    from mi_mergekit.runsum import collate  # right-padded ids, labels, mask

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    torch.set_num_threads(config.threads)
    tokenizer = AutoTokenizer.from_pretrained(instruct)
    model = AutoModelForCausalLM.from_pretrained(instruct, dtype=torch.float32)
    if config.init_adapter:
        from peft import PeftModel

        init = Path(real.ADAPTERS.get(config.init_adapter, config.init_adapter))
        start = json.loads((init / "adapter_config.json").read_text())
        if (start["r"], start["lora_alpha"]) != (config.rank, config.alpha) or \
                sorted(start["target_modules"]) != sorted(TARGET_MODULES):
            raise MiMergekitError(f"{config.init_adapter} is a rank {start['r']} / α {start['lora_alpha']} adapter of "
                             f"{sorted(start['target_modules'])}; the config asks for {config.rank} / {config.alpha}")
        model = PeftModel.from_pretrained(model, str(init), is_trainable=True)
        model = model.to(torch.float32)  # the shipped adapter is bfloat16; train in float32
    else:
        model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                                                 target_modules=TARGET_MODULES, bias="none"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup, config.steps)
    if config.trace not in TRACES:
        raise MiMergekitError(f"unknown trace {config.trace!r}; choose from {list(TRACES)}")
    # the shipped files, regenerated (tested equal); the first adapter was trained without
    # the calibration set, which did not exist yet
    exclude = ({p.expression for p in task.make_heldout()} if config.trace == "runningsum"
               else task.excluded_from_training())
    stream = task.iter_training_problems(config.seed, exclude=exclude)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def rows_of(n):
        problems = [next(stream) for _ in range(n)]
        return [encode(tokenizer, p, template_of(p, config.trace, config.seed), config.trace, config.seed,
                       config.verification) for p in problems]

    batches = length_grouped(rows_of, config.batch, max(1, config.length_groups), random.Random(config.seed))
    losses, tokens, started, cpu_started = [], 0, time.perf_counter(), time.process_time()
    model.train()
    for step in range(1, config.steps + 1):
        rows = next(batches)
        tokens += sum(len(ids) for ids, _ in rows)
        loss = completion_loss(model, *collate(rows, pad))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if step % 10 == 0 or step == 1 or step == config.steps:
            elapsed = time.perf_counter() - started
            log(f"step {step}/{config.steps} loss {sum(losses[-10:]) / len(losses[-10:]):.4f} "
                f"lr {schedule.get_last_lr()[0]:.2e} {elapsed:.0f} s")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model = model.to(getattr(torch, config.save_dtype))
    for adapter in model.peft_config.values():  # not the local folder it was trained on
        adapter.base_model_name_or_path = real.HUB_ID
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's empty model-card template; see MODEL_CARD.md
    saved = json.loads((out / "adapter_config.json").read_text())  # peft writes a set: order by name
    saved["target_modules"] = sorted(saved["target_modules"])
    (out / "adapter_config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    summary = {"config": asdict(config), "trainable_parameters": sum(p.numel() for p in trainable),
               "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / config.steps, 2),
               "cpu_seconds": round(cpu_seconds, 1),  # all threads: what the steps cost without contention
               "loss_first10": sum(losses[:10]) / min(10, len(losses)),
               "loss_last10": sum(losses[-10:]) / min(10, len(losses)), "losses": losses,
               "train_tokens": tokens, "torch": torch.__version__, "threads": config.threads}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
