"""Generation through OpenAI-compatible servers (vLLM, SGLang, ...), streamed, over httpx.

This is how a model served elsewhere (GPU boxes running ``vllm serve MODEL``) is
evaluated from here; one run may spread its requests over several servers.

- ``api="completions"`` (default): ``POST {base_url}/completions`` with the
  prompt rendered locally by the model's chat template, so a Thinking template
  is applied exactly as in the other backends. Needs the tokenizer (model
  folder or ``tokenizer_path``).
- ``api="chat"``: ``POST {base_url}/chat/completions`` with the messages
  (system prompt included); the server applies its template. Streamed
  ``reasoning_content``/``reasoning`` deltas (vLLM/SGLang reasoning parsers)
  are re-joined as ``reasoning + "</think>" + content``, so Think #R, Token #N
  and grading mean the same with and without a parser; reasoning that ran out
  of tokens before any content is unterminated thinking, ``"<think>" +
  reasoning`` — graded as no answer, as in completions mode.

Every request is streamed (``stream: true`` with usage), so a generation of any
length never meets a read timeout while tokens flow: ``timeout`` bounds the
*silence* between two streamed chunks, ``connect_timeout`` the connection. A
request fails over on connection errors, idle timeouts, a stream that breaks
before ``[DONE]``, HTTP 408/409/425/429/5xx: the server is taken out of rotation
for a jittered exponential back-off (or the server's ``Retry-After``) and the
request is retried — on another server if there is one — up to ``retries``
times. A chunk's samples are yielded only when its stream completed, so a
retried request is stored once. Other HTTP errors stop the run with the
server's message.

``samples_per_request`` samples are asked for in one request (``n``, so the
server shares the prompt's prefix cache) with the chunk's seed; a server that
refuses ``n > 1`` gets one request per sample instead (seeds ``seed + j``).
Token #N is the server's ``usage.completion_tokens`` for one-sample requests
(reasoning tokens included) and the tokenizer's count of each sample otherwise.
``extra_body`` is merged into every request (e.g. ``chat_template_kwargs`` or
vLLM sampling extras); the API key comes from ``api_key`` or the environment
variable ``api_key_env`` (default ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from mi_mergekit.eval.backends.base import Backend, Chunk, Completion, load_tokenizer
from mi_mergekit.eval.decoding import Decoding

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: the longest a server stays out of rotation after failures
MAX_COOLDOWN = 60.0


class HTTPBackendError(RuntimeError):
    """The server refused a request, or kept failing after all retries."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


class _NRefused(Exception):
    """The server does not accept ``n > 1``."""


@dataclass
class _Server:
    url: str
    client: object
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    served: int = 0


