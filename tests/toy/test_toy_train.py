"""The training script runs end to end in a tiny configuration (so it cannot rot)."""

import json
import subprocess
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_train_tiny_end_to_end(tmp_path):
    out = tmp_path / "pair"
    result = subprocess.run(
        [sys.executable, "-m", "mi_mergekit.cli", "toy", "train", "--out", str(out), "--tiny", "--steps", "5",
         "--eval-n", "4", "--eval-lambdas", "0,1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| λ | Think #R %" in result.stdout
    for name in ("base", "instruct", "thinking"):
        folder = out / name
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert model.config.model_type == "qwen3" and model.config.tie_word_embeddings
        assert len(tok) == model.config.vocab_size
    assert "<think>" in (out / "thinking" / "chat_template.jinja").read_text()
    assert "<think>" not in (out / "instruct" / "chat_template.jinja").read_text()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["config"]["base_steps"] == 5 and [r["lambda"] for r in summary["curve"]] == [0.0, 1.0]
    assert set(summary["checksums"]) == {"base", "instruct", "thinking"} and "matches_shipped" not in summary
    assert "pair written to" in result.stdout and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_retrain_is_compared_with_the_shipped_checksums(tmp_path, capsys):
    """What `toy train` compares a default retrain with is the shipped pair itself: its own checksums
    match, and one changed tensor is reported as a difference of that side only."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from mi_mergekit.toy import PAIR_DIR
    from mi_mergekit.toy.train import TrainConfig, compare_with_shipped

    assert compare_with_shipped(PAIR_DIR, TrainConfig())["matches_shipped"] == {
        "base": True, "instruct": True, "thinking": True}
    copy = tmp_path / "pair"
    shutil.copytree(PAIR_DIR, copy)
    weights = copy / "thinking" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + torch.finfo(tensors[name].dtype).eps
    save_file(tensors, weights, metadata={"format": "pt"})
    assert compare_with_shipped(copy, TrainConfig())["matches_shipped"] == {
        "base": True, "instruct": True, "thinking": False}
    assert "differ from the shipped pair (thinking" in capsys.readouterr().out
