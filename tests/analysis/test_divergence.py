"""mi-mergekit diverge on a constructed pair whose differences are known exactly."""

import json
import math
import re
import os
import sys
import weakref

import pytest
import torch
from safetensors.torch import save_file

from common import load_model
from warm import run_warm
from mergekit.io.lazy_tensor_loader import LazyTensorLoader
from mi_mergekit.analysis.divergence import divergence, tensor_sums
from synthetic import PairSpec, build_pair

MLP_FACTOR = 0.5  # Thinking layer-2 MLP projections = 0.5 × Instruct (exact in bf16)


@pytest.fixture(scope="module")
def known_pair(tmp_path_factory):
    """Thinking = Instruct except layer 2's mlp (× 0.5) and layer 0's q_proj (negated)."""
    root = tmp_path_factory.mktemp("diverge")
    instruct, _ = build_pair(str(root / "src"), PairSpec(num_layers=4, tie_word_embeddings=False))
    tensors = load_model(instruct)
    changed = {}
    for name, value in tensors.items():
        if name.startswith("model.layers.2.mlp.") and name.endswith("_proj.weight"):
            changed[name] = value * MLP_FACTOR
        elif name == "model.layers.0.self_attn.q_proj.weight":
            changed[name] = -value
    thinking = root / "thinking"
    thinking.mkdir()
    for fname in os.listdir(instruct):
        if not fname.endswith(".safetensors"):
            (thinking / fname).write_bytes((open(os.path.join(instruct, fname), "rb")).read())
    # split into two shards with an index, unlike Instruct's single file
    names = sorted(tensors)
    half = len(names) // 2
    out = {**tensors, **changed}
    save_file({n: out[n].contiguous() for n in names[:half]}, str(thinking / "model-00001-of-00002.safetensors"))
    save_file({n: out[n].contiguous() for n in names[half:]}, str(thinking / "model-00002-of-00002.safetensors"))
    (thinking / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {}, "weight_map": {n: f"model-0000{1 + (i >= half)}-of-00002.safetensors"
                                       for i, n in enumerate(names)}}))
    return instruct, str(thinking), tensors, changed


def test_known_differences(known_pair, monkeypatch):
    instruct, thinking, tensors, changed = known_pair
    live = []
    original = LazyTensorLoader.get_tensor

    def tracking(self, key, *args, **kwargs):
        alive = [r for r in live if r() is not None]
        assert len(alive) <= 1, "more than one tensor pair held at once"
        tensor = original(self, key, *args, **kwargs)
        live.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(LazyTensorLoader, "get_tensor", tracking)
    doc = divergence(instruct, thinking, chunk_elements=1000)
    assert doc["num_layers"] == 4 and len(doc["tensors"]) == len(tensors)

    per_tensor = {t["name"]: t for t in doc["tensors"]}
    for name, t in per_tensor.items():
        if name.startswith("model.layers.2.mlp."):
            assert t["relative_distance"] == pytest.approx(1 - MLP_FACTOR, abs=1e-12) and t["cosine"] == pytest.approx(1.0)
        elif name == "model.layers.0.self_attn.q_proj.weight":
            assert t["relative_distance"] == pytest.approx(2.0, abs=1e-12) and t["cosine"] == pytest.approx(-1.0)
        else:
            assert t["relative_distance"] == 0.0 and t["cosine"] == pytest.approx(1.0), name

    layers = {layer["layer"]: layer for layer in doc["layers"]}
    assert layers[2]["parts"]["mlp_proj"]["relative_distance"] == pytest.approx(0.5, abs=1e-12)
    assert layers[2]["parts"]["attn_proj"]["relative_distance"] == 0.0
    assert layers[2]["parts"]["post_attention_layernorm"]["relative_distance"] == 0.0
    assert layers[2]["groups"]["attention"]["relative_distance"] == 0.0
    for layer in (1, 3):
        assert all(v["relative_distance"] == 0.0 for v in layers[layer]["parts"].values())
        assert layers[layer]["groups"]["all"]["relative_distance"] == 0.0
    assert all(v["relative_distance"] == 0.0 for v in doc["non_layer"].values())
    assert set(doc["non_layer"]) == {"embed_tokens", "final_norm", "lm_head"}

    # aggregates are over all values of a cell (sums of squares), computed independently
    def sq(names):
        return sum(float((tensors[n].double() ** 2).sum()) for n in names)

    mlp2 = [n for n in tensors if n.startswith("model.layers.2.") and classify_group(n) == "mlp"]
    proj2 = [n for n in mlp2 if n.endswith("_proj.weight")]
    expected = math.sqrt((1 - MLP_FACTOR) ** 2 * sq(proj2) / sq(mlp2))
    assert layers[2]["groups"]["mlp"]["relative_distance"] == pytest.approx(expected, rel=1e-9)
    q0 = "model.layers.0.self_attn.q_proj.weight"
    total = math.sqrt(((1 - MLP_FACTOR) ** 2 * sq(proj2) + 4 * sq([q0])) / sq(tensors))
    assert doc["model"]["relative_distance"] == pytest.approx(total, rel=1e-9)
    assert doc["model"]["n_params"] == sum(t.numel() for t in tensors.values())


