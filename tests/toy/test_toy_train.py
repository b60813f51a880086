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
