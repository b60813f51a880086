"""How mi_mergekit plugs into an unmodified mergekit 0.1.5.

mergekit has no plugin entry points, so ``mi_mergekit._autoload`` (installed by a
``.pth`` file) calls into this module right after two mergekit modules import:

* ``mergekit.merge_methods`` → :func:`on_merge_methods_loaded` registers our methods
  in mergekit's registry, so ``merge_method: model_interpolation`` resolves;
* ``mergekit.merge`` → :func:`on_merge_loaded` wraps ``run_merge`` (and the
  architecture lookup it uses). For recipes whose method is one of *ours* — any
  :class:`~mi_mergekit.merge.method.ElementwiseMethod` in mergekit's registry; none is
  named here — the wrapper adds, around the unchanged mergekit engine:

  1. pre-flight checks with clear errors before anything is written
     (:func:`mi_mergekit.merge.plan.build_plan`), then the streaming engine
     (:mod:`mi_mergekit.merge.engine`) instead of mergekit's executor and writer
     (``MI_MERGEKIT_ENGINE=mergekit`` keeps mergekit's);
  2. an architecture made of the checkpoint's own tensor names, placed by mergekit's
     architecture knowledge, so every tensor is kept and MoE outputs keep the per-expert
     layout of their inputs (:mod:`mi_mergekit.merge.layout`, :mod:`~mi_mergekit.merge.placement`;
     methods with ``checkpoint_layout = False`` keep mergekit's tables);
  3. a safe, atomic output folder (:mod:`mi_mergekit.safety`): an output that is,
     contains or lies inside an input is refused, an existing folder with files
     we did not write needs an explicit opt-in, the merge writes into a hidden
     staging folder that is swapped into place only after the merge succeeded,
     and deleted on error or Ctrl-C — an interrupted run never leaves a folder
     that looks finished, and a replaced model is never half old, half new;
  4. the tokenizer, chat template and generation_config of the model the method
     chooses (model_interpolation: the Thinking model's; ``template_from: instruct``
     the Instruct's); methods that choose none keep mergekit's (the base's);
  5. ``mi_plan.json``: the resolved per-tensor plan, for auditing.

Every touch of mergekit internals goes through :mod:`mi_mergekit.mergekit_compat`.
Merges with any other method go straight to mergekit's original functions.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import Optional

from mi_mergekit.errors import writing

LOG = logging.getLogger("mi_mergekit")

_ACTIVE_ARCH: contextvars.ContextVar = contextvars.ContextVar("mi_mergekit_arch", default=None)


#: the registration the hook left to ``mi_mergekit.merge.method`` (see :func:`on_merge_methods_loaded`)
_PENDING = {"register": False}


def on_merge_methods_loaded(module=None) -> None:
    if "mi_mergekit.methods" in sys.modules:
        # Our methods package is importing (it triggered mergekit's import) or done:
        # it registers itself at the end of its own import.
        return
    protocol = sys.modules.get("mi_mergekit.merge.method")
    if protocol is not None and not hasattr(protocol, "method_named"):
        # mi_mergekit.merge.method, which our methods build on, is the one importing mergekit:
        # it is half-defined now, so it calls registration_now() when it has finished
        _PENDING["register"] = True
        return
    import mi_mergekit.methods  # noqa: F401  (registers on import)


def registration_now() -> None:
    """Register our methods if the hook above had to wait for ``mi_mergekit.merge.method``."""
    if _PENDING["register"]:
        _PENDING["register"] = False
        import mi_mergekit.methods  # noqa: F401  (registers on import)


def importing(module_name: str):
    """Context manager around the import of ``module_name``: defers what a
    safetensors merge does not use (see :func:`mi_mergekit.deferred.deferred_imports`)."""
    from mi_mergekit.deferred import deferred_imports

    return deferred_imports(module_name)


def on_merge_loaded(module) -> None:
    patch_merge_module(module)


def on_run_yaml_loaded(module) -> None:
    guard_mergekit_yaml(module.main)


#: True while (and after) run_merge runs a merge that is not ours: its failures
#: keep mergekit's own behaviour in the mergekit-yaml guard
_STOCK_MERGE = {"started": False}


def guard_mergekit_yaml(command) -> None:
    """``mergekit-yaml``: one-line errors (traceback with -v or MI_MERGEKIT_VERBOSE=1)
    for our methods and for recipes that cannot be read at all; stock merges
    fail exactly as before."""
    import yaml
    from pydantic import ValidationError

    from mi_mergekit.cli.errors import guarded_main
    from mi_mergekit.errors import MergeInputError, about, explain, os_problem
    from mi_mergekit.mergekit_compat import wrap_mergekit_yaml

    def make_callback(callback):
        def run_yaml(*args, **kwargs):
            recipe = kwargs.get("config_file")
            with about(recipe):
                try:
                    _check_recipe_keys(recipe)
                    return callback(*args, **kwargs)
                except (yaml.YAMLError, ValidationError, UnicodeDecodeError) as exc:
                    if _STOCK_MERGE["started"]:
                        raise
                    raise MergeInputError(explain(exc), path=recipe) from exc
                except OSError as exc:  # the recipe itself (as `mi-mergekit merge` says it)
                    if _STOCK_MERGE["started"] or exc.filename != recipe:
                        raise
                    raise MergeInputError(f"cannot read the recipe: {os_problem(exc)}", path=recipe) from exc

        return run_yaml

    def usage_hint(exc):
        if "--model" in str(exc.message) and "No such option" in str(exc.message):
            return ("(mergekit-yaml reads every model from the recipe: put the local folder there, or run "
                    "`mi-mergekit merge RECIPE OUT --model NAME=PATH`, which takes mergekit-yaml's options too.)")
        return None

    def make_main(main):
        return guarded_main(main, verbose_flags=("-v",), applies=lambda exc: not _STOCK_MERGE["started"],
                            name="mergekit-yaml", usage_hint=usage_hint)

    wrap_mergekit_yaml(command, make_callback, make_main)


def _check_recipe_keys(recipe) -> None:
    """mergekit-yaml: a misspelled recipe key is an error, not silently ignored
    (:func:`mi_mergekit.merge.config.check_keys`); a file that does not read is mergekit's to report."""
    import yaml

    from mi_mergekit.merge.config import check_keys

    try:
        with open(recipe, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except Exception:  # noqa: BLE001 - mergekit reads it next and says what is wrong
        return
    check_keys(data, recipe)


def install() -> None:
    """Register methods and patch ``mergekit.merge`` now (idempotent)."""
    import mergekit.merge

    from mi_mergekit.methods import register_all

    register_all()
    patch_merge_module(mergekit.merge)
    if "mergekit.scripts.run_yaml" in sys.modules:
        guard_mergekit_yaml(sys.modules["mergekit.scripts.run_yaml"].main)


def _method(config):
    """Our method for this recipe (output safety, pre-flight, streaming), or None."""
    from mi_mergekit.merge.method import method_named

    return method_named(getattr(config, "merge_method", None))


def patch_merge_module(module) -> None:
    from mi_mergekit.mergekit_compat import wrap_merge_module

    def make_get_arch(original_get_arch):
        def get_architecture_info(config, options):
            method = _method(config)
            if method is None or not method.checkpoint_layout:
                return original_get_arch(config, options)
            arch = _ACTIVE_ARCH.get()
            if arch is None:
                from mi_mergekit.merge.plan import build_plan

                _, arch = build_plan(config, options)
            return arch

        get_architecture_info.__wrapped__ = original_get_arch
        return get_architecture_info

    def make_run_merge(original_run_merge):
        def run_merge(merge_config, out_path, options, config_source: Optional[str] = None):
            from mi_mergekit import mergekit_compat
            from mi_mergekit.merge.hub import resolve_models

            if _method(merge_config) is not None:
                return run_method_merge(original_run_merge, merge_config, out_path, options, config_source)
            from mi_mergekit.errors import CheckpointFileError
            from mi_mergekit.merge.config import check_config

            check_config(merge_config)  # a misspelled method or dtype: one line, not mergekit's traceback
            try:
                resolved, changed = resolve_models(merge_config, options)
            except CheckpointFileError:  # found nowhere: mergekit would fail too, after its retries
                raise
            except Exception:  # noqa: BLE001 - a stock merge never fails because of us
                resolved, changed = merge_config, False
            _STOCK_MERGE["started"] = True
            if not changed:  # stock mergekit, as it is
                return original_run_merge(merge_config, out_path, options, config_source)
            # hub ids read from the local cache (mergekit would list them online first);
            # the model card still names the hub ids
            source = config_source if config_source is not None else merge_config.to_yaml()
            result = original_run_merge(resolved, out_path, options, source)
            if options.write_model_card:
                mergekit_compat.write_card(mergekit_compat.with_absolute_local_paths(merge_config), source,
                                           out_path, os.path.basename(os.path.abspath(out_path)))
            return result

        return run_merge

    wrap_merge_module(module, make_run_merge, make_get_arch)


def run_method_merge(engine, merge_config, out_path, options, config_source=None):
    """Check, plan, write the weights (streaming engine, or mergekit's ``engine``) into a
    staging folder, finish, publish."""
    from mi_mergekit import mergekit_compat
    from mi_mergekit.merge.checks import resolve_device
    from mi_mergekit.merge.engine import engine_name
    from mi_mergekit.merge.hub import resolve_models
    from mi_mergekit.merge.plan import build_plan
    from mi_mergekit.merge.run import PlannedOutput, copy_template_files, finish_output, stream_weights
    from mi_mergekit.safety import check_output_path, model_inputs, staged_directory

    from mi_mergekit.merge.config import check_config

    check_config(merge_config)
    method = _method(merge_config)
    roles = method.roles or ("base", "input")
    card_config = mergekit_compat.with_absolute_local_paths(merge_config)  # the card names hub ids
    if config_source is None:
        config_source = card_config.to_yaml()
    merge_config, _ = resolve_models(merge_config, options)  # cached hub ids: no network
    check_output_path(out_path, model_inputs(merge_config, options, *roles), options)
    resolve_device(options.device)
    plan, arch = build_plan(merge_config, options)
    table = "\n".join(line for line in plan.table().splitlines() if not line.startswith("warning: "))
    LOG.info("resolved plan:\n%s", table)
    for warning in plan.warnings:  # each once, as a warning (the table leaves them out)
        LOG.warning(warning)
    engine_name()  # a bad MI_MERGEKIT_ENGINE fails before anything is written
    with staged_directory(out_path) as stage, writing(out_path):
        output = PlannedOutput(merge_config, plan, out_path, config_source, stage=stage,
                               out_config=mergekit_compat.output_config(merge_config, arch, options),
                               card_config=card_config)
        if stream_weights(merge_config, [output], arch, options):
            finish_output(output, arch, None, options)
        else:
            token = _ACTIVE_ARCH.set(arch)
            try:
                engine(merge_config, stage, options, config_source)  # mergekit's run_merge
            finally:
                _ACTIVE_ARCH.reset(token)
            if options.write_model_card:
                mergekit_compat.write_card(card_config, config_source, stage, os.path.basename(out_path))
            copy_template_files(merge_config, plan, stage, options)
            plan.write_json(os.path.join(stage, "mi_plan.json"))
    return plan
