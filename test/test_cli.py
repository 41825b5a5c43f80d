"""The `occ-ros` command line: every subcommand imports and declares its options."""
import os
import subprocess
import sys

import pytest

from occ_ros.apps import cli


@pytest.fixture(autouse=True)
def _environment_restored(monkeypatch):
    """`cli.main` sets NUMPY_MADVISE_HUGEPAGE for its process and children; restore it afterwards so
    that this process's later child processes see the environment the session started with."""
    monkeypatch.delenv('NUMPY_MADVISE_HUGEPAGE', raising=False)


PROBE = """
import sys
from occ_ros.apps import cli
try:
    cli.main(['synth', '--help'])
except SystemExit:
    pass
import numpy
print('MADVISE', numpy._core.multiarray._get_madvise_hugepage(), file=sys.stderr)
"""


@pytest.mark.parametrize('preset, want', [(None, 'False'), ('1', 'True')])
def test_commands_run_numpy_without_transparent_huge_pages(preset, want):
    """numpy's huge-page advice on every large array stalls allocations where THP defrag is
    "madvise"; `occ-ros` turns it off before numpy is imported (numpy's documented variable,
    NUMPY_MADVISE_HUGEPAGE, read at import), unless the user set the variable."""
    env = {k: v for k, v in os.environ.items() if k != 'NUMPY_MADVISE_HUGEPAGE'}
    if preset is not None:
        env['NUMPY_MADVISE_HUGEPAGE'] = preset
    done = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert f'MADVISE {want}' in done.stderr, done.stderr[-2000:]


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


def test_the_executable_flushes_its_output_and_keeps_the_exit_code():
    """`console_main` (the `occ-ros` executable) ends a command that asks for it (the demo:
    `EXIT_WITHOUT_TEARDOWN`) with os._exit, skipping the interpreter's teardown: what the command
    printed must still reach a pipe in full, and the exit code stay — for that command and the others."""
    from occ_ros.apps import demo
    assert demo.EXIT_WITHOUT_TEARDOWN
    done = subprocess.run([sys.executable, '-m', 'occ_ros.apps.cli'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout.startswith('usage: occ-ros')
    assert all(name in done.stdout for name in cli.COMMANDS), done.stdout
    done = subprocess.run([sys.executable, '-m', 'occ_ros.apps.cli', 'synth', '--help'], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and '--seconds' in done.stdout
    probe = ("import sys\nfrom occ_ros.apps import cli, demo\n"
             "def run(args):\n    print('x' * 200000)\n    return 7\n"
             "demo.run = run\ncli.console_main()\n")
    done = subprocess.run([sys.executable, '-c', probe, 'demo'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 7 and done.stdout == 'x' * 200000 + '\n', (done.returncode, done.stderr[-2000:])
