"""The OpenAI-compatible HTTP backend against a real local server (127.0.0.1, bounded)."""

from __future__ import annotations

import json

import pytest

from mi_mergekit.eval import EvalTask, evaluate
from mi_mergekit.eval.backends import Chunk
from mi_mergekit.eval.backends.openai_http import HTTPStatusError, OpenAIHTTPBackend
from mi_mergekit.eval.backends.transformers_backend import TransformersBackend
from mi_mergekit.eval.decoding import PRESETS
from openai_server import CompletionServer


def samples(run_dir):
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["question_id"], r["sample_index"], r["text"], r["n_tokens"], r["finish_reason"]) for r in rows)


def test_http_run_equals_transformers_run(tmp_path, fixtures, tiny_model):
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=10, seed=11)
    local = evaluate(tiny_model, task, tmp_path / "local", "transformers", backend_options={"batch_size": 1},
                     progress=False)
    with CompletionServer(TransformersBackend(str(tiny_model)), fail_first=1, max_requests=20) as server:
        remote = evaluate(tiny_model, task, tmp_path / "remote", "openai", progress=False, backend_options={
            "base_url": server.base_url, "served_model": "tiny", "concurrency": 2, "timeout": 60, "retries": 2,
            "backoff": 0.05, "samples_per_request": 1})
        requests = list(server.requests)
    assert samples(remote) == samples(local)
    # the probe (refused with 503, then retried), then the 6 samples
    assert len(requests) == 8
    assert [r["max_tokens"] for r in requests] == [1, 1] + [10] * 6
    first = requests[2]
    assert first["model"] == "tiny" and first["n"] == 1 and first["max_tokens"] == 10 and first["stream"] is True
    # the preset's values, and min_p (unset) switched off explicitly: no server default fills it in
    assert (first["temperature"], first["top_p"], first["top_k"], first["min_p"]) == (0.6, 0.95, 20, 0.0)
    assert first["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    config = json.loads((remote / "run.json").read_text())
    assert config["backend"] == {"name": "openai", "chunk_size": 1, "api": "completions", "served_model": "tiny"}


def test_non_retryable_error_stops_the_run(tiny_model):
    from tiny_model import build_tokenizer

    chunk = Chunk("q", "hello", [], (0,), 5)
    with CompletionServer(TransformersBackend(str(tiny_model)), max_requests=0) as server:
        backend = OpenAIHTTPBackend("tiny", server.base_url, tokenizer=build_tokenizer(), retries=3, backoff=0.01)
        with pytest.raises(HTTPStatusError, match="answered HTTP 400: refused request 1"):
            list(backend.generate([chunk], PRESETS["thinking"], 4))
        assert len(server.requests) == 1  # no retries on a 400


def test_chat_api_payload():
    backend = OpenAIHTTPBackend("m", "http://127.0.0.1:9/v1", api="chat")
    body = backend.payload(Chunk("q", None, [{"role": "user", "content": "hi"}], (0,), 42), PRESETS["instruct"], 7)
    assert body == {"model": "m", "n": 1, "seed": 42, "max_tokens": 7, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                    "min_p": 0.0, "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "hi"}]}