@dataclass
class _Fleet:
    """The servers of a run: each request goes to the healthy one with the fewest in flight."""

    servers: List[_Server]
    cond: threading.Condition = field(default_factory=threading.Condition)

    def acquire(self) -> _Server:
        with self.cond:
            while True:
                now = time.monotonic()
                ready = [s for s in self.servers if s.down_until <= now]
                if ready:
                    server = min(ready, key=lambda s: (s.in_flight, s.failures))
                    server.in_flight += 1
                    return server
                self.cond.wait(min(s.down_until for s in self.servers) - now)

    def release(self, server: _Server, ok: bool, cooldown: float = 0.0) -> None:
        with self.cond:
            server.in_flight -= 1
            if ok:
                server.failures, server.served = 0, server.served + 1
            else:
                server.failures += 1
                server.down_until = max(server.down_until, time.monotonic() + cooldown)
            self.cond.notify_all()


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIHTTPBackend(Backend):
    name = "openai"

    def __init__(
        self,
        model_path: str,
        base_url: Union[str, Sequence[str]],
        served_model: Optional[str] = None,
        api: str = "completions",
        concurrency: int = 8,
        timeout: float = 600.0,
        connect_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        api_key: Optional[str] = None,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: Optional[dict] = None,
        samples_per_request: Optional[int] = None,
        tokenizer_path: Optional[str] = None,
        tokenizer=None,
    ):
        import httpx

        if api not in ("completions", "chat"):
            raise ValueError("api must be 'completions' or 'chat'")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("at least one --base-url is needed for the openai backend")
        self.served_model = served_model or model_path
        self.api = api
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.extra_body = dict(extra_body or {})
        if tokenizer is None and (api == "completions" or tokenizer_path or os.path.isdir(str(model_path))):
            tokenizer = load_tokenizer(tokenizer_path or model_path)
        self.tokenizer = tokenizer
        if samples_per_request is None:
            samples_per_request = 8 if tokenizer is not None else 1
        self.chunk_size = max(1, int(samples_per_request))
        if self.chunk_size > 1 and tokenizer is None:
            raise ValueError("several samples per request need a tokenizer to count each sample's tokens: "
                             "pass --tokenizer (a folder with the model's tokenizer) or --samples-per-request 1")
        self._n_supported = True
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeouts = httpx.Timeout(connect=float(connect_timeout), read=self.timeout, write=self.timeout, pool=None)
        self.fleet = _Fleet([
            _Server(url.rstrip("/"), httpx.Client(headers=headers, timeout=timeouts, limits=limits))
            for url in urls
        ])

    def describe(self) -> dict:
        described = {"name": self.name, "chunk_size": self.chunk_size, "api": self.api,
                     "served_model": self.served_model}
        if self.extra_body:
            described["extra_body"] = self.extra_body
        return described

    def close(self) -> None:
        for server in self.fleet.servers:
            server.client.close()

    # ------------------------------------------------------------------ requests

    def payload(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int, n: int = 1,
                seed: Optional[int] = None) -> dict:
        """The JSON body of one request (vLLM/SGLang accept top_k and min_p as extra fields)."""
        body = {
            "model": self.served_model,
            "n": n,
            "seed": chunk.seed if seed is None else seed,
            "max_tokens": max_new_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if decoding.top_k is not None:
            body["top_k"] = decoding.top_k
        if decoding.min_p is not None:
            body["min_p"] = decoding.min_p
        if self.api == "completions":
            body["prompt"] = chunk.prompt
        else:
            body["messages"] = chunk.messages
        body.update(self.extra_body)
        return body

    def _endpoint(self, server: _Server) -> str:
        return f"{server.url}/{'completions' if self.api == 'completions' else 'chat/completions'}"

    def _stream(self, server: _Server, body: dict) -> List[Completion]:
        """One streamed request; raises _Retryable / _NRefused / HTTPBackendError."""
        import httpx

        url = self._endpoint(server)
        try:
            with server.client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    detail = response.read().decode("utf-8", "replace")[:500]
                    message = f"HTTP {response.status_code} from {url}: {detail}"
                    if response.status_code in RETRY_STATUS:
                        raise _Retryable(message, retry_after_seconds(response.headers.get("retry-after")))
                    if body["n"] > 1 and response.status_code in (400, 422) and _mentions_n(detail):
                        raise _NRefused(message)
                    raise HTTPBackendError(message)
                return self._read_events(response.iter_lines(), body["n"], url)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"{type(exc).__name__} ({self.timeout:g} s without data) from {url}") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _Retryable(f"{type(exc).__name__} talking to {url}: {exc}") from exc

    def _read_events(self, lines: Iterable[str], n: int, url: str) -> List[Completion]:
        texts: Dict[int, List[str]] = {i: [] for i in range(n)}
        reasoning: Dict[int, List[str]] = {i: [] for i in range(n)}
        finish: Dict[int, Optional[str]] = dict.fromkeys(range(n))
        usage, done = None, False
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError as exc:
                raise _Retryable(f"the stream from {url} sent a malformed event: {data[:80]!r}") from exc
            if event.get("error"):
                raise _Retryable(f"server error in the stream from {url}: {event['error']}")
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                index = int(choice.get("index", 0))
                if index not in texts:
                    raise HTTPBackendError(f"{url} streamed choice {index} for a request of n={n}")
                if self.api == "completions":
                    texts[index].append(choice.get("text") or "")
                else:
                    delta = choice.get("delta") or {}
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if thought:
                        reasoning[index].append(thought)
                    texts[index].append(delta.get("content") or "")
                if choice.get("finish_reason"):
                    finish[index] = choice["finish_reason"]
        if not done or any(reason is None for reason in finish.values()):
            raise _Retryable(f"the stream from {url} broke off before it finished")
        completions = []
        for index in range(n):
            text = join_reasoning("".join(reasoning[index]), "".join(texts[index]), finish[index])
            reason = "length" if finish[index] == "length" else "stop"
            if n == 1 and usage and usage.get("completion_tokens") is not None:
                n_tokens = int(usage["completion_tokens"])
            elif self.tokenizer is not None:
                n_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            else:
                raise HTTPBackendError(f"{url} sent no usage.completion_tokens and there is no tokenizer to "
                                       "count with (pass --tokenizer)")
            completions.append(Completion(text, n_tokens, reason))
        return completions

    def _request(self, body: dict) -> List[Completion]:
        """Send ``body`` until it succeeds, failing over between servers."""
        errors = []
        for attempt in range(self.retries + 1):
            server = self.fleet.acquire()
            try:
                completions = self._stream(server, body)
            except _Retryable as exc:
                wait_for = exc.retry_after
                if wait_for is None:
                    wait_for = min(MAX_COOLDOWN, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.5)
                self.fleet.release(server, ok=False, cooldown=wait_for)
                errors.append(str(exc))
                continue
            except BaseException:
                self.fleet.release(server, ok=True)
                raise
            self.fleet.release(server, ok=True)
            return completions
        raise HTTPBackendError(f"giving up after {self.retries + 1} attempts: {errors[-1]}")

    def _one(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> List[Completion]:
        n = len(chunk.indices)
        if n > 1 and self._n_supported:
            try:
                return self._request(self.payload(chunk, decoding, max_new_tokens, n=n))
            except _NRefused:
                self._n_supported = False
        return [self._request(self.payload(chunk, decoding, max_new_tokens, seed=chunk.seed + j))[0]
                for j in range(n)]

    def generate(
        self, chunks: Iterable[Chunk], decoding: Decoding, max_new_tokens: int
    ) -> Iterator[Tuple[Chunk, List[Completion]]]:
        """Keep ``concurrency`` requests in flight; yield each chunk as it completes."""
        chunks = iter(chunks)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mi-eval-http") as pool:
            pending = {}

            def submit_next() -> bool:
                chunk = next(chunks, None)
                if chunk is None:
                    return False
                pending[pool.submit(self._one, chunk, decoding, max_new_tokens)] = chunk
                return True

            while len(pending) < self.concurrency and submit_next():
                pass
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        chunk = pending.pop(future)
                        yield chunk, future.result()
                        submit_next()
            finally:
                for future in pending:
                    future.cancel()


def _mentions_n(detail: str) -> bool:
    return any(token in detail for token in ("'n'", '"n"', "`n`", " n ", " n=", "n must"))


def join_reasoning(reasoning: str, content: str, finish_reason: Optional[str]) -> str:
    """One response text from a reasoning parser's two fields (see the module docstring)."""
    if not reasoning:
        return content
    if not content and finish_reason == "length":
        return "<think>" + reasoning  # the budget ran out inside the thought: no answer
    return reasoning + "</think>" + content
