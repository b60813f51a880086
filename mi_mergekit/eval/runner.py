"""Run an evaluation: dataset -> prompts -> backend -> sample store -> graders -> metrics.

Python API (also what ``mi-mergekit eval`` calls)::

    from mi_mergekit.eval import EvalTask, evaluate, grade_run, load_run

    task = EvalTask("data/aime25.jsonl", benchmark="aime25", decoding="thinking", n_samples=64, seed=0)
    run_dir = evaluate("out/mi-0.8", task, "runs/mi-0.8-aime")
    run = load_run(run_dir)
    run["metrics"]["mean"], run["metrics"]["pass@k"][64], run["metrics"]["think_ratio"]

Resuming: calling :func:`evaluate` again with the same ``out_dir`` and task
generates only the chunks whose samples are missing from ``samples.jsonl``.
Settings that change the samples (model, dataset contents, decoding, budget,
seeds, chunk size, prompt) must match the stored ``run.json`` or the call
fails. Re-grading (:func:`grade_run`) never loads a model or generates.

λ: ``lambda_`` is recorded in ``run.json`` for the report's plots; if it is
not given, ``<model_path>/mi_plan.json`` ``{"lambda": ...}`` is used when present
(unless that plan says ``"whole_model": false``).

Grading: ``grading`` is ``paper`` (OpenCompass's rules, the paper's evaluator; the
default for aime25 / ifeval / gpqa) or ``strict`` (see :mod:`mi_mergekit.eval.grading`),
recorded in ``run.json`` and ``metrics.json``. The mode may also fix how a benchmark lays out
its prompts at generation (its prompt options, e.g. GPQA's option order ``gpqa_options``:
``rotate`` / ``shuffle``), which a resume must keep; :func:`grade_run` re-grades a run in
either mode.
"""

from __future__ import annotations

import datetime
import hashlib
import time
import json
from pathlib import Path
from typing import List, Optional, Tuple, Union

from mi_mergekit.errors import ContractError, EvalInputError
from mi_mergekit.eval import store as st
from mi_mergekit.eval.backends import Backend, Chunk, find_backend, make_backend
from mi_mergekit.eval.backends.base import is_cut_off
from mi_mergekit.eval.benchmarks import BENCHMARKS, prompt_keys
from mi_mergekit.eval.datasets import dataset_fingerprint
from mi_mergekit.eval.decoding import Decoding, chunk_seed
from mi_mergekit.eval.graders import get_grader
from mi_mergekit.eval.grading import (LEGACY_GRADING, LEGACY_POSTPROCESS, check_grading, check_postprocess,
                                      default_postprocess)
from mi_mergekit.eval.metrics import lambda_breakdown, run_metrics
from mi_mergekit.eval.model_info import model_lambda, model_profile
from mi_mergekit.eval.prompts import prompt_record
from mi_mergekit.eval.run_folder import (FORMAT_VERSION, RunFolderError, RunMismatchError, check_model_folder,
                                         check_run_folder, check_writable, remove_failed_start)
from mi_mergekit.eval.task import EvalTask
from mi_mergekit.eval.thinking import split_response
from mi_mergekit.runlock import run_lock

#: run.json keys that determine the samples, beside the benchmarks' prompt options
#: (:func:`generation_keys`); a resume must not change them
GENERATION_KEYS = (
    "model",
    "benchmark",
    "dataset_fingerprint",
    "decoding",
    "n_samples",
    "max_new_tokens",
    "seed",
    "shuffle_seed",
    "system_prompt",
    "backend_name",
    "chunk_size",
)


def generation_keys() -> tuple:
    """Every run.json key a resume must not change: :data:`GENERATION_KEYS`, the registered
    benchmarks' prompt options and the sampling fields a server did not take."""
    return GENERATION_KEYS + prompt_keys() + ("sampling_not_sent",)


