"""The `occ-ros` command line: every subcommand imports and declares its options."""
import pytest

from occ_ros.apps import cli


@pytest.mark.parametrize('name', sorted(cli.COMMANDS))
def test_every_subcommand_builds_its_parser(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, '--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: occ-ros ' + name)
    assert '--' in out                                  # the module declared its own options


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert 'COMMAND' in capsys.readouterr().out
