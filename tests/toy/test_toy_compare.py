"""`mi-mergekit compare` end to end on the shipped toy triple (instruct/, thinking/, base/): the paper's
Table 2 rows merged with the real mergekit-yaml, evaluated, reported; a killed run resumed."""

import csv
import json
import os
import shutil

import pytest
import torch
import yaml

from common import console, load_model
from warm import run_warm
from mi_mergekit.errors import MiMergekitError
from mi_mergekit.merge.baselines import baseline_recipe
from mi_mergekit.toy import BASE_DIR, HELDOUT_PATH, INSTRUCT_DIR, THINKING_DIR

ROWS = {"instruct", "thinking", "ta", "ties", "mi_0.5"}


def compare(out, dataset):
    return run_warm([console("mi-mergekit"), "compare", "--instruct", str(INSTRUCT_DIR), "--thinking", str(THINKING_DIR),
                "--base", str(BASE_DIR), "--lambdas", "0.5", "--dataset", str(dataset), "-n", "1",
                "--max-new-tokens", "80", "--out", str(out), "--no-progress"])


def samples(out, row):
    return (out / "runs" / row / "samples.jsonl").read_text().splitlines()


def test_compare_the_toy_triple_and_resume_a_killed_run(tmp_path):
    dataset = tmp_path / "six.jsonl"
    dataset.write_text("".join(HELDOUT_PATH.read_text().splitlines(keepends=True)[:6]))
    out = tmp_path / "cmp"
    first = compare(out, dataset)
    assert first.returncode == 0, first.stderr[-3000:]

    # the baselines: the paper's settings, stock mergekit, decoded with the Thinking template
    template = (THINKING_DIR / "chat_template.jinja").read_text()
    for method in ("ta", "ties"):
        recipe = yaml.safe_load((out / "recipes" / f"{method}.yaml").read_text())
        assert recipe == baseline_recipe(method, str(BASE_DIR.resolve()), str(INSTRUCT_DIR.resolve()),
                                         str(THINKING_DIR.resolve()), out_dtype=None, chat_template=template)
        assert (out / "models" / method / "chat_template.jinja").read_text() == template
    base, instruct, thinking = (load_model(str(d)) for d in (BASE_DIR, INSTRUCT_DIR, THINKING_DIR))
    ta = load_model(str(out / "models" / "ta"))
    for name, b in base.items():
        b = b.float()
        expected = b + 0.7 * (instruct[name].float() - b) + 0.7 * (thinking[name].float() - b)
        torch.testing.assert_close(ta[name], expected, rtol=1e-6, atol=1e-7)

    # every row evaluated on the same questions; Instruct with its own decoding, the rest with Thinking's
    assert {p.name for p in (out / "runs").iterdir()} == ROWS
    for row in ROWS:
        config = json.loads((out / "runs" / row / "run.json").read_text())
        assert config["decoding"]["name"] == ("instruct" if row == "instruct" else "thinking"), row
        assert len(samples(out, row)) == 6
    assert json.loads((out / "runs" / "thinking" / "metrics.json").read_text())["lambda"] == 1.0
    assert json.loads((out / "runs" / "ta" / "metrics.json").read_text())["lambda"] is None

    # the report: the Table 2 layout and the frontier with the baselines as points
    report = out / "report"
    with (report / "comparison.csv").open() as handle:
        table = {row["Method"]: row for row in csv.DictReader(handle)}
    assert list(table) == ["Instruct", "Thinking", "TA", "TIES", "MI-0.5"]
    assert table["Thinking"]["Tokens vs Thinking (%)"] == "100.0" and table["Thinking"]["Δ vs Thinking (paired)"] == ""
    assert table["MI-0.5"]["λ"] == "0.5" and table["TA"]["Δ vs Thinking (paired)"]
    assert "The baselines against the MI curve at equal tokens" in (report / "comparison.md").read_text()
    with (report / "frontier.csv").open() as handle:
        kinds = {row["Run"]: row["Kind"] for row in csv.DictReader(handle)}
    assert kinds == {"ta": "baseline", "ties": "baseline", "mi_0.5": "static", "thinking": "static"}
    for name in ("report.md", "frontier.png", "lambda_boxed.png", "paper_table.csv"):
        assert (report / name).stat().st_size > 0, name
    assert "| TIES |" in first.stdout
    # the same frontier from `report` over the run folders (runs evaluated by hand, say)
    again = run_warm([console("mi-mergekit"), "report", *sorted(map(str, (out / "runs").iterdir())), "--baseline", "ta",
                 "--baseline", "ties", "--out", str(tmp_path / "report")])
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "report" / "frontier.csv").read_text() == (report / "frontier.csv").read_text()

    # killed: mid-evaluation of mi_0.5 (2 of 6 samples stored, not graded) and mid-merge of ties
    # (a staging folder, no model, no run); the same command again finishes both and redoes nothing else
    kept = {row: samples(out, row) for row in ROWS}
    run_dir = out / "runs" / "mi_0.5"
    (run_dir / "samples.jsonl").write_text("\n".join(kept["mi_0.5"][:2]) + "\n")
    for name in ("metrics.json", "grades.jsonl", "questions.json", "demo.json"):
        (run_dir / name).unlink()
    shutil.rmtree(out / "runs" / "ties")
    shutil.rmtree(out / "models" / "ties")
    os.makedirs(out / "models" / ".ties.partial")
    (out / "models" / ".ties.partial" / "model.safetensors").write_bytes(b"half")
    mtime = (out / "models" / "ta" / "model.safetensors").stat().st_mtime_ns
    second = compare(out, dataset)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already evaluated with these settings" in second.stderr
    assert not (out / "models" / ".ties.partial").exists()
    assert (out / "models" / "ta" / "model.safetensors").stat().st_mtime_ns == mtime  # not merged again
    assert {row: samples(out, row) for row in ROWS} == kept  # seeded: the resumed samples are the same draws