def evaluate(
    model_path: Union[str, Path],
    task: EvalTask,
    out_dir: Union[str, Path],
    backend: Union[str, Backend] = "transformers",
    *,
    backend_options: Optional[dict] = None,
    label: Optional[str] = None,
    lambda_: Optional[float] = None,
    progress: bool = True,
) -> Path:
    """Generate (or resume) and grade one run of ``model_path`` on ``task`` into ``out_dir``;
    returns the run directory.

    ``task``: the questions, their prompt, decoding, samples, budget, seed and grading
    (:class:`~mi_mergekit.eval.task.EvalTask`; its ``None`` fields take the benchmark's
    defaults). ``backend`` is a registered name (``transformers``, ``vllm``, ``openai``) with
    ``backend_options`` for its constructor, or a ready :class:`~mi_mergekit.eval.backends.Backend`.
    ``label``: the row name in reports (default: the model folder's name); ``lambda_``: recorded
    for the report's plots (default: the model's ``mi_plan.json``).

    One process writes ``out_dir`` at a time (:mod:`mi_mergekit.runlock`); a second one
    stops before generating.
    """
    if not isinstance(task, EvalTask):
        raise EvalInputError(f"evaluate() takes an EvalTask (mi_mergekit.eval.EvalTask), got {type(task).__name__}")
    task = task.settled()  # unknown names and missing extras fail before anything runs
    examples = task.examples()
    local = isinstance(backend, str) and getattr(find_backend(backend), "local_model", False)
    load_path = check_model_folder(model_path) if local else str(model_path)
    if lambda_ is None:
        lambda_ = model_lambda(load_path)
    out = Path(out_dir)
    check_run_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_writable(out)
        _generate(out, str(model_path), load_path, examples, task, backend, backend_options, label=label,
                  lambda_=lambda_, progress=progress)
    except BaseException:
        if created:
            remove_failed_start(out)
        raise
    return out


def _generate(out: Path, model: str, load_path: str, examples, task: EvalTask, backend, backend_options, *,
              label, lambda_, progress) -> None:
    """:func:`evaluate`'s work in its run folder: generate what is missing, then grade."""
    prompt_options = task.prompt_options()
    with run_lock(out, "mi-mergekit eval"):
        if isinstance(backend, str):
            backend = make_backend(backend, load_path, **(backend_options or {}))
        try:
            prompts = [prompt_record(task.bench.kind, e, backend.tokenizer, task.shuffle_seed, task.system_prompt,
                                     **prompt_options) for e in examples]
            store = st.SampleStore(out / st.SAMPLES_FILE)
            todo = plan_chunks(prompts, task.n_samples, backend.chunk_size, task.seed, store,
                               getattr(backend, "prompt_batch", 1))
            # what the backend makes of these settings, checked before anything is stored
            server = backend.prepare(todo[0], task.decoding, task.max_new_tokens) if todo else None
            config = _run_config(
                model, task, backend, label=label, lambda_=lambda_,
                **{key: prompt_options.get(key) for key in prompt_keys()}, server=server,
                sampling_not_sent=sampling_not_sent(server),
                postprocess=task.postprocess or default_postprocess(
                    task.decoding.name, any(p["prompt_opens_think"] for p in prompts)),
            )
            _check_resume(out, config)
            st.write_json(out / st.RUN_FILE, config)
            st.write_jsonl(out / st.PROMPTS_FILE, prompts)
            started = time.monotonic()
            added, tokens = generate_missing(out, prompts, backend, task.decoding, task.n_samples,
                                             task.max_new_tokens, task.seed, model, progress)
            config["timing"] = _timing(config.get("timing"), time.monotonic() - started, added, tokens)
            if todo:
                config["server"] = backend.report()
            st.write_json(out / st.RUN_FILE, config)
        finally:
            backend.close()
        grade_run(out, progress=progress)


