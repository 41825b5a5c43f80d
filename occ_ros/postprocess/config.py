"""Post-processing settings (`PostprocessConfig`, the official defaults) and decoded centres (`Centers`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np
import torch

from occ_ros.core.classes import DET_TO_OCC, NUM_CLASSES, OFFICIAL_DET_TO_OCC
from occ_ros.core.config import GridSpec
from occ_ros.core.errors import ConfigError, InputError

Array = Union[torch.Tensor, np.ndarray]


#: The official code numbers instances from 18 (= number of occupancy classes) so that
#: `pano_inst` can hold stuff class ids 0..17 and instance ids in one integer grid.
OFFICIAL_ID_OFFSET = NUM_CLASSES


UINT16_MAX = 65535


# Centre voxel indices beyond this magnitude switch the integer distance maths to int64
# (int32 squared distances are exact up to ~2.1e9, i.e. |index| < ~26000).
INT32_SAFE_INDEX = 20000


@dataclass(frozen=True)
class PostprocessConfig:
    """Every knob of the panoptic post-processing; defaults are the official pano configs (§1.6).

    Attributes:
        grid: the occupancy volume. The centre heatmap is the BEV plane of this grid:
            (ny, nx), row = y, column = x, cell = `grid.x.step` × `grid.y.step` metres (0.4 m).
        score_threshold: keep centres with sigmoid score strictly greater than this.
        top_k: K of the two-stage top-K (per class, then over classes). Clamped to the number of
            heatmap cells / candidates when the grid is smaller than K (the official code assumes
            200×200 ≥ 500 cells and would fail instead).
        nms_kernel: odd k of the k×k max-pool peak NMS (1 disables it).
        post_center_range: (xmin, ymin, zmin, xmax, ymax, zmax) metres, inclusive bounds.
        max_assign_distance: optional metres; a thing voxel farther than this from the centre it
            would be assigned to gets instance 0. Measured between the voxel index and the
            centre's (truncated) voxel index scaled by the voxel size per axis. None = off
            (official). Not allowed with `official_compat`.
        official_compat: reproduce the official tables and id numbering (see module docstring,
            `instance_ids`, `official_pano_inst`). Quirks reproduced: the swapped det↔occ tables
            (pedestrian voxels ↔ bicycle centres, bicycle ↔ barrier, construction_vehicle ↔
            trailer, trailer ↔ construction_vehicle), ids = sort permutation + 18, barrier /
            traffic_cone voxels zeroed in `pano_inst`. Not reproduced (no effect on results): the
            official code post-processes only batch element 0 (here every element is), its
            kernel hard-codes the 200×200×16 strides (here the grid config), and its distance
            starts at a 1e8 sentinel (unreachable inside post_center_range).
        assign_chunk_bytes: memory budget of the (voxels × centres) distance blocks; thing voxels
            are processed in chunks so that no block exceeds it (≈ 64 MiB by default).
    """

    grid: GridSpec = field(default_factory=GridSpec)
    score_threshold: float = 0.3
    top_k: int = 500
    nms_kernel: int = 3
    post_center_range: tuple[float, float, float, float, float, float] = (
        -61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    max_assign_distance: Optional[float] = None
    official_compat: bool = False
    assign_chunk_bytes: int = 64 * 2 ** 20

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= UINT16_MAX - OFFICIAL_ID_OFFSET:
            raise ConfigError(f'top_k must be in 1..{UINT16_MAX - OFFICIAL_ID_OFFSET} so that '
                              f'instance ids fit uint16, got {self.top_k}')
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ConfigError(f'nms_kernel must be a positive odd integer, got {self.nms_kernel}')
        r = tuple(float(v) for v in self.post_center_range)
        if len(r) != 6 or not all(math.isfinite(v) for v in r) or any(r[i] > r[i + 3] for i in range(3)):
            raise ConfigError('post_center_range must be 6 finite numbers (xmin, ymin, zmin, xmax, '
                              f'ymax, zmax) with min <= max, got {self.post_center_range}')
        if not math.isfinite(self.score_threshold):
            raise ConfigError(f'score_threshold must be finite, got {self.score_threshold}')
        if self.max_assign_distance is not None:
            if not (self.max_assign_distance > 0 and math.isfinite(self.max_assign_distance)):
                raise ConfigError('max_assign_distance must be a positive number of metres or None, '
                                  f'got {self.max_assign_distance}')
            if self.official_compat:
                raise ConfigError('max_assign_distance cannot be combined with official_compat: the '
                                  'official assignment has no distance limit; set one or the other')
        if self.assign_chunk_bytes < 1024:
            raise ConfigError(f'assign_chunk_bytes must be >= 1024, got {self.assign_chunk_bytes}')

    @property
    def heatmap_cell(self) -> tuple[float, float]:
        """(x, y) metres of one heatmap cell (= BEV cell of the grid)."""
        return (self.grid.x.step, self.grid.y.step)

    @property
    def det_to_occ(self) -> tuple[int, ...]:
        """Heatmap channel → occupancy class table in use."""
        return OFFICIAL_DET_TO_OCC if self.official_compat else DET_TO_OCC

    def with_(self, **changes) -> 'PostprocessConfig':
        return replace(self, **changes)


@dataclass
class Centers:
    """Decoded instance centres of one frame, in descending score order when produced by `decode_centers`.

    Attributes:
        xyz: (K, 3) float32 metres in the ego frame.
        scores: (K,) float32 sigmoid scores.
        det_class: (K,) int64 heatmap channel (training-config order, `classes.DET_CLASSES`).
        occ_class: (K,) int64 occupancy class the centre claims voxels of (through `DET_TO_OCC`,
            or `OFFICIAL_DET_TO_OCC` in compat mode).
    """

    xyz: torch.Tensor
    scores: torch.Tensor
    det_class: torch.Tensor
    occ_class: torch.Tensor

    def __post_init__(self) -> None:
        k = self.xyz.shape[0] if self.xyz.dim() == 2 else -1
        if self.xyz.dim() != 2 or self.xyz.shape[1] != 3:
            raise InputError(f'Centers.xyz must be (K, 3), got {tuple(self.xyz.shape)}')
        for name in ('scores', 'det_class', 'occ_class'):
            t = getattr(self, name)
            if t.shape != (k,):
                raise InputError(f'Centers.{name} must be ({k},) like xyz, got {tuple(t.shape)}')

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def device(self) -> torch.device:
        return self.xyz.device

    @classmethod
    def empty(cls, device: Union[torch.device, str, None] = None) -> 'Centers':
        return cls(xyz=torch.zeros(0, 3, dtype=torch.float32, device=device),
                   scores=torch.zeros(0, dtype=torch.float32, device=device),
                   det_class=torch.zeros(0, dtype=torch.int64, device=device),
                   occ_class=torch.zeros(0, dtype=torch.int64, device=device))

    @classmethod
    def from_det(cls, xyz: torch.Tensor, scores: torch.Tensor, det_class: torch.Tensor,
                 cfg: PostprocessConfig) -> 'Centers':
        """Build centres from heatmap-channel classes, mapping them with the config's table."""
        det = det_class.to(torch.int64)
        table = torch.tensor(cfg.det_to_occ, dtype=torch.int64, device=det.device)
        if det.numel() and (int(det.min()) < 0 or int(det.max()) >= len(cfg.det_to_occ)):
            raise InputError(f'det_class values must be in 0..{len(cfg.det_to_occ) - 1}')
        return cls(xyz=xyz.to(torch.float32), scores=scores.to(torch.float32), det_class=det,
                   occ_class=table[det])

    def select(self, index: torch.Tensor) -> 'Centers':
        return Centers(self.xyz[index], self.scores[index], self.det_class[index], self.occ_class[index])
