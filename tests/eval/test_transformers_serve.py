"""`mi-mergekit eval` against a real OpenAI-compatible server nobody here wrote: `transformers serve`
(transformers[serving], the `test` extra) on 127.0.0.1, serving the shipped toy Thinking model.

What it does that our scripted server only imitates: it refuses fields outside its schema
(HTTP 422 `Unexpected fields in the request: {'top_k', 'min_p'}`), ignores `n` (streams choice 0
only), ends a stream without `data: [DONE]` with the usage in the finish event, streams chat
thoughts as `reasoning_content`, and counts the EOS in `completion_tokens`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mi_mergekit.toy.task import HELDOUT_PATH
from test_cli_resume import CLI, run_cli, subprocess_env
from tiny_model import BOS_TEMPLATE, build_model

TOY = (Path(__file__).resolve().parents[2] / "mi_mergekit" / "toy" / "pair" / "thinking").resolve()
SERVE = Path(sys.executable).with_name("transformers")
BUDGET = 24


@contextlib.contextmanager
def transformers_serve(log: Path, *model):
    """`transformers serve` on a free loopback port; with ``model``, pinned to that folder (every
    request gets it, whatever model it names), else each request names its folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**subprocess_env(), "HF_HUB_OFFLINE": "1"}
    with log.open("w") as handle:
        proc = subprocess.Popen([str(SERVE), "serve", *map(str, model), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu"], stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"transformers serve did not come up: {log.read_text()[-2000:]}"
            time.sleep(0.3)
        yield f"{url}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """`transformers serve` with no pinned model: each request names its folder."""
    with transformers_serve(tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    path.write_text("".join(HELDOUT_PATH.read_text().splitlines(keepends=True)[:4]))
    return path


def eval_cli(serve, dataset, out, *extra, model=TOY, n=2):
    return run_cli("eval", "--model", model, "--backend", "openai", "--base-url", serve, "--dataset", dataset,
                   "-n", n, "--max-new-tokens", BUDGET, "--out", out, "--no-progress", *extra)


def rows(run):
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_eval_through_transformers_serve(serve, dataset, tmp_path, api):
    out = tmp_path / api
    # the paper's preset except top_k, which transformers serve does not take; min_p (unset) it refuses too
    result = eval_cli(serve, dataset, out, "--api", api, "--decoding", "custom", "--temperature", "0.6",
                      "--top-p", "0.95")
    assert result.returncode == 0, result.stderr
    stored = rows(out)
    assert len(stored) == len({(r["question_id"], r["sample_index"]) for r in stored}) == 4 * 2  # each once
    assert result.stderr.count("ignores n > 1") == 1  # said once
    record = json.loads((out / "run.json").read_text())["server"]
    assert record["n_per_request"] == "ignored by the server: one sample per request, seeds seed + j"
    assert record["token_counts"] == ["server usage"]
    assert {f: e["value"] for f, e in record["not_sent"].items()} == {"top_k": None, "min_p": None}
    # Token #N is the server's count (EOS included): a cut sample is exactly the budget
    for r in stored:
        assert r["finish_reason"] in ("stop", "length")
        assert (r["n_tokens"] == BUDGET) == (r["finish_reason"] == "length") and r["n_tokens"] <= BUDGET
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokens_mean"] == sum(r["n_tokens"] for r in stored) / len(stored)
    assert metrics["think_ratio"] > 0  # the toy Thinking model closes its thought within the budget


def test_a_refused_field_stops_the_run_and_drop_unsupported_records_it(serve, dataset, tmp_path):
    refused = eval_cli(serve, dataset, tmp_path / "refused", "--samples-per-request", "1")  # --decoding thinking
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: the server {serve} does not accept the sampling field top_k (top_k=20, set by "
                           "the decoding preset 'thinking'): HTTP 422 \"Unexpected fields in the request: ")
    assert "--drop-unsupported" in last and "--extra-body" in last
    assert not (tmp_path / "refused" / "samples.jsonl").exists() and not (tmp_path / "refused" / "run.json").exists()

    out = tmp_path / "dropped"
    dropped = eval_cli(serve, dataset, out, "--samples-per-request", "1", "--drop-unsupported", n=1)
    assert dropped.returncode == 0, dropped.stderr
    config = json.loads((out / "run.json").read_text())
    assert config["server"]["not_sent"]["top_k"] == {"value": 20, "why": "refused by the server; dropped "
                                                                          "(--drop-unsupported)"}
    assert config["sampling_not_sent"] == ["min_p", "top_k"] and config["decoding"]["top_k"] == 20
    report = run_cli("report", out, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    assert "**decoding deviation** of thinking on Boxed from its thinking settings: min_p unset: the server's own " \
           "default applies; top_k=20 not sent (the server refuses it; --drop-unsupported)" in report.stdout


def test_an_interrupted_run_resumes_with_every_sample_once(serve, dataset, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--model", TOY, "--backend", "openai", "--base-url", serve, "--dataset", dataset, "-n", "3",
            "--max-new-tokens", BUDGET, "--out", out, "--no-progress", "--drop-unsupported", "--concurrency", "1"]
    first = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env())
    deadline = time.monotonic() + 120
    while not ((out / "samples.jsonl").exists() and len((out / "samples.jsonl").read_text().splitlines()) >= 2):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = len(rows(out))
    assert 2 <= before < 12
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    stored = rows(out)
    assert len(stored) == len({(r["question_id"], r["sample_index"]) for r in stored}) == 4 * 3
    timing = json.loads((out / "run.json").read_text())["timing"]
    assert timing["generated_samples"] == 12 - before  # the resumed run sent only what was missing


def test_a_tokenizer_that_adds_bos_gets_one_bos_from_the_server(serve, tmp_path):
    # transformers serve tokenizes a completions prompt with special tokens and refuses
    # add_special_tokens: the rendered prompt's BOS text is cut so the server adds the only one
    model = build_model(tmp_path / "bos-model", chat_template=BOS_TEMPLATE, bos=True)
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"id": "q1", "question": "1+1=", "answer": "2"}) + "\n")
    out = tmp_path / "bos"
    result = run_cli("eval", "--model", model, "--backend", "openai", "--base-url", serve, "--dataset", data, "-n", "1",
                     "--max-new-tokens", "4", "--out", out, "--no-progress", "--drop-unsupported")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "run.json").read_text())["server"]
    assert "add_special_tokens" in record["not_sent"]
    assert record["prompt_tokens"]["server"] == record["prompt_tokens"]["tokenizer"]  # one BOS, not two
    assert "counts" not in result.stderr  # no prompt-token mismatch warning


def test_a_routed_run_over_a_fleet_of_transformers_serve(dataset, tmp_path):
    """λ per question against real servers: one `transformers serve` per grid λ, each pinned to its
    model (here the toy pair's endpoints as λ = 0 and λ = 1). `route eval` sends each question to
    its λ's server only, and every routed sample is the sample a plain `eval` of that question gets
    from that server (greedy decoding: the same request, the same answer)."""
    from mi_mergekit.routing.policy import Router
    from mi_mergekit.routing.signals import signal_values

    grid = {0.0: TOY.parent / "instruct", 1.0: TOY}
    signals = tmp_path / "signals.json"
    made = run_cli("route", "signals", "--instruct", grid[0.0], "--thinking", grid[1.0], "--dataset", dataset,
                   "--signals", "divergence", "--out", signals)
    assert made.returncode == 0, made.stderr
    values = signal_values(json.loads(signals.read_text()), "divergence")
    cut = sorted(values.values())[len(values) // 2]
    router = Router("divergence", (0.0, 1.0), (cut,), fit={"name": "fleet"}).save(tmp_path / "router.json")
    assignment = Router.load(router).assign(values)
    assert set(assignment.values()) == {0.0, 1.0}  # both servers get questions

    common = ["--dataset", dataset, "-n", "1", "--max-new-tokens", BUDGET, "--decoding", "greedy", "--no-progress"]
    with contextlib.ExitStack() as stack:
        urls = {lam: stack.enter_context(transformers_serve(tmp_path / f"serve_{lam:g}.log", model))
                for lam, model in grid.items()}
        route = ["route", "eval", "--router", router, "--model", f"0={urls[0.0]}", "--model", f"1={urls[1.0]}",
                 "--signals", signals, "--tokenizer", TOY, "--out", tmp_path / "routed", *common]
        # a pinned server answers to its own model's name only, so one name for all is refused...
        refused = run_cli(*route)
        assert refused.returncode == 1 and "Server is pinned to" in refused.stderr
        assert not (tmp_path / "routed" / "samples.jsonl").exists()
        # ...and each λ gets its own
        routed = run_cli(*route, "--served-model", f"0={grid[0.0]},1={grid[1.0]}")
        assert routed.returncode == 0, routed.stderr
        plain = {}
        for lam, url in urls.items():
            result = run_cli("eval", "--model", TOY, "--backend", "openai", "--base-url", url, "--served-model",
                             grid[lam], "--out", tmp_path / f"plain_{lam:g}", *common)
            assert result.returncode == 0, result.stderr
            plain[lam] = {r["question_id"]: r for r in rows(tmp_path / f"plain_{lam:g}")}
    samples = rows(tmp_path / "routed")
    assert sorted(r["question_id"] for r in samples) == sorted(assignment)
    for sample in samples:
        lam = assignment[sample["question_id"]]
        twin = plain[lam][sample["question_id"]]
        assert sample["lambda"] == lam and sample["model"] == urls[lam]
        assert (sample["text"], sample["n_tokens"], sample["finish_reason"]) == (
            twin["text"], twin["n_tokens"], twin["finish_reason"])
    # the two endpoints answer differently, so a sample from the wrong server would show
    assert any(plain[0.0][q]["text"] != plain[1.0][q]["text"] for q in assignment)
    metrics = json.loads((tmp_path / "routed" / "metrics.json").read_text())
    assert {b["lambda"]: b["questions"] for b in metrics["routing"]["by_lambda"]} == {
        lam: list(assignment.values()).count(lam) for lam in grid}


def test_compare_through_transformers_serve(serve, dataset, tmp_path):
    """`mi-mergekit compare` on the toy triple with every row sent to one `transformers serve`, which
    loads each row's folder (the Instruct model, the Thinking model, a stock TA merge, an MI merge)
    by the name the request gives. The server takes no top_k: --drop-unsupported, recorded per row."""
    toy = TOY.parent
    out = tmp_path / "cmp"
    result = run_cli("compare", "--instruct", toy / "instruct", "--thinking", toy / "thinking", "--base", toy / "base",
                     "--baselines", "ta", "--lambdas", "0.5", "--dataset", dataset, "-n", 1, "--max-new-tokens", BUDGET,
                     "--backend", "openai", "--base-url", serve, "--drop-unsupported", "--out", out, "--no-progress",
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for row, model in (("instruct", toy / "instruct"), ("thinking", toy / "thinking"), ("ta", out / "models" / "ta"),
                       ("mi_0.5", out / "models" / "mi_0.5")):
        config = json.loads((out / "runs" / row / "run.json").read_text())
        assert config["backend_name"] == "openai" and config["backend"]["served_model"] == str(model.resolve()), row
        assert config["sampling_not_sent"] == ["min_p", "top_k"], row
        assert len(rows(out / "runs" / row)) == 4
    table = (out / "report" / "comparison.md").read_text()
    assert "| TA |" in table and "| MI-0.5 |" in table
    assert "**decoding deviation** of ta on Boxed" in (out / "report" / "report.md").read_text()