def _run_config(model: str, task: EvalTask, backend, *, label, lambda_, **extra) -> dict:
    described = backend.describe()
    profile = model_profile(model) if lambda_ is None else None  # read once: an older plan reads a header
    decoding = task.decoding.to_dict()
    return {
        "format": FORMAT_VERSION,
        "model": model,
        "label": label or Path(model).name,
        "lambda": lambda_,
        **({"profile": profile} if profile else {}),
        "benchmark": task.benchmark,
        "dataset": str(task.dataset),
        "dataset_fingerprint": dataset_fingerprint(str(task.dataset)),
        "grader": task.grader,
        "decoding": decoding,
        "n_samples": task.n_samples,
        "max_new_tokens": task.max_new_tokens,
        "seed": task.seed,
        "backend": described,
        "backend_name": described["name"],
        "chunk_size": described["chunk_size"],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        # what shapes every sample, hashed so two runs can be compared at a glance
        "chat_template_sha256": _sha256(getattr(backend.tokenizer, "chat_template", None)),
        "generation_settings_sha256": _sha256({
            "decoding": decoding, "max_new_tokens": task.max_new_tokens, "n_samples": task.n_samples,
            "seed": task.seed, "system_prompt": task.system_prompt, "backend": described}),
        "split": task.split,
        "limit": task.limit,
        "columns": task.columns,
        "shuffle_seed": task.shuffle_seed,
        "system_prompt": task.system_prompt,
        "grading": task.grading,
        **extra,
    }


def _timing(before: Optional[dict], seconds: float, samples: int, tokens: int) -> dict:
    """Generation wall time and throughput, summed over the invocations that generated this run."""
    before = before or {}
    seconds = before.get("generation_seconds", 0.0) + seconds
    tokens = before.get("generated_tokens", 0) + tokens
    return {
        "generation_seconds": round(seconds, 3),
        "generated_samples": before.get("generated_samples", 0) + samples,
        "generated_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
    }


