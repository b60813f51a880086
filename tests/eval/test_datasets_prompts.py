"""Dataset loading (JSONL / CSV / Parquet, columns, errors), prompts, decoding presets, the sample store."""

from __future__ import annotations

import json

import pytest

from mi_mergekit.eval.datasets import DatasetError, load_examples
from mi_mergekit.eval.decoding import PRESETS, chunk_seed, resolve_decoding
from mi_mergekit.eval.prompts import AIME_SUFFIX, build_message, prompt_record
from mi_mergekit.eval.store import SampleStore


def test_aime_jsonl_and_prompt(fixtures):
    from tiny_model import build_tokenizer

    examples = load_examples(str(fixtures / "aime_sample.jsonl"), "aime25")
    assert [e.id for e in examples] == ["2025-I-1", "2025-I-2"] and examples[1].answer == "204"
    record = prompt_record("aime25", examples[1], build_tokenizer())
    user = record["messages"][-1]["content"]
    assert user == "Compute 17 times 12.\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert user.endswith(AIME_SUFFIX)
    # the model's own (Thinking) chat template: the prompt ends inside an open think block
    assert record["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert record["prompt_opens_think"] is True


def test_instruct_template_does_not_open_think(fixtures):
    from tiny_model import INSTRUCT_TEMPLATE, build_tokenizer

    example = load_examples(str(fixtures / "boxed.jsonl"), "boxed")[0]
    record = prompt_record("boxed", example, build_tokenizer(INSTRUCT_TEMPLATE))
    assert record["prompt_opens_think"] is False
    assert record["messages"][-1]["content"] == example.question  # verbatim


def test_gpqa_csv_shuffle_is_seeded_and_recorded(fixtures):
    examples = load_examples(str(fixtures / "gpqa_sample.csv"), "gpqa")
    assert [e.id for e in examples] == ["rec1", "rec2"]
    records = {seed: [prompt_record("gpqa", e, None, shuffle_seed=seed) for e in examples] for seed in (0, 0, 1, 2, 3)}
    for seed, recs in records.items():
        for example, record in zip(examples, recs):
            data = record["grader_data"]
            assert sorted(data["options"]) == sorted(example.grader_data["options"])
            gold_index = "ABCD".index(record["answer"])
            assert data["options"][gold_index] == example.grader_data["options"][0]  # the correct answer
            text = record["messages"][-1]["content"]
            assert f"{record['answer']}) {example.grader_data['options'][0]}" in text
            assert "'ANSWER: $LETTER'" in text and data["shuffle_seed"] == seed
    again = [prompt_record("gpqa", e, None, shuffle_seed=0) for e in examples]
    assert again == records[0]
    assert len({tuple(tuple(r["grader_data"]["permutation"]) for r in recs) for recs in records.values()}) > 1


def test_parquet_and_csv_json_columns(tmp_path, fixtures):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (fixtures / "ifeval_sample.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ifeval.parquet")
    from_parquet = load_examples(str(tmp_path / "ifeval.parquet"), "ifeval")
    from_jsonl = load_examples(str(fixtures / "ifeval_sample.jsonl"), "ifeval")
    assert [e.grader_data for e in from_parquet] == [e.grader_data for e in from_jsonl]
    assert from_jsonl[1].grader_data["kwargs"] == [{}]  # None-valued kwargs dropped, as lm-eval does
    csv_path = tmp_path / "ifeval.csv"
    csv_path.write_text(
        'key,prompt,instruction_id_list,kwargs\n7,Say hi,"[""punctuation:no_comma""]","[{}]"\n', encoding="utf-8"
    )
    (example,) = load_examples(str(csv_path), "ifeval")
    assert example.id == "7" and example.grader_data["instruction_id_list"] == ["punctuation:no_comma"]


def test_column_overrides_and_errors(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps({"qid": "a", "text": "1+1?", "gold": "2"}) + "\n", encoding="utf-8")
    (example,) = load_examples(str(path), "boxed", columns={"id": "qid", "question": "text", "answer": "gold"})
    assert (example.id, example.question, example.answer) == ("a", "1+1?", "2")
    with pytest.raises(DatasetError, match=r"no 'question' column.*columns are \['gold', 'qid', 'text'\]"):
        load_examples(str(path), "boxed")
    with pytest.raises(DatasetError, match="column 'nope' .*not in the dataset"):
        load_examples(str(path), "boxed", columns={"question": "nope", "answer": "gold"})
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_examples(str(tmp_path / "missing.jsonl"), "boxed")
    with pytest.raises(DatasetError, match="use a .jsonl, .csv or .parquet"):
        load_examples(str(tmp_path / "data.txt"), "boxed")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="bad.jsonl:2: not valid JSON"):
        load_examples(str(bad), "boxed")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "prompt": "a", "answer": "1"}\n{"id": 1, "prompt": "b", "answer": "2"}\n')
    with pytest.raises(DatasetError, match="duplicate ids"):
        load_examples(str(dup), "boxed")


