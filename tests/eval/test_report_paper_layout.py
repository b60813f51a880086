"""`report` in the layout of the paper's Tables 2 and 5: Mean/Pass@64, Mean/Pass@8,
Mean/Vote@8 (GPQA), Token #N, Think #R; the paper's rows as reference; Length Ratio."""

from __future__ import annotations

import json
import re
import sys

import pytest

from mi_mergekit.eval import EvalTask, evaluate, write_report
from mi_mergekit.eval.backends import Backend, Completion
from mi_mergekit.eval.paper import TABLE_2, TABLE_5
from warm import run_warm


class Scripted(Backend):
    """``respond(question_id, index) -> (text, n_tokens)``; one sample per chunk."""

    name = "scripted"
    chunk_size = 1

    def __init__(self, tokenizer, respond):
        self.tokenizer, self.respond = tokenizer, respond

    def generate(self, chunks, decoding, max_new_tokens):
        for chunk in chunks:
            text, tokens = self.respond(chunk, chunk.indices[0])
            yield chunk, [Completion(text, tokens, "stop")]


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "aime.jsonl").write_text("".join(json.dumps({"id": f"a{i}", "problem": f"{i}+1?", "answer": str(i + 1)}) + "\n"
                                             for i in range(2)))
    (root / "ifeval.jsonl").write_text(json.dumps({"key": 1, "prompt": "Answer in lowercase.",
                                                   "instruction_id_list": ["change_case:english_lowercase"],
                                                   "kwargs": [{}]}) + "\n")
    (root / "gpqa.csv").write_text("Record ID,Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,"
                                   "Incorrect Answer 3\ng1,First?,right,w1,w2,w3\ng2,Second?,right,w1,w2,w3\n")
    return root


def gpqa_responder(wrong_majority):
    def respond(chunk, index):
        right = re.search(r"([A-D])\) right", chunk.prompt).group(1)
        wrong = next(x for x in "ABCD" if x != right)
        # g2: 3 of 8 samples right, 5 agree on one wrong letter -> Pass@8 1, Vote@8 0
        letter = wrong if (wrong_majority and chunk.question_id == "g2" and index >= 3) else right
        return f"Thought.</think>ANSWER: {letter}", 300
    return respond


