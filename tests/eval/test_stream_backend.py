"""The streaming OpenAI-compatible backend against a scripted loopback server (bounded, stops by itself)."""

from __future__ import annotations

import json
import socket

import pytest

from mi_mergekit.eval import EvalTask, evaluate
from mi_mergekit.eval.backends import Chunk
from mi_mergekit.eval.backends.openai_http import (
    CONTINUOUS_USAGE,
    HTTPBackendError,
    HTTPStatusError,
    OpenAIHTTPBackend,
    UnsupportedFieldError,
)
from mi_mergekit.eval.backends.http_fleet import retry_after_seconds
from mi_mergekit.eval.backends.http_stream import join_reasoning
from mi_mergekit.eval.decoding import PRESETS, resolve_decoding
from stream_server import StreamServer
from tiny_model import BOS_TEMPLATE, build_tokenizer

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
    with StreamServer(faults={2: "drop", 4: "drop"}) as server:  # request 1 is the probe
        run = evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=100), tmp_path / "run",
                       "openai", backend_options={"base_url": server.base_url, "api": "chat", "concurrency": 1,
                                                  "backoff": 0.01}, progress=False)
        n_requests = len(server.requests)
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    keys = [(r["question_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6  # 3 questions x 2 samples, each once
    assert n_requests == 1 + 6 + 2
    assert all(r["text"].endswith("}") and "</think>" in r["text"] for r in rows)


def test_reasoning_content_grades_like_the_completions_path(tmp_path, fixtures, tiny_model):
    task = EvalTask(fixtures / "boxed.jsonl", n_samples=2, max_new_tokens=100, seed=3)
    runs = {}
    for name, api, parser in (("completions", "completions", False), ("parser", "chat", True), ("plain", "chat", False)):
        with StreamServer(reasoning_parser=parser) as server:
            runs[name] = evaluate(tiny_model if api == "completions" else "m", task, tmp_path / name, "openai",
                                  backend_options={"base_url": server.base_url, "api": api, "backoff": 0.01,
                                                   "samples_per_request": 1}, progress=False)

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
        run = evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=1, max_new_tokens=5), out_dir=tmp_path / "run",
                       backend="openai", backend_options={"base_url": server.base_url, "api": "chat", "backoff": 0.01},
                       progress=False)
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


# ---------------------------------------------------------------- other servers' habits


def run_eval(tmp_path, fixtures, server, name="run", n_samples=2, decoding="thinking", **options):
    options = {"base_url": server.base_url, "backoff": 0.01, "concurrency": 1, **options}
    return evaluate("m", EvalTask(fixtures / "boxed.jsonl", n_samples=n_samples, max_new_tokens=100, decoding=decoding),
                    out_dir=tmp_path / name, backend="openai", backend_options=options, progress=False)


def stored(run):
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def test_a_stream_without_done_is_complete(tmp_path, fixtures):
    # transformers serve: usage rides on the finish event, then the response ends; no [DONE]
    with StreamServer(done=False) as server:
        run = run_eval(tmp_path, fixtures, server, api="chat", samples_per_request=1)
        assert len(server.requests) == 1 + 6  # the probe, then one request per sample: nothing retried
    rows = stored(run)
    assert len(rows) == 6 and all(r["n_tokens"] == 11 and r["finish_reason"] == "stop" for r in rows)
    assert json.loads((run / "run.json").read_text())["server"]["token_counts"] == ["server usage"]


def test_a_server_that_ignores_n_gets_one_sample_per_request(tmp_path, fixtures, caplog):
    with StreamServer(done=False, ignore_n=True) as server:
        run = run_eval(tmp_path, fixtures, server, n_samples=3, samples_per_request=3, tokenizer=build_tokenizer())
        requests = list(server.requests)
    assert requests[0]["n"] == 2 and requests[0]["max_tokens"] == 1  # the probe finds it out
    assert all(r["n"] == 1 for r in requests[1:]) and len(requests) == 1 + 9
    first = [r["seed"] for r in requests[1:4]]
    assert first == [first[0], first[0] + 1, first[0] + 2]  # distinct seeds: seed + j
    rows = stored(run)
    assert len({(r["question_id"], r["sample_index"]) for r in rows}) == len(rows) == 9
    server_record = json.loads((run / "run.json").read_text())["server"]
    assert server_record["n_per_request"] == "ignored by the server: one sample per request, seeds seed + j"
    said = [r.getMessage() for r in caplog.records if "ignores n > 1" in r.getMessage()]
    assert len(said) == 1


@pytest.mark.parametrize("style", ["transformers", "openai", "silent"])
def test_a_refused_sampling_field_stops_the_run_before_anything_is_stored(tmp_path, fixtures, style):
    with StreamServer(refuse_fields={"top_k"}, refuse_style=style) as server:
        with pytest.raises(UnsupportedFieldError) as caught:
            run_eval(tmp_path, fixtures, server, api="chat")
    message = str(caught.value)
    assert message.startswith(f"the server {server.base_url} does not accept the sampling field top_k "
                              "(top_k=20, set by the decoding preset 'thinking'): HTTP ")
    assert "--drop-unsupported" in message and "--extra-body" in message and "\n" not in message
    assert not (tmp_path / "run" / "samples.jsonl").exists() and not (tmp_path / "run" / "run.json").exists()


def test_drop_unsupported_sends_what_the_server_takes_and_says_so(tmp_path, fixtures):
    with StreamServer(refuse_fields={"top_k", "min_p"}, refuse_style="openai") as server:
        run = run_eval(tmp_path, fixtures, server, api="chat", drop_unsupported=True)
        requests = list(server.requests)
    assert not any("top_k" in r or "min_p" in r for r in requests[-6:])
    config = json.loads((run / "run.json").read_text())
    assert config["server"]["not_sent"]["top_k"]["value"] == 20
    assert config["server"]["not_sent"]["min_p"]["value"] is None
    assert config["sampling_not_sent"] == ["min_p", "top_k"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["decoding_deviations"] == ["min_p unset: the server's own default applies",
                                              "top_k=20 not sent (the server refuses it; --drop-unsupported)"]
    from mi_mergekit.eval.report import write_report

    text = write_report([run], tmp_path / "report")["markdown"]
    assert "**decoding deviation** of m on Boxed from its thinking settings: min_p unset" in text


def test_an_unset_field_the_server_refuses_is_left_out(tmp_path, fixtures):
    with StreamServer(refuse_fields={"top_k", "min_p"}) as server:
        run = run_eval(tmp_path, fixtures, server, api="chat", decoding=resolve_decoding("custom", temperature=0.6))
    not_sent = json.loads((run / "run.json").read_text())["server"]["not_sent"]
    assert {f: e["value"] for f, e in not_sent.items()} == {"top_k": None, "min_p": None}


def test_http_errors_name_the_server_and_are_not_retried(tmp_path, fixtures):
    with StreamServer(status=(401, "invalid API key")) as server:
        with pytest.raises(HTTPStatusError) as caught:
            run_eval(tmp_path, fixtures, server, api="chat")
        assert len(server.requests) == 1
    assert str(caught.value) == f"{server.base_url} answered HTTP 401: invalid API key"
    from mi_mergekit.errors import explain

    assert explain(caught.value) == str(caught.value)  # the CLI's one line: not "unexpected …"


def test_several_samples_per_request_count_tokens_per_choice_as_the_server_does(tmp_path, fixtures):
    # vLLM: stream_options.continuous_usage_stats puts each choice's running count into its events
    with StreamServer(continuous_usage=True) as server:
        run = run_eval(tmp_path, fixtures, server, n_samples=3, samples_per_request=3, tokenizer=build_tokenizer())
        assert server.requests[1]["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert {r["n_tokens"] for r in stored(run)} == {12}  # 11 streamed pieces + the EOS, as the server counts
    assert json.loads((run / "run.json").read_text())["server"]["token_counts"] == ["server usage (per choice)"]
    # a server that refuses the option: counted with the tokenizer, and recorded as such
    with StreamServer(refuse_fields={"stream_options.continuous_usage_stats"}, refuse_style="openai") as server:
        run = run_eval(tmp_path, fixtures, server, name="plain", n_samples=3, samples_per_request=3,
                       tokenizer=build_tokenizer())
    record = json.loads((run / "run.json").read_text())["server"]
    assert record["token_counts"] == ["tokenizer"] and CONTINUOUS_USAGE in record["not_sent"]


def test_finish_reasons_are_kept_and_aborted_samples_generated_again(tmp_path, fixtures):
    with StreamServer(finish={0: "abort"}, finish_requests={2}) as server:  # the first request after the probe
        run = run_eval(tmp_path, fixtures, server, api="chat", samples_per_request=1)
        n_requests = len(server.requests)
    assert n_requests == 1 + 1 + 6 and len(stored(run)) == 6  # aborted: generated again, stored once
    with StreamServer(finish={0: "repetition"}) as server:
        run = run_eval(tmp_path, fixtures, server, name="rep", api="chat", samples_per_request=1)
    assert {r["finish_reason"] for r in stored(run)} == {"repetition"}  # not folded into "stop"
    assert json.loads((run / "metrics.json").read_text())["truncation_rate"] == 1.0


def test_a_rendered_prompt_gets_no_second_bos(tmp_path):
    tok = build_tokenizer(BOS_TEMPLATE, bos=True)
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+1"}], tokenize=False, add_generation_prompt=True)
    chunk = [Chunk("q", prompt, [], (0,), 5)]
    with StreamServer() as server:  # vLLM / SGLang: add_special_tokens is theirs to honour
        b = backend(server, tokenizer=tok, samples_per_request=1)
        b.prepare(chunk[0], THINKING, 100)
        list(b.generate(chunk, THINKING, 100))
        assert [r["add_special_tokens"] for r in server.requests] == [False, False]
        assert server.requests[1]["prompt"] == prompt
    with StreamServer(refuse_fields={"add_special_tokens"}) as server:  # transformers serve: refuses it
        b = backend(server, tokenizer=tok, samples_per_request=1)
        record = b.prepare(chunk[0], THINKING, 100)
        list(b.generate(chunk, THINKING, 100))
        sent = server.requests[-1]
    assert "add_special_tokens" not in sent and sent["prompt"] == prompt[len("<|endoftext|>"):]
    assert "add_special_tokens" in record["not_sent"]


def test_a_server_that_interrupts_streams_gets_one_request_at_a_time(tmp_path, fixtures, caplog):
    # llama.cpp's Python server ends the running stream with [DONE] when a new request arrives
    with StreamServer(interrupt=True, delay=0.05) as server:
        run = run_eval(tmp_path, fixtures, server, api="chat", samples_per_request=1, concurrency=3, retries=1)
        assert server.max_in_flight >= 2  # they did overlap at first
    rows = stored(run)
    assert len(rows) == len({(r["question_id"], r["sample_index"]) for r in rows}) == 6
    assert all(r["finish_reason"] == "stop" and r["text"].endswith("}") for r in rows)
    record = json.loads((run / "run.json").read_text())["server"]
    assert record["one_request_at_a_time"] == [server.base_url]
    assert sum("one request at a time" in r.getMessage() for r in caplog.records) == 1
