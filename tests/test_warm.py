"""tests/warm.py: a command forked from the warm-start server prints and exits as the same
command started cold (a real subprocess, :func:`common.run`), and what a fork cannot
reproduce runs cold."""

import os
import subprocess
import sys
import threading

import pytest

from common import console, run
from synthetic import recipe
from warm import shared


@pytest.fixture
def warm():
    return shared()


def both(warm, argv, cwd):
    """The command run cold, then warm: (returncode, stdout, stderr) of each."""
    cold = run(argv, cwd=cwd)
    before = warm.warm
    forked = warm.run(argv, cwd=cwd)
    assert warm.warm == before + 1, "ran warm"
    return [(r.returncode, r.stdout, r.stderr) for r in (cold, forked)]


def test_commands_print_and_exit_as_when_started_cold(warm, dense_pair, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(recipe(*dense_pair, 0.8))
    commands = [
        # stock mergekit's console script, refusing: exit 1 and the one Error line
        [console("mergekit-yaml"), tmp_path / "missing.yaml", tmp_path / "out"],
        # mi-mergekit succeeding: the plan table on stdout
        [console("mi-mergekit"), "plan", good],
        # --verbose: the traceback the command prints itself, then the Error line
        [console("mi-mergekit"), "merge", good, dense_pair[0], "--verbose"],
        # python -c: argv, sys.path[0] and the working folder as the interpreter sets them; an
        # uncaught exception's traceback from the script down; sys.exit with a message
        [sys.executable, "-c", "import os, sys; print(sys.argv, repr(sys.path[0]), os.getcwd(), __name__)", "a"],
        [sys.executable, "-c", "print('partial', flush=True); 1/0"],
        [sys.executable, "-c", "import sys; sys.exit('stopped')"],
        [sys.executable, "-c", "import atexit; atexit.register(print, 'at exit')"],
        # python -m: argv[0] the module's file, sys.path[0] the working folder; a usage error:
        # click's message and exit 2, the program named as the interpreter names it
        [sys.executable, "-m", "mi_mergekit.cli", "merge", good, tmp_path / "out", "--lambdas"],
        [sys.executable, "-m", "json.tool", "--no-such-option"],
        [sys.executable, "-m", "site"],
    ]
    for argv in commands:
        cold, forked = both(warm, argv, tmp_path)
        assert forked == cold, argv
    assert not (tmp_path / "out").exists()


def test_a_merge_through_plain_mergekit_yaml_writes_the_same_files(warm, dense_pair, tmp_path):
    """Our method reaches stock mergekit's own console script through the start-up hook in both
    ways; the merged folders are identical but for the path each names its output by."""
    good = tmp_path / "good.yaml"
    good.write_text(recipe(*dense_pair, 0.8, layer_start=1))
    cold = run([console("mergekit-yaml"), good, tmp_path / "cold" / "out"])
    forked = warm.run([console("mergekit-yaml"), good, tmp_path / "warm" / "out"])
    assert cold.returncode == forked.returncode == 0, cold.stderr + forked.stderr
    made = {way: {name: (tmp_path / way / "out" / name).read_bytes().replace(str(tmp_path / way).encode(), b"HERE")
                  for name in os.listdir(tmp_path / way / "out")} for way in ("cold", "warm")}
    assert "model.safetensors" in made["cold"] and "mi_plan.json" in made["cold"]
    assert made["warm"] == made["cold"]


def test_what_a_fork_cannot_be_runs_cold(warm, tmp_path):
    probe = [sys.executable, "-c", "import os; print(os.environ.get('HF_HUB_OFFLINE'))"]
    cold = warm.cold
    # an environment read when modules are imported (the server imported them with its own)
    assert warm.run(probe, env={"HF_HUB_OFFLINE": "1"}).stdout == "1\n"
    # a preexec_fn, and a program that is not this interpreter's
    assert warm.run(probe, preexec_fn=lambda: os.nice(0)).returncode == 0
    assert warm.run(["/bin/echo", "x"]).stdout == "x\n"
    assert warm.cold == cold + 3


def test_a_command_past_its_timeout_is_killed_and_the_server_goes_on(warm, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        warm.run([sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], timeout=2)
    assert stopped.value.output == "started\n"
    assert warm.run([sys.executable, "-c", "print('next')"]).stdout == "next\n"


def test_commands_from_several_threads_each_get_their_own_answer(warm):
    answers = {}

    def ask(k):
        answers[k] = warm.run([sys.executable, "-c", f"import sys; print({k}); sys.exit({k})"])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {k: (r.returncode, r.stdout) for k, r in answers.items()} == {k: (k, f"{k}\n") for k in range(4)}
