"""``mi-mergekit compare``: the paper's Table 2 (Instruct, Thinking, TA, TIES, MI at the paper's λ)
on your own Instruct / Thinking models and their common ancestor (the work is in
:mod:`mi_mergekit.compare`).

Examples::

    mi-mergekit compare --instruct Qwen/Qwen3-4B-Instruct-2507 --thinking Qwen/Qwen3-4B-Thinking-2507 \\
        --base Qwen/Qwen3-4B --pretrained Qwen/Qwen3-4B-Base \\
        --benchmark aime25 --dataset aime25.jsonl --backend vllm --out cmp/
    mi-mergekit compare --instruct ins/ --thinking think/ --base base/ --dataset test.jsonl \\
        --backend openai --base-url http://127.0.0.1:8000/v1 --out cmp/      # one `transformers serve`

Re-running the same command resumes a killed one (finished merges and samples are kept).
"""

from __future__ import annotations

from pathlib import Path

import click

from mi_mergekit.cli.options import device_options, eval_options, evaluation, usage_errors


def _served(value):
    """``--served-model ROW=NAME,ROW=NAME`` for compare (each row is its own model)."""
    if not value:
        return None
    mapping = {}
    for item in value.split(","):
        row, sep, name = item.partition("=")
        if not sep or not row.strip() or not name.strip():
            raise click.BadParameter(f"compare asks each row's model by its own name: give ROW=NAME pairs "
                                     f"(e.g. thinking=think,mi_0.8=mi08), not {value!r}; without it each row's "
                                     "model folder (or hub id) is the name", param_hint="--served-model")
        mapping[row.strip()] = name.strip()
    return mapping


@click.command("compare")
@click.option("--instruct", required=True, help="The Instruct model (folder or hub id): MI's λ = 0 end.")
@click.option("--thinking", required=True, help="The Thinking model (folder or hub id): MI's λ = 1 end.")
@click.option("--base", help="Their common ancestor (the paper: the hybrid Qwen/Qwen3-4B), for TA and TIES.")
@click.option("--pretrained", help="A pre-trained ancestor (Qwen/Qwen3-4B-Base) for the -Base baselines "
                                   "(ta_base, ties_base).")
@click.option("--lambdas", default="0.2,0.4,0.45,0.5,0.55,0.6,0.8", show_default=True,
              help="MI λ rows (the paper's Table 2 by default); λ = 1 is the Thinking row.")
@click.option("--windows", default="none", show_default=True,
              help="Layer windows at λ = 0.8 (first1of3,mid1of3,last1of3,first2of3,last2of3; the paper's Table 3).")
@click.option("--modules", default="none", show_default=True,
              help="Module ablations at λ = 0.8 (nomlp,noattention; the paper's Figure 5).")
@click.option("--baselines", default="ta,ties", show_default=True, help="Baselines to merge (ta,ties or none).")
@eval_options(dataset_required=True)
@device_options(default=None, what="transformers: generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for recipes/, models/, runs/ and report/.")
@click.option("--merge-only", is_flag=True, help="Only write the merges (to start servers on them), no evaluation.")
@click.option("--drop-models", is_flag=True, help="Delete each merged model's weights once it is evaluated.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def compare_command(instruct, thinking, base, pretrained, lambdas, windows, modules, baselines, device, out_dir,
                    merge_only, drop_models, no_progress, **opts):
    """The paper's comparison on your models: Instruct, Thinking, Task Arithmetic and TIES (on --base, and
    -Base on --pretrained), MI at each λ; merged with the real mergekit-yaml, evaluated with any backend,
    reported in the paper's Table 2 layout (report/comparison.md) with the frontier (TA and TIES against
    the MI curve at equal tokens). Merged rows are decoded with the Thinking model's chat template and
    the --decoding preset (default: the paper's Thinking one); the Instruct row with the Instruct preset."""
    from mi_mergekit.compare import model_reference, run_compare
    from mi_mergekit.compare_rows import BASELINES, MODULE_ABLATIONS, Triple, choose, paper_windows
    from mi_mergekit.merge.lambdas import parse_lambdas

    with usage_errors():
        window_names = choose(windows, [w[0] for w in paper_windows(3)], "--windows")
        module_names = choose(modules, MODULE_ABLATIONS, "--modules")
        baseline_names = choose(baselines, BASELINES, "--baselines")
        sweep = [float(v) for v in parse_lambdas(lambdas)]
    served = _served(opts.pop("served_model"))
    triple = Triple(model_reference(instruct, "instruct"), model_reference(thinking, "thinking"),
                    model_reference(base, "base") if base else None,
                    model_reference(pretrained, "pretrained") if pretrained else None)
    chosen = []
    if window_names:
        from transformers import AutoConfig

        layers = AutoConfig.from_pretrained(triple.thinking).get_text_config().num_hidden_layers
        chosen = [w for w in paper_windows(layers) if w[0] in window_names]
    task, backend, backend_options = evaluation({**opts, "served_model": None}, device)
    result = run_compare(triple, task, Path(out_dir), backend=backend, backend_options=backend_options,
                         progress=not no_progress, lambdas=sweep, windows=chosen, modules=module_names,
                         baselines=baseline_names, served_models=served, merge_only=merge_only, drop=drop_models,
                         log=lambda m: click.echo(m, err=True))
    if merge_only:
        for name, model in result["models"].items():
            click.echo(f"{name}: {model}")
        return
    click.echo(result["table"]["markdown"])
    click.echo(f"report: {result['report']['md']}\ntable: {result['table']['md']}", err=True)


__all__ = ["compare_command"]
