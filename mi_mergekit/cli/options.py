"""Option sets shared by the ``mi-mergekit`` commands, declared once.

Every ``mi-mergekit`` command lives in this package (``cli/<area>.py``); the
library packages (merge/, eval/, analysis/, real/, toy/) import no click command and
raise no click error. Library code raises mi_mergekit's errors; these callbacks
turn the ones that are about a single option value into click's usage errors
(``Error: Invalid value for '--lambdas': …``, exit 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Any, Dict, NamedTuple, Optional

import click

from mi_mergekit.errors import did_you_mean
from mi_mergekit.merge.config import SubstitutionError, parse_substitutions
from mi_mergekit.merge.lambdas import LambdaSpecError, parse_lambdas
from mi_mergekit.merge.recipes import RecipeOptionError


class Choice(click.Choice):
    """click's Choice, whose refusal also names the closest choice (``--benchmark aime2025``:
    did you mean 'aime25'?)."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            hint = did_you_mean(value, self.choices)
            if hint:
                exc.message = exc.message.rstrip(".") + hint
            raise


#: a count that must be at least 1 (samples, tokens, batch sizes …)
POSITIVE = click.IntRange(min=1)


def check_models(ctx, param, value):
    try:
        parse_substitutions(value)
    except SubstitutionError as exc:
        raise click.BadParameter(str(exc).removeprefix("--model: "), ctx, param) from None
    return value


def check_lambdas(ctx, param, value, plausible: bool = True):
    """A --lambdas value that parses, each λ within [-1, 2] (``plausible``: see
    :func:`check_plausible`); the value stays the text."""
    if value is None:
        return None
    try:
        lambdas = parse_lambdas(value)
    except LambdaSpecError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if plausible:
        check_plausible(lambdas, param_hint=param.get_error_hint(ctx) if param is not None else "--lambdas")
    return value


def check_plausible(lambdas, param_hint="'--lambdas'") -> None:
    """Refuse a λ beyond [-1, 2] — almost surely a percentage or a typo — as a usage error
    naming the likely intent."""
    from mi_mergekit.merge.checks import implausible_lambda

    largest = max((abs(float(lam)) for lam in lambdas), default=None)
    for lam in lambdas:
        why = implausible_lambda(float(lam), largest)
        if why:
            raise click.BadParameter(f"{why} (a λ beyond [-1, 2] needs a recipe with `extrapolate: true`)",
                                     param_hint=param_hint)


#: ``--model NAME=PATH`` (repeatable): a local copy of a model named in the recipe
model_option = click.option(
    "--model", "models", multiple=True, metavar="NAME=PATH", callback=check_models,
    help="Use a local copy of a model named in the recipe (repeatable), e.g. "
    "--model Qwen/Qwen3-4B-Instruct-2507=/data/instruct",
)


def lambdas_option(*, required: bool = False, help: str = "λ values", name: str = "lambdas_spec",
                   plausible: bool = True):
    """``--lambdas START:STOP:STEP|L1,L2,...`` (validated; the value stays the text).
    ``plausible=False``: the command checks the range itself (``sweep``: against its recipe)."""
    return click.option(
        "--lambdas", name, required=required, metavar="START:STOP:STEP|L1,L2,...",
        callback=check_lambdas if plausible else functools.partial(check_lambdas, plausible=False),
        help=f"{help}: an inclusive range 0.1:0.9:0.1 and/or a comma list 0.4,0.5,0.8 (0 = Instruct, "
             "1 = Thinking; a value beyond [-1, 2] is refused as a likely percentage or typo).",
    )


#: ``--overwrite``: replace an existing output folder that we did not write
overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace an existing output folder even if it holds files mi-mergekit did not "
    "write (the whole folder is replaced, atomically).",
)


#: the mergekit options a dry run uses (where models are read from, how they are read and
#: checked); the rest (device, threads, output writing) do nothing without a merge
PLAN_OPTIONS = ("allow_crimes", "unsafe_truncate_embeddings", "transformers_cache", "lora_merge_cache",
                "lora_merge_dtype", "copy_tokenizer", "trust_remote_code", "verbosity")


