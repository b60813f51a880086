"""The paper's own numbers, as printed (arXiv 2510.10977, Wu et al., "Revisiting Model
Interpolation for Efficient Reasoning"; checked against the PDF in the authors'
repository, github.com/wutaiqiang/MI ``asset/paper.pdf``).

Values are the strings the paper prints (``"100.0"``, ``"93.30"``), so nothing is
rounded or re-formatted on the way into a report or a README. Used by
``mi-mergekit report --paper-reference 4b|30b`` (reference rows) and by the tests that
check recipes/README.md and baselines/README.md carry these numbers.

Tables 2 and 5: per method, per benchmark ``(mean, second, tokens, think)`` where
``second`` is Pass@64 (AIME'25), Pass@8 (IFEval) or **Vote@8** (GPQA-Diamond: "Since
questions from GPQA-Diamond are multiple-choice, we report Vote@8 instead of Pass@8").
All graded by the paper with OpenCompass (``--grading paper``), sampled with T 0.6 /
top-p 0.95 (Instruct: 0.7 / 0.8), 64 samples on AIME'25 and 8 on the others.
"""

from __future__ import annotations

from typing import Dict, Tuple

Row = Dict[str, Tuple[str, str, str, str]]

#: Table 2: Qwen3-4B-Instruct-2507 × Qwen3-4B-Thinking-2507 (and the baselines)
TABLE_2: Dict[str, Row] = {
    "Instruct": {"aime25": ("46.6", "76.7", "15097", "0.0"), "ifeval": ("83.5", "89.5", "1174", "0.0"),
                 "gpqa": ("41.3", "39.4", "570", "0.0")},
    "Thinking": {"aime25": ("80.4", "90.0", "22813", "99.9"), "ifeval": ("86.6", "94.5", "2091", "100.0"),
                 "gpqa": ("65.8", "67.2", "9114", "99.9")},
    "TA": {"aime25": ("61.7", "86.7", "16594", "0.5"), "ifeval": ("39.0", "60.8", "8116", "7.6"),
           "gpqa": ("57.4", "59.6", "22042", "0.2")},
    "TA-Base": {"aime25": ("69.6", "86.7", "18339", "43.0"), "ifeval": ("76.3", "91.9", "2810", "76.5"),
                "gpqa": ("60.7", "66.2", "12450", "32.9")},
    "TIES": {"aime25": ("61.5", "93.3", "11159", "65.4"), "ifeval": ("66.5", "90.8", "3224", "71.2"),
             "gpqa": ("63.8", "68.2", "7369", "72.2")},
    "TIES-Base": {"aime25": ("62.7", "90.0", "12024", "15.6"), "ifeval": ("57.0", "87.8", "6234", "21.6"),
                  "gpqa": ("63.7", "66.7", "8309", "21.8")},
    "MI-0.2": {"aime25": ("52.2", "86.7", "16794", "0.0"), "ifeval": ("79.7", "87.1", "4933", "0.0"),
               "gpqa": ("48.9", "50.0", "1107", "0.0")},
    "MI-0.4": {"aime25": ("55.8", "90.0", "12448", "1.4"), "ifeval": ("70.2", "84.3", "6492", "1.6"),
               "gpqa": ("61.3", "60.6", "5634", "4.0")},
    "MI-0.45": {"aime25": ("58.5", "93.3", "11290", "14.4"), "ifeval": ("62.6", "86.5", "5623", "19.2"),
                "gpqa": ("62.8", "63.1", "7227", "26.6")},
    "MI-0.5": {"aime25": ("62.5", "90.0", "11189", "59.6"), "ifeval": ("68.8", "93.0", "2932", "69.9"),
               "gpqa": ("64.5", "66.7", "7548", "66.4")},
    "MI-0.55": {"aime25": ("67.6", "90.0", "11634", "91.6"), "ifeval": ("82.4", "92.6", "1602", "97.1"),
                "gpqa": ("65.1", "67.7", "8284", "93.8")},
    "MI-0.6": {"aime25": ("71.0", "90.0", "12681", "100.0"), "ifeval": ("85.9", "93.7", "1445", "99.6"),
               "gpqa": ("66.2", "68.2", "8769", "99.7")},
    "MI-0.8": {"aime25": ("80.5", "93.3", "17574", "99.9"), "ifeval": ("86.9", "94.6", "1556", "99.9"),
               "gpqa": ("66.2", "70.2", "8427", "99.9")},
}