def make_runs(tmp_path, tokenizer, datasets, n_aime=64, n_other=8):
    runs = []
    for label, tokens in (("Thinking", 400), ("MI-0.8", 300)):
        def aime(chunk, index, tokens=tokens):  # a0 always right, a1 right in the even samples
            value = int(chunk.question_id[1:]) + 1 + (index % 2 if chunk.question_id == "a1" else 0)
            return f"Work.</think>\\boxed{{{value}}}", tokens
        runs.append(evaluate("m", EvalTask(datasets / "aime.jsonl", benchmark="aime25", n_samples=n_aime,
                                           max_new_tokens=8),
                             tmp_path / f"{label}-aime", Scripted(tokenizer, aime), label=label, progress=False))
        runs.append(evaluate("m", EvalTask(datasets / "ifeval.jsonl", benchmark="ifeval", n_samples=n_other,
                                           max_new_tokens=8),
                             tmp_path / f"{label}-ifeval", label=label, progress=False,
                             backend=Scripted(tokenizer, lambda c, i, t=tokens: ("Hm.</think>the weather today is calm and the sea is quiet." if i % 4 else
                                                                                 "Hm.</think>The Weather Today Is Calm.", t // 2))))
        runs.append(evaluate("m", EvalTask(datasets / "gpqa.csv", benchmark="gpqa", n_samples=n_other,
                                           max_new_tokens=8),
                             tmp_path / f"{label}-gpqa", Scripted(tokenizer, gpqa_responder(label == "MI-0.8")),
                             label=label, progress=False))
    return runs


def rows_of(markdown):
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("| ")]


def test_paper_layout_with_table_2_reference_and_length_ratio(tmp_path, tokenizer, datasets):
    runs = make_runs(tmp_path, tokenizer, datasets)
    result = write_report(runs, tmp_path / "report", paper_reference="4b", thinking_run="Thinking")
    lines = result["markdown"].splitlines()
    assert lines[0] == ("| Method | AIME'25 Mean/Pass@64 | AIME'25 Token #N | AIME'25 Think #R | IFEval Mean/Pass@8 | "
                        "IFEval Token #N | IFEval Think #R | GPQA-Diamond Mean/Vote@8 | GPQA-Diamond Token #N | "
                        "GPQA-Diamond Think #R |")
    table = rows_of(result["markdown"].split("\n\n")[0])
    body = {row[0]: row[1:] for row in table[1:]}
    # AIME: a0 64/64, a1 32/64 -> Mean 75.0, Pass 100; IFEval 6/8 strict; GPQA Mean (8+3)/16, Vote (1+0)/2
    assert body["MI-0.8"] == ["75.0/100.0", "300", "100.0", "75.0/100.0", "150", "100.0", "68.8/50.0", "300", "100.0"]
    assert body["Thinking"][6] == "100.0/100.0"  # its g2 samples are all right
    # the paper's rows, as printed, in Table 2's order, under the runs
    paper_rows = [row for row in table[1:] if row[0].startswith("paper: ")]
    assert [row[0] for row in paper_rows] == [f"paper: {m}" for m in TABLE_2]
    assert body["paper: MI-0.8"] == ["80.5/93.3", "17574", "99.9", "86.9/94.6", "1556", "99.9", "66.2/70.2", "8427", "99.9"]
    assert body["paper: Instruct"][6:] == ["41.3/39.4", "570", "0.0"]  # GPQA: Vote@8, below its Mean@8
    assert "- GPQA-Diamond grading: paper (Thinking, MI-0.8)" in lines
    assert any("Table 2, Qwen3-4B-Instruct-2507" in line and "OpenCompass" in line for line in lines)

    # details: Pass and Vote side by side, Length Ratio against the Thinking run
    details = rows_of(result["markdown"].split("Details (± standard error over questions):")[1])
    header = details[0]
    mi = dict(zip(header, next(row for row in details if row[0] == "MI-0.8")))
    assert mi["GPQA-Diamond Pass@8"].startswith("100.0") and mi["GPQA-Diamond Vote@8"] == "50.0"
    assert mi["AIME'25 Len. Ratio"] == "75.00" and mi["GPQA-Diamond Len. Ratio"] == "100.00"
    assert mi["IFEval Vote@8"] == "–"  # IFEval has no vote
    assert mi["AIME'25 Grading"] == "paper"
    paper_csv = (tmp_path / "report" / "paper_table.csv").read_text().splitlines()
    assert paper_csv[0].endswith("GPQA-Diamond Think #R,GPQA-Diamond Grading")
    assert "paper: MI-0.8,80.5/93.3,17574,99.9,paper,86.9/94.6" in paper_csv[-1]


def test_table_5_reference_has_two_decimals_and_mixed_k_is_marked(tmp_path, tokenizer, datasets):
    runs = make_runs(tmp_path, tokenizer, datasets, n_aime=4, n_other=8)
    result = write_report(runs, tmp_path / "report", paper_reference="30b")
    table = rows_of(result["markdown"].split("\n\n")[0])
    assert table[0][1] == "AIME'25 Mean/Pass@n" and table[0][4] == "IFEval Mean/Pass@8"
    body = {row[0]: row[1:] for row in table[1:]}
    assert body["MI-0.8"][0] == "75.00/100.00 (@4)"
    assert body["paper: MI-0.6"][0] == "75.31/96.67 (@64)" and body["paper: MI-0.6"][1:3] == ["12650", "48.1"]
    assert body["paper: TA"][:3] == ["63.44/93.33 (@64)", "10414", "0.0"]
    assert [r for r in body if r.startswith("paper: ")] == [f"paper: {m}" for m in TABLE_5]


def test_reference_columns_come_first_for_a_custom_benchmark(tmp_path, tokenizer, fixtures):
    run = evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=8), out_dir=tmp_path / "toy",
                   label="toy", backend=Scripted(tokenizer, lambda c, i: ("</think>\\boxed{3}", 9)), progress=False)
    result = write_report([run], tmp_path / "report", paper_reference="4b")
    table = rows_of(result["markdown"].split("\n\n")[0])
    assert table[0][1] == "AIME'25 Mean/Pass@64" and table[0][-3:] == ["Boxed Mean/Pass@2", "Boxed Token #N",
                                                                      "Boxed Think #R"]
    toy = next(row for row in table if row[0] == "toy")
    assert toy[1:10] == [""] * 9 and toy[10:] == ["33.3/33.3", "9", "100.0"]
    assert next(row for row in table if row[0] == "paper: MI-0.8")[10:] == ["", "", ""]


def test_bad_report_options_fail_clearly(tmp_path, tokenizer, fixtures):
    run = evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=1, max_new_tokens=8), out_dir=tmp_path / "r",
                   label="r", backend=Scripted(tokenizer, lambda c, i: ("</think>\\boxed{3}", 9)), progress=False)
    with pytest.raises(ValueError, match="no run is labelled 'Thinking'.*\\['r'\\]"):
        write_report([run], tmp_path / "report", thinking_run="Thinking")
    assert not (tmp_path / "report").exists()
    cli = [sys.executable, "-m", "mi_mergekit.cli", "report", str(run), "--out", str(tmp_path / "rep")]
    result = run_warm(cli + ["--thinking-run", "nope"], timeout=240)
    assert result.returncode == 1 and "no run is labelled 'nope'" in result.stderr and "Traceback" not in result.stderr
    result = run_warm(cli + ["--paper-reference", "7b"], timeout=240)
    assert result.returncode == 2 and "Invalid value for '--paper-reference'" in result.stderr
    result = run_warm(cli + ["--paper-reference", "4b"], timeout=240)
    assert result.returncode == 0 and "| paper: MI-0.55 | 67.6/90.0 | 11634 | 91.6 |" in result.stdout


