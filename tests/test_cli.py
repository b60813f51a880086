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