def classify_group(name):
    """The sub-layer of a Qwen3 layer tensor, written here (the MLP's input norm goes with it)."""
    inner = name.split(".", 3)[3]
    return "mlp" if inner.startswith(("mlp.", "post_attention_layernorm.")) else "attention"


def test_chunked_reduction_matches_whole_tensor():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 11, generator=g).to(torch.bfloat16)
    b = torch.randn(37, 11, generator=g).to(torch.bfloat16)
    whole, chunked = tensor_sums(a, b, chunk_elements=10 ** 9), tensor_sums(a, b, chunk_elements=5)
    for field in ("ii", "tt", "dd", "it"):
        assert getattr(chunked, field) == pytest.approx(getattr(whole, field), rel=1e-12)
    x, y = a.double(), b.double()
    assert whole.stats()["relative_distance"] == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-12)
    assert whole.stats()["cosine"] == pytest.approx(float((x * y).sum() / x.norm() / y.norm()), rel=1e-12)


def test_diverge_command_writes_json_and_png(known_pair, tmp_path):
    instruct, thinking, _, _ = known_pair
    result = run_warm([sys.executable, "-m", "mi_mergekit.cli", "diverge", instruct, thinking,
                  "--json", str(tmp_path / "d.json"), "--png", str(tmp_path / "d.png")])
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["layers"][2]["parts"]["mlp_proj"]["relative_distance"] == pytest.approx(0.5)
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layer  attention" in result.stdout


def test_mismatched_checkpoints_are_refused(known_pair, tmp_path):
    instruct, _, _, _ = known_pair
    other, _ = build_pair(str(tmp_path / "other"), PairSpec(num_layers=2))
    with pytest.raises(ValueError, match="same tensors"):
        divergence(instruct, other)


def test_device_options(known_pair, tmp_path):
    instruct, thinking, _, _ = known_pair
    base = [sys.executable, "-m", "mi_mergekit.cli", "diverge", instruct, thinking]
    default = run_warm(base + ["--json", str(tmp_path / "a.json")])
    on_cpu = run_warm(base + ["--device", "cpu", "--json", str(tmp_path / "b.json")])
    assert default.returncode == on_cpu.returncode == 0, on_cpu.stderr
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert a == b
    if not torch.cuda.is_available():
        refused = run_warm(base + ["--cuda"])
        assert refused.returncode == 1 and "CUDA is not available" in refused.stderr
    bad = run_warm(base + ["--device", "abacus"])
    assert bad.returncode == 1 and "unknown device 'abacus'" in bad.stderr


# --------------------------------------------------------------------------- Table 1's σ (Shadow-FT)


def shadow_ft_sigma(path_a, path_b):
    """The σ of Shadow-FT's weight_similarity.py (github.com/wutaiqiang/Shadow-FT), written out:
    per decoder-layer tensor sum|A-B| / (sum|A| + sum|B|) in float32 numpy, then np.mean."""
    import numpy as np

    a, b = load_model(path_a), load_model(path_b)
    values = []
    for key in a:
        if re.search(r"model\.layers\.(\d+)\.", key):
            x, y = a[key].float().numpy(), b[key].float().numpy()
            values.append(np.abs(x - y).sum() / (np.abs(x).sum() + np.abs(y).sum()))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def sigma_models(tmp_path_factory):
    """A: a tiny Qwen3 checkpoint. B: every decoder-layer tensor of A doubled (exact in bf16), and
    its embeddings / final norm changed too (σ must not see those). C: A with layer 0's q_proj negated."""
    root = tmp_path_factory.mktemp("sigma")
    a_dir, _ = build_pair(str(root / "src"), PairSpec(num_layers=3, tie_word_embeddings=False))
    tensors = load_model(a_dir)
    layer_names = [n for n in tensors if n.startswith("model.layers.")]
    q0 = "model.layers.0.self_attn.q_proj.weight"

    def write(name, changed):
        folder = root / name
        folder.mkdir()
        for fname in os.listdir(a_dir):
            if not fname.endswith(".safetensors"):
                (folder / fname).write_bytes(open(os.path.join(a_dir, fname), "rb").read())
        save_file({n: changed.get(n, t).contiguous() for n, t in tensors.items()}, str(folder / "model.safetensors"))
        return str(folder)

    b_dir = write("b", {**{n: tensors[n] * 2 for n in layer_names},
                        "model.embed_tokens.weight": -tensors["model.embed_tokens.weight"],
                        "model.norm.weight": tensors["model.norm.weight"] * 3})
    c_dir = write("c", {q0: -tensors[q0]})
    return a_dir, b_dir, c_dir, tensors, layer_names


