"""``mi-mergekit toy``: retrain the shipped toy pair, measure its λ curve in memory
(the work is in :mod:`mi_mergekit.toy`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mi_mergekit.cli.options import POSITIVE, check_lambdas, overwrite_option
from mi_mergekit.merge.lambdas import parse_lambdas

THREADS_HELP = ("torch threads (default 1: on a 2-core machine shared with other jobs, 2 threads measured "
                "~4x SLOWER per step because of OpenMP contention)")


@click.group("toy")
def toy_command():
    """The shipped toy pair: a 4-layer Qwen3 Instruct/Thinking pair on a running-sum task."""


@toy_command.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (gets base/, instruct/, thinking/).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights and the data stream.")
@click.option("--tiny", is_flag=True, help="Tiny model and batches (smoke test).")
@click.option("--steps", type=POSITIVE, help="Override base steps (children get a fifth, min 1).")
@click.option("--base-steps", type=POSITIVE, help="Steps of the base model's training.")
@click.option("--child-steps", type=POSITIVE, help="Steps of each child's fine-tune.")
@click.option("--child-lr", type=float, help="Learning rate of the children's fine-tunes.")
@click.option("--no-eval", is_flag=True, help="Skip the λ-curve evaluation.")
@click.option("--eval-lambdas", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", show_default=True,
              callback=check_lambdas, help="λ values of the curve measured after training.")
@click.option("--eval-n", type=POSITIVE, help="Evaluate on the first N held-out problems.")
@click.option("--threads", type=POSITIVE, default=1, show_default=True, help=THREADS_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a TrainConfig field, e.g. --set hidden_size=96 (repeatable).")
@overwrite_option
def train_command(out, seed, tiny, steps, base_steps, child_steps, child_lr, no_eval, eval_lambdas, eval_n,
                  threads, overrides, overwrite):
    """Train the toy base model and its Instruct / Thinking children (CPU).

    With the default settings the three sides' tensor checksums are compared with the
    shipped pair's and the result printed and stored in OUT/train_summary.json. The
    pair is written into a hidden folder next to OUT and moved into place when done; an
    OUT that holds other files (the shipped pair included) needs --overwrite.
    """
    import torch

    from mi_mergekit.safety import check_existing, staged_directory
    from mi_mergekit.toy.train import config_from, train_pair

    cfg = config_from(seed, tiny, steps, base_steps, child_steps, child_lr, overrides)
    check_existing(out, overwrite)
    torch.set_num_threads(threads)
    with staged_directory(out) as stage:
        train_pair(Path(stage), cfg, evaluate=not no_eval,
                   eval_lambdas=[float(x) for x in parse_lambdas(eval_lambdas)], eval_n=eval_n)
    click.echo(f"pair written to {out}")


@toy_command.command("curve")
@click.argument("pair", required=False, type=click.Path(file_okay=False))
@click.option("--lambdas", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", show_default=True,
              callback=check_lambdas, help="λ values: a comma list, or START:STOP:STEP.")
@click.option("--n", "limit", type=POSITIVE, help="The first N held-out problems.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--greedy", is_flag=True, help="Greedy decoding instead of the Thinking sampling settings.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
@click.option("--threads", type=int, default=1, show_default=True, help=THREADS_HELP)
def curve_command(pair, lambdas, limit, seed, greedy, json_path, threads):
    """Measure the λ curve of a pair (PAIR: a folder with instruct/ and thinking/; default the
    shipped one) in memory, with the kernel, and print the table."""
    import torch

    from mi_mergekit.toy import task
    from mi_mergekit.toy.curve import PAIR_DIR, format_table, measure_curve

    torch.set_num_threads(threads)
    records = task.load_heldout()[:limit] if limit else task.load_heldout()
    folder = Path(pair) if pair else PAIR_DIR
    rows = measure_curve(folder / "instruct", folder / "thinking", records,
                         [float(x) for x in parse_lambdas(lambdas)], seed=seed, greedy=greedy)
    click.echo(format_table(rows))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
