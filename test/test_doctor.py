"""`occ-ros doctor` on this CPU-only machine: resumable phases, the GPU half skipped with what is
missing, and one JSON + Markdown report. Kept to the smallest phase set that shows it: the shipped
`lite` fp32 only (no rendering: without an fp16 graph or an engine there is nothing to compare).
The GPU half (engines, TensorRT comparison, timing) is what the first person with a GPU runs:
`occ-ros doctor --out doctor/ --checkpoint <pano-tiny checkpoint>`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from occ_ros.apps import doctor
from occ_ros.backends.factory import probe_availability


def _run(out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    return doctor.run(parser.parse_args(['--out', str(out), '--lite-precisions', 'fp32', '--frames', '1', *extra]))


def _record(out: Path, name: str) -> dict:
    return json.loads(doctor.phase_path(out, name).read_text())


def test_doctor_runs_the_cpu_half_resumes_and_reports(tmp_path: Path, capsys):
    avail = probe_availability()
    if avail.cuda and avail.tensorrt:
        pytest.skip('a GPU with TensorRT is here: the doctor would build engines (minutes)')
    out = tmp_path / 'doctor'
    assert _run(out, '--phase', 'environment') == 0
    env = _record(out, 'environment')
    assert env['status'] == 'ok' and env['result']['cpu_matmul_gflops'] > 0
    assert env['result']['gpu_half'] != 'ready'
    # a phase whose inputs are missing says so instead of failing
    assert _run(out, '--phase', 'compare') == 0
    assert _record(out, 'compare')['status'] == 'skipped'
    assert 'phase export has no result' in _record(out, 'compare')['reason']

    assert _run(out) == 0                                         # every phase not done yet
    text = capsys.readouterr().out
    graphs = _record(out, 'export')['result']['graphs']
    assert [(g['model'], g['precision']) for g in graphs] == [('lite', 'fp32')]
    assert Path(graphs[0]['onnx']).is_file()
    assert 20 < _record(out, 'export')['result']['gflop_per_frame']['lite'] < 30   # issue 18: 25.2 GFLOP
    for name in ('build', 'timing'):                              # the GPU half: skipped, with the reason
        rec = _record(out, name)
        assert rec['status'] == 'skipped' and rec['reason'] == env['result']['gpu_half']
    assert _record(out, 'compare')['status'] == 'ok'
    assert 'CPU-only run' in text

    export_started = _record(out, 'export')['started_utc']
    assert _run(out) == 0                                         # resumed: what is ok is not re-run
    text = capsys.readouterr().out
    assert 'phase export: cached ok' in text and 'phase compare: cached ok' in text
    assert _record(out, 'export')['started_utc'] == export_started
    assert 'phase environment: ok' in text                        # the machine is always re-measured
    assert _run(out, '--frames', '2') == 0                        # another option: the phase that uses it re-runs
    text = capsys.readouterr().out
    assert 'phase compare: cached ok' not in text and 'phase export: cached ok' in text

    report = json.loads((out / 'report.json').read_text())
    assert set(report['phases']) == set(doctor.PHASES) - {'report'}
    assert report['phases']['build']['status'] == 'skipped'
    md = (out / 'report.md').read_text()
    assert '| build | skipped |' in md and '| lite | fp32 | False |' in md and 'GFLOPS' in md


def test_doctor_is_a_cli_command():
    from occ_ros.apps.cli import COMMANDS

    assert COMMANDS['doctor'][0] == 'occ_ros.apps.doctor'


def _gpu_reason() -> str:
    avail = probe_availability()
    return '; '.join(why for ok, why in ((avail.cuda, avail.cuda_reason), (avail.tensorrt, avail.tensorrt_reason))
                     if not ok)


@pytest.mark.skipif(bool(_gpu_reason()), reason=f'the GPU half needs CUDA + TensorRT: {_gpu_reason()}')
def test_doctor_gpu_half_builds_compares_and_times(tmp_path: Path):   # pragma: no cover
    """On a GPU: engines of the shipped lite built, each ≥ its agreement threshold with ONNX Runtime
    fp32 on a rendered frame set, timed alone and in the node over DDS (raw and JPEG)."""
    out = tmp_path / 'doctor'
    assert _run(out, '--lite-precisions', 'fp32,fp16', '--runs', '5', '--node-seconds', '5') == 0
    assert _record(out, 'build')['status'] == 'ok'
    assert _record(out, 'compare')['result']['pass'] is True
    timing = _record(out, 'timing')['result']
    assert all(r['p50_ms'] > 0 for r in timing['engine'])
    assert set(timing['node']) == {'raw', 'jpeg'}