def test_sigma_of_constructed_pairs_has_the_known_value(sigma_models):
    from mi_mergekit.analysis.divergence import sigma

    a, b, c, tensors, layer_names = sigma_models
    n = len(layer_names)
    doc = sigma([a, b, c])
    got = {(os.path.basename(p["a"]), os.path.basename(p["b"])): p for p in doc["pairs"]}
    assert list(got) == [(os.path.basename(a), "b"), (os.path.basename(a), "c"), ("b", "c")]  # every pair, in order
    # A vs 2A: |A - 2A| / (|A| + |2A|) = 1/3 for every tensor, whatever the embeddings do
    assert got[(os.path.basename(a), "b")]["sigma"] == pytest.approx(1 / 3, abs=1e-12)
    assert got[(os.path.basename(a), "b")]["n_tensors"] == n
    # A vs C: one tensor at σ = 2|A| / 2|A| = 1, the others 0 -> the plain mean 1/n (not size-weighted)
    assert got[(os.path.basename(a), "c")]["sigma"] == pytest.approx(1 / n, abs=1e-12)
    layer0 = got[(os.path.basename(a), "c")]["layers"][0]
    assert layer0["layer"] == 0 and layer0["sigma"] == pytest.approx(1 / layer0["n_tensors"], abs=1e-12)
    # 2A vs C: |2A + A| / (|2A| + |A|) = 1 for q_proj 0, |2A - A| / 3|A| = 1/3 elsewhere
    assert got[("b", "c")]["sigma"] == pytest.approx((1 + (n - 1) / 3) / n, abs=1e-12)
    q_share = tensors["model.layers.0.self_attn.q_proj.weight"].numel() / sum(tensors[x].numel() for x in layer_names)
    assert abs(got[(os.path.basename(a), "c")]["sigma"] - q_share) > 1e-3  # a pooled ratio would differ
    assert "Shadow-FT" in doc["definition"]


def test_sigma_matches_shadow_ft_on_a_random_pair(tmp_path):
    from mi_mergekit.analysis.divergence import sigma

    instruct, thinking = build_pair(str(tmp_path / "pair"), PairSpec(num_layers=2))
    (pair,) = sigma([instruct, thinking], chunk_elements=7)["pairs"]
    assert 0 < pair["sigma"] < 1
    assert pair["sigma"] == pytest.approx(shadow_ft_sigma(instruct, thinking), rel=1e-5)
    (swapped,) = sigma([thinking, instruct])["pairs"]
    assert swapped["sigma"] == pytest.approx(pair["sigma"], rel=1e-12)  # symmetric


def test_diverge_sigma_command(sigma_models, tmp_path):
    a, b, c, _, _ = sigma_models
    base = [sys.executable, "-m", "mi_mergekit.cli", "diverge", "--sigma"]
    result = run_warm(base + [a, b, c, "--json", str(tmp_path / "s.json")])
    assert result.returncode == 0, result.stderr
    assert "0.3333" in result.stdout and "Shadow-FT" in result.stdout
    doc = json.loads((tmp_path / "s.json").read_text())
    assert len(doc["pairs"]) == 3
    only = run_warm(base + ["--pair", b, c, "--json", str(tmp_path / "p.json")])
    assert only.returncode == 0, only.stderr
    (pair,) = json.loads((tmp_path / "p.json").read_text())["pairs"]
    assert (pair["a"], pair["b"]) == (b, c) and pair["sigma"] == pytest.approx(doc["pairs"][2]["sigma"])
    # bad input: one model, --png with --sigma, three models without --sigma, a different architecture
    assert run_warm(base + [a]).returncode == 2
    assert "heatmap" in run_warm(base + [a, b, "--png", str(tmp_path / "x.png")]).stderr
    plain = run_warm([sys.executable, "-m", "mi_mergekit.cli", "diverge", a, b, c])
    assert plain.returncode == 1 and "for σ of several pairs use --sigma" in plain.stderr
    other, _ = build_pair(str(tmp_path / "other"), PairSpec(num_layers=2))
    mismatch = run_warm(base + [a, other])
    assert mismatch.returncode == 1 and "same decoder-layer tensors" in mismatch.stderr
    assert "Traceback" not in mismatch.stderr
