"""Generation through OpenAI-compatible servers (vLLM, SGLang, llama.cpp, ``transformers serve``),
streamed, over httpx.

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

**Before anything is generated** (:meth:`OpenAIHTTPBackend.prepare`) one short probe
request (``max_tokens: 1``) with the run's real settings finds out what the server does
with them, and the run either goes on exactly as asked or stops with one line:

- Sampling fields outside the OpenAI standard, ``top_k`` and ``min_p``, are sent
  top-level, as vLLM, SGLang and llama.cpp's server take them; a field the decoding
  leaves unset is sent with the value that switches it off (``top_k: -1``,
  ``min_p: 0``), so no server or ``generation_config.json`` fills it in unseen. A
  server that refuses a field (the OpenAI API, ``transformers serve``: HTTP 400/422)
  stops the run with :class:`UnsupportedFieldError`, naming the server, the field and
  the preset or flag that set it, and the two ways on: ``drop_unsupported``
  (``--drop-unsupported``: send only what the server takes; recorded in run.json and
  shown in the report as a deviation from the paper's decoding) or the value in the
  server's own form through ``extra_body``. An *unset* field the server refuses is
  left out (its own default applies), said once and recorded.
- A server that ignores ``n`` (streams fewer choices than asked; ``transformers
  serve``, llama.cpp) is detected, and the run goes on with one sample per request
  and distinct seeds (``seed + j``), said once and recorded — as for a server that
  refuses ``n``. Greedy decoding always asks one sample per request (vLLM takes
  ``n > 1`` only when sampling).
- Completions endpoint: the prompt is already rendered, so a tokenizer that adds
  special tokens itself (a BOS: Llama, R1-Distill) would get a second one from the
  server; ``add_special_tokens: false`` is sent (vLLM, SGLang), and where refused,
  the BOS text is cut from the front of the prompt so the server's own one is the
  only one. The probe compares the server's ``prompt_tokens`` with the local count.
- ``n > 1``: each sample's tokens are the server's own per-choice count where it
  streams one (vLLM's ``stream_options.continuous_usage_stats``), else counted with
  the tokenizer, plus the EOS of a finished sample as servers count it (recorded:
  ``token_counts``; llama.cpp's server streams no usage at all).
- A server that closes a stream itself (``[DONE]``) before the sample finished while other
  requests were in flight — llama.cpp's Python server interrupts the running stream when a new
  request arrives (``interrupt_requests``, on by default) — is sent one request at a time from
  then on (said once, recorded as ``one_request_at_a_time``); the interrupted request is sent
  again without using up a retry.

Streams: every request is streamed (``stream: true`` with usage), so a generation of any
length never meets a read timeout while tokens flow: ``timeout`` bounds the *silence*
between two streamed chunks, ``connect_timeout`` the connection. A stream is complete
when every requested choice has a ``finish_reason`` and the response ended cleanly; the
closing ``data: [DONE]`` is optional (``transformers serve`` sends none) and usage may
come with the finish event or after it. A request fails over on connection errors,
idle timeouts, a stream that ends before every choice finished, an error event, a
choice that finished with ``abort``/``error``, HTTP 408/409/425/429/5xx: the server is
taken out of rotation for a jittered exponential back-off (or the server's
``Retry-After``) and the request is retried — on another server if there is one — up
to ``retries`` times. A chunk's samples are yielded only when its stream completed, so
a retried request is stored once. Other HTTP errors (4xx) are not retried: they stop the
run with :class:`HTTPStatusError`, naming the server, the status and its message.

``extra_body`` is merged into every request last (e.g. ``chat_template_kwargs``); the
API key comes from ``api_key`` or the environment variable ``api_key_env`` (default
``OPENAI_API_KEY``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from mi_mergekit.errors import MiMergekitError
from mi_mergekit.eval.backends.base import (FAILED, SAMPLES_PER_REQUEST, TOKENIZER, Backend, BackendOption, Chunk,
                                            Completion, greedy, load_tokenizer)
from mi_mergekit.eval.backends.http_fleet import (MAX_COOLDOWN, RETRY_STATUS, Fleet, Interrupted, Retryable, Server,
                                                   retry_after_seconds)
from mi_mergekit.eval.backends.http_stream import Stream, join_reasoning, server_message
from mi_mergekit.eval.decoding import Decoding

log = logging.getLogger(__name__)

#: sampling fields outside the OpenAI standard, sent top-level (vLLM, SGLang, llama.cpp), with
#: the value that switches each off when the decoding leaves it unset
SAMPLING_EXTENSIONS = {"top_k": -1, "min_p": 0.0}
#: request fields outside the standard that are not sampling: per-choice token counts
#: (vLLM) and no second BOS on a rendered prompt (vLLM, SGLang)
CONTINUOUS_USAGE = "stream_options.continuous_usage_stats"
ADD_SPECIAL_TOKENS = "add_special_tokens"
#: how each server takes top_k / min_p, for the error message and the README
SERVER_FORMS = ("vLLM, SGLang and llama.cpp take top_k and min_p as top-level fields (sent as is); "
                "transformers serve takes them inside a generation_config JSON string, e.g. "
                "--extra-body '{\"generation_config\": \"{\\\"do_sample\\\": true, \\\"top_k\\\": 20}\"}'")


class HTTPBackendError(MiMergekitError):
    """A server refused a request, or kept failing after all retries."""


class HTTPStatusError(HTTPBackendError):
    """A server answered a request with an HTTP error that retrying will not fix."""

    def __init__(self, url: str, status: int, detail: str):
        self.url, self.status, self.detail = url, status, detail
        super().__init__(f"{url} answered HTTP {status}: {detail}")


class UnsupportedFieldError(HTTPBackendError):
    """A server refuses a sampling field the run's decoding sets."""


