"""Console scripts whose start-up is paid once: :class:`WarmStart`.

A merge command spends 2.5–3 s of this machine's time importing torch, transformers and
mergekit before it reads its first argument; a table of 70 refused inputs would spend three
minutes on that alone. ``WarmStart(modules)`` starts one Python (``warm_server.py``) that
imports ``modules`` once; each :meth:`WarmStart.run` then forks it into a new process that
runs the console script exactly as the interpreter runs a script — its argv, working folder,
environment, stdin/stdout/stderr, and its exit through the interpreter's own top level — and
returns what :func:`common.run` returns for the same command.

What a forked process cannot reproduce, it does not pretend to: a command whose environment
differs from the server's (variables such as ``HF_HOME`` or ``HF_HUB_OFFLINE`` are read when a
module is imported), that needs a ``preexec_fn``, or that is not this interpreter's console
script, ``python -c`` or ``python -m`` runs as a real subprocess through :func:`common.run`
(counted in :attr:`WarmStart.cold`). ``tests/test_warm.py`` checks that both ways print and
exit alike.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import command_env, run

SERVER = str(Path(__file__).with_name("warm_server.py"))
#: what a merge command of either console script imports before it reads its arguments
MERGE_COMMANDS = ("torch", "transformers", "mergekit.scripts.run_yaml", "mi_mergekit.cli")


#: variables that change while the server lives, or that mi-mergekit reads only when a command
#: runs: none is read when a module is imported
RUN_TIME = {"PYTEST_CURRENT_TEST", "MI_MERGEKIT_ENGINE", "MI_MERGEKIT_OVERWRITE", "MI_MERGEKIT_NLTK_DATA"}


def imported_with(env: dict) -> dict:
    """What of an environment the server's imports may have read."""
    return {k: v for k, v in env.items() if k not in RUN_TIME}


class WarmStart:
    """A server that has imported ``modules`` in ``env`` (beside this process's environment);
    :meth:`run` is :func:`common.run`, forked from it where that is the same process. It runs one
    command at a time (a second thread's waits for the first)."""

    def __init__(self, modules=MERGE_COMMANDS, env: dict | None = None, start_timeout: float = 600):
        self.env = command_env(env)
        self.cold = 0  # commands that ran as real subprocesses instead
        self.warm = 0
        self._scratch = tempfile.mkdtemp(prefix="warm-")
        requests_in, self._requests = os.pipe()
        self._answers, answers_out = os.pipe()
        self._log = open(os.path.join(self._scratch, "server.log"), "w+")
        self._server = subprocess.Popen(
            [sys.executable, SERVER, str(requests_in), str(answers_out), *modules], env=self.env,
            pass_fds=(requests_in, answers_out), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        os.close(requests_in)
        os.close(answers_out)
        self._pending = b""
        self._one_at_a_time = threading.Lock()  # one request on the pipes at a time
        if self._answer(start_timeout, "ready") is None:
            self.close()
            raise RuntimeError(f"the warm-start server did not start within {start_timeout:.0f} s")

    # --- the protocol: one JSON line a request, answered by {"pid"} then {"returncode"}
    def _answer(self, timeout: float, key: str):
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                return None
            chunk = os.read(self._answers, 65536)
            if not chunk:
                self._log.seek(0)
                raise RuntimeError(f"the warm-start server ended: {self._log.read()[-3000:]}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)[key]

    def servable(self, args, env=None, preexec_fn=None) -> bool:
        """Whether a process forked from the server would be the process ``args`` starts."""
        if preexec_fn is not None or imported_with(command_env(env)) != imported_with(self.env):
            return False
        program = str(args[0])
        if program == sys.executable:
            return len(args) > 2 and args[1] in ("-c", "-m")
        try:
            with open(program, "rb") as script:
                return script.readline().strip() == b"#!" + sys.executable.encode()
        except OSError:
            return False

    def run(self, args, timeout: float = 600, env=None, cwd=None, preexec_fn=None) -> subprocess.CompletedProcess:
        """:func:`common.run`'s answer for ``args``, from a forked process where that is the same."""
        args = [str(a) for a in args]
        if not self.servable(args, env, preexec_fn):
            self.cold += 1
            return run(args, timeout=timeout, env=env, cwd=cwd, preexec_fn=preexec_fn)
        with self._one_at_a_time:
            self.warm += 1
            out, err = (os.path.join(self._scratch, name) for name in ("stdout", "stderr"))
            request = {"argv": args, "env": command_env(env), "cwd": str(cwd or os.getcwd()),
                       "stdout": out, "stderr": err}
            os.write(self._requests, (json.dumps(request) + "\n").encode())
            pid = self._answer(60, "pid")
            returncode = self._answer(timeout, "returncode")
            if returncode is None:
                os.kill(pid, signal.SIGKILL)
                self._answer(60, "returncode")
                raise subprocess.TimeoutExpired(args, timeout, Path(out).read_text(), Path(err).read_text())
            return subprocess.CompletedProcess(args, returncode, Path(out).read_text(), Path(err).read_text())

    def close(self) -> None:
        if self._log.closed:  # closed already
            return
        os.close(self._requests)  # the server's loop ends
        try:
            self._server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        os.close(self._answers)
        self._log.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> "WarmStart":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SHARED: WarmStart | None = None


def shared() -> WarmStart:
    """This test process's server for commands in its own environment: started on first use;
    started again when that environment has changed since (a fixture set a variable, a library
    imported here set one); closed when the process ends."""
    global _SHARED
    if _SHARED is not None and imported_with(command_env()) != imported_with(_SHARED.env):
        _SHARED.close()
        _SHARED = None
    if _SHARED is None:
        _SHARED = WarmStart()
    return _SHARED


@atexit.register
def _close_shared() -> None:
    if _SHARED is not None:
        _SHARED.close()


def run_warm(args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """:func:`common.run`, through this process's :func:`shared` server."""
    return shared().run(args, timeout=timeout, **kwargs)
