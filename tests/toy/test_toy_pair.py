"""The shipped toy pair: loads with transformers, generates, and shows both ends of the curve.

Decoding: seeded sampling with the Thinking template and the Thinking
generation settings (temperature 0.6, top_p 0.95, top_k 20), as the paper
decodes merged models; the merge is plain torch Θ_I + λ(Θ_T − Θ_I) in float32.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mi_mergekit.toy import BASE_DIR, INSTRUCT_DIR, THINKING_DIR, curve, task
from mi_mergekit.toy.tokenizer import prompt_text

# the first 35 held-out problems (difficulties 2..8 in turn)
SMALL_SET = task.load_heldout()[:35]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def states():
    return curve.load_state(INSTRUCT_DIR), curve.load_state(THINKING_DIR)


@pytest.mark.parametrize("folder", [INSTRUCT_DIR, THINKING_DIR, BASE_DIR])
def test_folder_is_complete_and_small(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja"} <= names
    assert (folder / "model.safetensors").stat().st_size < 3_000_000
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["tie_word_embeddings"] is True


def test_generation_configs_are_the_papers():
    gi = json.loads((INSTRUCT_DIR / "generation_config.json").read_text())
    gt = json.loads((THINKING_DIR / "generation_config.json").read_text())
    assert (gt["temperature"], gt["top_p"], gt["top_k"]) == (0.6, 0.95, 20)
    assert (gi["temperature"], gi["top_p"], gi["top_k"]) == (0.7, 0.8, 20)


def test_chat_templates_and_shared_vocab():
    ti = AutoTokenizer.from_pretrained(INSTRUCT_DIR)
    tt = AutoTokenizer.from_pretrained(THINKING_DIR)
    assert ti.get_vocab() == tt.get_vocab()
    msgs = [{"role": "user", "content": "3+5+2="}]
    pi = ti.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    pt = tt.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert pi == "<|im_start|>user\n3+5+2=<|im_end|>\n<|im_start|>assistant\n" == prompt_text("3+5+2=", False)
    assert pt == pi + "<think>\n" == prompt_text("3+5+2=", True)
    for t in ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>"):
        assert len(tt(t, add_special_tokens=False)["input_ids"]) == 1
    assert tt.eos_token == "<|im_end|>"


def test_thinking_model_generates_with_hf_generate():
    tok = AutoTokenizer.from_pretrained(THINKING_DIR)
    model = AutoModelForCausalLM.from_pretrained(THINKING_DIR)
    msgs = [{"role": "user", "content": "3+5+2="}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(enc["input_ids"][0]).endswith("<|im_start|>assistant\n<think>\n")
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=64)  # uses the shipped generation_config (sampling)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.startswith("3+5=8\n") and "</think>" in text and task.is_correct(text, "10"), text


def test_instruct_model_answers_directly():
    tok = AutoTokenizer.from_pretrained(INSTRUCT_DIR)
    model = AutoModelForCausalLM.from_pretrained(INSTRUCT_DIR)
    msgs = [{"role": "user", "content": "3+5="}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=32)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.startswith("\\boxed{") and "</think>" not in text and task.is_correct(text, "8"), text


_CACHE: dict = {}


def _scores(states, lam):
    if lam in _CACHE:
        return _CACHE[lam]
    s_i, s_t = states
    model = curve.load_model(THINKING_DIR, curve.interpolate(s_i, s_t, lam))
    outputs = curve.generate(model, AutoTokenizer.from_pretrained(THINKING_DIR),
                             [r["question"] for r in SMALL_SET], seed=0)
    _CACHE[lam] = curve.score(SMALL_SET, outputs)
    return _CACHE[lam]


def test_lambda_0_does_not_think(states):
    s = _scores(states, 0.0)
    assert s["think_pct"] <= 5.0, s


def test_lambda_1_thinks_and_is_more_accurate(states):
    s0, s1 = _scores(states, 0.0), _scores(states, 1.0)
    assert s1["think_pct"] >= 95.0, s1
    assert s1["mean_tokens"] > 3 * s0["mean_tokens"], (s0, s1)
    assert s1["accuracy_pct"] > s0["accuracy_pct"] + 20, (s0, s1)
