"""The command line: every command's --help explains every option it takes."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from reloc.cli import app

COMMANDS = typer.main.get_command(app).commands


def test_every_command_is_listed_with_its_summary():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, command in COMMANDS.items():
        assert name in result.output and command.help, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_every_option_and_argument(name):
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Usage: root {name}" in " ".join(result.output.split())
    for parameter in COMMANDS[name].params:
        if getattr(parameter, "hidden", False):
            continue
        if parameter.param_type_name == "option":
            assert any(option in result.output for option in parameter.opts), (name, parameter.opts)
            assert parameter.help, f"reloc {name} {parameter.opts[0]} has no help text"
        else:
            assert parameter.name in result.output and parameter.help, (name, parameter.name)
    help_row = next(line for line in result.output.splitlines() if "--help" in line)
    assert "Show this message and exit." in help_row and "<" not in help_row  # typer prints <bool> unless told