def merge_options(function=None, *, only=None):
    """mergekit's own merge options (--cuda, --device, --out-shard-size, …); ``only``: just
    these fields (the others keep mergekit's defaults and are not listed by --help)."""
    from mergekit.options import add_merge_options

    def decorate(f):
        wrapped = add_merge_options(f)
        if only is not None:
            wrapped.__click_params__ = [p for p in wrapped.__click_params__ if p.name in only]
        return wrapped

    return decorate(function) if function is not None else decorate


@contextlib.contextmanager
def usage_errors():
    """A generator argument that cannot make a recipe (``RecipeOptionError``) is about the
    command line: a usage error (exit 2) naming the option, as click's own are."""
    try:
        yield
    except RecipeOptionError as exc:
        if exc.option:
            raise click.BadParameter(exc.message, param_hint=exc.option) from None
        raise click.UsageError(exc.message) from None


# ---------------------------------------------------------------------------- devices


def device_options(default: Optional[str] = "cpu", what: str = "compute"):
    """``--cuda`` / ``--device`` as in mergekit, given to the command as one checked
    ``device`` (``default`` when neither is set; None: the backend chooses)."""
    fallback = default or "the backend's default (cuda if available, else cpu)"

    def decorate(function):
        @click.option("--cuda", is_flag=True, help=f"As mergekit's --cuda: {what} on the GPU.")
        @click.option("--device", help=f"As mergekit's --device: cpu, cuda, cuda:1 … (default: cuda with --cuda, "
                                       f"else {fallback}).")
        @functools.wraps(function)
        def command(*args, cuda: bool, device: Optional[str], **kwargs):
            chosen = default
            if device or cuda:
                from mi_mergekit.merge.checks import resolve_device  # imports torch: only when one is asked for

                chosen = resolve_device(device, cuda)
            return function(*args, device=chosen, **kwargs)

        return command

    return decorate


# ---------------------------------------------------------------------------- evaluation


class _JSONObject(click.ParamType):
    name = "json"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc.msg} at column {exc.colno}): {value!r}", param, ctx)
        if not isinstance(data, dict):
            self.fail(f"must be a JSON object, got {type(data).__name__}", param, ctx)
        return data


JSON_OBJECT = _JSONObject()


def eval_option_names() -> tuple:
    """The parameter names of :func:`eval_options`, in the order the commands list them (the
    registered backends' options included)."""
    def probe():
        pass

    eval_options()(probe)
    return tuple(param.name for param in reversed(probe.__click_params__))


def __getattr__(name: str):
    if name == "EVAL_OPTION_NAMES":  # built from the registries on first use
        return eval_option_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _click_type(option):
    """click's type for a backend's :class:`~mi_mergekit.eval.backends.base.BackendOption`."""
    if option.choices:
        return Choice(list(option.choices))
    if option.type is dict:
        return JSON_OBJECT
    if option.type is int and option.minimum is not None:
        return POSITIVE if (option.minimum, option.minimum_open) == (1, False) else click.IntRange(
            min=int(option.minimum), min_open=option.minimum_open)
    if option.type is float and option.minimum is not None:
        return click.FloatRange(min=option.minimum, min_open=option.minimum_open)
    return None if option.type is str else option.type


