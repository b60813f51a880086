"""Teacher-forced arithmetic of Thinking sides: how likely each writes a running-sum line right.

    python benchmarks/line_accuracy.py first=smollm2-pair-rs/thinking shipped=smollm2-pair/thinking

For every problem of the held-out set (``--dataset``), the Thinking prompt (chat template,
``<think>\\n``) is followed by the right running sum, ``a+b=c`` a line; for each line the
probability the model gives the right ``c`` (the product over its tokens, logits divided by
``--temperature``, the Thinking decoding's 0.6) given the right lines before it. Reported per
model: the mean of that probability over all lines, per difficulty, and the mean negative
log-likelihood per answer token. This separates the arithmetic itself from what sampling does
around it (habits, losing one's place, a verification overwriting a sum): the model card's
"0.899 against 0.883" comes from here.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path


def problem_of(record: dict):
    """The :class:`~mi_mergekit.real.task.Problem` a held-out record asks (its question checked)."""
    from mi_mergekit.real import task

    found = re.match(r"Compute (\d+(?:\+\d+)+)\.", record["question"])
    problem = found and task.Problem(id=record.get("id", ""), terms=tuple(int(t) for t in found[1].split("+")))
    if not problem or problem.question != record["question"]:
        raise ValueError(f"not a question of the real pair's task: {record['question'][:60]!r}")
    return problem


def line_probabilities(model, tokenizer, template: str, problem, temperature: float) -> list[tuple[float, int]]:
    """``[(log P(sum right | right prefix), tokens of the sum)]`` for each line of the right
    running sum (:meth:`Problem.work`) of ``problem``."""
    import torch

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": problem.question}],
                                           chat_template=template, tokenize=False, add_generation_prompt=True)
    work = problem.work()
    spans, at = [], len(prompt)
    for line in work.splitlines(keepends=True):  # "a+b=c\n": the span of c
        spans.append((at + line.index("=") + 1, at + len(line) - 1))
        at += len(line)
    encoded = tokenizer(prompt + work, return_offsets_mapping=True, add_special_tokens=False)
    ids = encoded["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    out = []
    for start, end in spans:
        positions = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and start < b]
        out.append((sum(logp[i - 1, ids[i]].item() for i in positions), len(positions)))
    return out


def main(argv=None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mi_mergekit import real
    from mi_mergekit.real import task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="NAME=FOLDER", help="Thinking sides to compare")
    parser.add_argument("--dataset", default=str(task.HELDOUT_PATH), help="JSONL of {question, difficulty}")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:  # (problem, difficulty), each record parsed once
        asked = [(problem_of(record), int(record["difficulty"])) for record in task.load_heldout(args.dataset)]
    except ValueError as error:
        parser.error(f"{args.dataset}: {error}")
    results = {}
    for spec in args.models:
        name, sep, folder = spec.partition("=")
        if not sep or not Path(folder, "config.json").is_file():
            parser.error(f"{spec!r}: expected NAME=FOLDER with a model's config.json in FOLDER")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        by_difficulty: dict[int, list[float]] = {}
        nll = tokens = 0.0
        for problem, difficulty in asked:
            for logp, n in line_probabilities(model, tokenizer, real.THINKING_CHAT_TEMPLATE, problem, args.temperature):
                by_difficulty.setdefault(difficulty, []).append(math.exp(logp))
                nll, tokens = nll - logp, tokens + n
        every = [p for ps in by_difficulty.values() for p in ps]
        results[name] = {"lines": len(every), "p_line_right": sum(every) / len(every), "nll_per_token": nll / tokens,
                         "by_difficulty": {k: sum(v) / len(v) for k, v in sorted(by_difficulty.items())}}
        per = "  ".join(f"k={k}: {v:.3f}" for k, v in results[name]["by_difficulty"].items())
        print(f"{name}: P(line right) {results[name]['p_line_right']:.3f} over {len(every)} lines, "
              f"{results[name]['nll_per_token']:.3f} nats a token  ({per})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"temperature": args.temperature, "dataset": args.dataset,
                                              "models": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
