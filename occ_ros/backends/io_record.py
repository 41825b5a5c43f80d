"""The I/O record beside an exported graph: its inputs and outputs with the size and SHA-256 of its
bytes (`<graph>.onnx.io.json`), so that a start that reuses the export checks the engine contract
without importing `onnx` and parsing 50 MB of graph — ≈ 1 s of CPU for `lite` on every node start,
most of it the import of `onnx` (its `ml_dtypes` extension). The record is trusted only for the
exact bytes it describes; anything else falls back to reading the graph (`backends.export`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from occ_ros.backends import io_spec as ios
from occ_ros.backends.engine_cache import atomic_write, sha256_file
from occ_ros.core.errors import BackendError

LOG = logging.getLogger('occ_ros.backends')

IO_RECORD_SUFFIX = '.io.json'


def io_record_path(path: Path) -> Path:
    """Where the I/O record of the graph `path` lives (`<graph>.onnx.io.json`)."""
    return path.with_name(path.name + IO_RECORD_SUFFIX)


def write_io_record(path: Path, spec: ios.IOSpec, sha256: str, size: int) -> None:
    """Record the graph's I/O with the size and SHA-256 of its bytes, so that a later start can
    check the contract without importing `onnx` and parsing the graph (≈ 1 s for `lite`, most of
    it `onnx`'s own import). A folder that cannot be written only costs that second next time."""
    record = {'format': 1, 'size': size, 'sha256': sha256, **ios.spec_to_json(spec)}
    try:
        atomic_write(io_record_path(path), json.dumps(record).encode())
    except OSError as e:
        LOG.debug('no I/O record beside %s: %s', path, e)


def recorded_io_spec(path: Path) -> Optional[ios.IOSpec]:
    """The I/O spec recorded beside the graph `path` when the record describes exactly these bytes
    (same size and SHA-256), else None (no record, another or a damaged file, a bad record)."""
    try:
        record = json.loads(io_record_path(path).read_text())
        if record.get('format') != 1 or record.get('size') != path.stat().st_size:
            return None
        if record.get('sha256') != sha256_file(path):
            return None
        return ios.spec_from_json(record)
    except (OSError, ValueError, AttributeError, BackendError):
        return None
