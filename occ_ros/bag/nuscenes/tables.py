"""The nuScenes tables: the JSON reader, the devkit reader and the choice between them."""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol, Sequence, Union

from occ_ros.core.errors import BagError

LOG = logging.getLogger('occ_ros.nuscenes')
PathLike = Union[str, Path]
LIDAR_CHANNEL = 'LIDAR_TOP'

# What `JsonTables` reads; the devkit reads these plus the annotation and map tables.
REQUIRED_TABLES: tuple[str, ...] = (
    'scene', 'sample', 'sample_data', 'calibrated_sensor', 'ego_pose', 'sensor', 'log')


DEVKIT_TABLES: tuple[str, ...] = REQUIRED_TABLES + (
    'category', 'attribute', 'visibility', 'instance', 'sample_annotation', 'map')


READERS: tuple[str, ...] = ('auto', 'devkit', 'json')


_MAX_LISTED = 20


class NuScenesError(BagError):
    """A nuScenes dataset cannot be converted: missing dataroot, unknown version or scene, missing
    image or ground-truth files, malformed tables. The message names the file, table or record."""


class Tables(Protocol):
    """What `load_scene` needs from a nuScenes database."""

    kind: str
    dataroot: Path
    version: str

    def records(self, table: str) -> list[dict[str, Any]]:
        """All records of `table` (a list of dicts, each with a 'token')."""

    def get(self, table: str, token: str) -> dict[str, Any]:
        """The record of `table` with `token`; NuScenesError when there is none."""


def listing(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    shown = ', '.join(str(i) for i in items[:limit])
    return shown + (f', … ({len(items) - limit} more)' if len(items) > limit else '')


def available_versions(dataroot: PathLike) -> list[str]:
    """Sub-directories of `dataroot` that hold a scene.json (nuScenes version folders)."""
    root = Path(dataroot)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / 'scene.json').is_file())


def check_dataset(dataroot: PathLike, version: str) -> Path:
    """Validate `dataroot`/`version`; returns the table folder. Raises NuScenesError."""
    root = Path(dataroot)
    if not root.exists():
        raise NuScenesError(f'nuScenes dataroot {root} does not exist; pass --dataroot the folder that '
                            f'holds samples/, sweeps/ and the version folders (e.g. v1.0-mini/)')
    if not root.is_dir():
        raise NuScenesError(f'nuScenes dataroot {root} is not a directory')
    table_root = root / version
    if not version or not table_root.is_dir():
        found = available_versions(root)
        raise NuScenesError(
            f'unknown nuScenes version {version!r}: {table_root} does not exist. Versions found in '
            f'{root}: {found if found else "none (no sub-folder holds a scene.json)"}')
    return table_root


def _load_table(path: Path, table: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise NuScenesError(f'nuScenes table {table}.json is missing in {path.parent}; the converter '
                            f'needs {", ".join(t + ".json" for t in REQUIRED_TABLES)}')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise NuScenesError(f'nuScenes table {path} is not valid JSON (line {exc.lineno}, column '
                            f'{exc.colno}: {exc.msg}); re-extract the dataset archive') from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise NuScenesError(f'cannot read nuScenes table {path}: {exc}') from exc
    if not isinstance(data, list):
        raise NuScenesError(f'nuScenes table {path} must be a JSON list of records, '
                            f'got a {type(data).__name__}')
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get('token'), str):
            raise NuScenesError(f'nuScenes table {path}: record {i} is not an object with a string '
                                f'"token" ({str(rec)[:120]})')
    return data