def test_decoding_presets_and_overrides():
    assert PRESETS["thinking"].to_dict() == {"name": "thinking", "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": None}
    assert PRESETS["instruct"].to_dict() == {"name": "instruct", "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": None}
    assert resolve_decoding("thinking", temperature=0.6) == PRESETS["thinking"]  # same value: still the preset
    custom = resolve_decoding("instruct", temperature=1.0)
    assert custom.name == "custom" and custom.temperature == 1.0 and custom.top_p == 0.8
    assert resolve_decoding("custom", temperature=0.3, top_k=5).top_k == 5
    for kwargs in (dict(preset="hot"), dict(preset="custom"), dict(preset="thinking", top_p=1.5)):
        with pytest.raises(ValueError):
            resolve_decoding(**kwargs)


def test_chunk_seed_is_stable_and_distinct():
    assert chunk_seed(0, "q1", 0) == chunk_seed(0, "q1", 0)
    seeds = {chunk_seed(s, q, i) for s in (0, 1) for q in ("q1", "q2") for i in (0, 8)}
    assert len(seeds) == 8 and all(0 <= s < 2**31 - 1 for s in seeds)


def test_store_is_append_only_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    store = SampleStore(path)
    rec = lambda q, i, t: {"question_id": q, "sample_index": i, "text": t}  # noqa: E731
    assert store.append([rec("a", 0, "x"), rec("a", 1, "y")]) == 2
    assert store.append([rec("a", 1, "changed"), rec("b", 0, "z")]) == 1  # first record wins
    with path.open("a") as handle:
        handle.write('{"question_id": "b", "sample_ind')  # killed mid-write
    reopened = SampleStore(path)
    assert len(reopened) == 3 and ("b", 0) in reopened and reopened.get("a", 1)["text"] == "y"
    reopened.append([rec("b", 1, "w")])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["question_id"], r["sample_index"]) for r in lines] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_gpqa_paper_prompts_are_opencompass_byte_for_byte(fixtures):
    # rows written to hold what GPQA-Diamond holds (stray whitespace in 47 of 198 rows, {B} in LaTeX
    # in 3): OpenCompass's own loader and template are the oracle (tests/eval/opencompass_gpqa.py)
    import opencompass_gpqa

    path = fixtures / "gpqa_opencompass.csv"
    ours = [build_message("gpqa", e, gpqa_options="rotate")[:2] for e in load_examples(str(path), "gpqa")]
    assert ours == opencompass_gpqa.prompts(str(path))
    # row 2 takes pattern CDAB: B shows incorrect 3 ("\tB/2"), A incorrect 2 ("2mB "); "{C\\}" is no placeholder
    assert "A field $\\vec\tB/2$ along Oz acts on $\\vec2mB $; what is $\\{C\\}$?" in ours[1][0]
    assert ours[0][0].endswith("D) 10^-4 eV") and "resolves both levels?\n\n\nA) 10^-11 eV" in ours[0][0]