def backend_click_options() -> list:
    """One click option per option the registered backends declare (an option several backends
    share once, its help naming them; none where every backend reads it)."""
    from mi_mergekit.errors import EvalInputError
    from mi_mergekit.eval.backends import BACKENDS

    declared: Dict[str, tuple] = {}
    for name, backend in BACKENDS.items():
        for option in backend.options:
            first, users = declared.setdefault(option.flag, (option, []))
            if first != option:
                raise EvalInputError(f"the {users[0]} and {name} backends declare {option.flag} differently; "
                                     "share one BackendOption")
            users.append(name)
    options = []
    for option, users in declared.values():
        text = option.help if len(users) < len(BACKENDS) else option.help[:1].upper() + option.help[1:]
        if len(users) < len(BACKENDS):
            text = f"{'/'.join(users)}: {text}"
        if option.is_flag:
            options.append(click.option(option.flag, option.name, is_flag=True, help=text))
            continue
        options.append(click.option(
            option.flag, option.name, type=_click_type(option), default=option.default,
            show_default=option.default is not None, multiple=option.multiple, metavar=option.metavar,
            envvar=option.envvar, show_envvar=option.envvar is not None, help=text))
    return options


def eval_options(n_samples: Optional[int] = None, dataset_required: bool = False):
    """How a model is evaluated — dataset, benchmark, grading, decoding, backend and its
    settings — for ``eval`` and ``find-lambda`` alike (the same names, choices and checks).
    The command receives them as keyword arguments; :func:`evaluation` turns them into
    :func:`mi_mergekit.eval.evaluate`'s."""
    from mi_mergekit.eval.backends import ALIASES as BACKEND_ALIASES
    from mi_mergekit.eval.backends import BACKENDS
    from mi_mergekit.eval.benchmarks import ALIASES, BENCHMARKS
    from mi_mergekit.eval.decoding import PRESETS
    from mi_mergekit.eval.graders import GRADERS
    from mi_mergekit.eval.grading import GRADING_MODES, POSTPROCESS

    def by_grading(mode: str) -> str:
        return "/".join(name for name, benchmark in BENCHMARKS.items() if benchmark.grading == mode)

    options = [
        click.option("--dataset", required=dataset_required,
                     help="Dataset file (.jsonl/.csv/.parquet) or hf:NAME[:CONFIG] (needs `datasets`)."),
        click.option("--benchmark", type=Choice(sorted(BENCHMARKS) + sorted(ALIASES)), default="boxed",
                     show_default=True, help="Dataset kind, prompt and defaults."),
        click.option("--grader", type=Choice(sorted(GRADERS)), help="Grader (default: the benchmark's)."),
        click.option("--grading", type=Choice(GRADING_MODES),
                     help="paper: the paper's evaluator (OpenCompass rules: a response without </think> is graded "
                          "on its whole text; math LaTeX-only, \\boxed first; GPQA options rotated by row, first "
                          f"ANSWER match) — default for {by_grading('paper')}; strict: this harness's stricter "
                          f"rules — default for {by_grading('strict')}. With --grade-only: re-grade in this mode (default: the run's)."),
        click.option("--postprocess", type=Choice(["auto", *POSTPROCESS]), default="auto", show_default=True,
                     help="paper grading: non-reasoning = OpenCompass's extract_non_reasoning_content (the paper's "
                          "Thinking and merged models), none = the raw response (the paper's Instruct model); auto "
                          "= the paper's grouping: none for --decoding instruct with a template that opens no think "
                          "block. With --grade-only: re-grade with this (default: the run's)."),
        click.option("--decoding", type=Choice(sorted(PRESETS) + ["custom"]), default="thinking",
                     show_default=True,
                     help="Sampling preset: thinking (T 0.6, top-p 0.95, top-k 20: the paper's for Thinking and "
                          "merged models), instruct (0.7 / 0.8 / 20), greedy, or custom (give --temperature …)."),
        click.option("--temperature", type=float, help="Override the preset's temperature."),
        click.option("--top-p", type=float, help="Override the preset's top_p."),
        click.option("--top-k", type=int, help="Override the preset's top_k."),
        click.option("--min-p", type=float, help="min_p (default: unset)."),
        click.option("-n", "--n-samples", type=POSITIVE, default=n_samples, show_default=n_samples is not None,
                     help="Samples per question" + ("." if n_samples else f" (default: {_defaults('n_samples')}).")),
        click.option("--max-new-tokens", type=POSITIVE, help=f"Token budget (default: {_defaults('max_new_tokens')})."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Sampling seed (per-chunk seeds derive from it)."),
        click.option("--shuffle-seed", type=int, default=0, show_default=True,
                     help="GPQA option shuffling seed (--grading strict; paper grading rotates options by row)."),
        click.option("--backend", type=Choice(list(BACKENDS) + list(BACKEND_ALIASES)), default="transformers",
                     show_default=True, help="What generates: " + ", ".join(
                         f"{name} ({backend.summary})" for name, backend in BACKENDS.items()) + "."),
        *backend_click_options(),
        click.option("--column", "columns", multiple=True, metavar="ROLE=COLUMN", callback=_check_columns,
                     help="Map a dataset column (repeatable)."),
        click.option("--split", default="train", show_default=True, help="Split for hf: datasets."),
        click.option("--limit", type=POSITIVE, help="Only the first N questions."),
        click.option("--system-prompt", help="Optional system message."),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _defaults(field: str) -> str:
    """The benchmarks' defaults of ``field``: ``aime25 64, others 8``."""
    from collections import Counter

    from mi_mergekit.eval.benchmarks import BENCHMARKS

    values = {name: getattr(benchmark, field) for name, benchmark in BENCHMARKS.items()}
    common = Counter(values.values()).most_common(1)[0][0]
    exceptions = [f"{name} {value}" for name, value in values.items() if value != common]
    return ", ".join(exceptions + [f"others {common}"]) if exceptions else str(common)


def _check_columns(ctx, param, values) -> Dict[str, str]:
    columns = {}
    for value in values:
        role, sep, column = value.partition("=")
        if not sep or not role or not column:
            raise click.BadParameter(f"expected ROLE=COLUMN, got {value!r}", ctx, param)
        columns[role.strip()] = column.strip()
    return columns


class Evaluation(NamedTuple):
    """What :func:`eval_options` asked for: the task, and the backend that runs it with its options."""

    task: Any  # mi_mergekit.eval.task.EvalTask
    backend: str
    backend_options: Dict[str, Any]


def evaluation(opts: Dict[str, Any], device: Optional[str] = None) -> Evaluation:
    """:func:`mi_mergekit.eval.evaluate`'s task, backend and backend options from
    :func:`eval_options`' values (all it needs but the model, the run folder, the label and λ)."""
    from mi_mergekit.eval.decoding import resolve_decoding
    from mi_mergekit.eval.task import EvalTask

    task = EvalTask(
        opts["dataset"], benchmark=opts["benchmark"], columns=opts["columns"], split=opts["split"],
        limit=opts["limit"], system_prompt=opts["system_prompt"], shuffle_seed=opts["shuffle_seed"],
        decoding=resolve_decoding(opts["decoding"], opts["temperature"], opts["top_p"], opts["top_k"],
                                  opts["min_p"]),
        n_samples=opts["n_samples"], max_new_tokens=opts["max_new_tokens"], seed=opts["seed"],
        grader=opts["grader"], grading=opts["grading"], postprocess=opts["postprocess"],
    )
    return Evaluation(task, opts["backend"], backend_options(opts, device))


def backend_options(opts: Dict[str, Any], device: Optional[str] = None) -> Dict[str, Any]:
    """The backend's constructor keywords from the command's values: each of its declared options
    (:class:`~mi_mergekit.eval.backends.base.BackendOption`), and what it takes of the whole evaluation."""
    from mi_mergekit.eval.backends import backend_class

    backend = backend_class(opts["backend"])
    evaluation_wide = {"device": device, "seed": opts["seed"]}
    options = {}
    for option in backend.options:
        value = opts[option.name]
        if option.required and not value:
            raise click.UsageError(f"--backend {backend.name} needs {option.flag}"
                                   + (" (repeatable)" if option.multiple else ""))
        if option.only_when_set and not value:
            continue
        options[option.keyword] = option.value(value)
    return {**options, **{name: evaluation_wide[name] for name in backend.takes}}