class JsonTables:
    """The v1.0 JSON tables of `dataroot/version`, loaded on first use, indexed by token."""

    kind = 'json'

    def __init__(self, dataroot: PathLike, version: str) -> None:
        self.table_root = check_dataset(dataroot, version)
        self.dataroot = Path(dataroot)
        self.version = version
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._index: dict[str, dict[str, int]] = {}

    def records(self, table: str) -> list[dict[str, Any]]:
        if table not in self._tables:
            path = self.table_root / f'{table}.json'
            recs = _load_table(path, table)
            index: dict[str, int] = {}
            for i, rec in enumerate(recs):
                if rec['token'] in index:
                    raise NuScenesError(f'nuScenes table {path}: token {rec["token"]} appears twice '
                                        f'(records {index[rec["token"]]} and {i})')
                index[rec['token']] = i
            self._tables[table], self._index[table] = recs, index
        return self._tables[table]

    def get(self, table: str, token: str) -> dict[str, Any]:
        recs = self.records(table)
        i = self._index[table].get(token)
        if i is None:
            raise NuScenesError(f'nuScenes table {table}.json has no record with token {token!r} '
                                f'(a dangling reference: the tables in {self.table_root} are '
                                f'inconsistent or from different versions)')
        return recs[i]


def devkit_available() -> bool:
    """True when `from nuscenes.nuscenes import NuScenes` works in this environment."""
    try:
        importlib.import_module('nuscenes.nuscenes')
    except Exception:                  # ImportError, or a broken dependency raising at import time
        return False
    return True


class DevkitTables:
    """The database loaded by the official nuscenes-devkit (`NuScenes(version, dataroot)`)."""

    kind = 'devkit'

    def __init__(self, dataroot: PathLike, version: str) -> None:
        table_root = check_dataset(dataroot, version)
        try:
            from nuscenes.nuscenes import NuScenes  # type: ignore[import-untyped,unused-ignore]
        except Exception as exc:
            raise NuScenesError(f'the nuscenes-devkit is not importable ({type(exc).__name__}: {exc}); '
                                f'install it (see the module docstring) or use --reader json') from exc
        missing = [t for t in DEVKIT_TABLES if not (table_root / f'{t}.json').is_file()]
        if missing:
            raise NuScenesError(
                f'the nuscenes-devkit needs all v1.0 tables but {table_root} lacks '
                f'{", ".join(m + ".json" for m in missing)}; use --reader json, which needs only '
                f'{", ".join(t + ".json" for t in REQUIRED_TABLES)}')
        self.dataroot = Path(dataroot)
        self.version = version
        try:
            self.nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
        except json.JSONDecodeError as exc:
            raise NuScenesError(f'a nuScenes table in {table_root} is not valid JSON (line {exc.lineno}, '
                                f'column {exc.colno}: {exc.msg})') from exc
        except (AssertionError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise NuScenesError(f'the nuscenes-devkit cannot index the tables in {table_root} '
                                f'({type(exc).__name__}: {exc}); the tables are malformed or '
                                f'inconsistent (try --reader json for a more specific error)') from exc

    def records(self, table: str) -> list[dict[str, Any]]:
        if table not in self.nusc.table_names:
            raise NuScenesError(f'the nuscenes-devkit has no table {table!r}')
        recs: list[dict[str, Any]] = getattr(self.nusc, table)
        return recs

    def get(self, table: str, token: str) -> dict[str, Any]:
        try:
            rec: dict[str, Any] = self.nusc.get(table, token)
        except KeyError as exc:
            raise NuScenesError(f'nuScenes table {table}.json has no record with token {token!r} '
                                f'(a dangling reference in {self.nusc.table_root})') from exc
        return rec


def open_tables(dataroot: PathLike, version: str, reader: str = 'auto') -> Tables:
    """A `Tables` for `dataroot/version`: 'devkit', 'json', or 'auto' (devkit when importable)."""
    if reader not in READERS:
        raise NuScenesError(f'unknown reader {reader!r}: choose one of {list(READERS)}')
    if reader == 'json' or (reader == 'auto' and not devkit_available()):
        if reader == 'auto':
            LOG.info('nuscenes-devkit not importable: reading the JSON tables directly')
        return JsonTables(dataroot, version)
    if reader == 'devkit':
        return DevkitTables(dataroot, version)
    try:
        return DevkitTables(dataroot, version)
    except NuScenesError as exc:
        # the devkit refuses datasets it does not need for a bag (no maps/*.png, no annotation
        # tables): the converter reads only the JSON tables it uses, so fall back to them
        LOG.warning('nuscenes-devkit refused %s (%s); reading the JSON tables directly', dataroot, exc)
        return JsonTables(dataroot, version)
