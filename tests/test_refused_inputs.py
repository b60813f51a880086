"""The bad-input table: every row is a command a user might run on bad input.

Each row runs the real console script (``mergekit-yaml`` or ``mi-mergekit``) in a process of
its own — a few rows with an in-process fault injected into that same command (disk full,
permission denied) — forked from a server that imported torch, transformers and mergekit once
(``tests/warm.py``; a row whose environment or limits a fork cannot give runs as a plain
subprocess), and checks that

* it exits with status 1 and its last stderr line is ``Error: <what> (<file>)``,
  containing the row's message fragment, with no traceback; a mistake in the command
  line itself (:data:`USAGE_ERRORS`) exits with status 2 and click's usage message,
  ending in the one ``Error:`` line;
* it answers at once: offline (the hub is a closed local port, or ``HF_HUB_OFFLINE``,
  or a port that accepts and never answers), within 10 s — or three start-ups of the
  console script on a machine so loaded that one start-up takes longer (:func:`budget`);
* every input file (models, recipe, dataset, existing folders) is byte-for-byte
  unchanged;
* nothing was written: no new file at all (the rows of :data:`LEAVES` excepted, which
  keep a resumable run), no staging folder left behind.

The README's "What is refused" list is this table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from common import console, run
from synthetic import PairSpec, build_pair, recipe
from warm import WarmStart

sys.path.insert(0, str(Path(__file__).parent / "eval"))
FIXTURES = Path(__file__).parent / "eval" / "fixtures"


class World:
    """A scratch folder with a model pair, a good recipe and a dataset; rows bend one thing."""

    def __init__(self, root: Path, pair, eval_model):
        self.root = root
        self.instruct, self.thinking = (root / "instruct", root / "thinking")
        shutil.copytree(pair[0], self.instruct)
        shutil.copytree(pair[1], self.thinking)
        self.recipe = root / "recipe.yaml"
        self.recipe.write_text(recipe(str(self.instruct), str(self.thinking), 0.8))
        self.out = root / "out"
        self.dataset = root / "boxed.jsonl"
        shutil.copy(FIXTURES / "boxed.jsonl", self.dataset)
        self.eval_model = eval_model
        self.env = {}
        self.preexec = None
        self.listener = None

    def offline(self, hub_offline: bool = False) -> None:
        """No model hub: an empty cache, and a hub endpoint that refuses connections at once
        (a closed local port), with or without ``HF_HUB_OFFLINE``."""
        self.env.update(HF_HOME=str(self.root / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9",
                        HTTPS_PROXY="http://127.0.0.1:9", HF_HUB_OFFLINE="1" if hub_offline else "0")

    def hanging_hub(self) -> None:
        """A hub endpoint that accepts connections and never answers (a black hole)."""
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.offline()
        self.env.update(HF_ENDPOINT=f"http://127.0.0.1:{self.listener.getsockname()[1]}", HTTPS_PROXY="",
                        MI_MERGEKIT_HUB_TIMEOUT="2")

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def rows(self, name: str, rows) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in rows))

    def edit_recipe(self, old: str, new: str) -> Path:
        self.recipe.write_text(self.recipe.read_text().replace(old, new))
        return self.recipe


def mergekit_yaml(*args):
    return [console("mergekit-yaml"), *map(str, args)]


def mi(*args):
    return [console("mi-mergekit"), *map(str, args)]


def with_fault(setup: str, *args):
    """Run ``mi-mergekit ARGS`` in a Python that first executes ``setup`` (fault injection)."""
    code = f"{setup}\nfrom mi_mergekit.cli import main\nmain()"
    return [sys.executable, "-c", code, *map(str, args)]


def nway_recipe(w: World, weights=(0.6, 0.6), second=None) -> Path:
    second = second or w.thinking
    return w.write("nway.yaml", (
        "merge_method: nway_interpolation\n"
        f"models:\n  - model: {w.instruct}\n    parameters: {{weight: {weights[0]}}}\n"
        f"  - model: {second}\n    parameters: {{weight: {weights[1]}}}\n"
        "dtype: float32\n"))


#: the machine has no CUDA (a no-op on one without), so the --cuda rows hold everywhere
NO_CUDA = "import torch\ntorch.cuda.is_available = lambda: False"


def mergekit_yaml_without_cuda(*args):
    """``mergekit-yaml ARGS`` (its console script's entry point) as if the machine had no CUDA."""
    code = f"{NO_CUDA}\nfrom mergekit.scripts.run_yaml import main\nmain()"
    return [sys.executable, "-c", code, *map(str, args)]


def add_layer_tensor(w: World, suffix: str) -> None:
    """A tensor in every decoder layer of both models that no role rule knows."""
    from safetensors.torch import load_file, save_file

    for folder in (w.instruct, w.thinking):
        tensors = load_file(folder / "model.safetensors")
        layers = {int(n.split(".")[2]) for n in tensors if n.startswith("model.layers.")}
        tensors.update({f"model.layers.{i}.{suffix}": torch.ones(4) for i in layers})
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def file_size_limit(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def size_limited(w: World, limit: int):
    w.preexec = file_size_limit(limit)


def prior_run(w: World, config: dict) -> Path:
    run_dir = w.root / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps(config))
    return run_dir


def eval_args(w: World, *extra, model=None, dataset=None, out=None):
    return mi("eval", "--model", model or w.eval_model, "--dataset", dataset or w.dataset,
              "--benchmark", "boxed", "-n", "1", "--max-new-tokens", "4", "--no-progress",
              "--out", out or w.root / "run", *extra)


def typo_recipe(w: World, old: str, new: str, name: str = "typo.yaml") -> Path:
    """A copy of the good recipe with one mistake."""
    return w.write(name, w.recipe.read_text().replace(old, new))


def shipped_recipe(w: World, name: str = "mi_0.8_last2of3.yaml") -> Path:
    """The README's first recipe, which names the Qwen3-4B-2507 models on the hub."""
    return w.write(name, (Path(__file__).parent.parent / "recipes" / name).read_text())


def merged(w: World, name: str) -> Path:
    """A finished merge in out/<name> (what a user evaluates next)."""
    folder = w.root / "out" / name
    shutil.copytree(w.eval_model, folder)
    return folder


# (id, setup(world) -> argv, message fragment)
ROWS = [
    # --- merge: where the output may go
    ("output-is-instruct", lambda w: mergekit_yaml(w.recipe, w.instruct),
     "the output folder is the Instruct model's folder"),
    ("output-is-thinking", lambda w: mi("merge", w.recipe, w.thinking),
     "the output folder is the Thinking model's folder"),
    ("output-inside-input", lambda w: mergekit_yaml(w.recipe, w.instruct / "merged"),
     "lies inside the Instruct model's folder"),
    ("output-contains-inputs", lambda w: mi("merge", w.recipe, w.root),
     "the output folder contains the"),
    ("output-inside-hf-cache",
     lambda w: (w.env.update(HF_HOME=str(w.root / "hf")), mergekit_yaml(w.recipe, w.root / "hf" / "hub" / "out"))[1],
     "the output folder lies inside the Hugging Face cache"),
    ("output-symlink-to-input",
     lambda w: (os.symlink(w.thinking, w.root / "link"), mergekit_yaml(w.recipe, w.root / "link"))[1],
     "the output folder is the Thinking model's folder"),
    ("output-has-foreign-files",
     lambda w: (w.out.mkdir(), (w.out / "notes.txt").write_text("mine"), mi("merge", w.recipe, w.out))[2],
     "holds files mi-mergekit did not write (notes.txt)"),
    ("output-is-a-file", lambda w: (w.out.write_text("x"), mergekit_yaml(w.recipe, w.out))[1],
     "the output path exists and is not a folder"),
    ("output-under-a-file",
     lambda w: (w.write("plain", "x"), mi("merge", w.recipe, w.root / "plain" / "out"))[1],
     "which is a file, not a folder"),
    # --- merge: the recipe
    ("recipe-missing", lambda w: mergekit_yaml(w.root / "nope.yaml", w.out), "no such file or directory"),
    ("recipe-yaml-syntax", lambda w: mi("merge", w.write("bad.yaml", "models: [\n"), w.out),
     "recipe is not valid YAML at line 2"),
    ("recipe-wrong-type", lambda w: mergekit_yaml(w.edit_recipe("lambda: 0.8", "lambda: high"), w.out),
     "parameters.lambda: Input should be a valid number, unable to parse string as a number, got 'high'"),
    ("recipe-not-a-config", lambda w: mi("merge", w.write("models.yaml", "merge_method: linear\nmodels: 5\n"), w.out),
     "recipe is not a valid mergekit config: models: Input should be a valid list, got 5"),
    ("recipe-not-a-mapping", lambda w: mi("merge", w.write("list.yaml", "- a\n- b\n"), w.out),
     "a recipe must be a YAML mapping"),
    ("recipe-window-out-of-range",
     lambda w: mergekit_yaml(w.edit_recipe("lambda: 0.8", "lambda: 0.8\n  layer_end: 40"), w.out),
     "layer_end=40 is outside the model's decoder layers"),
    ("merge-unknown-model-name", lambda w: mi("merge", w.recipe, w.out, "--model", "Qwen/X=/nowhere"),
     "--model names not found in the recipe: Qwen/X"),
    # --- merge: the input checkpoints
    ("input-truncated-safetensors",
     lambda w: (truncate(w.thinking / "model.safetensors", 5000), mergekit_yaml(w.recipe, w.out))[1],
     "truncated or corrupt safetensors file"),
    ("input-corrupt-header",
     lambda w: ((w.instruct / "model.safetensors").write_bytes(b"\xff" * 64), mi("merge", w.recipe, w.out))[1],
     "truncated or corrupt safetensors file"),
    ("input-missing-config",
     lambda w: ((w.thinking / "config.json").unlink(), mergekit_yaml(w.recipe, w.out))[1],
     "has no config.json"),
    ("input-missing-tokenizer",
     lambda w: ((w.thinking / "tokenizer.json").unlink(), mi("merge", w.recipe, w.out))[1],
     "which has no tokenizer files"),
    ("input-missing-folder",
     lambda w: (shutil.rmtree(w.thinking), mergekit_yaml(w.recipe, w.out))[1],
     "thinking not found: no such folder"),
    # --- merge: the device
    ("merge-cuda-without-cuda", lambda w: mergekit_yaml_without_cuda(w.recipe, w.out, "--cuda"),
     "device 'cuda' asked for (--cuda / --device), but CUDA is not available on this machine"),
    ("sweep-cuda-without-cuda",
     lambda w: with_fault(NO_CUDA, "sweep", w.recipe, w.out, "--lambdas", "0.2,0.4", "--cuda"),
     "but CUDA is not available on this machine"),
    # --- merge: failures while writing
    ("write-file-size-limit", lambda w: (size_limited(w, 20_000), mergekit_yaml(w.recipe, w.out))[1],
     "file too large (file size limit reached) while writing the output"),
    ("write-disk-too-small", lambda w: with_fault(
        "import os, types\n"
        "os.statvfs = lambda path: types.SimpleNamespace(f_bavail=3, f_frsize=4096)\n",
        "merge", w.recipe, w.out),
     "disk full while writing the output"),
    ("write-disk-full-midway", lambda w: with_fault(
        "import errno, os\n"
        "calls, real = [], os.pwritev\n"
        "def full(*a):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 5: raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(*a)\n"
        "os.pwritev = full", "merge", w.recipe, w.out),
     "disk full while writing the output"),
    ("write-disk-full-mergekit-engine", lambda w: with_fault(
        "import os; os.environ['MI_MERGEKIT_ENGINE'] = 'mergekit'\n"
        "import safetensors, safetensors.torch\n"
        "def full(*a, **k): raise safetensors.SafetensorError("
        "'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })')\n"
        "safetensors.torch.save_file = full", "merge", w.recipe, w.out),
     "disk full while writing the output"),
    ("write-permission-denied", lambda w: with_fault(
        "import tempfile\n"
        "def denied(*a, dir=None, **k): raise PermissionError(13, 'Permission denied', dir)\n"
        "tempfile.mkdtemp = denied", "merge", w.recipe, w.out),
     "permission denied ("),
    # --- nway_interpolation gets the same pre-flight
    ("nway-weights-do-not-sum-to-1", lambda w: mergekit_yaml(nway_recipe(w), w.out), "sum to 1.2, not 1"),
    ("nway-output-is-input", lambda w: mergekit_yaml(nway_recipe(w, (0.5, 0.5)), w.instruct),
     "the output folder is the input model's folder"),
    ("nway-layer-counts-differ",
     lambda w: mergekit_yaml(nway_recipe(w, (0.5, 0.5), build_pair(str(w.root / "short"), PairSpec(num_layers=3))[1]),
                             w.out),
     "layer counts differ"),
    # --- sweep and plan
    ("sweep-into-input", lambda w: mi("sweep", w.recipe, w.instruct, "--lambdas", "0.2,0.4"),
     "the output folder is the Instruct model's folder"),
    ("sweep-lambda-folder-foreign",
     lambda w: ((w.root / "sw" / "lambda_0.4").mkdir(parents=True), (w.root / "sw" / "lambda_0.4" / "a.bin").write_text("x"),
                mi("sweep", w.recipe, w.root / "sw", "--lambdas", "0.2,0.4"))[2],
     "holds files mi-mergekit did not write (a.bin)"),
    ("sweep-truncated-input",
     lambda w: (truncate(w.instruct / "model.safetensors", 100), mi("sweep", w.recipe, w.out, "--lambdas", "0.5"))[1],
     "truncated or corrupt safetensors file"),
    ("module-selection-unplaced-tensor",
     lambda w: (add_layer_tensor(w, "adapter.weight"),
                mergekit_yaml(w.edit_recipe("lambda: 0.8", "lambda: 0.8\n  exclude_modules: mlp"), w.out))[1],
     "model.layers.N.adapter.weight"),
    ("plan-window-out-of-range",
     lambda w: mi("plan", w.edit_recipe("lambda: 0.8", "lambda: 0.8\n  layer_start: -9")),
     "layer_start=-9 is outside"),
    ("plan-no-base-model", lambda w: mi("plan", w.write("nobase.yaml", (
        f"merge_method: model_interpolation\nmodels:\n  - model: {w.instruct}\n  - model: {w.thinking}\n"
        "parameters: {lambda: 0.5}\n"))), "needs `base_model:`"),
    # --- eval
    ("eval-model-not-found", lambda w: eval_args(w, model=w.root / "no-model"), "no-model not found: no such folder"),
    ("eval-model-without-config", lambda w: eval_args(w, model=w.root), "the model folder has no config.json"),
    ("eval-dataset-missing-column", lambda w: eval_args(w, dataset=w.rows("d.jsonl", [{"id": "a", "prompt": "1+1"}])),
     "boxed dataset has no 'answer' column"),
    ("eval-dataset-empty-value",
     lambda w: eval_args(w, dataset=w.rows("d.jsonl", [{"id": "a", "prompt": "1+1", "answer": "2"},
                                                      {"id": "b", "prompt": " ", "answer": "3"}])),
     "row 2: 'prompt' is empty"),
    ("eval-dataset-row-lacks-column",
     lambda w: eval_args(w, dataset=w.rows("d.jsonl", [{"id": "a", "prompt": "1+1", "answer": "2"},
                                                      {"id": "b", "prompt": "2+2"}])),
     "row 2 has no 'answer' column"),
    ("eval-answer-not-text",
     lambda w: eval_args(w, dataset=w.rows("d.jsonl", [{"id": "a", "prompt": "1+1", "answer": [2]}])),
     "'answer' must be text, got list"),
    ("eval-out-is-a-model-folder", lambda w: eval_args(w, out=w.instruct), "--out is not an eval run folder"),
    ("eval-out-foreign-run-json", lambda w: eval_args(w, out=prior_run(w, {"hello": 1})),
     "run.json was not written by this version of `mi-mergekit eval`"),
    ("eval-resume-mismatch", lambda w: eval_args(w, out=prior_run(w, {
        "format": 1, "benchmark": "boxed", "model": "other", "n_samples": 8})),
     "holds a run with other settings"),
    ("eval-disk-full-samples", lambda w: with_fault(
        "import errno, os, types, mi_mergekit.eval.store as store\n"
        "def write(fd, data):\n"
        "    os.write(fd, bytes(data[:7]))  # a torn line, then the disk is full\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "fake = {k: getattr(os, k) for k in dir(os) if not k.startswith('__')}\n"
        "fake['write'] = write\n"
        "store.os = types.SimpleNamespace(**fake)", *eval_args(w)[1:]),
     "disk full ("),
    # --- report
    ("report-run-missing", lambda w: mi("report", w.root / "nothing", "--out", w.root / "rep"),
     "run directory not found"),
    ("report-not-a-run", lambda w: mi("report", w.instruct, "--out", w.root / "rep"), "is not a run directory"),
    # --- a new user's first hour (issue 34): a model that is nowhere, decided at once
    ("hub-readme-first-command-offline", lambda w: (w.offline(), mergekit_yaml(shipped_recipe(w), w.out))[1],
     "model Qwen/Qwen3-4B-Instruct-2507 not found: no folder "),
    ("hub-readme-first-command-hf-offline", lambda w: (w.offline(hub_offline=True),
                                                       mi("merge", shipped_recipe(w), w.out))[1],
     "the Hugging Face cache"),
    ("hub-does-not-answer", lambda w: (w.hanging_hub(), mi("plan", shipped_recipe(w)))[1],
     "the hub did not answer within 2 s"),
    ("eval-model-typo", lambda w: (w.offline(), merged(w, "mi_0.8"),
                                   eval_args(w, model="out/mi_0.88", out="runs/mi_0.88"))[2],
     "model out/mi_0.88 not found: no such folder — did you mean 'out/mi_0.8'?"),
    ("eval-hub-id-offline", lambda w: (w.offline(), eval_args(w, model="tiny-org/tiny"))[1],
     "model tiny-org/tiny not found: no folder "),
    ("merge-model-path-missing",
     lambda w: mi("merge", w.recipe, w.out, "--model", f"{w.instruct}=models/instruct"),
     "=models/instruct: no such folder"),
    ("merge-model-name-typo",
     lambda w: mi("merge", w.recipe, w.out, "--model", f"{str(w.instruct)[:-1]}={w.instruct}"),
     "--model names not found in the recipe: "),
    # --- recipe mistakes name the place, the value and the name meant
    ("recipe-method-typo-mergekit-yaml",
     lambda w: mergekit_yaml(typo_recipe(w, "model_interpolation", "model_interpolaton"), w.out),
     "merge_method: 'model_interpolaton' is not a merge method — did you mean 'model_interpolation'?"),
    ("recipe-method-typo-merge",
     lambda w: mi("merge", typo_recipe(w, "model_interpolation", "model_interpolaton"), w.out),
     "did you mean 'model_interpolation'?"),
    ("recipe-method-typo-plan", lambda w: mi("plan", typo_recipe(w, "model_interpolation", "model_interpolaton")),
     "did you mean 'model_interpolation'?"),
    ("recipe-lambda-comma-plan", lambda w: mi("plan", typo_recipe(w, "lambda: 0.8", 'lambda: "0,8"')),
     "parameters.lambda: Input should be a valid number, unable to parse string as a number, got '0,8'"),
    ("recipe-lambda-comma-merge", lambda w: mi("merge", typo_recipe(w, "lambda: 0.8", 'lambda: "0,8"'), w.out),
     "parameters.lambda: Input should be a valid number"),
    ("recipe-dtype-typo-plan", lambda w: mi("plan", typo_recipe(w, "dtype: bfloat16", "dtype: bf16")),
     "dtype: 'bf16' is not a dtype mergekit reads — did you mean 'bfloat16'?"),
    ("recipe-dtype-typo-mergekit-yaml",
     lambda w: mergekit_yaml(typo_recipe(w, "dtype: bfloat16", "dtype: bfloat16\nout_dtype: bfloat"), w.out),
     "out_dtype: 'bfloat' is not a dtype mergekit reads — did you mean 'bfloat16'?"),
    ("recipe-key-typo", lambda w: mergekit_yaml(typo_recipe(w, "base_model:", "base_modle:"), w.out),
     "base_modle: not a key mergekit reads (it would be ignored) — did you mean 'base_model'?"),
    ("recipe-parameter-typo", lambda w: mi("plan", typo_recipe(w, "lambda: 0.8", "lamda: 0.8")),
     "unknown parameter(s) for model_interpolation: lamda — did you mean 'lambda'?"),
    ("recipe-module-group-typo",
     lambda w: mi("merge", typo_recipe(w, "lambda: 0.8", "lambda: 0.8\n  modules: atention"), w.out),
     "unknown module group 'atention' in parameters.modules — did you mean 'attention'?"),
    ("recipe-template-typo",
     lambda w: mi("plan", typo_recipe(w, "lambda: 0.8", "lambda: 0.8\n  template_from: thinkng")),
     "parameters.template_from: 'thinkng' is not one of thinking, instruct — did you mean 'thinking'?"),
    ("recipe-lambda-percentage", lambda w: mergekit_yaml(typo_recipe(w, "lambda: 0.8", "lambda: 80"), w.out),
     "parameters.lambda: λ = 80 is far outside [0, 1] (0 = the Instruct model, 1 = the Thinking model) — "
     "a percentage? did you mean 0.8?"),
    ("plan-json-under-a-file", lambda w: (w.write("plain", "x"), mi("plan", w.recipe, "--json", w.root / "plain" / "p.json"))[1],
     "cannot create the folder of --json"),
    ("toy-train-into-a-model", lambda w: mi("toy", "train", "--out", w.instruct, "--tiny", "--no-eval"),
     "the output folder already holds files mi-mergekit did not write"),
    # --- command-line mistakes: click's usage message, exit status 2
    ("usage-mergekit-yaml-has-no-model-option",
     lambda w: mergekit_yaml(w.recipe, w.out, "--model", f"{w.instruct}={w.instruct}"),
     "No such option '--model'. (mergekit-yaml reads every model from the recipe"),
    ("usage-sweep-lambdas-percentages", lambda w: mi("sweep", w.recipe, w.out, "--lambdas", "10:90:10"),
     "λ = 10 is far outside [0, 1] (0 = the Instruct model, 1 = the Thinking model) — a percentage? "
     "did you mean 0.1?"),
    ("usage-eval-benchmark-typo", lambda w: eval_args(w, "--benchmark", "aime2025"), "did you mean 'aime25'?"),
    ("usage-eval-zero-samples", lambda w: eval_args(w, "-n", "0"), "0 is not in the range x>=1"),
    ("usage-find-lambda-lo-above-hi",
     lambda w: mi("find-lambda", w.recipe, "--dataset", w.dataset, "--lo", "0.9", "--hi", "0.1", "--out", w.root / "fl"),
     "--lo 0.9 must be below --hi 0.1"),
]

#: rows whose mistake is in the command line itself: click's usage error, exit status 2
USAGE_ERRORS = {row[0] for row in ROWS if row[0].startswith("usage-")}
#: rows that legitimately leave files: a run that started keeps what it stored (resumable)
LEAVES = {"eval-disk-full-samples", "eval-resume-mismatch", "eval-out-foreign-run-json"}


# README.md's "What is refused" table: the beginning of the message (… stands for any text)
# each of its fragments promises, and the row above that shows it
README_TABLE = {
    "output-is-instruct": "the output folder is the Instruct model's folder",
    "output-inside-input": "the output folder lies inside the …",
    "output-contains-inputs": "the output folder contains the …",
    "output-inside-hf-cache": "the output folder lies inside the Hugging Face cache …",
    "output-has-foreign-files": "the output folder already holds files mi-mergekit did not write (…)",
    "output-is-a-file": "the output path exists and is not a folder",
    "output-under-a-file": "the output path lies under …, which is a file, not a folder",
    "recipe-missing": "cannot read the recipe: no such file or directory",
    "recipe-yaml-syntax": "recipe is not valid YAML at line …",
    "recipe-not-a-mapping": "a recipe must be a YAML mapping",
    "recipe-not-a-config": "recipe is not a valid mergekit config: …",
    "recipe-wrong-type": "parameters.lambda: Input should be a valid number, … got 'high'",
    "recipe-key-typo": "base_modle: not a key mergekit reads (it would be ignored) — did you mean 'base_model'?",
    "recipe-method-typo-mergekit-yaml":
        "merge_method: 'model_interpolaton' is not a merge method — did you mean 'model_interpolation'? (…)",
    "recipe-parameter-typo": "unknown parameter(s) for model_interpolation: lamda — did you mean 'lambda'?; …",
    "recipe-module-group-typo": "unknown module group 'atention' in parameters.modules — did you mean 'attention'?…",
    "recipe-dtype-typo-plan": "dtype: 'bf16' is not a dtype mergekit reads — did you mean 'bfloat16'? …",
    "recipe-lambda-percentage": "parameters.lambda: λ = 80 is far outside [0, 1] (…) — a percentage? did you mean 0.8? …",
    "usage-sweep-lambdas-percentages": "Invalid value for '--lambdas': λ = 10 is far outside [0, 1] (…) — a "
                                       "percentage? did you mean 0.1? …",
    "recipe-window-out-of-range": "layer_end=40 is outside the model's decoder layers [0, 3]",
    "input-truncated-safetensors": "cannot read the weights of model …: truncated or corrupt safetensors file: …",
    "input-missing-folder": "model … not found: no such folder (…)",
    "hub-readme-first-command-offline": "model Qwen/Qwen3-4B-Instruct-2507 not found: no folder …, no complete "
                                        "snapshot in the Hugging Face cache (…), and the hub cannot be reached (…); …",
    "hub-does-not-answer": "model … not found: …, and the hub did not answer within … s …",
    "merge-model-path-missing": "--model …=models/instruct: no such folder …",
    "usage-mergekit-yaml-has-no-model-option": "No such option '--model'. (mergekit-yaml reads every model from the "
                                               "recipe: …)",
    "input-missing-config": "model … has no config.json",
    "input-missing-tokenizer": "the output's tokenizer comes from the … model, which has no tokenizer files",
    "merge-cuda-without-cuda": "device 'cuda' asked for (--cuda / --device), but CUDA is not available on this machine",
    "write-disk-full-midway": "disk full while writing the output (…)",
    "write-file-size-limit": "file too large (file size limit reached) while writing the output (…)",
    "write-permission-denied": "permission denied (…)",
    "nway-weights-do-not-sum-to-1": "nway_interpolation: the weights of … sum to 1.2, not 1",
    "module-selection-unplaced-tensor": "the module selection (exclude_modules: mlp) needs the role of every tensor, "
                                        "and no rule names the role of …",
    "eval-model-not-found": "model … not found: no such folder (…)",
    "eval-model-typo": "model out/mi_0.88 not found: no such folder — did you mean 'out/mi_0.8'? (…)",
    "eval-dataset-empty-value": "row 2: 'prompt' is empty (…)",
    "eval-out-is-a-model-folder": "--out is not an eval run folder (…)",
    "eval-disk-full-samples": "disk full (…/samples.jsonl)",
    "report-run-missing": "run directory not found (…)",
}


def begins(fragment: str) -> "re.Pattern":
    return re.compile(".*".join(re.escape(part) for part in fragment.split("…")))


def snapshot(root: Path):
    """sha256 of every file under root (symlinks as their target text)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def eval_model(tmp_path_factory):
    from tiny_model import build_model

    return build_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


#: every row's environment, beside what the row sets
ROW_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def scripts():
    """The console scripts, their imports done once (rows run in processes forked from it)."""
    with WarmStart(env=ROW_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def startup():
    """Seconds one start-up of each console script takes here, now (its --help, which imports
    what a merge imports): the yardstick of :func:`budget` on a loaded machine."""
    seconds = {}
    for name, argv in (("mergekit-yaml", mergekit_yaml("--help")), ("mi-mergekit", mi("plan", "--help"))):
        started = time.monotonic()
        run(argv)
        seconds[name] = time.monotonic() - started
    return seconds


def budget(argv, startup) -> float:
    """A refusal is immediate: at most 10 s, or three start-ups where one start-up alone takes
    longer (a loaded machine). A hub retry loop (half a minute and more) never fits."""
    script = "mergekit-yaml" if any("mergekit-yaml" in str(a) or "run_yaml" in str(a) for a in argv) else "mi-mergekit"
    return max(10.0, 3 * startup[script])


@pytest.mark.parametrize("row_id, setup, message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_in_one_line(row_id, setup, message, dense_pair, eval_model, tmp_path, startup,
                                         scripts):
    world = World(tmp_path, dense_pair, eval_model)
    argv = setup(world)
    before = snapshot(tmp_path)
    started = time.monotonic()
    try:
        result = scripts.run(argv, env={**ROW_ENV, **world.env}, preexec_fn=world.preexec, cwd=tmp_path)
    finally:
        if world.listener is not None:
            world.listener.close()
    elapsed = time.monotonic() - started

    assert result.returncode == (2 if row_id in USAGE_ERRORS else 1), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "could not hook" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1 and error_lines[0] == result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
    assert message in error_lines[0], error_lines[0]
    if row_id not in USAGE_ERRORS:
        assert error_lines[0].endswith(")"), "names the file it is about"
    if row_id in README_TABLE:  # what the README's table says this message begins with
        assert begins(README_TABLE[row_id]).match(error_lines[0].removeprefix("Error: ")), error_lines[0]
    assert elapsed < budget(argv, startup), f"{elapsed:.1f} s (start-up here: {startup})"

    after = snapshot(tmp_path)
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert changed == [], f"inputs changed: {changed}"
    new = sorted(set(after) - set(before))
    if row_id not in LEAVES:
        assert new == [], f"written: {new}"
    assert not [p for p in new if p.endswith(("config.json", "metrics.json", ".safetensors"))], new
    assert not [p for p in new if ".incomplete-" in p or ".replaced-" in p], new


def test_readme_table_is_this_table():
    """Every message fragment of README.md's "What is refused" table is one of README_TABLE's
    (each checked above against what its row's command prints), and each of those is in the README."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    table = text[text.index("| refused | message begins |"):]
    table = table[:table.index("\n\n")]
    fragments = []
    for line in table.splitlines()[2:]:
        message = line.split(" | ", 1)[1]
        fragments += re.findall(r"``([^`]+)``|`([^`]+)`", message)
    fragments = [a or b for a, b in fragments]
    assert sorted(fragments) == sorted(README_TABLE.values())
    assert set(README_TABLE) <= {row[0] for row in ROWS}


def test_table_has_at_least_25_rows():
    assert len(ROWS) >= 25 and len({r[0] for r in ROWS}) == len(ROWS)


def test_verbose_adds_the_traceback(dense_pair, tmp_path, scripts):
    world = World(tmp_path, dense_pair, None)
    result = scripts.run(mi("merge", world.recipe, world.instruct, "--verbose"), env=ROW_ENV)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "OutputPathError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: the output folder is the Instruct")
    result = scripts.run(mergekit_yaml(world.recipe, world.instruct, "-v"), env=ROW_ENV)
    assert result.returncode == 1 and "Traceback" in result.stderr
