"""Are our GPQA prompts the paper's? Every row of a GPQA CSV, ours against OpenCompass's.

    python benchmarks/check_gpqa_prompts.py gpqa_diamond.csv

The file is not vendored (GPQA asks not to republish it in plain text); openai/simple-evals'
``gpqa_diamond.csv`` (198 rows) is the one the paper's OpenCompass config reads. Builds both
prompt lists from the same file — ours with ``--grading paper`` (options rotated by row), the
oracle with OpenCompass's own loader and template (``tests/eval/opencompass_gpqa.py``) — and
prints how many are byte-identical, with the gold letters, and the first difference if any.
Exit status 1 if any row differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "eval"))

import opencompass_gpqa  # noqa: E402

from mi_mergekit.eval.datasets import load_examples  # noqa: E402
from mi_mergekit.eval.prompts import build_message  # noqa: E402


def main(path: str) -> int:
    ours = [build_message("gpqa", e, gpqa_options="rotate")[:2] for e in load_examples(path, "gpqa")]
    theirs = opencompass_gpqa.prompts(path)
    same = sum(a == b for a, b in zip(ours, theirs))
    stray = sum(any(t != t.strip() for t in (e.question, *e.grader_data["options"]))
                for e in load_examples(path, "gpqa"))
    print(f"{same}/{len(theirs)} prompts and gold letters identical to OpenCompass's "
          f"({len(ours)} rows read by mi-mergekit; {stray} rows carry leading/trailing whitespace)")
    for number, (a, b) in enumerate(zip(ours, theirs), 1):
        if a != b:
            print(f"first difference: data row {number}:\n  ours:   {a!r}\n  theirs: {b!r}")
            break
    return 0 if same == len(theirs) == len(ours) else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
