"""A small OpenAI-compatible completions server over the transformers backend, for tests.

Serves ``POST /v1/completions`` (prompt, n, seed, temperature, top_p, top_k,
min_p, max_tokens, stream) on 127.0.0.1 only, in a background thread. Each request is
generated with :class:`TransformersBackend.complete` seeded by the request's
``seed`` -- so a one-sample request equals the transformers backend's chunk of
size 1 with the same seed. ``fail_first`` makes the first N requests answer
HTTP 503 (to exercise client retries); ``max_requests`` bounds the requests
served (further ones get HTTP 400, a non-retryable error).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mi_mergekit.eval.decoding import Decoding


class CompletionServer:
    def __init__(self, backend, fail_first: int = 0, max_requests: int = 200):
        self.backend = backend
        self.fail_first = fail_first
        self.max_requests = max_requests
        self.requests = []
        self.lock = threading.Lock()
        self.generate_lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    count = len(server.requests)
                if count <= server.fail_first:
                    return self._send(503, {"error": {"message": "warming up"}})
                if count > server.max_requests or self.path != "/v1/completions":
                    return self._send(400, {"error": {"message": f"refused request {count} to {self.path}"}})
                decoding = Decoding("request", body.get("temperature", 1.0), body.get("top_p", 1.0),
                                    body.get("top_k"), body.get("min_p"))
                with server.generate_lock:  # one generate at a time: torch's global RNG
                    outs = server.backend.complete(body["prompt"], body.get("n", 1), body["seed"], decoding,
                                                   body["max_tokens"])
                choices = [{"index": i, "text": o.text, "finish_reason": o.finish_reason} for i, o in enumerate(outs)]
                usage = {"completion_tokens": sum(o.n_tokens for o in outs)}
                if body.get("stream"):  # server-sent events, one per choice, as vLLM streams
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for choice in choices:
                        self.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
                    self.wfile.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                self._send(200, {"object": "text_completion", "model": body.get("model"),
                                 "choices": choices, "usage": usage})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