class _NRefused(Exception):
    """The server does not accept ``n > 1``."""


class _NIgnored(Exception):
    """The server accepted ``n > 1`` but streamed fewer choices; ``completions`` are the ones it sent."""

    def __init__(self, completions: List[Completion], stream: "Stream"):
        super().__init__("the server ignores n")
        self.completions, self.stream = completions, stream


class OpenAIHTTPBackend(Backend):
    name, aliases = "openai", ("http",)
    summary = "an OpenAI-compatible server at --base-url; http is its old name"
    options = (
        BackendOption("--base-url", "base_url",
                      "server base URL, e.g. http://gpu1:8000/v1; repeat it to spread the run over a fleet (a failing "
                      "server leaves the rotation, its requests go elsewhere).",
                      dest="base_urls", multiple=True, convert=list,
                      required="a base URL (--base-url http://HOST:PORT/v1)"),
        BackendOption("--served-model", "served_model", "model name the server knows (default: --model)."),
        BackendOption("--api", "api", "endpoint; completions renders the chat template locally.",
                      choices=("completions", "chat"), default="completions"),
        BackendOption("--api-key", "api_key", "bearer token.", envvar="OPENAI_API_KEY"),
        BackendOption("--extra-body", "extra_body",
                      "merged into every request, e.g. '{\"chat_template_kwargs\": {\"enable_thinking\": true}}'.",
                      dict, metavar="JSON"),
        BackendOption("--drop-unsupported", "drop_unsupported",
                      "send only the sampling fields the server takes (e.g. no top_k for the OpenAI API or "
                      "transformers serve); what is dropped is recorded in run.json and shown in the report as a "
                      "deviation from the paper's decoding. Without it, a refused field stops the run before "
                      "generating.", bool, is_flag=True),
        BackendOption("--concurrency", "concurrency", "requests in flight.", int, default=8, minimum=1),
        BackendOption("--timeout", "timeout", "seconds of silence allowed between streamed chunks (never bounds a "
                      "whole generation).", float, default=600.0, minimum=0, minimum_open=True),
        BackendOption("--connect-timeout", "connect_timeout", "seconds to connect.", float, default=30.0, minimum=0,
                      minimum_open=True),
        BackendOption("--retries", "retries", "retries per request.", int, default=3, minimum=0),
        SAMPLES_PER_REQUEST,
        TOKENIZER,
    )

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
        drop_unsupported: bool = False,
    ):
        import httpx

        if api not in ("completions", "chat"):
            raise HTTPBackendError("api must be 'completions' or 'chat'")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise HTTPBackendError("at least one --base-url is needed for the openai backend")
        self.served_model = served_model or model_path
        self.api = api
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self.extra_body = dict(extra_body or {})
        self.drop_unsupported = bool(drop_unsupported)
        if tokenizer is None and (api == "completions" or tokenizer_path or os.path.isdir(str(model_path))):
            tokenizer = load_tokenizer(tokenizer_path or model_path)
        self.tokenizer = tokenizer
        if samples_per_request is None:
            samples_per_request = 8 if tokenizer is not None else 1
        self.chunk_size = max(1, int(samples_per_request))
        if self.chunk_size > 1 and tokenizer is None:
            raise HTTPBackendError("several samples per request need a tokenizer to count each sample's tokens: "
                                   "pass --tokenizer (a folder with the model's tokenizer) or --samples-per-request 1")
        # what the probe and the run found out about the servers (see the module docstring)
        self._lock = threading.Lock()
        self._n_mode = "honoured"  # or "refused" / "ignored": one sample per request
        self._omit: Set[str] = set()  # request fields not sent
        self._refusals: Dict[str, Tuple[int, str]] = {}  # field -> (status, server's message)
        self._strip_prefix = ""  # cut from the front of rendered prompts (a BOS the server adds again)
        self._token_counts: Set[str] = set()
        self._record: dict = {}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeouts = httpx.Timeout(connect=float(connect_timeout), read=self.timeout, write=self.timeout, pool=None)
        self.fleet = Fleet([
            Server(url.rstrip("/"), httpx.Client(headers=headers, timeout=timeouts, limits=limits))
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

    def _adds_special_tokens(self) -> bool:
        tok = self.tokenizer
        return bool(tok is not None and self.api == "completions"
                    and tok("x")["input_ids"] != tok("x", add_special_tokens=False)["input_ids"])

    def payload(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int, n: int = 1,
                seed: Optional[int] = None, omit: Sequence[str] = ()) -> dict:
        """The JSON body of one request: the standard fields, the sampling extensions (unset
        ones switched off, see the module docstring), minus what this server does not take
        (and ``omit``)."""
        omit = self._omit.union(omit)
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
        for name, off in SAMPLING_EXTENSIONS.items():
            value = getattr(decoding, name)
            if name not in omit:
                body[name] = off if value is None else value
        if n > 1 and CONTINUOUS_USAGE not in omit:
            body["stream_options"]["continuous_usage_stats"] = True
        if self.api == "completions":
            prompt = chunk.prompt
            if self._strip_prefix and prompt.startswith(self._strip_prefix):
                prompt = prompt[len(self._strip_prefix):]
            body["prompt"] = prompt
            if self._adds_special_tokens() and ADD_SPECIAL_TOKENS not in omit:
                body[ADD_SPECIAL_TOKENS] = False
        else:
            body["messages"] = chunk.messages
        body.update(self.extra_body)
        return body

    def _endpoint(self, server: Server) -> str:
        return f"{server.url}/{'completions' if self.api == 'completions' else 'chat/completions'}"

    def _stream(self, server: Server, body: dict) -> Stream:
        """One streamed request; raises Retryable / _NRefused / HTTPStatusError."""
        import httpx

        url = self._endpoint(server)
        try:
            with server.client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    detail = server_message(response.read().decode("utf-8", "replace"))
                    if response.status_code in RETRY_STATUS:
                        raise Retryable(f"HTTP {response.status_code} from {url}: {detail}",
                                         retry_after_seconds(response.headers.get("retry-after")))
                    if body["n"] > 1 and response.status_code in (400, 422) and _mentions_n(detail):
                        raise _NRefused(detail)
                    raise HTTPStatusError(server.url, response.status_code, detail)
                return self._read_events(response.iter_lines(), url)
        except httpx.TimeoutException as exc:
            raise Retryable(f"{type(exc).__name__} ({self.timeout:g} s without data) from {url}") from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise Retryable(f"{type(exc).__name__} talking to {url}: {exc}") from exc

    def _read_events(self, lines: Iterable[str], url: str) -> Stream:
        stream = Stream()
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                stream.done = True
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError as exc:
                raise Retryable(f"the stream from {url} sent a malformed event: {data[:80]!r}") from exc
            if event.get("error"):
                raise Retryable(f"server error in the stream from {url}: {event['error']}")
            stream.add(event, chat=self.api == "chat")
        return stream

    def _completions(self, stream: Stream, n: int, url: str) -> List[Completion]:
        """The finished choices of a complete stream; raises Retryable for a broken one and
        _NIgnored for a server that streamed fewer choices than asked."""
        seen = sorted(stream.texts)
        unfinished = [i for i in seen if i not in stream.finish]
        if not seen or unfinished:
            if stream.done:
                raise Interrupted(f"{url} ended the stream ([DONE]) before the sample finished")
            raise Retryable(f"the stream from {url} broke off before it finished")
        failed = {i: r for i, r in stream.finish.items() if r in FAILED}
        if failed:
            raise Retryable(f"{url} ended a sample with finish_reason {next(iter(failed.values()))!r}")
        if any(i >= n for i in seen):
            raise HTTPBackendError(f"{url} streamed choice {max(seen)} for a request of n={n}")
        completions = []
        for index in seen:
            text = join_reasoning("".join(stream.reasoning[index]), "".join(stream.texts[index]), stream.finish[index])
            completions.append(Completion(text, self._count(stream, index, text, url), stream.finish[index]))
        if len(seen) < n:  # the response ended cleanly (httpx raises for a cut one) with choices missing
            if seen == list(range(len(seen))):
                raise _NIgnored(completions, stream)
            raise Retryable(f"the stream from {url} broke off before it finished")
        return completions

    def _count(self, stream: Stream, index: int, text: str, url: str) -> int:
        """Tokens of one sample: the server's count where it gives one per sample, else the tokenizer's."""
        usage = stream.usage or {}
        if len(stream.texts) == 1 and usage.get("completion_tokens") is not None:
            method, count = "server usage", int(usage["completion_tokens"])
        elif index in stream.choice_tokens:
            method, count = "server usage (per choice)", stream.choice_tokens[index]
        elif self.tokenizer is not None:  # + the EOS that ended a finished sample, as servers count it
            method = "tokenizer"
            count = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + (stream.finish[index] == "stop")
        else:
            raise HTTPBackendError(f"{url} sent no usage.completion_tokens and there is no tokenizer to "
                                   "count with (pass --tokenizer)")
        with self._lock:
            self._token_counts.add(method)
        return count

    def _send(self, body: dict) -> Tuple[Stream, List[Completion]]:
        """Send ``body`` until it succeeds, failing over between servers."""
        errors = []
        attempt = 0
        while attempt <= self.retries:
            server = self.fleet.acquire()
            try:
                stream = self._stream(server, body)
                completions = self._completions(stream, body["n"], self._endpoint(server))
            except Interrupted as exc:
                if self.fleet.one_at_a_time(server):  # the server stops a stream when another arrives
                    self.fleet.release(server, ok=True)
                    log.warning("%s ended a stream unfinished while other requests were in flight (llama.cpp's "
                                "server interrupts a stream when a new request arrives, unless started with "
                                "--interrupt_requests False): sending it one request at a time (recorded in "
                                "run.json)", server.url)
                    continue  # not the request's fault: no attempt used
                errors.append(str(exc))
                self.fleet.release(server, ok=False, cooldown=0.0)
                attempt += 1
                continue
            except Retryable as exc:
                wait_for = exc.retry_after
                if wait_for is None:
                    wait_for = min(MAX_COOLDOWN, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.5)
                self.fleet.release(server, ok=False, cooldown=wait_for)
                errors.append(str(exc))
                attempt += 1
                continue
            except BaseException:
                self.fleet.release(server, ok=True)
                raise
            self.fleet.release(server, ok=True)
            return stream, completions
        raise HTTPBackendError(f"giving up after {self.retries + 1} attempts: {errors[-1]}")

    def _request(self, body: dict) -> List[Completion]:
        return self._send(body)[1]

    # ------------------------------------------------------------------ the probe

    def prepare(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> dict:
        """Probe the servers' handling of this run's requests before anything is generated (see the
        module docstring); returns the ``server`` record of run.json."""
        n = 1 if greedy(decoding) or self.chunk_size == 1 else min(self.chunk_size, 2)
        while True:
            body = self.payload(chunk, decoding, 1, n=n)
            try:
                stream = self._send(body)[0]
            except _NRefused:
                self._switch_to_single("refused", say=False)
                n = 1
                continue
            except _NIgnored as exc:  # the response is good, with fewer samples than asked
                self._switch_to_single("ignored", say=False)
                stream = exc.stream
            except HTTPStatusError as exc:
                if exc.status not in (400, 422) or not self._find_refused(exc, chunk, decoding, n):
                    raise
                continue
            break
        self._settle_refused(decoding)  # may stop the run: say nothing else before it
        if self._n_mode != "honoured":
            self._say_single()
        record = {"urls": [s.url for s in self.fleet.servers], "api": self.api,
                  "n_per_request": self._n_mode_text()}
        record.update(self._record)
        if self.api == "completions" and stream.usage and stream.usage.get("prompt_tokens") is not None:
            local = len(self.tokenizer(chunk.prompt, add_special_tokens=False)["input_ids"])
            served = int(stream.usage["prompt_tokens"])
            record["prompt_tokens"] = {"server": served, "tokenizer": local}
            if served != local:
                log.warning("%s counts %d prompt tokens where the tokenizer counts %d: the served model may see "
                            "another prompt (special tokens?) than the one rendered here",
                            self.fleet.servers[0].url, served, local)
        with self._lock:
            self._record = record
        return self.report()

    def _find_refused(self, exc: HTTPStatusError, chunk: Chunk, decoding: Decoding, n: int) -> bool:
        """After a 400/422: which of the non-standard fields the server refuses (left out from
        now on). False if none of them is the cause."""
        body = self.payload(chunk, decoding, 1, n=n)
        candidates = [f for f in (*SAMPLING_EXTENSIONS, ADD_SPECIAL_TOKENS) if f in body and f not in self._omit]
        if "continuous_usage_stats" in body["stream_options"] and CONTINUOUS_USAGE not in self._omit:
            candidates.append(CONTINUOUS_USAGE)  # (a field left out but sent through --extra-body is no candidate)
        named = [f for f in candidates if f.split(".")[-1] in exc.detail]
        if not named and candidates:
            # the message names none: is it one of them at all, and then which?
            if not self._probe_ok(chunk, decoding, n, omit=candidates):
                return False
            named = [f for f in candidates
                     if not self._probe_ok(chunk, decoding, n, omit=[c for c in candidates if c != f])]
        if not named:
            return False
        with self._lock:
            self._omit.update(named)
            self._refusals.update({f: (exc.status, exc.detail) for f in named})
            if ADD_SPECIAL_TOKENS in named:  # the server adds the BOS itself: cut the rendered one
                self._strip_prefix = getattr(self.tokenizer, "bos_token", None) or ""
        return True

    def _probe_ok(self, chunk: Chunk, decoding: Decoding, n: int, omit: Sequence[str]) -> bool:
        """True if a probe leaving ``omit`` out is answered."""
        try:
            self._send(self.payload(chunk, decoding, 1, n=n, omit=omit))
        except HTTPStatusError:
            return False
        except (_NRefused, _NIgnored):
            pass
        return True

    def _settle_refused(self, decoding: Decoding) -> None:
        """Decide, field by field, what a refusal means for the run (module docstring)."""
        refusals = self._refusals
        not_sent, via_extra = {}, []
        for f, (status, detail) in refusals.items():
            url = self.fleet.servers[0].url
            if f == CONTINUOUS_USAGE:
                not_sent[f] = {"why": "refused by the server: tokens of n > 1 samples are counted with the tokenizer"}
                continue
            if f == ADD_SPECIAL_TOKENS:
                not_sent[f] = {"why": f"refused by the server: the rendered prompt's leading {self._strip_prefix!r} "
                                      "is cut so that the server adds the only one"}
                continue
            value = getattr(decoding, f)
            if value is None:
                not_sent[f] = {"value": None, "why": "refused by the server; unset in the decoding, so the "
                                                     "server's own default applies"}
                log.warning("%s does not take %s; the decoding leaves it unset, so the server's own default "
                            "applies (recorded in run.json)", url, f)
                continue
            if _mentions(self.extra_body, f):
                via_extra.append(f)
                continue
            if not self.drop_unsupported:
                source = (f"the decoding preset {decoding.name!r}" if decoding.name != "custom"
                          else f"--{f.replace('_', '-')}")
                raise UnsupportedFieldError(
                    f"the server {url} does not accept the sampling field {f} ({f}={value}, set by {source}): "
                    f"HTTP {status} {detail!r}. Either pass --drop-unsupported to send only what the server takes "
                    "(recorded in run.json and shown in the report as a deviation from the paper's decoding), "
                    f"or pass the value in the server's own form with --extra-body ({SERVER_FORMS})")
            not_sent[f] = {"value": value, "why": "refused by the server; dropped (--drop-unsupported)"}
            log.warning("%s does not take %s=%s: not sent (--drop-unsupported); the run deviates from the "
                        "decoding %r (recorded in run.json, shown in the report)", url, f, value, decoding.name)
        self._record = {}
        if not_sent:
            self._record["not_sent"] = not_sent
        if via_extra:
            self._record["via_extra_body"] = sorted(via_extra)

    # ------------------------------------------------------------------ n per request

    def _switch_to_single(self, why: str, say: bool = True) -> None:
        with self._lock:
            if self._n_mode != "honoured":
                return
            self._n_mode = why
        if say:
            self._say_single()

    def _say_single(self) -> None:
        log.warning("%s %s n > 1 (several samples per request): going on with one sample per request and seeds "
                    "seed + j (recorded in run.json)", self.fleet.servers[0].url,
                    {"refused": "refuses", "ignored": "ignores"}[self._n_mode])

    def _n_mode_text(self) -> str:
        if self._n_mode == "honoured":
            return "honoured" if self.chunk_size > 1 else "one sample per request (--samples-per-request 1)"
        return f"{self._n_mode} by the server: one sample per request, seeds seed + j"

    def report(self) -> dict:
        with self._lock:
            record = dict(self._record)
            record["n_per_request"] = self._n_mode_text()
            serial = [s.url for s in self.fleet.servers if s.limit == 1]
            if serial:
                record["one_request_at_a_time"] = serial  # they interrupt a stream when another request arrives
            if self._token_counts:
                record["token_counts"] = sorted(self._token_counts)
        return record

    def _one(self, chunk: Chunk, decoding: Decoding, max_new_tokens: int) -> List[Completion]:
        n = len(chunk.indices)
        done: List[Completion] = []
        if n > 1 and self._n_mode == "honoured" and not greedy(decoding):
            try:
                return self._request(self.payload(chunk, decoding, max_new_tokens, n=n))
            except _NRefused:
                self._switch_to_single("refused")
            except _NIgnored as exc:
                self._switch_to_single("ignored")
                done = exc.completions[:1]  # choice 0 is the sample of seed + 0
        for j in range(len(done), n):
            done.append(self._request(self.payload(chunk, decoding, max_new_tokens, seed=chunk.seed + j))[0])
        return done

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


def _mentions(extra_body: dict, name: str) -> bool:
    """True if ``--extra-body`` names ``name`` anywhere (a key, or inside a JSON string such as
    transformers serve's ``generation_config``)."""
    return bool(extra_body) and name in json.dumps(extra_body)
