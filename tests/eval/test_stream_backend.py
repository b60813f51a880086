"""The streaming OpenAI-compatible backend against a scripted loopback server (bounded, stops by itself)."""

from __future__ import annotations

import json
import socket

import pytest

from mi_mergekit.eval import evaluate
from mi_mergekit.eval.backends import Chunk
from mi_mergekit.eval.backends.openai_http import (
    HTTPBackendError,
    OpenAIHTTPBackend,
    join_reasoning,
    retry_after_seconds,
)
from mi_mergekit.eval.decoding import PRESETS
from stream_server import StreamServer
from tiny_model import build_tokenizer

THINKING = PRESETS["thinking"]


def chunks(n_questions=3, indices=(0,)):
    return [Chunk(f"q{i}", f"prompt {i}", [{"role": "user", "content": f"question {i}"}], indices, 100 + i)
            for i in range(n_questions)]


def backend(server, **options):
    options.setdefault("tokenizer", build_tokenizer())
    options.setdefault("backoff", 0.01)
    return OpenAIHTTPBackend("m", options.pop("base_url", server.base_url), **options)


def texts(results):
    return {chunk.question_id: [(c.text, c.n_tokens, c.finish_reason) for c in completions]
            for chunk, completions in results}


def test_a_generation_longer_than_the_idle_timeout_streams_through_once():
    # 11 events 0.3 s apart: 3.3 s in all, over 3x the 1 s idle timeout (margins for a loaded machine)
    with StreamServer(thought_words=6, delay=0.3) as server:
        out = texts(backend(server, timeout=1.0, samples_per_request=1).generate(chunks(1), THINKING, 100))
        assert len(server.requests) == 1  # no resend
    (text, n_tokens, finish), = out["q0"]
    assert text == "w3 w4 w5 w6 w7 w8 </think> The answer is \\boxed{2}"  # seed 100, words (seed + i) % 97
    assert (n_tokens, finish) == (11, "stop")  # the server's usage


def test_silence_longer_than_the_idle_timeout_is_retried():
    with StreamServer(faults={1: "stall"}, stall=3.0) as server:
        out = texts(backend(server, timeout=1.0, samples_per_request=1).generate(chunks(1), THINKING, 100))
        assert len(server.requests) == 2
    assert out["q0"][0][0].endswith("\\boxed{2}")