def test_report_names_the_runs_its_lambda_plot_leaves_out(tmp_path, tokenizer, fixtures):
    """The endpoints evaluated from their own folders carry no λ unless eval is told it (--lambda 0 / 1);
    report says which runs its plot leaves out instead of dropping them silently."""
    runs = [evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=1, max_new_tokens=8), out_dir=tmp_path / label,
                     label=label, lambda_=lam, backend=Scripted(tokenizer, lambda c, i: ("</think>\\boxed{3}", 9)),
                     progress=False)
            for label, lam in (("mi_0.5", 0.5), ("Instruct", None), ("Thinking", None))]
    result = write_report(runs, tmp_path / "report")
    assert result["without_lambda"] == {"boxed": ["Instruct", "Thinking"]}
    cli = run_warm([sys.executable, "-m", "mi_mergekit.cli", "report", *map(str, runs), "--out",
                    str(tmp_path / "rep")], timeout=240)
    assert cli.returncode == 0
    assert ("note: lambda_boxed.png leaves out the runs without a λ: Instruct, Thinking (give eval --lambda: "
            "0 for the Instruct model, 1 for the Thinking model)") in cli.stderr
    assert write_report(runs[:1], tmp_path / "one")["without_lambda"] == {}


def test_frontier_labels_read_as_their_own_points():
    """The SmolLM2 triple's crowded start of the curve (λ 0–0.4 within a token of each other, at
    accuracies 2–4 points apart): every λ label ends nearer its own point than any other point,
    or is joined to its point by a line."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mi_mergekit.eval.frontier import place_labels

    points = [(8.9, 12.0), (8.9, 14.0), (8.9, 14.0 + 2.5), (8.9, 9.0), (9.0, 11.5), (13.6, 3.0), (39.7, 19.5),
              (50.6, 68.5), (58.3, 67.5), (76.2, 69.5)]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(*zip(*points), "o-")
    ax.margins(x=0.08, y=0.08)
    fig.tight_layout()
    place_labels(ax, points, [f"λ={i / 10:g}" for i in range(len(points))], avoid=points)
    renderer = fig.canvas.get_renderer()
    shown = [tuple(ax.transData.transform(p)) for p in points]
    labels = [t for t in ax.texts if t.get_text().startswith("λ=")]
    assert len(labels) == len(points)
    for index, label in enumerate(labels):
        box = label.get_window_extent(renderer)
        near = [math.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1)) for x, y in shown]
        joined = label.arrow_patch is not None
        assert joined or near[index] == min(near), (label.get_text(), near)
    plt.close(fig)
