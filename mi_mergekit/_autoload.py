"""Post-import hook that plugs mi_mergekit into an unmodified mergekit.

Installed at interpreter start-up by ``mi_mergekit_autoload.pth``. It imports
nothing heavy: it only puts a finder on ``sys.meta_path`` that watches for a few
mergekit modules. When ``mergekit.merge_methods`` finishes importing, our merge methods are
registered in mergekit's registry; while ``mergekit.common`` and
``mergekit.architecture.auto`` import, the modules only LoRA inputs and model
instances need (peft, transformers' modeling code) are deferred to their first use
(start-up of a safetensors merge); when ``mergekit.merge`` finishes importing,
``run_merge`` is wrapped so that merges using our methods get up-front validation,
checkpoint-layout output and safe, atomic output folders; when the
``mergekit-yaml`` script loads, its failures with our methods become one-line
errors (see ``mi_mergekit.integration``).

Set ``MI_MERGEKIT_NO_AUTOLOAD=1`` to opt out; ``mi_mergekit.register()`` then
registers explicitly.
"""

import os
import sys

DISABLE_ENV = "MI_MERGEKIT_NO_AUTOLOAD"

# module name -> name of the function in mi_mergekit.integration to call after it loads
_WATCHED = {
    "mergekit.merge_methods": "on_merge_methods_loaded",
    "mergekit.merge": "on_merge_loaded",
    "mergekit.scripts.run_yaml": "on_run_yaml_loaded",
}
# module name -> name of the context manager in mi_mergekit.integration entered around
# its import (start-up: imports that module makes and a safetensors merge never uses are
# deferred to their first use)
_AROUND = dict.fromkeys(
    ("mergekit.common", "mergekit.architecture.auto", "mergekit.architecture.conversion",
     "mergekit.graph", "mergekit.multigpu_executor", "mergekit.io.lazy_unpickle"),
    "importing",
)


class _CallbackLoader:
    """Delegates to the real loader, inside our context manager, then runs our callback
    on the loaded module."""

    def __init__(self, loader, callback_name, around_name=None):
        self._loader = loader
        self._callback_name = callback_name
        self._around_name = around_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        around = None
        if self._around_name:
            try:
                from mi_mergekit import integration

                around = getattr(integration, self._around_name)(module.__name__)
                around.__enter__()
            except Exception as exc:  # never break mergekit itself
                around = None
                sys.stderr.write(f"mi_mergekit: could not hook into {module.__name__}: {exc!r}\n")
        try:
            self._loader.exec_module(module)
        finally:
            if around is not None:
                around.__exit__(None, None, None)
        if not self._callback_name:
            return
        try:
            from mi_mergekit import integration

            getattr(integration, self._callback_name)(module)
        except Exception as exc:  # never break mergekit itself
            sys.stderr.write(
                f"mi_mergekit: could not hook into {module.__name__}: {exc!r}\n"
            )

    def __getattr__(self, name):
        return getattr(self._loader, name)


class PostImportFinder:
    """A ``sys.meta_path`` finder that wraps the loaders of the watched modules."""

    def find_spec(self, fullname, path=None, target=None):
        callback, around = _WATCHED.get(fullname), _AROUND.get(fullname)
        if callback is None and around is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CallbackLoader(spec.loader, callback, around)
        return spec


def install() -> bool:
    """Put the finder first on ``sys.meta_path`` unless disabled. Idempotent."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return False
    if any(isinstance(f, PostImportFinder) for f in sys.meta_path):
        return True
    sys.meta_path.insert(0, PostImportFinder())
    # mergekit may already be imported (e.g. autoload installed late): hook it now.
    if "mergekit.merge_methods" in sys.modules or "mergekit.merge" in sys.modules:
        from mi_mergekit.integration import install as install_now

        install_now()
    return True
