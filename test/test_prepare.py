"""`occ-ros prepare` (run by scripts/setup.sh) does the node's first-run export ahead of time."""
from __future__ import annotations

from pathlib import Path

from occ_ros.apps import cli


def test_prepare_exports_the_graph_the_node_then_reuses(tmp_path: Path) -> None:
    """After `prepare`, the node's own pipeline build — from its parameters as the demo starts it
    (the shipped checkpoint given explicitly, the demo's 900×1600 rig) — finds the exported graph
    and loads it: no second export (same single file, untouched). A different fingerprint (say,
    other weights or precision) would have exported a second file."""
    from occ_ros.geometry import nuscenes_rig
    from occ_ros.pipeline import OccupancyPipeline
    from occ_ros.weights import default_checkpoint

    assert cli.main(['prepare', '--engine-dir', str(tmp_path), '--no-kernels', '--backend', 'onnxruntime']) == 0
    exported = sorted(tmp_path.glob('*.onnx'))
    assert [p.name.split('.')[:2] for p in exported] == [['lite', 'fp32']]
    mtime = exported[0].stat().st_mtime_ns
    pipe = OccupancyPipeline.from_params('lite', rig=nuscenes_rig((900, 1600)),
                                         checkpoint=str(default_checkpoint('lite')), backend='onnxruntime',
                                         threads=1, engine_dir=str(tmp_path))
    try:
        assert pipe.backend.kind == 'onnxruntime'
    finally:
        pipe.backend.close()
    assert sorted(tmp_path.glob('*.onnx')) == exported
    assert exported[0].stat().st_mtime_ns == mtime
