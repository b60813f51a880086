"""Every error the package raises belongs to one family, and ``errors.py`` holds only the family.

Read from the source (ast), so that a new bare ``raise ValueError(...)`` or a new exception
class outside :class:`~mi_mergekit.errors.MiMergekitError` fails here, wherever it is.
"""

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import mi_mergekit

PACKAGE = Path(mi_mergekit.__file__).parent

#: built-in exceptions the package must not raise bare: a failure it raises is one of the family
#: (which are ValueErrors; a member may also be a RuntimeError or FileNotFoundError where callers
#: caught that). Left out on purpose: OSError with an errno (``safety``/``safetensors_io`` raise
#: them so that ``errors.writing`` words a full disk as for any other write), ImportError (a
#: missing extra: ``errors.explain`` words it), NotImplementedError (abstract methods),
#: AttributeError (a module's ``__getattr__`` protocol).
FORBIDDEN = {"BaseException", "Exception", "ValueError", "RuntimeError", "TypeError", "KeyError",
             "LookupError", "IndexError", "AssertionError", "FileNotFoundError"}

#: exception classes outside the family that never leave the module that raises them:
#: control flow, each caught where it is raised
INTERNAL_SIGNALS = {
    "NotStreamable",  # merge/engine.py -> merge/run.py falls back to mergekit's executor
    "Retryable", "Interrupted",  # eval/backends/http_fleet.py: a request to retry (on another server)
    "_NRefused", "_NIgnored",  # eval/backends/openai_http.py: n>1 probing
}

BUILTIN_EXCEPTIONS = {name for name in dir(builtins)
                      if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), BaseException)}


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _name(node):
    """``X`` of ``X``, ``X(...)``, ``mod.X`` or ``mod.X(...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _classes():
    """Every class the package defines: name -> (where, base names)."""
    found = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                found[node.name] = (where, [_name(base) for base in node.bases])
    return found


def _family(classes):
    family = {"MiMergekitError"}
    grew = True
    while grew:
        grew = False
        for name, (_, bases) in classes.items():
            if name not in family and family.intersection(bases):
                family.add(name)
                grew = True
    return family


def test_no_bare_builtin_raise():
    bare = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None and _name(node.exc) in FORBIDDEN:
                bare.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: raise {_name(node.exc)}")
    assert not bare, "raise an error of the family (mi_mergekit.errors) instead:\n" + "\n".join(bare)


def test_every_exception_class_is_in_the_family():
    classes = _classes()
    family = _family(classes)
    exceptions = set(family)
    grew = True
    while grew:  # classes that are exceptions, through a built-in base or a class of the package
        grew = False
        for name, (_, bases) in classes.items():
            if name not in exceptions and (exceptions | BUILTIN_EXCEPTIONS).intersection(bases):
                exceptions.add(name)
                grew = True
    outside = sorted(f"{classes[name][0]}: class {name}({', '.join(classes[name][1])})"
                     for name in exceptions - family - INTERNAL_SIGNALS if name in classes)
    assert not outside, "derive from MiMergekitError (or a member of its family):\n" + "\n".join(outside)
    assert INTERNAL_SIGNALS <= set(classes), "an internal signal was renamed or removed: update the list"


def test_members_keep_what_callers_catch():
    from mi_mergekit.errors import ContractError, MiMergekitError
    from mi_mergekit.eval.dataset_files import DatasetError
    from mi_mergekit.eval.run_folder import ModelFolderError, RunFolderError, RunMismatchError
    from mi_mergekit.merge.safetensors_io import SafetensorsFormatError

    for cls in (DatasetError, ModelFolderError, RunMismatchError, SafetensorsFormatError, RunFolderError,
                ContractError):
        assert issubclass(cls, MiMergekitError) and issubclass(cls, ValueError), cls
    assert issubclass(ContractError, RuntimeError)
    assert issubclass(RunFolderError, FileNotFoundError)
    error = RunFolderError("run directory not found (x)")
    assert str(error) == error.format_message() == "run directory not found (x)"


def test_errors_module_imports_no_click():
    tree = ast.parse((PACKAGE / "errors.py").read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in ("click", "mi_mergekit")], imported
    code = "import sys, mi_mergekit.errors; print('click' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_cli_presentation_is_in_cli_errors():
    from mi_mergekit import errors
    from mi_mergekit.cli import errors as cli_errors

    for name in ("guarded_main", "verbose_requested", "quiet_hub_logs", "VERBOSE_ENV"):
        assert hasattr(cli_errors, name) and not hasattr(errors, name), name
