"""The rig file (YAML): save, load, and the default rig shipped in config/."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import yaml

from occ_ros.core.paths import SOURCE_ROOT, data_path
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.rig import (
    RIG_FORMAT,
    RIG_VERSION,
    CameraCalib,
    Rig,
    _matrix,
    nuscenes_rig,
)

_YAML_HEADER = """\
# occ_ros camera rig (written by occ_ros.geometry.save_rig).
# Per camera, in network view order:
#   image_hw:   [height, width] of the images this camera delivers
#   K:          3x3 pinhole intrinsics for that image size (pixel centres at integer coordinates)
#   sensor2ego: 4x4 row-major transform, camera optical frame (x right, y down, z forward)
#               -> ego / base_link (x forward, y left, z up), metres
"""


def save_rig(rig: Rig, path: Union[str, Path], comment: Optional[str] = None) -> None:
    """Write `rig` as YAML (floats with full precision: load_rig after save_rig gives `rig` back).

    comment: optional text written as extra `#` lines at the top of the file.
    """
    doc = {
        'format': RIG_FORMAT,
        'version': RIG_VERSION,
        'cameras': [
            {'name': c.name,
             'image_hw': [int(c.image_hw[0]), int(c.image_hw[1])],
             'K': [[float(v) for v in row] for row in c.K],
             'sensor2ego': [[float(v) for v in row] for row in c.sensor2ego]}
            for c in rig],
    }
    extra = ''.join(f'# {line}'.rstrip() + '\n' for line in (comment or '').splitlines())
    text = (_YAML_HEADER + extra
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    Path(path).write_text(text, encoding='utf-8')


def load_rig(path: Union[str, Path]) -> Rig:
    """Read and validate a rig written by `save_rig` (or by hand in the same layout).

    Raises CalibrationError naming the file and the offending field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding='utf-8')
    except OSError as exc:
        raise CalibrationError(f'{p}: cannot read the rig file ({exc.strerror or exc})') from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f'{p}: not valid YAML: {exc}') from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f'{p}: expected a mapping with a "cameras" list')
    if doc.get('format', RIG_FORMAT) != RIG_FORMAT:
        raise CalibrationError(f'{p}: format is {doc.get("format")!r}, expected {RIG_FORMAT!r}')
    if doc.get('version', RIG_VERSION) != RIG_VERSION:
        raise CalibrationError(f'{p}: rig file version {doc.get("version")!r} is not supported '
                               f'(this code reads version {RIG_VERSION})')
    entries = doc.get('cameras')
    if not isinstance(entries, list) or not entries:
        raise CalibrationError(f'{p}: "cameras" must be a non-empty list')
    cams = []
    for i, entry in enumerate(entries):
        where = f'{p}: cameras[{i}]'
        if not isinstance(entry, dict):
            raise CalibrationError(f'{where}: expected a mapping with name, image_hw, K, '
                                   'sensor2ego')
        missing = [k for k in ('name', 'image_hw', 'K', 'sensor2ego') if k not in entry]
        if missing:
            raise CalibrationError(f'{where}: missing field(s) {missing}')
        where = f'{where} ({entry["name"]})'
        hw = entry['image_hw']
        if (not isinstance(hw, list) or len(hw) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):
            raise CalibrationError(f'{where}.image_hw: expected [height, width] positive '
                                   f'integers, got {hw!r}')
        K = _matrix(entry['K'], (3, 3), f'{where}.K')
        T = _matrix(entry['sensor2ego'], (4, 4), f'{where}.sensor2ego')
        try:
            cams.append(CameraCalib(str(entry['name']), K, T, (hw[0], hw[1])))
        except CalibrationError as exc:
            raise CalibrationError(f'{where}: {exc}') from exc
    try:
        return Rig(tuple(cams))
    except CalibrationError as exc:
        raise CalibrationError(f'{p}: {exc}') from exc


DEFAULT_RIG_COMMENT = """\
Default rig: nuScenes calibrated_sensor records of one log (v1.0-mini, scene-0061; other
logs differ by centimetres and tenths of a degree), images 1600x900. Generated from the one
definition, occ_ros.geometry.rig._NUSCENES_CALIB: edit that, not this file.
Regenerate with: python -c "import occ_ros.geometry as g; g.write_default_rig()"
"""


def default_rig_path() -> Path:
    """config/nuscenes_rig.yaml of the source tree, else of the installed share directory."""
    return data_path('config', 'nuscenes_rig.yaml')


def default_rig() -> Rig:
    """The committed default rig file if present, else `nuscenes_rig()` (the same values)."""
    path = default_rig_path()
    return load_rig(path) if path.exists() else nuscenes_rig()


def write_default_rig(path: Optional[Union[str, Path]] = None) -> Path:
    """(Re)write config/nuscenes_rig.yaml from `nuscenes_rig()`; returns the path written."""
    target = Path(path) if path is not None else SOURCE_ROOT / 'config' / 'nuscenes_rig.yaml'
    save_rig(nuscenes_rig(), target, comment=DEFAULT_RIG_COMMENT)
    return target