def _sha256(value) -> Optional[str]:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("mi-mergekit", "transformers", "torch", "math-verify", "lm_eval", "vllm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def sampling_not_sent(server: Optional[dict]) -> List[str]:
    """The sampling fields of the decoding that a server did not take (run.json ``sampling_not_sent``)."""
    from mi_mergekit.eval.backends.openai_http import SAMPLING_EXTENSIONS

    return sorted(f for f in (server or {}).get("not_sent", {}) if f in SAMPLING_EXTENSIONS)


def _stored(old: dict, key: str):
    """A run.json setting, with the value runs written before it existed implied."""
    if key in prompt_keys() and key not in old:  # a prompt option written before it was recorded
        bench = BENCHMARKS.get(old.get("benchmark"))
        return None if bench is None else bench.legacy_prompt_options().get(key)
    if key == "sampling_not_sent" and key not in old:
        return []
    return old.get(key)


def _check_resume(out: Path, config: dict) -> None:
    path = out / st.RUN_FILE
    if not path.exists():
        return
    old = st.read_json(path)
    if config.get("server") is None and old.get("server") is not None:
        # nothing left to generate, so no server was asked: what it was asked before stands
        config["server"], config["sampling_not_sent"] = old["server"], _stored(old, "sampling_not_sent")
    diffs = [k for k in generation_keys() if _stored(old, k) != config.get(k)]
    if diffs:
        details = "; ".join(f"{k}: stored {_stored(old, k)!r}, now {config.get(k)!r}" for k in diffs)
        hint = "".join(bench.resume_hint(diffs, lambda key: _stored(old, key)) for bench in BENCHMARKS.values())
        raise RunMismatchError(f"the --out folder holds a run with other settings ({details}){hint}; "
                              f"use a new --out folder ({out})")
    config["created"] = old.get("created", config["created"])
    if "timing" in old:
        config["timing"] = old["timing"]


def plan_chunks(prompts: List[dict], n_samples: int, chunk_size: int, seed: int, have,
                prompt_batch: int = 1) -> List[Chunk]:
    """The chunks with at least one sample missing from ``have`` (a container of (qid, index)).

    With ``prompt_batch = P > 1`` the chunks of questions ``[gP, (g+1)P)`` that share
    a sample range form batch ``g``; a batch with anything missing is planned whole.
    """
    chunks = []
    for start in range(0, n_samples, chunk_size):
        indices = tuple(range(start, min(start + chunk_size, n_samples)))
        for first in range(0, len(prompts), max(1, prompt_batch)):
            group = prompts[first:first + max(1, prompt_batch)]
            if not any((r["question_id"], i) not in have for r in group for i in indices):
                continue
            batch = (start // chunk_size) * len(prompts) + first if prompt_batch > 1 else -1
            chunks.extend(
                Chunk(r["question_id"], r["prompt"], r["messages"], indices,
                      chunk_seed(seed, r["question_id"], start), batch)
                for r in group
            )
    return chunks


def generate_missing(out: Path, prompts, backend: Backend, decoding: Decoding, n_samples: int,
                     max_new_tokens: int, seed: int, model: str, progress: bool = True) -> Tuple[int, int]:
    """Generate every missing sample into ``out/samples.jsonl``; returns (samples added, their tokens)."""
    from tqdm.auto import tqdm

    store = st.SampleStore(out / st.SAMPLES_FILE)
    total = len(prompts) * n_samples
    done_before = sum((p["question_id"], i) in store for p in prompts for i in range(n_samples))
    chunks = plan_chunks(prompts, n_samples, backend.chunk_size, seed, store,
                         getattr(backend, "prompt_batch", 1))
    added = tokens = 0
    with tqdm(total=total, initial=done_before, desc="generating", unit="sample", disable=not progress) as bar:
        for chunk, completions in backend.generate(chunks, decoding, max_new_tokens):
            if len(completions) != len(chunk.indices):
                raise ContractError(f"backend returned {len(completions)} completions for {len(chunk.indices)} samples")
            records = [
                {
                    "question_id": chunk.question_id,
                    "sample_index": index,
                    "text": c.text,
                    "n_tokens": c.n_tokens,
                    "finish_reason": c.finish_reason,
                    "seed": chunk.seed,
                    "decoding": decoding.to_dict(),
                    "model": model,
                    **backend.sample_fields(chunk),
                }
                for index, c in zip(chunk.indices, completions)
            ]
            tokens += sum(r["n_tokens"] for r in records if (r["question_id"], r["sample_index"]) not in store)
            written = store.append(records)
            added += written
            bar.update(written)
    return added, tokens


def grade_run(run_dir: Union[str, Path], grader: Optional[str] = None, progress: bool = True,
              grading: Optional[str] = None, postprocess: Optional[str] = None) -> dict:
    """Grade all stored samples of a complete run and write grades.jsonl, metrics.json, questions.json.

    Never generates. ``grader`` overrides the run's grader (recorded in metrics.json).
    ``grading`` (``paper`` | ``strict``) overrides the run's grading mode (default: the
    one in run.json; ``strict`` for runs written before grading modes existed); the
    mode used is written to run.json and metrics.json.
    """
    out = Path(run_dir)
    if not (out / st.RUN_FILE).is_file():
        raise RunFolderError(f"the folder is not a run directory: it has no {st.RUN_FILE} ({out})")
    config = st.read_json(out / st.RUN_FILE)
    mode = check_grading(grading) or config.get("grading", LEGACY_GRADING)
    post = check_postprocess(postprocess) or config.get("postprocess", LEGACY_POSTPROCESS)
    grader_name = grader or config["grader"]
    grader_obj = get_grader(grader_name, mode)
    prompts = {p["question_id"]: p for p in st.read_jsonl(out / st.PROMPTS_FILE)}
    store = st.SampleStore(out / st.SAMPLES_FILE)
    n = config["n_samples"]
    missing = [(q, i) for q in prompts for i in range(n) if (q, i) not in store]
    if missing:
        raise EvalInputError(
            f"the run is incomplete: {len(missing)} of {len(prompts) * n} samples missing; "
            "run the same `mi-mergekit eval` command again to resume", path=out)
    grades = []
    from tqdm.auto import tqdm

    for qid, item in tqdm(prompts.items(), total=len(prompts), desc="grading", unit="question",
                          disable=not progress):
        samples = [store.get(qid, i) for i in range(n)]
        graded = [_grade_sample(grader_obj, s, item, post) for s in samples]
        keys = grader_obj.vote_keys([g["extracted"] for g in graded])
        for g, key in zip(graded, keys):
            g["vote_key"] = key
        grades.extend(graded)
    st.write_jsonl(out / st.GRADES_FILE, grades)
    if (config.get("grading"), config.get("postprocess")) != (mode, post):
        config["grading"], config["postprocess"] = mode, post
        st.write_json(out / st.RUN_FILE, config)
    metrics = run_metrics(grades)
    if not grader_obj.votes:  # e.g. IFEval: a majority answer means nothing; vote@k is left empty
        for block in [metrics["run"], *metrics["questions"]]:
            block["vote@k"] = {}
    # a run made before profiles were recorded: its model folder's plan, where it is still there
    profile = config.get("profile") or (model_profile(config["model"]) if config.get("lambda") is None else None)
    summary = {
        "label": config["label"],
        "lambda": config.get("lambda"),
        **({"profile": profile} if profile else {}),
        "benchmark": config["benchmark"],
        "grader": grader_name,
        "grading": mode,
        "postprocess": post if mode == "paper" else None,
        "model": config["model"],
        "decoding": config["decoding"]["name"],
        "decoding_deviations": decoding_deviations(config),
        **metrics["run"],
        "timing": config.get("timing"),
    }
    routing = lambda_breakdown(grades, metrics["questions"])
    if routing is not None:  # a routed run: the λ each question got (samples.jsonl "lambda")
        summary["routing"] = routing
    st.write_json(out / st.METRICS_FILE, summary)
    st.write_json(out / st.QUESTIONS_FILE, metrics["questions"])
    return summary


def decoding_deviations(config: dict) -> List[str]:
    """How the samples' decoding differs from the run's decoding settings, one phrase each
    (sampling fields a server did not take, or took through --extra-body)."""
    server = config.get("server") or {}
    deviations = []
    for name, entry in sorted((server.get("not_sent") or {}).items()):
        if name in ("top_k", "min_p"):
            value = entry.get("value")
            deviations.append(f"{name}={value} not sent (the server refuses it; --drop-unsupported)"
                              if value is not None else f"{name} unset: the server's own default applies")
    deviations += [f"{name} sent through --extra-body" for name in server.get("via_extra_body") or ()]
    return deviations


def _grade_sample(grader, sample: dict, item: dict, postprocess: str = LEGACY_POSTPROCESS) -> dict:
    split = split_response(
        sample["text"], item.get("prompt_opens_think", False),
        truncated=is_cut_off(sample.get("finish_reason")), grading=grader.grading, postprocess=postprocess,
    )
    grade = grader.no_answer() if split.answer is None else grader.grade(split.answer, item)
    return {
        "question_id": sample["question_id"],
        "sample_index": sample["sample_index"],
        "correct": bool(grade.correct),
        "extracted": grade.extracted,
        "scores": grade.scores,
        "has_think_close": split.has_think_close,
        "unterminated": split.unterminated,
        "n_tokens": sample["n_tokens"],
        "finish_reason": sample["finish_reason"],
        **({"lambda": sample["lambda"]} if "lambda" in sample else {}),
    }


def _int_keys(mapping: dict) -> dict:
    return {int(k): v for k, v in mapping.items()}


def load_run(run_dir: Union[str, Path]) -> dict:
    """A graded run as a dict: ``path``, ``config`` (run.json), ``metrics`` (metrics.json),
    ``questions`` (questions.json). ``pass@k`` / ``mean@k`` / ``vote@k`` maps have int keys."""
    out = Path(run_dir)
    if not (out / st.METRICS_FILE).is_file():
        raise RunFolderError(f"{out} has no {st.METRICS_FILE}; is it a finished (graded) run directory?")
    metrics = st.read_json(out / st.METRICS_FILE)
    questions = st.read_json(out / st.QUESTIONS_FILE)
    for block in [metrics, *questions]:
        for key in ("pass@k", "mean@k", "vote@k"):
            block[key] = _int_keys(block[key])
    for key, by_k in metrics.get("stderr", {}).items():
        metrics["stderr"][key] = _int_keys(by_k)
    return {"path": out, "config": st.read_json(out / st.RUN_FILE), "metrics": metrics, "questions": questions}
