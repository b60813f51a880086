"""A scripted OpenAI-compatible *streaming* server on 127.0.0.1, for tests.

Each sample is a deterministic function of the request's seed and choice index: a thought of ``thought_words`` words, ``</think>``, then an answer
with ``\\boxed{seed % 7}``. It is streamed as server-sent events, one word per
event, ``delay`` seconds apart, ending with a usage event and ``[DONE]`` — as
vLLM does with ``stream: true, stream_options: {include_usage: true}``.

``reasoning_parser=True`` streams chat thoughts as ``reasoning_content`` deltas
and the answer as ``content`` (vLLM's ``--reasoning-parser``); otherwise chat
content carries the whole text with its ``</think>``.

Other servers' habits, each switchable: ``done=False`` sends no ``[DONE]`` and puts the
usage into the finish event (``transformers serve``); ``ignore_n`` streams choice 0 only
whatever ``n`` is (``transformers serve``, llama.cpp); ``refuse_fields`` answers a request
carrying any of those fields with HTTP 422 ``Unexpected fields in the request: {...}``
(``transformers serve``), 400 ``Unrecognized request argument supplied: …`` (the OpenAI
API, ``refuse_style="openai"``) or a 400 that names nothing (``"silent"``);
``continuous_usage`` puts each choice's running token count into its events when the
request asks for ``stream_options.continuous_usage_stats`` (vLLM); ``finish`` maps a
choice index to the finish reason it ends with (vLLM's ``repetition``, ``abort``), for the
requests numbered in ``finish_requests`` only when that is set; ``status=(code, message)`` answers
every request with that HTTP error; ``interrupt`` ends a running stream with ``[DONE]`` as soon as
another request arrives (llama.cpp's Python server, ``interrupt_requests``). ``faults`` maps request
numbers (1-based) to ``"429"`` (answered with ``Retry-After: retry_after``),
``"503"``, ``"drop"`` (the connection is closed mid-stream) or ``"stall"`` (the
stream goes silent for ``stall`` seconds); ``always_fail`` answers every request
with 503. ``refuse_n`` answers requests with ``n > 1`` with HTTP 400. The server
counts requests in flight (``max_in_flight``) and shuts itself down after
``lifetime`` seconds, so a hung test cannot hang the suite.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sample_words(seed: int, index: int, thought_words: int):
    """(thought words, answer words) of one sample."""
    thought = [f"w{(seed + index + i) % 97} " for i in range(thought_words)]
    answer = [" The", " answer", " is", f" \\boxed{{{(seed + index) % 7}}}"]
    return thought, answer


class StreamServer:
    def __init__(self, thought_words=6, delay=0.0, faults=None, retry_after=0.5, stall=2.0,
                 reasoning_parser=False, refuse_n=False, always_fail=False, lifetime=60.0, done=True,
                 ignore_n=False, refuse_fields=(), refuse_style="transformers", continuous_usage=False,
                 finish=None, finish_requests=None, status=None, interrupt=False, hold_after=None):
        self.status, self.interrupt, self.latest = status, interrupt, 0
        # requests after the first ``hold_after`` wait until the test sets ``gate``
        self.hold_after, self.gate = hold_after, threading.Event()
        self.done, self.ignore_n, self.continuous_usage = done, ignore_n, continuous_usage
        self.refuse_fields, self.refuse_style = set(refuse_fields), refuse_style
        self.finish, self.finish_requests = dict(finish or {}), finish_requests
        self.thought_words, self.delay = thought_words, delay
        self.faults, self.retry_after, self.stall = dict(faults or {}), retry_after, stall
        self.reasoning_parser, self.refuse_n, self.always_fail = reasoning_parser, refuse_n, always_fail
        self.lifetime = lifetime
        self.requests, self.headers, self.times = [], [], []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.times.append(time.monotonic())
                    number = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                self.counted = True
                if server.hold_after is not None and number > server.hold_after:
                    server.gate.wait(server.lifetime)
                try:
                    self._serve(body, server.faults.get(number), number)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    self._done()

            def _done(self):
                """The request leaves the in-flight count just before its last bytes go out
                (the client may send its next request as soon as it has read them)."""
                if self.counted:
                    self.counted = False
                    with server.lock:
                        server.in_flight -= 1

            def _serve(self, body, fault, number):
                if server.status:
                    return self._error(server.status[0], server.status[1])
                if server.always_fail or fault == "503":
                    return self._error(503, "overloaded")
                if fault == "429":
                    return self._error(429, "slow down", {"Retry-After": str(server.retry_after)})
                if server.refuse_n and body.get("n", 1) > 1:
                    return self._error(400, "Unsupported value: 'n' must be 1")
                sent = set(body) | {f"stream_options.{k}" for k in body.get("stream_options", {})}
                refused = sorted(f.split(".")[-1] for f in server.refuse_fields & sent)
                if refused and server.refuse_style == "openai":
                    return self._error(400, f"Unrecognized request argument supplied: {refused[0]}")
                if refused and server.refuse_style == "silent":
                    return self._error(400, "Bad request")
                if refused:
                    return self._error(422, f"Unexpected fields in the request: {set(refused)}", detail=True)
                chat = self.path.endswith("/chat/completions")
                with server.lock:
                    server.latest = number
                n, seed, budget = body.get("n", 1), body["seed"], body["max_tokens"]
                continuous = server.continuous_usage and body.get("stream_options", {}).get("continuous_usage_stats")
                finish_here = server.finish_requests is None or number in server.finish_requests
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                total = 0
                for index in range(1 if server.ignore_n else n):
                    thought, answer = sample_words(seed, index, server.thought_words)
                    pieces = [("reasoning", w) for w in thought] + [("close", "</think>")]
                    pieces += [("content", w) for w in answer]
                    finish = "stop"
                    if len(pieces) > budget:
                        pieces, finish = pieces[:budget], "length"
                    if index in server.finish and finish_here:
                        finish = server.finish[index]
                    total += len(pieces)
                    for piece, (kind, word) in enumerate(pieces):
                        if fault == "drop" and piece == len(pieces) // 2:
                            self.wfile.flush()
                            self.connection.shutdown(2)  # the stream breaks off
                            return
                        if fault == "stall" and piece == 2:
                            time.sleep(server.stall)
                        if server.interrupt and server.latest != number:  # a newer request took over
                            self._done()
                            self.wfile.write(b"data: [DONE]\n\n")
                            return
                        event = self._choice(chat, index, kind, word, None)
                        if continuous:
                            event["usage"] = {"completion_tokens": piece + 1}
                        self._event(event)
                        time.sleep(server.delay)
                    last = self._choice(chat, index, "content", "", finish)
                    if continuous:  # vLLM counts the EOS that ended a sample
                        last["usage"] = {"completion_tokens": len(pieces) + (finish == "stop")}
                    if not server.done and index == (0 if server.ignore_n else n - 1):
                        last["usage"] = {"completion_tokens": total}  # transformers serve: usage with the finish
                    self._event(last)
                if server.done and body.get("stream_options", {}).get("include_usage"):
                    self._event({"choices": [], "usage": {"completion_tokens": total}})
                self._done()
                if server.done:
                    self.wfile.write(b"data: [DONE]\n\n")

            def _choice(self, chat, index, kind, word, finish):
                if not chat:
                    text = word if kind != "close" else "</think>"
                    return {"choices": [{"index": index, "text": text, "finish_reason": finish}]}
                if server.reasoning_parser and kind == "reasoning":
                    delta = {"reasoning_content": word}
                elif server.reasoning_parser and kind == "close":
                    delta = {}
                else:
                    delta = {"content": word}
                return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

            def _event(self, payload):
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

            def _error(self, status, message, headers=None, detail=False):
                data = json.dumps({"detail": message} if detail else {"error": {"message": message}}).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self._done()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.timer = threading.Timer(lifetime, self.httpd.shutdown)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self):
        self.thread.start()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
