"""recipes/: schema, what each name promises (per tensor, on stand-ins with the real layer
counts), end-to-end merges of one recipe per family, the index table, and the generator."""

import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

from common import load_model, oracle
from common import console
from warm import run_warm
from recipes_fixtures import (  # noqa: F401  (session fixtures)
    BASELINES,
    NAMES_4B,
    NAMES_30B,
    RECIPES,
    ROOT,
    depth_of,
    is_attention,
    is_mlp,
    load,
    run_recipe,
    standins,
    standins_4b,
    standins_30b,
    substitutions,
    yaml_files,
)

from mi_mergekit.cli.recipes import recipes_command
from mi_mergekit.merge.lambdas import format_lambda, parse_lambdas

ALL_RECIPES = yaml_files(RECIPES)

# The windows the paper uses, written out (0-based, inclusive), per layer count.
WINDOWS = {
    36: {"first1of3": (0, 11), "mid1of3": (12, 23), "last1of3": (24, 35),
         "first2of3": (0, 23), "last2of3": (12, 35)},
    48: {"first1of3": (0, 15), "mid1of3": (16, 31), "last1of3": (32, 47),
         "first2of3": (0, 31), "last2of3": (16, 47)},
}
NAME = re.compile(
    r"^mi_(?P<lam>\d+\.\d+)"
    r"(?:_(?P<window>first1of3|mid1of3|last1of3|first2of3|last2of3))?"
    r"(?:_no(?P<exclude>mlp|attention))?"
    r"(?:_(?P<model>30b|mix|base))?\.yaml$"
)
# the λ=0 end of each model suffix (Table 4: "Mix" = the hybrid Qwen3-4B, "Base" = Qwen3-4B-Base)
PAIRS = {
    None: NAMES_4B,
    "30b": NAMES_30B,
    "mix": {"instruct": NAMES_4B["hybrid"], "thinking": NAMES_4B["thinking"]},
    "base": {"instruct": NAMES_4B["base"], "thinking": NAMES_4B["thinking"]},
}


def expected(name: str):
    """What a recipe's file name promises: (pair names, layers, λ, window, excluded group)."""
    match = NAME.match(name)
    assert match, f"{name} does not follow mi_<λ>[_<window>][_no<group>][_30b|_mix|_base].yaml"
    layers = 48 if match["model"] == "30b" else 36
    window = WINDOWS[layers][match["window"]] if match["window"] else (0, layers - 1)
    return PAIRS[match["model"]], layers, float(match["lam"]), window, match["exclude"]


def should_interpolate(tensor: str, layers: int, window, exclude) -> bool:
    if not window[0] <= depth_of(tensor, layers) <= window[1]:
        return False
    if exclude == "mlp":
        return not is_mlp(tensor)
    if exclude == "attention":
        return not is_attention(tensor)
    return True


# --------------------------------------------------------------------------- inventory


