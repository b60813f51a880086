"""A generation backend defined in this file alone runs wherever ours do.

``parrot`` — every sample is the text given by its own option ``--parrot-text`` — is declared
below (name, help, two options and the constructor keywords they set, the evaluation seed it
takes) and registered; no file of the package names it. ``mi-mergekit eval`` then lists its
options in ``--help``, refuses a run without its required one, and hands the values to its
constructor (this file is the script: ``python test_new_backend.py eval ...`` registers it and
runs the real command); ``evaluate(backend="parrot", backend_options=...)`` does the same
from Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mi_mergekit.eval.backends import ALIASES, BACKENDS, Backend, BackendOption, Completion, register_backend

NAME = "parrot"


class Parrot(Backend):
    """Every sample is ``text``; ``tokens`` tokens each."""

    name, aliases = NAME, ("polly",)
    summary = "repeats --parrot-text"
    options = (
        BackendOption("--parrot-text", "text", "the text of every sample.", required="a text (--parrot-text TEXT)"),
        BackendOption("--parrot-tokens", "tokens", "tokens each sample counts.", int, default=3, minimum=1),
    )
    takes = ("seed",)
    chunk_size = 2

    def __init__(self, model_path, text, tokens=3, seed=0):
        self.model, self.text, self.tokens, self.seed = model_path, text, tokens, seed

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            yield chunk, [Completion(self.text, self.tokens, "stop") for _ in chunk.indices]

    def describe(self):
        return {**super().describe(), "text": self.text, "tokens": self.tokens, "seed": self.seed}


def register():
    register_backend(Parrot)


if __name__ == "__main__":  # `mi-mergekit ARGS`, with the backend above registered
    register()
    from mi_mergekit.cli import main

    main(sys.argv[1:], prog_name="mi-mergekit")


@pytest.fixture(autouse=True)
def registered():
    register()
    yield
    BACKENDS.pop(NAME, None), ALIASES.pop("polly", None)


def cli(*args):
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_eval_lists_its_options_and_hands_them_to_it(fixtures, tmp_path):
    shown = cli("eval", "--help")
    assert shown.returncode == 0, shown.stderr[-3000:]
    text = " ".join(shown.stdout.split())
    assert "parrot (repeats --parrot-text)" in text and "polly" in text
    assert "--parrot-text TEXT parrot: the text of every sample." in text
    assert "--parrot-tokens INTEGER RANGE parrot: tokens each sample counts. [default: 3; x>=1]" in text
    assert "transformers: samples per generate call." in text  # ours are still there

    common = ["eval", "--model", "any/model", "--dataset", fixtures / "boxed.jsonl", "--backend", "polly",
              "-n", "2", "--seed", "7", "--no-progress"]
    refused = cli(*common, "--out", tmp_path / "none")
    assert refused.returncode == 2 and "--backend parrot needs --parrot-text" in refused.stderr
    assert not (tmp_path / "none").exists()
    done = cli(*common, "--parrot-text", "so \\boxed{9}", "--parrot-tokens", "5", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["backend"] == {"name": NAME, "chunk_size": 2, "text": "so \\boxed{9}", "tokens": 5, "seed": 7}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tokens_mean"] == 5 and metrics["mean"] == pytest.approx(1 / 3)  # of 3 questions, one's answer is 9


def test_evaluate_makes_it_from_its_name(fixtures, tmp_path):
    from mi_mergekit.errors import EvalInputError
    from mi_mergekit.eval import EvalTask, evaluate, load_run

    run = evaluate("any/model", EvalTask(fixtures / "boxed.jsonl", n_samples=2), backend=NAME,
                   backend_options={"text": "\\boxed{9}"}, out_dir=tmp_path / "run", progress=False)
    assert load_run(run)["config"]["backend"]["tokens"] == 3
    with pytest.raises(EvalInputError, match="the parrot backend needs a text"):
        evaluate("any/model", EvalTask(fixtures / "boxed.jsonl"), backend=NAME, out_dir=tmp_path / "bad",
                 progress=False)


def test_no_file_of_the_package_names_it():
    """What the backend did not have to touch: no module, CLI or README line names it."""
    root = Path(__file__).resolve().parents[2]
    for path in [*root.joinpath("mi_mergekit").rglob("*.py"), root / "README.md"]:
        assert NAME not in path.read_text(encoding="utf-8").lower(), path
