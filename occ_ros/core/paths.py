"""Where the package's data files live: the one definition of the source tree and share paths.

In a source checkout (the venv's editable install) `config/`, `msg/` and `launch/` sit beside the
`occ_ros/` package directory. In a ROS install they are in `<prefix>/share/occ_ros/` (setup.py
data_files, CMake install rules), found through the ament index when it is importable, else
relative to the installed package (`<prefix>/lib/pythonX.Y/site-packages/occ_ros`).
"""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent          # …/occ_ros
SOURCE_ROOT = PACKAGE_DIR.parent                               # the checkout (or site-packages)


def share_dirs() -> list[Path]:
    """Candidate data roots, most specific first: the source tree, the ament share directory,
    the share directory next to the installed package, and `sys.prefix`'s."""
    out = [SOURCE_ROOT]
    try:
        from ament_index_python.packages import get_package_share_directory
        out.append(Path(get_package_share_directory('occ_ros')))
    except Exception:                       # ament index absent or package not installed there
        pass
    if len(PACKAGE_DIR.parents) > 3:
        out.append(PACKAGE_DIR.parents[3] / 'share' / 'occ_ros')
    out.append(Path(sys.prefix) / 'share' / 'occ_ros')
    return out


def data_path(*parts: str) -> Path:
    """The first existing `<root>/<parts…>` over `share_dirs()`; the source-tree path when none
    exists (so an error message names where the file was expected)."""
    for root in share_dirs():
        p = root.joinpath(*parts)
        if p.exists():
            return p
    return SOURCE_ROOT.joinpath(*parts)
