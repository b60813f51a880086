"""Generation through an OpenAI-compatible HTTP server (vLLM, SGLang, ...).

This is how a model served elsewhere (e.g. a GPU box running
``vllm serve MODEL`` in its own environment) is evaluated from here.

- ``api="completions"`` (default): ``POST {base_url}/completions`` with the
  prompt rendered locally by the model's chat template, so a Thinking template
  is applied exactly as in the other backends. Needs the tokenizer (model
  folder or ``tokenizer_path``).
- ``api="chat"``: ``POST {base_url}/chat/completions`` with the messages; the
  server applies its template. A separate ``reasoning_content``/``reasoning``
  field (vLLM/SGLang reasoning parsers) is re-joined as
  ``reasoning + "</think>" + content`` so Think #R still counts; reasoning
  with no content at all (``content: null``) is unterminated thinking and
  becomes ``"<think>" + reasoning``.

Each request asks for one sample (``n=1``) with its own ``seed``, so the chunk
size is 1 and ``usage.completion_tokens`` is that sample's exact token count.
Requests run ``concurrency`` at a time in threads; each has a ``timeout``
(seconds) and is retried ``retries`` times with exponential backoff on
connection errors, timeouts, HTTP 429 and 5xx. Other HTTP errors fail the run
at once with the server's message. The API key is read from the environment
variable named by ``api_key_env`` (default ``OPENAI_API_KEY``) if set.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterable, Iterator, List, Optional, Tuple

from mi_mergekit.eval.backends.base import Backend, Chunk, Completion, load_tokenizer
from mi_mergekit.eval.decoding import Decoding

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class HTTPBackendError(RuntimeError):
    """The server refused a request, or kept failing after all retries."""


class OpenAIHTTPBackend(Backend):
    name = "openai"
    chunk_size = 1

    def __init__(
        self,
        model_path: str,
        base_url: str,
        served_model: Optional[str] = None,
        api: str = "completions",
        concurrency: int = 8,
        timeout: float = 600.0,
        retries: int = 3,
        backoff: float = 1.0,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer_path: Optional[str] = None,
        tokenizer=None,
    ):
        if api not in ("completions", "chat"):
            raise ValueError("api must be 'completions' or 'chat'")
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model or model_path
        self.api = api
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        if api == "completions":
            self.tokenizer = tokenizer or load_tokenizer(tokenizer_path or model_path)
        else:
            self.tokenizer = tokenizer

    def describe(self) -> dict:
        return {"name": self.name, "chunk_size": 1, "api": self.api, "served_model": self.served_model}

    def payload(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> dict:
        """The JSON body of one request (vLLM/SGLang accept top_k and min_p as extra fields)."""
        body = {
            "model": self.served_model,
            "n": 1,
            "seed": chunk.seed,
            "max_tokens": max_new_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
        }
        if decoding.top_k is not None:
            body["top_k"] = decoding.top_k
        if decoding.min_p is not None:
            body["min_p"] = decoding.min_p
        if self.api == "completions":
            body["prompt"] = chunk.prompt
        else:
            body["messages"] = chunk.messages
        return body

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/{'completions' if self.api == 'completions' else 'chat/completions'}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        last_error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:500]
                last_error = f"HTTP {exc.code} from {url}: {detail}"
                if exc.code not in RETRY_STATUS:
                    raise HTTPBackendError(last_error) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last_error = f"{type(exc).__name__} talking to {url}: {exc}"
        raise HTTPBackendError(f"giving up after {self.retries + 1} attempts: {last_error}")

    def parse(self, response: dict) -> Completion:
        """One Completion from an OpenAI-style response with a single choice."""
        choice = response["choices"][0]
        if self.api == "completions":
            text = choice["text"]
        else:
            message = choice["message"]
            content = message.get("content")
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if reasoning and content is None:
                text = "<think>" + reasoning  # the reasoning never ended: unterminated thinking
            elif reasoning:
                text = reasoning + "</think>" + content
            else:
                text = content or ""
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = response.get("usage") or {}
        n_tokens = usage.get("completion_tokens")
        if n_tokens is None:
            if self.tokenizer is None:
                raise HTTPBackendError("server response has no usage.completion_tokens and no tokenizer to count with")
            n_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Completion(text, int(n_tokens), finish)

    def _one(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> List[Completion]:
        return [self.parse(self._post(self.payload(chunk, decoding, max_new_tokens)))]

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