def test_compare_refuses_baselines_without_an_ancestor(tmp_path):
    result = run_warm([console("mi-mergekit"), "compare", "--instruct", str(INSTRUCT_DIR), "--thinking", str(THINKING_DIR),
                  "--dataset", str(HELDOUT_PATH), "--out", str(tmp_path / "cmp")])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: TA and TIES need the common ancestor")
    assert not (tmp_path / "cmp" / "runs").exists()


def test_compare_refuses_one_served_model_for_every_row(tmp_path):
    result = run_warm([console("mi-mergekit"), "compare", "--instruct", str(INSTRUCT_DIR), "--thinking", str(THINKING_DIR),
                  "--base", str(BASE_DIR), "--dataset", str(HELDOUT_PATH), "--backend", "openai",
                  "--base-url", "http://127.0.0.1:9/v1", "--served-model", "one", "--out", str(tmp_path / "cmp")])
    assert result.returncode == 2 and "ROW=NAME" in result.stderr
    assert not (tmp_path / "cmp").exists()


def test_a_pretrained_ancestor_adds_the_base_rows():
    """--pretrained: TA-Base and TIES-Base, the paper's "-Base" rows, merged on that ancestor."""
    from mi_mergekit.compare_merges import recipe_of
    from mi_mergekit.compare_rows import Triple, baseline_rows
    from mi_mergekit.eval.comparison import method_title

    rows = baseline_rows(Triple("i", "t", base="hybrid", pretrained="pre"))
    assert [(r.name, r.baseline, r.ancestor) for r in rows] == [
        ("ta", "ta", "hybrid"), ("ties", "ties", "hybrid"), ("ta_base", "ta", "pre"), ("ties_base", "ties", "pre")]
    assert [method_title(r.name) for r in rows] == ["TA", "TIES", "TA-Base", "TIES-Base"]
    assert recipe_of(rows[3], Triple("i", "t", "hybrid", "pre"))["base_model"] == "pre"
    assert baseline_rows(Triple("i", "t")) == []


def test_mi_rows_are_written_by_the_recipe_generator():
    """The demo's and compare's MI recipes are ``Recipe.render``'s text (one recipe writer): the
    formula, window and module lines as ``mi-mergekit recipes`` writes them, parsed by mergekit."""
    from decimal import Decimal

    from mergekit.config import MergeConfiguration

    from mi_mergekit.compare_merges import recipe_text
    from mi_mergekit.compare_rows import Row, Triple, mi_rows
    from mi_mergekit.merge.recipes import ModelPair, Recipe

    triple = Triple("/pair/instruct", "/pair/thinking")
    rows = {r.name: r for r in mi_rows([0.8], [("last2of3", 10, 29)], ["nomlp"])}
    pair = ModelPair(None, triple.instruct, triple.thinking, None, "", f"{triple.instruct} + {triple.thinking}")
    expected = {"mi_0.8": Recipe(Decimal("0.8"), pair, dtype="float32"),
                "mi_0.8_last2of3": Recipe(Decimal("0.8"), pair, window=(10, 29), dtype="float32"),
                "mi_0.8_nomlp": Recipe(Decimal("0.8"), pair, exclude_modules="mlp", dtype="float32")}
    for name, recipe in expected.items():
        text = recipe_text(rows[name], triple)
        body = [line for line in text.splitlines() if not line.startswith("#")]
        assert body == [line for line in recipe.render().splitlines() if not line.startswith("#")], name
        assert f"# Row {name} of mi-mergekit's comparison" in text
        config = MergeConfiguration.model_validate(yaml.safe_load(text))
        assert config.merge_method == "model_interpolation" and config.dtype == "float32"
    with pytest.raises(MiMergekitError, match="no recipe form"):
        recipe_text(Row("odd", "odd", 0.5, {"weight": 1}), triple)
