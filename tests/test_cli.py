"""The `mi-mergekit` command group: a fast --help and a command table that matches the commands."""

import subprocess
import sys

import click
import pytest

from mi_mergekit.cli import SUBCOMMANDS, main


def test_help_lists_every_command_without_importing_torch_or_mergekit():
    code = (
        "import sys\n"
        "from mi_mergekit.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('torch', 'mergekit', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_table_entries_are_the_commands(name):
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name
    assert "unavailable" not in (command.help or "")


def _command(name):
    return main.get_command(click.Context(main), name)


def _params(command):
    return {p.name: p for p in command.params}


def test_eval_and_find_lambda_share_one_set_of_evaluation_options():
    """Declared once (cli/options.py eval_options): same names, flags, types, choices, repeatability."""
    from mi_mergekit.cli.options import EVAL_OPTION_NAMES

    evaluate, search = _params(_command("eval")), _params(_command("find-lambda"))
    for name in EVAL_OPTION_NAMES + ("cuda", "device"):
        a, b = evaluate[name], search[name]
        assert a.opts == b.opts and a.multiple == b.multiple and a.is_flag == b.is_flag, name
        assert type(a.type) is type(b.type) and getattr(a.type, "choices", None) == getattr(b.type, "choices", None)
    assert evaluate["base_urls"].multiple and evaluate["benchmark"].type.choices
    assert search["n_samples"].default == 4 and evaluate["n_samples"].default is None  # the one per-command default


def test_lambdas_and_device_options_come_from_one_place():
    from mi_mergekit.cli.options import check_lambdas

    for name in ("sweep", "recipes", "demo"):
        (option,) = [p for p in _command(name).params if "--lambdas" in p.opts]
        assert getattr(option.callback, "func", option.callback) is check_lambdas, name  # sweep: a partial
    for name in ("diverge", "find-lambda", "eval"):
        params = _params(_command(name))
        assert params["cuda"].is_flag and params["device"].opts == ["--device"], name


def test_each_command_lists_only_the_options_it_uses():
    """plan is a dry run: none of mergekit's device, thread or output-writing options; find-lambda takes
    eval's --no-progress; every option of find-lambda says what it does."""
    from mi_mergekit.cli.options import PLAN_OPTIONS

    plan = _params(_command("plan"))
    assert set(plan) == {"recipe", "models", "json_path", *PLAN_OPTIONS}
    assert not {"cuda", "device", "out_shard_size", "multi_gpu", "write_threads", "num_threads"} & set(plan)
    search = _params(_command("find-lambda"))
    assert search["no_progress"].is_flag and _params(_command("eval"))["no_progress"].is_flag
    for name in ("find-lambda", "eval", "plan", "merge", "sweep", "report", "demo"):
        undocumented = [p.name for p in _params(_command(name)).values() if isinstance(p, click.Option) and not p.help
                        and p.name not in ("seed",)]
        assert undocumented == [], (name, undocumented)


def test_the_main_help_states_the_exit_statuses():
    text = " ".join(main.help.split())
    assert "exit status 1" in text and "exit status 2" in text