#: Table 5 (Appendix B): Qwen3-30B-A3B-Instruct-2507 × Qwen3-30B-A3B-Thinking-2507
TABLE_5: Dict[str, Row] = {
    "Instruct": {"aime25": ("62.03", "90.00", "7694", "0.0"), "ifeval": ("83.43", "89.28", "798", "0.0"),
                 "gpqa": ("55.74", "59.59", "1813", "0.0")},
    "Thinking": {"aime25": ("85.00", "96.67", "19227", "100.0"), "ifeval": ("87.18", "94.45", "1224", "100.0"),
                 "gpqa": ("69.13", "69.69", "7291", "100.0")},
    "TA": {"aime25": ("63.44", "93.33", "10414", "0.0"), "ifeval": ("78.88", "87.62", "1688", "0.0"),
           "gpqa": ("65.91", "68.68", "12009", "0.0")},
    "TA-Base": {"aime25": ("79.84", "86.67", "17868", "0.0"), "ifeval": ("76.11", "87.43", "937", "8.5"),
                "gpqa": ("43.81", "44.94", "15066", "16.6")},
    "TIES": {"aime25": ("73.54", "93.33", "11609", "0.0"), "ifeval": ("79.97", "90.20", "1806", "4.7"),
             "gpqa": ("70.52", "71.72", "6551", "1.8")},
    "TIES-Base": {"aime25": ("72.86", "93.33", "11240", "0.0"), "ifeval": ("79.92", "90.94", "1782", "4.8"),
                  "gpqa": ("69.82", "72.22", "6487", "2.0")},
    "MI-0.2": {"aime25": ("65.68", "90.00", "7359", "0.0"), "ifeval": ("82.00", "89.46", "914", "0.0"),
               "gpqa": ("61.93", "65.65", "2039", "0.0")},
    "MI-0.4": {"aime25": ("68.59", "93.33", "7747", "0.0"), "ifeval": ("84.24", "90.57", "1027", "0.0"),
               "gpqa": ("65.72", "68.18", "4231", "0.0")},
    "MI-0.45": {"aime25": ("69.11", "93.33", "8933", "0.0"), "ifeval": ("83.18", "90.76", "1190", "0.0"),
                "gpqa": ("67.99", "70.20", "5696", "0.0")},
    "MI-0.5": {"aime25": ("73.59", "93.33", "11294", "0.0"), "ifeval": ("80.59", "92.05", "1646", "4.9"),
               "gpqa": ("69.76", "71.71", "6402", "1.5")},
    "MI-0.55": {"aime25": ("69.38", "93.33", "11309", "1.5"), "ifeval": ("79.71", "91.87", "1562", "34.2"),
                "gpqa": ("70.14", "71.71", "7137", "34.8")},
    "MI-0.6": {"aime25": ("75.31", "96.67", "12650", "48.1"), "ifeval": ("78.79", "92.98", "1317", "74.3"),
               "gpqa": ("70.33", "71.21", "7502", "90.1")},
    "MI-0.8": {"aime25": ("83.91", "100.0", "16518", "100.0"), "ifeval": ("87.01", "94.09", "1257", "99.9"),
               "gpqa": ("69.82", "71.71", "6882", "99.9")},
    "MI-0.9": {"aime25": ("85.99", "100.0", "17703", "100.0"), "ifeval": ("86.83", "93.53", "1327", "99.8"),
               "gpqa": ("69.38", "69.69", "7090", "100.0")},
    "MI-0.95": {"aime25": ("85.00", "100.0", "18848", "100.0"), "ifeval": ("87.92", "93.53", "1255", "100.0"),
                "gpqa": ("70.58", "71.21", "7278", "99.9")},
}

#: reference tables by ``--paper-reference`` key: (table, title)
REFERENCES = {
    "4b": (TABLE_2, "Table 2, Qwen3-4B-Instruct-2507 × Qwen3-4B-Thinking-2507"),
    "30b": (TABLE_5, "Table 5, Qwen3-30B-A3B-Instruct-2507 × Qwen3-30B-A3B-Thinking-2507"),
}
#: digits after the decimal point of each reference table's accuracies
DECIMALS = {"4b": 1, "30b": 2}

