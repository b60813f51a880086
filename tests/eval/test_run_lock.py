"""One writer per run folder: two real `mi-mergekit eval` processes into one --out, and a lock
left by a process that died (mi_mergekit.runlock)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

from mi_mergekit.runlock import LOCK_FILE
from stream_server import StreamServer
from test_cli_resume import CLI, run_cli, subprocess_env


def eval_args(server, fixtures, out):
    return ["eval", "--model", "m", "--backend", "openai", "--api", "chat", "--base-url", server.base_url,
            "--dataset", fixtures / "boxed.jsonl", "-n", "2", "--max-new-tokens", "100", "--concurrency", "1",
            "--out", out, "--no-progress"]


def test_a_second_writer_stops_before_generating_and_nothing_is_stored_twice(tmp_path, fixtures):
    out = tmp_path / "run"
    # the first writer's third request (probe, first question, second question) waits until the second
    # process has come and gone, however slowly the machine starts it
    with StreamServer(thought_words=20, lifetime=300, hold_after=2) as server:
        first = subprocess.Popen([*CLI, *map(str, eval_args(server, fixtures, out))], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=subprocess_env())
        deadline = time.monotonic() + 240
        while not ((out / "samples.jsonl").exists() and (out / "samples.jsonl").stat().st_size):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        requests_before = len(server.requests)
        second = run_cli(*eval_args(server, fixtures, out))  # the relaunched job, while the first runs
        assert len(server.requests) - requests_before <= 1  # the second sent nothing: only the first's held request
        assert first.poll() is None  # the first was still running all along
        server.gate.set()
        stdout, stderr = first.communicate(timeout=240)
    assert second.returncode == 1
    holder = f"pid {first.pid} on {socket.gethostname()} (mi-mergekit eval, since "
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {holder}") and last.endswith(
        f"is writing this folder; wait for it to end, or stop it and run the same command again to resume ({out})")
    assert first.returncode == 0, stderr
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len({(r["question_id"], r["sample_index"]) for r in rows}) == 6
    assert (out / LOCK_FILE).read_text() == ""  # released cleanly


def test_a_lock_left_by_a_dead_process_is_taken_over_and_said_so(tmp_path, fixtures):
    out = tmp_path / "run"
    out.mkdir()
    # what a killed writer leaves: its record, and no flock (the kernel dropped it with the process)
    (out / LOCK_FILE).write_text(json.dumps({"pid": 4194300, "host": socket.gethostname(), "command": "mi-mergekit eval",
                                             "started": "2026-11-26T10:00:00+00:00"}))
    with StreamServer() as server:
        result = run_cli(*eval_args(server, fixtures, out))
    assert result.returncode == 0, result.stderr
    assert (f"taking over {out} from pid 4194300 on {socket.gethostname()} (mi-mergekit eval, since "
            "2026-11-26T10:00:00+00:00), which ended without releasing it") in result.stderr
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