def test_429_waits_for_retry_after_then_retries():
    with StreamServer(faults={1: "429"}, retry_after=0.6) as server:
        out = texts(backend(server, samples_per_request=1).generate(chunks(1), THINKING, 100))
        assert len(server.requests) == 2
        assert server.times[1] - server.times[0] >= 0.55
    assert len(out["q0"]) == 1


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_a_broken_stream_is_retried_and_stored_once(tmp_path, fixtures):
    with StreamServer(faults={1: "drop", 3: "drop"}) as server:
        run = evaluate("m", fixtures / "boxed.jsonl", out_dir=tmp_path / "run", backend="openai",
                       backend_options={"base_url": server.base_url, "api": "chat", "concurrency": 1,
                                        "backoff": 0.01}, n_samples=2, max_new_tokens=100, progress=False)
        n_requests = len(server.requests)
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    keys = [(r["question_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6  # 3 questions x 2 samples, each once
    assert n_requests == 6 + 2
    assert all(r["text"].endswith("}") and "</think>" in r["text"] for r in rows)


def test_reasoning_content_grades_like_the_completions_path(tmp_path, fixtures, tiny_model):
    common = dict(n_samples=2, max_new_tokens=100, seed=3, progress=False)
    runs = {}
    for name, api, parser in (("completions", "completions", False), ("parser", "chat", True), ("plain", "chat", False)):
        with StreamServer(reasoning_parser=parser) as server:
            runs[name] = evaluate(tiny_model if api == "completions" else "m", fixtures / "boxed.jsonl",
                                  out_dir=tmp_path / name, backend="openai",
                                  backend_options={"base_url": server.base_url, "api": api, "backoff": 0.01,
                                                   "samples_per_request": 1}, **common)

    def graded(run):
        rows = [json.loads(line) for line in (run / "grades.jsonl").read_text().splitlines()]
        return [(r["question_id"], r["sample_index"], r["correct"], r["extracted"], r["has_think_close"], r["n_tokens"])
                for r in rows]

    def samples(run):
        return sorted((r["question_id"], r["sample_index"], r["text"])
                      for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines()))

    assert samples(runs["parser"]) == samples(runs["plain"])
    # the same seeds go to the server either way: same texts, grades, Think #R and Token #N
    assert [s[2] for s in samples(runs["parser"])] == [s[2] for s in samples(runs["completions"])]
    assert graded(runs["parser"]) == graded(runs["completions"])
    metrics = {k: json.loads((run / "metrics.json").read_text()) for k, run in runs.items()}
    assert metrics["parser"]["think_ratio"] == metrics["completions"]["think_ratio"] == 1.0


def test_a_thought_cut_by_the_budget_is_no_answer_in_chat_mode(tmp_path, fixtures):
    with StreamServer(reasoning_parser=True, thought_words=20) as server:
        run = evaluate("m", fixtures / "boxed.jsonl", out_dir=tmp_path / "run", backend="openai",
                       backend_options={"base_url": server.base_url, "api": "chat", "backoff": 0.01},
                       n_samples=1, max_new_tokens=5, progress=False)
    grades = [json.loads(line) for line in (run / "grades.jsonl").read_text().splitlines()]
    assert all(g["unterminated"] and not g["correct"] and g["finish_reason"] == "length" for g in grades)
    assert join_reasoning("hmm", "", "length") == "<think>hmm"
    assert join_reasoning("hmm", " \\boxed{1}", "stop") == "hmm</think> \\boxed{1}"
    assert join_reasoning("", "plain", "stop") == "plain"


def test_concurrency_is_capped():
    with StreamServer(delay=0.05) as server:
        results = list(backend(server, concurrency=2, samples_per_request=1).generate(chunks(6), THINKING, 100))
        assert server.max_in_flight == 2
    assert len(results) == 6


def test_n_per_request_and_fallback_when_the_server_refuses_it():
    with StreamServer() as server:
        out = texts(backend(server, samples_per_request=3).generate(chunks(2, (0, 1, 2)), THINKING, 100))
        assert [r["n"] for r in server.requests] == [3, 3]
    assert [t for t, _, _ in out["q0"]][1].endswith("\\boxed{3}")  # choice 1: (seed 100 + 1) % 7
    with StreamServer(refuse_n=True) as server:
        fallback = texts(backend(server, samples_per_request=3, concurrency=1).generate(chunks(1, (0, 1, 2)), THINKING, 100))
        assert [r["n"] for r in server.requests] == [3, 1, 1, 1]
        assert [r["seed"] for r in server.requests[1:]] == [100, 101, 102]
    assert len(fallback["q0"]) == 3
    assert fallback["q0"][0][1] == 11  # one-sample requests: the server's usage


def test_a_failing_server_leaves_the_rotation():
    with StreamServer(always_fail=True) as bad, StreamServer() as good:
        b = backend(good, base_url=[bad.base_url, good.base_url], samples_per_request=1, concurrency=2, backoff=5)
        out = texts(b.generate(chunks(6), THINKING, 100))
        assert len(good.requests) == 6
        assert len(bad.requests) <= 2  # out of rotation after failing
    assert len(out) == 6


def test_api_key_and_extra_body_are_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    with StreamServer() as server:
        list(backend(server, samples_per_request=1,
                     extra_body={"chat_template_kwargs": {"enable_thinking": True}}).generate(chunks(1), THINKING, 100))
        list(backend(server, samples_per_request=1, api_key="explicit").generate(chunks(1), THINKING, 100))
        assert server.headers[0]["Authorization"] == "Bearer from-env"
        assert server.headers[1]["Authorization"] == "Bearer explicit"
        assert server.requests[0]["chat_template_kwargs"] == {"enable_thinking": True}
        assert server.requests[0]["stream"] is True


def test_unreachable_server_gives_up_after_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    b = OpenAIHTTPBackend("m", f"http://127.0.0.1:{port}/v1", api="chat", retries=2, backoff=0.01, connect_timeout=2)
    with pytest.raises(HTTPBackendError, match="giving up after 3 attempts: ConnectError"):
        list(b.generate(chunks(1), THINKING, 4))


def test_several_samples_per_request_need_a_tokenizer():
    with pytest.raises(ValueError, match="need a tokenizer"):
        OpenAIHTTPBackend("m", "http://127.0.0.1:9/v1", api="chat", samples_per_request=4)