#: Table 3: MI-0.8 on Qwen3-4B with interpolation restricted to a layer window (AIME'25)
TABLE_3_COLUMNS = ("Mean@64", "Pass@8", "Pass@32", "Pass@64", "Vote@64", "Token #N", "Think #R")
TABLE_3: Dict[str, Tuple[str, ...]] = {
    "Instruct": ("46.57", "68.44", "74.09", "76.67", "63.33", "15097", "0.00"),
    "Thinking": ("80.42", "89.43", "90.00", "90.00", "83.33", "22813", "99.95"),
    "[0, 35]": ("80.47", "90.33", "91.67", "93.30", "83.33", "17574", "99.95"),
    "[0, 11]": ("42.50", "71.25", "77.96", "80.00", "50.00", "32151", "0.00"),
    "[12, 23]": ("54.69", "78.05", "85.53", "86.67", "63.30", "20679", "10.57"),
    "[24, 35]": ("51.35", "72.92", "78.10", "80.00", "63.30", "14987", "31.20"),
    "[0, 23]": ("59.06", "83.17", "89.60", "93.33", "70.00", "18044", "48.13"),
    "[12, 35]": ("69.48", "85.61", "89.17", "90.00", "76.66", "13159", "100.00"),
}

#: Figure 5: MI-0.8 on Qwen3-4B with attention / FFN kept at Instruct (AIME'25); Length
#: Ratio = Token #N relative to the Thinking model, in %
FIGURE_5_COLUMNS = ("Mean@64", "Pass@64", "Vote@64", "Think Ratio", "Length Ratio")
FIGURE_5: Dict[str, Tuple[str, ...]] = {
    "MI-0.8": ("80.47", "93.30", "83.33", "99.95", "77.04"),
    "MI-0.8 w/o Attn": ("71.46", "90.00", "80.00", "99.90", "59.21"),
    "MI-0.8 w/o FFN": ("51.88", "90.00", "63.30", "0.68", "69.55"),
}

#: Table 4: Qwen3-4B, λ = 0.8, the Thinking model interpolated with three backbones
#: ("Instruct" = Qwen3-4B-Instruct-2507, "Mix" = the hybrid Qwen3-4B, "Base" = Qwen3-4B-Base)
TABLE_4_COLUMNS = ("Instruct", "Mix", "Base")
TABLE_4: Dict[Tuple[str, str], Tuple[str, str, str]] = {
    ("aime25", "Mean@64"): ("80.5", "81.9", "67.7"),
    ("aime25", "Pass@64"): ("93.3", "93.3", "93.3"),
    ("aime25", "Token #N"): ("17574", "19963", "18867"),
    ("aime25", "Think #R"): ("100.0", "100.0", "100"),
    ("ifeval", "Mean@8"): ("87.0", "88.0", "85.0"),
    ("ifeval", "Pass@8"): ("95.0", "95.0", "94.0"),
    ("ifeval", "Token #N"): ("1556", "1817", "2002"),
    ("ifeval", "Think #R"): ("99.9", "99.8", "100.0"),
    ("gpqa", "Mean@8"): ("66.2", "66.2", "62.3"),
    ("gpqa", "Vote@8"): ("70.2", "70.2", "61.6"),
    ("gpqa", "Token #N"): ("8427", "8372", "6790"),
    ("gpqa", "Think #R"): ("99.9", "99.9", "99.7"),
}

#: Figure 4: MI-0.4 on Qwen3-4B under a decoding grid; rows top-p, columns temperature
FIGURE_4_TEMPERATURES = ("0.6", "0.65", "0.7")
FIGURE_4_TOP_P = ("0.8", "0.85", "0.9", "0.95")
FIGURE_4: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "IFEval Mean@8": (("71.1", "70.7", "70.0"), ("71.0", "70.5", "70.5"), ("71.3", "70.6", "70.5"),
                      ("70.2", "69.9", "69.7")),
    "IFEval Pass@8": (("82.3", "82.4", "82.6"), ("82.8", "84.3", "83.9"), ("83.9", "85.4", "84.3"),
                      ("84.3", "83.4", "85.0")),
    "GPQA-Diamond Mean@8": (("61.9", "61.1", "60.9"), ("62.7", "61.9", "62.1"), ("62.4", "61.0", "61.0"),
                            ("61.3", "62.1", "61.6")),
    "GPQA-Diamond Vote@8": (("65.7", "62.1", "62.6"), ("64.6", "62.6", "63.1"), ("65.2", "65.7", "63.1"),
                            ("60.6", "62.6", "64.1")),
}

