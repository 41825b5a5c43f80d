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


def test_eval_node_parameters():
    """`occ-ros eval --bag … --param NAME=VALUE` reaches the started node as `-p NAME:=VALUE`."""
    from occ_ros.apps.evaluate import node_params
    from occ_ros.apps.node_process import node_command
    from occ_ros.core.errors import ConfigError
    params = node_params(['ego_motion_compensation=false', 'camera_stamp_offsets_s=[0.0, 0.01]'], True)
    assert params == {'official_compat': True, 'ego_motion_compensation': 'false',
                      'camera_stamp_offsets_s': '[0.0, 0.01]'}
    cmd = node_command(params)
    assert '-p' in cmd and 'ego_motion_compensation:=false' in cmd and 'official_compat:=true' in cmd
    assert node_params([]) is None
    for bad in ('x', '=1', 'a:=1'):
        with pytest.raises(ConfigError, match='NAME=VALUE'):
            node_params([bad])