def test_required_configurations_exist():
    from mi_mergekit.eval.paper import TABLE_2, TABLE_5

    # every MI row of the paper's Table 2 (4B) and Table 5 (30B-A3B)
    table_2 = [m[3:] for m in TABLE_2 if m.startswith("MI-")]
    table_5 = [m[3:] for m in TABLE_5 if m.startswith("MI-")]
    assert table_2 == ["0.2", "0.4", "0.45", "0.5", "0.55", "0.6", "0.8"]
    assert table_5 == ["0.2", "0.4", "0.45", "0.5", "0.55", "0.6", "0.8", "0.9", "0.95"]
    required = (
        [f"mi_{lam}.yaml" for lam in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")]
        + [f"mi_{lam}.yaml" for lam in table_2]
        + [f"mi_0.8_{w}.yaml" for w in WINDOWS[36]]  # Table 3
        + ["mi_0.8_nomlp.yaml", "mi_0.8_noattention.yaml"]  # Figure 5
        + ["mi_0.8_mix.yaml", "mi_0.8_base.yaml"]  # Table 4
        + [f"mi_{lam}_30b.yaml" for lam in table_5]
        + [f"mi_0.8_{w}_30b.yaml" for w in WINDOWS[48]]
        + ["mi_0.8_nomlp_30b.yaml", "mi_0.8_noattention_30b.yaml"]
    )
    assert "mi_0.8_last2of3.yaml" in ALL_RECIPES
    assert sorted(set(required) - set(ALL_RECIPES)) == []
    # flat: one YAML per configuration, plus the index and the families list
    assert sorted(n for n in os.listdir(RECIPES) if not n.endswith(".yaml")) == ["README.md", "families.txt"]
    assert all(NAME.match(n) for n in ALL_RECIPES)


@pytest.mark.parametrize("folder", [RECIPES, BASELINES])
def test_every_yaml_validates_against_mergekit_schema(folder):
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import registry

    import mi_mergekit

    mi_mergekit.register()
    files = yaml_files(folder)
    assert files
    for name in files:
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            config = MergeConfiguration.model_validate(yaml.safe_load(handle))
        registry.get(config.merge_method)  # a method mergekit knows (raises otherwise)


def test_recipes_use_bf16_and_the_documented_models():
    for name in ALL_RECIPES:
        names, _, lam, _, _ = expected(name)
        with open(os.path.join(RECIPES, name), encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        assert data["merge_method"] == "model_interpolation"
        assert data["dtype"] == "bfloat16", name
        assert data["base_model"] == names["instruct"], name
        assert data["models"] == [{"model": names["thinking"]}], name
        assert data["parameters"]["lambda"] == lam and isinstance(data["parameters"]["lambda"], float)


# --------------------------------------------------------------------------- plans


@pytest.mark.parametrize("name", ALL_RECIPES)
def test_plan_matches_name(name, standins):
    """Resolve each recipe on stand-ins (36 / 48 layers) and check every tensor's λ."""
    from mi_mergekit.merge.plan import build_plan

    _, layers, lam, window, exclude = expected(name)
    plan, _ = build_plan(load(os.path.join(RECIPES, name), standins))
    assert plan.num_layers == layers
    assert plan.warnings == []
    seen_layers = set()
    for tensor in plan.tensors:
        want = should_interpolate(tensor.name, layers, window, exclude)
        assert tensor.computed == want, (name, tensor.name)
        assert tensor.value == (lam if want else 0.0), (name, tensor.name)
        seen_layers.add(tensor.layer)
    assert seen_layers - {None} == set(range(layers))
    if layers == 48:
        assert any(t.part == "experts" for t in plan.tensors)  # MoE stand-in


def test_last2of3_is_exactly_layers_12_to_35(standins_4b):
    from mi_mergekit.merge.plan import build_plan

    plan, _ = build_plan(load(os.path.join(RECIPES, "mi_0.8_last2of3.yaml"), standins_4b))
    merged = {t.layer for t in plan.tensors if t.computed}
    kept = {t.layer for t in plan.tensors if not t.computed}
    assert merged == set(range(12, 36)) | {None}  # final norm sits at the last layer
    assert kept == set(range(0, 12)) | {None}  # (tied) embeddings sit at layer 0
    for tensor in plan.tensors:
        if tensor.layer is not None and tensor.layer < 12:
            assert tensor.value == 0.0 and not tensor.computed, tensor.name
        if tensor.layer is not None and tensor.layer >= 12:
            assert tensor.value == 0.8, tensor.name


def test_attention_only_keeps_every_mlp_tensor_at_instruct(standins):
    from mi_mergekit.merge.plan import build_plan

    for name in ("mi_0.8_nomlp.yaml", "mi_0.8_nomlp_30b.yaml"):
        plan, _ = build_plan(load(os.path.join(RECIPES, name), standins))
        mlp = [t for t in plan.tensors if is_mlp(t.name)]
        attention = [t for t in plan.tensors if is_attention(t.name)]
        assert mlp and attention
        assert all(t.value == 0.0 for t in mlp), name
        assert all(t.value == 0.8 for t in attention), name


# --------------------------------------------------------------------------- merges

# One recipe per family and model: sweep, window, module ablation.
END_TO_END = [
    "mi_0.5.yaml",
    "mi_0.8_nomlp.yaml",
    "mi_0.65_30b.yaml",
    "mi_0.8_first1of3_30b.yaml",
    "mi_0.8_noattention_30b.yaml",
    "mi_0.8_mix.yaml",
]


def check_output(name: str, out, standins) -> None:
    names, layers, lam, window, exclude = expected(name)
    instruct, thinking = load_model(standins[names["instruct"]]), load_model(standins[names["thinking"]])
    assert sorted(out) == sorted(instruct)
    changed = 0
    for tensor, value in out.items():
        assert value.dtype == torch.bfloat16, tensor
        if should_interpolate(tensor, layers, window, exclude):
            want = oracle(instruct[tensor], thinking[tensor], lam).to(torch.bfloat16)
            changed += 1
        else:
            want = instruct[tensor]  # bit for bit the Instruct tensor
        assert torch.equal(value, want), (name, tensor)
    assert changed > 0


@pytest.mark.parametrize("name", END_TO_END)
def test_recipe_runs_end_to_end_with_run_merge(name, standins, tmp_path):
    out = run_recipe(os.path.join(RECIPES, name), standins, str(tmp_path / "out"))
    check_output(name, out, standins)


def test_mi_mergekit_merge_runs_the_headline_recipe_with_local_models(standins_4b, tmp_path):
    """As documented in recipes/README.md: the recipe unchanged, models pointed at local copies."""
    path = os.path.join(RECIPES, "mi_0.8_last2of3.yaml")
    args = []
    for item in substitutions(path, standins_4b):
        args += ["--model", item]
    out = tmp_path / "out"
    result = run_warm([console("mi-mergekit"), "merge", path, str(out), *args])
    assert result.returncode == 0, result.stderr
    check_output("mi_0.8_last2of3.yaml", load_model(str(out)), standins_4b)
    assert "<think>" in (out / "chat_template.jinja").read_text()


# --------------------------------------------------------------------------- index


def index_files(readme: str):
    with open(readme, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    rows = [line for line in lines if line.startswith("| [`")]
    files = [re.match(r"\| \[`([^`]+)`\]\(([^)]+)\)", row).groups() for row in rows]
    assert all(a == b for a, b in files), "link target differs from the file name"
    return [a for a, _ in files], rows


@pytest.mark.parametrize("folder", [RECIPES, BASELINES])
def test_index_lists_exactly_the_files_that_exist(folder):
    listed, _ = index_files(os.path.join(folder, "README.md"))
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == yaml_files(folder)


def paper_cells(name: str):
    """The AIME'25 cells (Mean@64, Pass@64, tokens, Think %) the index must show for a recipe,
    looked up in the paper's tables (mi_mergekit/eval/paper.py); '–' where the paper has none."""
    from mi_mergekit.eval import paper

    match = NAME.match(name)
    lam, window, exclude, model = match["lam"], match["window"], match["exclude"], match["model"]
    if model in ("mix", "base"):
        column = paper.TABLE_4_COLUMNS.index(model.capitalize())
        return [paper.TABLE_4[("aime25", m)][column] for m in ("Mean@64", "Pass@64", "Token #N", "Think #R")]
    if window or exclude:
        if model == "30b":
            return ["–"] * 4  # extensions: the paper ablates the 4B model only
        if window:
            values = paper.TABLE_3["[{}, {}]".format(*WINDOWS[36][window])]
            return [values[0], values[3], values[5], values[6]]
        values = paper.FIGURE_5["MI-0.8 w/o FFN" if exclude == "mlp" else "MI-0.8 w/o Attn"]
        return [values[0], values[1], f"{values[4]}% of Thinking's", values[3]]
    table = paper.TABLE_5 if model == "30b" else paper.TABLE_2
    row = table.get(f"MI-{lam}")
    return list(row["aime25"]) if row else ["–"] * 4


def test_index_carries_the_papers_numbers():
    """Mean@64 / Pass@64 / tokens / Think % of every row as the paper prints them."""
    listed, rows = index_files(os.path.join(RECIPES, "README.md"))
    with_numbers = 0
    for name, row in zip(listed, rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 7, row
        assert cells[3:] == paper_cells(name), name
        with_numbers += cells[3] != "–"
        # the "Paper row" column says whether it is the paper's or ours
        assert cells[2].startswith("paper: " if cells[3] != "–" else "extension: "), name
    assert with_numbers == 7 + 5 + 2 + 2 + 9  # Table 2, Table 3, Figure 5, Table 4, Table 5
    mi_08 = rows[listed.index("mi_0.8.yaml")]
    assert "80.5 | 93.3 | 17574 | 99.9" in mi_08 and "80.47 / 93.30 / 17574 / 99.95" in mi_08  # Table 3 [0,35]
    assert "| 71.46 | 90.00 | 59.21% of Thinking's | 99.90 |" in rows[listed.index("mi_0.8_noattention.yaml")]
    assert "| 75.31 | 96.67 | 12650 | 48.1 |" in rows[listed.index("mi_0.6_30b.yaml")]


def block(path: str) -> str:
    text = open(path, encoding="utf-8").read()
    start = text.index("<!-- paper-numbers:start")
    return text[text.index("-->", start) + 4:text.index("<!-- paper-numbers:end -->")]


def test_readmes_carry_every_number_of_the_paper():
    from mi_mergekit.eval import paper

    assert block(os.path.join(RECIPES, "README.md")) == paper.all_markdown()
    baselines = block(os.path.join(BASELINES, "README.md"))
    methods = ["Instruct", "Thinking", "TA", "TA-Base", "TIES", "TIES-Base", "MI-0.8"]
    assert paper.main_table_markdown(paper.TABLE_2, methods) in baselines
    assert paper.main_table_markdown(paper.TABLE_5, methods) in baselines
    # spot checks against the PDF, independent of paper.py's tables
    for text in ("| MI-0.2 | 52.2/86.7 | 16794 | 0.0 |", "| [12, 23] | 54.69 | 78.05 | 85.53 | 86.67 | 63.30 | 20679 | 10.57 |",
                 "| TA-Base | 79.84/86.67 | 17868 | 0.0 |", "| MI-0.8 w/o FFN | 51.88 | 90.00 | 63.30 | 0.68 | 69.55 |",
                 "| Qwen3-4B-Instruct | Qwen3-4B-Thinking | 0.0269 |"):
        assert text in block(os.path.join(RECIPES, "README.md")), text
    assert "| TIES-Base | 72.86/93.33 | 11240 | 0.0 |" in baselines
    assert "sparsity 0.2 (density 0.8)" in open(os.path.join(BASELINES, "README.md"), encoding="utf-8").read()


def test_families_file_says_what_is_the_papers():
    """Every family line follows a comment that starts with 'paper:' or 'extension:'; the paper's
    λ lines are exactly Table 2's and Table 5's MI rows."""
    from mi_mergekit.eval.paper import TABLE_2, TABLE_5

    lines = open(os.path.join(RECIPES, "families.txt"), encoding="utf-8").read().splitlines()
    assert not any("Figure 1" in line for line in lines)
    kind, paper_lambdas = None, {}
    for line in lines:
        if line.startswith("# paper:"):
            kind = "paper"
        elif line.startswith("# extension:"):
            kind = "extension"
        elif line.strip() and not line.startswith("#"):
            assert kind, f"family without a paper:/extension: comment: {line}"
            args = line.split()
            pair = args[args.index("--model-pair") + 1]
            if kind == "paper" and len(args) == 4:  # a plain λ list
                paper_lambdas[pair] = args[1].split(",")
        elif not line.strip():
            kind = None
    assert paper_lambdas["4b"] == [m[3:] for m in TABLE_2 if m.startswith("MI-")]
    assert paper_lambdas["30b"] == [m[3:] for m in TABLE_5 if m.startswith("MI-")]
    assert paper_lambdas["4b-mix"] == paper_lambdas["4b-base"] == ["0.8"]


def test_figure_4_grid_command_covers_the_papers_grid():
    from mi_mergekit.eval.decoding import resolve_decoding
    from mi_mergekit.eval.paper import FIGURE_4_TEMPERATURES, FIGURE_4_TOP_P

    text = open(os.path.join(RECIPES, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Figure 4"):text.index("## Index")]
    assert re.search(r"for T in ([\d. ]+); do", section).group(1).split() == list(FIGURE_4_TEMPERATURES)
    assert re.search(r"for P in ([\d. ]+); do", section).group(1).split() == list(FIGURE_4_TOP_P)
    assert "--model out/mi_0.4" in section and "--benchmark ifeval" in section and "--benchmark gpqa" in section
    for t in FIGURE_4_TEMPERATURES:
        for top_p in FIGURE_4_TOP_P:
            d = resolve_decoding("thinking", float(t), float(top_p))
            assert (d.temperature, d.top_p, d.top_k) == (float(t), float(top_p), 20)


# --------------------------------------------------------------------------- generator


def test_regenerating_reproduces_the_committed_recipes(tmp_path):
    result = CliRunner().invoke(
        recipes_command,
        ["--families", os.path.join(RECIPES, "families.txt"), "-o", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert yaml_files(str(tmp_path)) == ALL_RECIPES
    for name in ALL_RECIPES:
        with open(os.path.join(RECIPES, name), "rb") as a, open(tmp_path / name, "rb") as b:
            assert a.read() == b.read(), f"{name} differs from what the generator writes"


def test_each_file_names_the_command_that_regenerates_it(tmp_path):
    for name in ("mi_0.8_last2of3.yaml", "mi_0.65_30b.yaml", "mi_0.8_nomlp_30b.yaml"):
        with open(os.path.join(RECIPES, name), encoding="utf-8") as handle:
            text = handle.read()
        command = re.search(r"Generated by `mi-mergekit recipes ([^`]+)`", text).group(1)
        out = tmp_path / name
        result = CliRunner().invoke(recipes_command, command.split() + ["-o", str(out)])
        assert result.exit_code == 0, result.output
        assert os.listdir(out) == [name]
        assert (out / name).read_text() == text


def test_lambda_ranges_are_exact_decimals(tmp_path):
    assert [format_lambda(v, point=True) for v in parse_lambdas("0.1:0.9:0.1")] == [
        "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert [format_lambda(v, point=True) for v in parse_lambdas("0.55:0.75:0.1,0.8,0.80,1")] == [
        "0.55", "0.65", "0.75", "0.8", "1.0"]
    assert [format_lambda(v, point=True) for v in parse_lambdas("0:1:0.25")] == [
        "0.0", "0.25", "0.5", "0.75", "1.0"]
    result = CliRunner().invoke(recipes_command, ["--lambdas", "0.1:0.9:0.1", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert len(os.listdir(tmp_path)) == 9
    for path in tmp_path.iterdir():
        text = path.read_text()
        assert "0000" not in text and "9999" not in text, path.name
        lam = yaml.safe_load(text)["parameters"]["lambda"]
        assert path.name == f"mi_{lam!r}.yaml"  # repr(0.3) == '0.3'


def test_numeric_window_gets_its_thirds_name_and_other_windows_their_bounds(tmp_path):
    runner = CliRunner()
    result = runner.invoke(recipes_command, ["--lambdas", "0.8", "--window", "12,35",
                                             "--window", "3,9", "--window", "0,35", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ["mi_0.8.yaml", "mi_0.8_last2of3.yaml", "mi_0.8_layers3to9.yaml"]
    assert (tmp_path / "mi_0.8_last2of3.yaml").read_bytes() == open(
        os.path.join(RECIPES, "mi_0.8_last2of3.yaml"), "rb").read()
    params = yaml.safe_load((tmp_path / "mi_0.8_layers3to9.yaml").read_text())["parameters"]
    assert (params["layer_start"], params["layer_end"]) == (3, 9)
    whole = yaml.safe_load((tmp_path / "mi_0.8.yaml").read_text())["parameters"]
    assert "layer_start" not in whole and "layer_end" not in whole


def test_custom_pair_modules_and_suffix(tmp_path):
    result = CliRunner().invoke(recipes_command, [
        "--lambdas", "0.5", "--window", "last2of3", "--modules", "attention",
        "--instruct", "me/Ins", "--thinking", "me/Think", "--num-layers", "24", "--suffix", "8b",
        "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path) == ["mi_0.5_last2of3_attention_8b.yaml"]
    data = yaml.safe_load((tmp_path / "mi_0.5_last2of3_attention_8b.yaml").read_text())
    assert data["base_model"] == "me/Ins" and data["models"] == [{"model": "me/Think"}]
    assert data["parameters"] == {"lambda": 0.5, "layer_start": 8, "layer_end": 23, "modules": "attention"}


@pytest.mark.parametrize("args, message", [
    (["--lambdas", "0.8", "--modules", "attention", "--exclude-modules", "mlp"], "mutually exclusive"),
    (["--lambdas", "0.8", "--exclude-modules", "ffn"], "unknown module group"),
    (["--lambdas", "0.8", "--window", "30,40"], "past the last layer"),
    (["--lambdas", "0.8", "--window", "20,10"], "empty window"),
    (["--lambdas", "0.9:0.1:0.1"], "START <= STOP"),
    (["--lambdas", "abc"], "not a number"),
    (["--lambdas", "0.8", "--instruct", "a/b"], "both --instruct and --thinking"),
    (["--lambdas", "0.8", "--instruct", "a", "--thinking", "b", "--window", "last2of3"], "--num-layers"),
    ([], "--lambdas is required"),
    (["--families", os.path.join(RECIPES, "families.txt"), "--lambdas", "0.5"], "replaces"),
    (["--lambdas", "0.8", "--dtype", "bf16"], "bf16"),
])
def test_generator_rejects_bad_input(tmp_path, args, message):
    result = CliRunner().invoke(recipes_command, args + ["-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


def test_generator_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mi_mergekit.cli", "recipes", "--lambdas", "0.8", "--window", "last2of3",
         "--model-pair", "30b", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "mi_0.8_last2of3_30b.yaml")]


@pytest.mark.parametrize("layers", [28, 30, 32, 35, 36, 48])
def test_the_papers_windows_have_one_definition(layers):
    """The recipes' thirds and the demo's / compare's windows are the same numbers at every depth:
    the thirds tile the decoder with sizes at most one layer apart, and the two-thirds windows
    are unions of them; at 36 layers they are the paper's."""
    from mi_mergekit.compare_rows import paper_windows
    from mi_mergekit.merge.recipes import THIRDS, parse_window, third_bounds

    windows = {name: (start, end) for name, start, end in paper_windows(layers)}
    assert list(windows) == list(THIRDS)
    for name in THIRDS:
        assert windows[name] == third_bounds(name, layers) == parse_window(name, layers)
    thirds = [windows[n] for n in ("first1of3", "mid1of3", "last1of3")]
    assert thirds[0][0] == 0 and thirds[-1][1] == layers - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(thirds, thirds[1:]))
    sizes = [end - start + 1 for start, end in thirds]
    assert max(sizes) - min(sizes) <= 1
    assert windows["first2of3"] == (0, thirds[1][1]) and windows["last2of3"] == (thirds[1][0], layers - 1)
    if layers == 36:
        assert thirds == [(0, 11), (12, 23), (24, 35)]