#: Table 1: weight similarity σ (Shadow-FT's definition, ``mi-mergekit diverge --sigma``);
#: "-2507" omitted as in the paper
TABLE_1: Dict[Tuple[str, str], str] = {
    ("Qwen3-4B-Base", "Qwen3-4B"): "0.0326",
    ("Qwen3-4B-Base", "Qwen3-4B-Instruct"): "0.0562",
    ("Qwen3-4B-Base", "Qwen3-4B-Thinking"): "0.0638",
    ("Qwen3-4B", "Qwen3-4B-Instruct"): "0.0589",
    ("Qwen3-4B", "Qwen3-4B-Thinking"): "0.0633",
    ("Qwen3-4B-Instruct", "Qwen3-4B-Thinking"): "0.0269",
}


# --------------------------------------------------------------------------- Markdown

def _md(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def main_table_markdown(table: Dict[str, Row], methods=None) -> str:
    """Table 2 / Table 5 (or some of its rows) in the paper's column layout."""
    header = ["Method", "AIME'25 Mean/Pass@64", "Token #N", "Think #R", "IFEval Mean/Pass@8", "Token #N",
              "Think #R", "GPQA-Diamond Mean/Vote@8", "Token #N", "Think #R"]
    rows = []
    for method in methods or table:
        cells = table[method]
        row = [method]
        for bench in ("aime25", "ifeval", "gpqa"):
            mean, second, tokens, think = cells[bench]
            row += [f"{mean}/{second}", tokens, think]
        rows.append(row)
    return _md(header, rows)


def table_3_markdown() -> str:
    return _md(("MI-0.8 layers",) + TABLE_3_COLUMNS, [(name,) + values for name, values in TABLE_3.items()])


def figure_5_markdown() -> str:
    return _md(("Model",) + FIGURE_5_COLUMNS, [(name,) + values for name, values in FIGURE_5.items()])


def table_4_markdown() -> str:
    titles = {"aime25": "AIME'25", "ifeval": "IFEval", "gpqa": "GPQA-D"}
    return _md(("Benchmark", "Metric") + TABLE_4_COLUMNS,
               [(titles[bench], metric) + values for (bench, metric), values in TABLE_4.items()])


def figure_4_markdown() -> str:
    rows = []
    for metric, grid in FIGURE_4.items():
        for top_p, values in zip(FIGURE_4_TOP_P, grid):
            rows.append((metric, top_p) + values)
    return _md(("Metric", "top-p") + tuple(f"T = {t}" for t in FIGURE_4_TEMPERATURES), rows)


def table_1_markdown() -> str:
    return _md(("Model A", "Model B", "σ"), [(a, b, value) for (a, b), value in TABLE_1.items()])


def all_markdown() -> str:
    """Every table above, titled."""
    parts = [
        ("Table 1: weight similarity σ (Shadow-FT's definition; `mi-mergekit diverge --sigma`)", table_1_markdown()),
        ("Table 2: Qwen3-4B-2507", main_table_markdown(TABLE_2)),
        ("Table 3: MI-0.8 on Qwen3-4B, interpolating only a window of layers (AIME'25)", table_3_markdown()),
        ("Figure 4: MI-0.4 on Qwen3-4B under a decoding grid (temperature × top-p)", figure_4_markdown()),
        ("Figure 5: MI-0.8 on Qwen3-4B without interpolating attention / FFN (AIME'25; Length Ratio = "
         "Token #N relative to Thinking, %)", figure_5_markdown()),
        ("Table 4: Qwen3-4B, λ = 0.8, Thinking interpolated with three backbones", table_4_markdown()),
        ("Table 5: Qwen3-30B-A3B-2507", main_table_markdown(TABLE_5)),
    ]
    return "\n".join(f"**{title}**\n\n{text}" for title, text in parts)


if __name__ == "__main__":  # pragma: no cover
    print(all_markdown())
