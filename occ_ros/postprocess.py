"""Panoptic post-processing: occupancy labels + centre heads → semantic grid, instance grid, instance table.

Pure torch, device-agnostic: every tensor is created on the device of the inputs, nothing goes
through numpy until `PanopticOccupancy.to_numpy()`. There is no Python loop over voxels or centres;
the only Python loops run over the batch, the (at most eight) thing classes and memory chunks.

Pipeline (Panoptic-FlashOcc, reference flashocc.md §2.3–§2.5):

1. `decode_centers`: sigmoid of the centre heatmap (B, 10, ny, nx), k×k max-pool peak NMS,
   two-stage top-K (per class, then over classes), x/y = (cell + reg offset)·step + lower,
   z = height head value in metres, keep score > threshold and inside `post_center_range`.
2. `assign_instances`: every voxel of a thing class (`classes.THING_CLASSES`) goes to the nearest
   centre *of the same occupancy class*, measured in voxel-index space like the official CUDA op.
3. `PanopticPostprocessor` glues both and packs a `PanopticOccupancy` per batch element.

Two mapping modes:

* default (`official_compat=False`): heatmap channels map to occupancy classes through
  `classes.DET_TO_OCC` (the training-config class order, semantically correct); instance ids are
  1..K in order of descending centre score; thing voxels with no centre of their class get 0.
* `official_compat=True`: reproduces the official `BEVDepthPano.simple_test` + `nearest_assign`
  exactly, quirks included (see `PostprocessConfig` and `official_pano_inst`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from occ_ros.core.classes import DET_TO_OCC, NUM_CLASSES, OFFICIAL_DET_TO_OCC, THING_CLASSES
from occ_ros.core.config import GridSpec
from occ_ros.core.errors import ConfigError, InputError

__all__ = [
    'OFFICIAL_ID_OFFSET', 'PostprocessConfig', 'Centers', 'InstanceTable', 'PanopticOccupancy',
    'PanopticPostprocessor', 'decode_centers', 'assign_instances', 'centre_voxel_indices',
    'instance_ids', 'official_pano_inst',
]

Array = Union[torch.Tensor, np.ndarray]

#: The official code numbers instances from 18 (= number of occupancy classes) so that
#: `pano_inst` can hold stuff class ids 0..17 and instance ids in one integer grid.
OFFICIAL_ID_OFFSET = NUM_CLASSES
_UINT16_MAX = 65535
# Centre voxel indices beyond this magnitude switch the integer distance maths to int64
# (int32 squared distances are exact up to ~2.1e9, i.e. |index| < ~26000).
_INT32_SAFE_INDEX = 20000


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
        if not 1 <= self.top_k <= _UINT16_MAX - OFFICIAL_ID_OFFSET:
            raise ConfigError(f'top_k must be in 1..{_UINT16_MAX - OFFICIAL_ID_OFFSET} so that '
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


# --------------------------------------------------------------------------------------------
# 1. centre decoding
# --------------------------------------------------------------------------------------------

def decode_centers(heatmap_logits: torch.Tensor, reg: torch.Tensor, height: torch.Tensor,
                   cfg: PostprocessConfig) -> list[Centers]:
    """Decode instance centres from the centerness head, exactly as §2.3.

    Args:
        heatmap_logits: (B, Cdet, ny, nx) raw logits, Cdet = len(cfg.det_to_occ) (10).
        reg: (B, 2, ny, nx) sub-cell offsets (x then y) in cells.
        height: (B, 1, ny, nx) centre z in metres (used directly, not from the occupancy).
        cfg: post-processing configuration.

    Returns:
        One `Centers` per batch element, in descending score order (the order of the second
        top-K stage), on the input device.

    Steps: heat = sigmoid; k×k max-pool (stride 1, pad k//2) and keep cells equal to the pooled
    max (others zeroed); top-K1 per class over ny·nx cells (K1 = min(top_k, ny·nx)); top-K2 over
    the Cdet·K1 candidates (K2 = min(top_k, Cdet·K1)), class = candidate // K1; row = cell // nx
    (y), column = cell % nx (x); x = (column + reg0)·step_x + x_lo, y = (row + reg1)·step_y + y_lo,
    z = height; keep score > threshold and lo <= xyz <= hi of `post_center_range`.
    The official coder computes x as ((col + reg0)·4)·0.1 − 40 in float32; here it is
    (col + reg0)·0.4 − 40, which may differ by one float32 ulp (irrelevant unless a centre lies
    within ~1e-6 m of a voxel boundary).
    """
    grid = cfg.grid
    ny, nx = grid.bev_shape
    ndet = len(cfg.det_to_occ)
    if heatmap_logits.dim() != 4 or tuple(heatmap_logits.shape[1:]) != (ndet, ny, nx):
        raise InputError(f'heatmap must be (B, {ndet}, {ny}, {nx}) for grid {grid.shape}, got '
                         f'{tuple(heatmap_logits.shape)}')
    b = heatmap_logits.shape[0]
    if tuple(reg.shape) != (b, 2, ny, nx):
        raise InputError(f'reg must be ({b}, 2, {ny}, {nx}), got {tuple(reg.shape)}')
    if tuple(height.shape) != (b, 1, ny, nx):
        raise InputError(f'height must be ({b}, 1, {ny}, {nx}), got {tuple(height.shape)}')
    device = heatmap_logits.device

    heat = heatmap_logits.to(torch.float32).sigmoid()
    k = cfg.nms_kernel
    if k > 1:
        pooled = F.max_pool2d(heat, kernel_size=k, stride=1, padding=k // 2)
        heat = heat * (heat == pooled)

    k1 = min(cfg.top_k, ny * nx)
    scores1, cells1 = torch.topk(heat.reshape(b, ndet, ny * nx), k1, dim=2)       # (B, Cdet, K1)
    k2 = min(cfg.top_k, ndet * k1)
    scores, cand = torch.topk(scores1.reshape(b, ndet * k1), k2, dim=1)           # (B, K2)
    det_class = torch.div(cand, k1, rounding_mode='floor')
    cell = cells1.reshape(b, ndet * k1).gather(1, cand)                           # (B, K2)
    row = torch.div(cell, nx, rounding_mode='floor')
    col = cell - row * nx

    offs = reg.to(torch.float32).reshape(b, 2, ny * nx).gather(2, cell[:, None, :].expand(b, 2, k2))
    z = height.to(torch.float32).reshape(b, ny * nx).gather(1, cell)
    x = (col.to(torch.float32) + offs[:, 0]) * grid.x.step + grid.x.lo
    y = (row.to(torch.float32) + offs[:, 1]) * grid.y.step + grid.y.lo
    xyz = torch.stack((x, y, z), dim=2)                                           # (B, K2, 3)

    rng = torch.tensor(cfg.post_center_range, dtype=torch.float32, device=device)
    keep = (scores > cfg.score_threshold) & (xyz >= rng[:3]).all(2) & (xyz <= rng[3:]).all(2)
    table = torch.tensor(cfg.det_to_occ, dtype=torch.int64, device=device)
    out = []
    for i in range(b):
        m = keep[i]
        det = det_class[i][m]
        out.append(Centers(xyz=xyz[i][m], scores=scores[i][m], det_class=det, occ_class=table[det]))
    return out


# --------------------------------------------------------------------------------------------
# 2. voxel assignment
# --------------------------------------------------------------------------------------------

def centre_voxel_indices(xyz: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Voxel index of each centre, exactly as the official code: int((xyz − lower) / voxel).

    Args:
        xyz: (K, 3) metres.
    Returns:
        (K, 3) int64. The float32 arithmetic and the truncation toward zero are the official
        ones: there is **no clamping**, so a centre outside the grid gets an index outside
        0..n−1 (e.g. z = 8 m → 22 on the default grid), and a centre in (−1, 0) cells of the
        lower bound truncates to 0, not −1 (x = −40.3 m → index 0). Such centres still attract
        the voxels of their class by index-space distance.
    """
    lower = torch.tensor(grid.lower, dtype=torch.float32, device=xyz.device)
    voxel = torch.tensor(grid.voxel, dtype=torch.float32, device=xyz.device)
    return ((xyz.to(torch.float32) - lower) / voxel).to(torch.int32).to(torch.int64)


def instance_ids(centers: Centers, cfg: PostprocessConfig) -> torch.Tensor:
    """Instance id of each centre, (K,) int32.

    Default mode: ids 1..K by descending score (stable: equal scores keep centre order); with
    centres from `decode_centers` (already score-sorted) centre i gets id i + 1.

    `official_compat`: the official CUDA path does `cls_sort, perm = det_class.sort()` and gives
    the centre at position j the id `perm[j] + 18` — the sorting permutation itself, not its
    inverse. Ids are unique and >= 18 but carry no meaning. Equal classes are ordered by position
    (stable sort); the official CUDA sort is stable in practice for these small arrays [inferred],
    and the id values never change which voxels form an instance.
    """
    k = len(centers)
    device = centers.device
    if cfg.official_compat:
        _, perm = torch.sort(centers.det_class, stable=True)
        return (perm + OFFICIAL_ID_OFFSET).to(torch.int32)
    order = torch.sort(centers.scores, descending=True, stable=True).indices
    ids = torch.empty(k, dtype=torch.int32, device=device)
    ids[order] = torch.arange(1, k + 1, dtype=torch.int32, device=device)
    return ids


def _thing_lut(device: torch.device) -> torch.Tensor:
    """(NUM_CLASSES,) bool: True for thing classes (a gather is ~5× faster than `isin` on CPU)."""
    lut = torch.zeros(NUM_CLASSES, dtype=torch.bool, device=device)
    lut[sorted(THING_CLASSES)] = True
    return lut


def _validate_semantics(semantics: torch.Tensor, grid: GridSpec) -> None:
    if tuple(semantics.shape) != grid.shape:
        raise InputError(f'semantics must be {grid.shape} (nx, ny, nz) for the configured grid, '
                         f'got {tuple(semantics.shape)}')
    if semantics.dtype.is_floating_point or semantics.dtype == torch.bool or semantics.is_complex():
        raise InputError(f'semantics must be an integer label tensor, got {semantics.dtype}; '
                         'pass logits as (B, nx, ny, nz, C) to PanopticPostprocessor instead')


def _nearest_same_class(v_lab: torch.Tensor, v_xyz: torch.Tensor, c_cls: torch.Tensor,
                        c_xyz: torch.Tensor, grid: GridSpec, chunk_bytes: int) -> torch.Tensor:
    """Owner centre index for each voxel (−1 if no centre of its class), first minimum wins.

    Args:
        v_lab: (M,) voxel labels; v_xyz: (M, 3) int64 voxel indices.
        c_cls: (K,) centre classes; c_xyz: (K, 3) int64 centre voxel indices.

    The squared index-space distance |v − c|² = |c|² − 2 v·c + |v|² is minimised over c without
    |v|²; the c-dependent terms are tabulated per axis value (Lx[a, k] = |c_k|² − 2 a cx_k and
    Lyz[b·nz + d, k] = −2 (b cy_k + d cz_k)), so a chunk costs two row gathers and one add, all
    exact integer arithmetic (no float rounding, no TF32), on any device.
    """
    m = v_lab.shape[0]
    device = v_lab.device
    owner = torch.full((m,), -1, dtype=torch.int64, device=device)
    if m == 0 or c_cls.numel() == 0:
        return owner
    nx, ny, nz = grid.shape
    big = int(c_xyz.abs().max()) > _INT32_SAFE_INDEX
    itype = torch.int64 if big else torch.int32
    isize = 8 if big else 4
    ax = torch.arange(nx, dtype=itype, device=device)
    ay = torch.arange(ny, dtype=itype, device=device)
    az = torch.arange(nz, dtype=itype, device=device)
    v_x = v_xyz[:, 0].contiguous()
    v_yz = v_xyz[:, 1] * nz + v_xyz[:, 2]
    for cls in torch.unique(c_cls).tolist():          # loop over classes (<= 8), not centres
        vsel = torch.nonzero(v_lab == cls).squeeze(1)
        if vsel.numel() == 0:
            continue
        csel = torch.nonzero(c_cls == cls).squeeze(1)   # ascending → ties go to the lowest index
        c = c_xyz[csel].to(itype)                       # (Kc, 3)
        kc = c.shape[0]
        cn = (c * c).sum(1, dtype=itype)
        lx = cn[None, :] - 2 * ax[:, None] * c[None, :, 0]                        # (nx, Kc)
        lyz = (-2 * ay[:, None, None] * c[None, None, :, 1]
               - 2 * az[None, :, None] * c[None, None, :, 2]).reshape(ny * nz, kc)  # (ny·nz, Kc)
        rows = max(1, chunk_bytes // (2 * isize * kc))
        sel_x, sel_yz = v_x.index_select(0, vsel), v_yz.index_select(0, vsel)
        best = torch.empty(vsel.numel(), dtype=torch.int64, device=device)
        for s in range(0, vsel.numel(), rows):       # memory chunks
            score = lx.index_select(0, sel_x[s:s + rows])
            score += lyz.index_select(0, sel_yz[s:s + rows])
            torch.argmin(score, dim=1, out=best[s:s + rows])
        owner[vsel] = csel[best]
    return owner


def _assign(semantics: torch.Tensor, centers: Centers, cfg: PostprocessConfig, checked: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Core of `assign_instances`: (instance grid int32 (nx,ny,nz), ids (K,) int32, voxel_count (K,) int64).

    `checked=True` skips the label-range check when the caller already did it.
    """
    grid = cfg.grid
    _validate_semantics(semantics, grid)
    if not checked and semantics.numel() and (int(semantics.min()) < 0 or int(semantics.max()) >= NUM_CLASSES):
        raise InputError(f'semantics labels must be in 0..{NUM_CLASSES - 1}')
    device = semantics.device
    if centers.device != device:
        raise InputError(f'centres are on {centers.device} but semantics on {device}; move them together')
    nx, ny, nz = grid.shape
    k = len(centers)
    ids = instance_ids(centers, cfg)
    out = torch.zeros(nx * ny * nz, dtype=torch.int32, device=device)
    counts = torch.zeros(k, dtype=torch.int64, device=device)
    if k == 0:
        return out.view(nx, ny, nz), ids, counts

    flat = semantics.reshape(-1).to(torch.int64)
    vidx = torch.nonzero(_thing_lut(device)[flat]).squeeze(1)                     # (M,)
    if vidx.numel() == 0:
        return out.view(nx, ny, nz), ids, counts
    v_lab = flat[vidx]
    vx = torch.div(vidx, ny * nz, rounding_mode='floor')
    rem = vidx - vx * (ny * nz)
    vy = torch.div(rem, nz, rounding_mode='floor')
    v_xyz = torch.stack((vx, vy, rem - vy * nz), dim=1)                            # (M, 3)
    c_xyz = centre_voxel_indices(centers.xyz, grid)                              # (K, 3)

    owner = _nearest_same_class(v_lab, v_xyz, centers.occ_class, c_xyz, grid, cfg.assign_chunk_bytes)
    hit = owner >= 0
    if cfg.max_assign_distance is not None:
        voxel = torch.tensor(grid.voxel, dtype=torch.float64, device=device)
        d = ((v_xyz - c_xyz[owner.clamp(min=0)]).to(torch.float64) * voxel).norm(dim=1)
        hit &= d <= cfg.max_assign_distance
    win = owner[hit]
    out[vidx[hit]] = ids[win]
    counts = torch.bincount(win, minlength=k)
    return out.view(nx, ny, nz), ids, counts


def assign_instances(semantics: torch.Tensor, centers: Centers, cfg: PostprocessConfig) -> torch.Tensor:
    """Instance grid: every thing voxel gets the id of its nearest centre of the same occupancy class.

    Args:
        semantics: (nx, ny, nz) integer occupancy labels (Occ3D order, 17 = free).
        centers: the frame's centres (on the same device), e.g. from `decode_centers`.
        cfg: post-processing configuration.

    Returns:
        (nx, ny, nz) int32 instance ids (see `instance_ids`); 0 for stuff and free voxels, for a
        thing voxel with no centre of its class, and (optional) beyond `max_assign_distance`.

    Matching follows the official CUDA op `nearest_assign`: distance is the squared *integer
    voxel-index* distance dx² + dy² + dz² between the voxel index and the centre voxel index
    (`centre_voxel_indices`: truncation toward zero, no clamping), the first minimum in centre
    order wins ties (with score-sorted centres: the highest score / lowest id), no threshold by
    default. Centres whose class is not a thing class (barrier, traffic_cone) never own voxels.
    In compat mode the centres' `occ_class` comes from the official det→occ table, which for
    thing classes selects the same centres as the official occ→det lookup, so the pairing is the
    official (partly wrong) one, e.g. pedestrian voxels ↔ bicycle centres.
    Memory: voxels are processed per class in chunks of `cfg.assign_chunk_bytes`.
    """
    return _assign(semantics, centers, cfg)[0]


def official_pano_inst(semantics: torch.Tensor, instances: torch.Tensor,
                       det_class: torch.Tensor) -> torch.Tensor:
    """The official `pano_inst` grid from compat-mode outputs (what official RayPQ reads).

    Args:
        semantics: (nx, ny, nz) integer labels; instances: (nx, ny, nz) compat-mode instance ids;
        det_class: (K,) heatmap classes of all the frame's centres.
    Returns:
        (nx, ny, nz) int32: like the kernel, a voxel whose label is in
        l2s_key = {OFFICIAL_DET_TO_OCC[d] for each present centre class d} gets its assigned id
        (>= 18) or 0 if none; every other voxel keeps its class id (so thing voxels whose class
        has no centre keep their label, and with no centre at all `pano_inst` == semantics).
        Quirk: heatmap channel 9 (traffic_cone) maps to label 1 (barrier) and channel 8
        (pedestrian) to label 8 (traffic_cone); the occ→det table has −1 for both, so when such a
        centre exists every barrier (resp. traffic_cone) voxel becomes 0.
    """
    sem = semantics.to(torch.int32)
    if det_class.numel() == 0:
        return sem.clone()
    table = torch.tensor(OFFICIAL_DET_TO_OCC, dtype=torch.int64, device=semantics.device)
    keys = torch.unique(table[det_class.to(torch.int64)])
    return torch.where(torch.isin(semantics.to(torch.int64), keys), instances.to(torch.int32), sem)


# --------------------------------------------------------------------------------------------
# 3. result types and the post-processor
# --------------------------------------------------------------------------------------------

@dataclass
class InstanceTable:
    """One row per detected centre (also centres that own no voxel: voxel_count 0).

    Torch tensors on the producing device, numpy arrays after `to_numpy()`.

    Attributes:
        ids: (K,) int32 (uint16 in numpy) instance id as written in the instance grid.
        occ_class: (K,) int64 occupancy class the centre claims.
        det_class: (K,) int64 heatmap channel.
        centers: (K, 3) float32 metres (ego frame).
        scores: (K,) float32.
        voxel_count: (K,) int64 number of voxels carrying this id.
    """

    ids: Array
    occ_class: Array
    det_class: Array
    centers: Array
    scores: Array
    voxel_count: Array

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_numpy(self) -> 'InstanceTable':
        return InstanceTable(ids=_np(self.ids).astype(np.uint16), occ_class=_np(self.occ_class).astype(np.int64),
                             det_class=_np(self.det_class).astype(np.int64),
                             centers=_np(self.centers).astype(np.float32),
                             scores=_np(self.scores).astype(np.float32),
                             voxel_count=_np(self.voxel_count).astype(np.int64))


def _np(a: Array) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@dataclass
class PanopticOccupancy:
    """Panoptic occupancy of one frame.

    Attributes:
        semantics: (nx, ny, nz) uint8 Occ3D labels (17 = free); torch on the producing device.
        instances: (nx, ny, nz) int32 instance ids (0 = stuff / free / unassigned). Ids are
            <= 65535 by construction (top_k bound), so `to_numpy()` and the ROS messages store
            them as uint16.
        table: the instance table (`InstanceTable`).
        visible: (nx, ny, nz) bool, True where the voxel lies in at least one camera frustum
            within range, or None when the caller did not supply it.
        stamp_ns: frame stamp.
        official_compat: which id convention `instances` uses (affects `pano_inst`).
    """

    semantics: Array
    instances: Array
    table: InstanceTable
    visible: Optional[Array] = None
    stamp_ns: int = 0
    official_compat: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.semantics.shape)  # type: ignore[return-value]

    def pano_inst(self) -> Array:
        """One int32 grid with stuff class ids and instance ids, for RayPQ (same backing as the fields).

        compat: exactly the official `pano_inst` (`official_pano_inst`). Default mode, same layout:
        stuff and free voxels hold their class id, assigned thing voxels hold id + 17 (>= 18),
        thing voxels without an instance hold 0.
        """
        is_np = isinstance(self.semantics, np.ndarray)
        sem, inst, det = (torch.as_tensor(np.asarray(a).astype(t) if is_np else a) for a, t in (
            (self.semantics, np.uint8), (self.instances, np.int32), (self.table.det_class, np.int64)))
        if self.official_compat:
            out = official_pano_inst(sem, inst, det)
        else:
            inst = inst.to(torch.int32)
            thing = _thing_lut(sem.device)[sem.to(torch.int64)]
            out = torch.where(thing, torch.where(inst > 0, inst + (OFFICIAL_ID_OFFSET - 1),
                                                 torch.zeros_like(inst)), sem.to(torch.int32))
        return out.numpy() if is_np else out

    def to_numpy(self) -> 'PanopticOccupancy':
        """A numpy-backed copy: semantics uint8, instances uint16, visible bool, table arrays."""
        return PanopticOccupancy(
            semantics=_np(self.semantics).astype(np.uint8),
            instances=_np(self.instances).astype(np.uint16),
            table=self.table.to_numpy(),
            visible=None if self.visible is None else _np(self.visible).astype(bool),
            stamp_ns=int(self.stamp_ns), official_compat=self.official_compat)


class PanopticPostprocessor:
    """Backend outputs → one `PanopticOccupancy` per batch element (see module docstring)."""

    def __init__(self, cfg: PostprocessConfig) -> None:
        self.cfg = cfg

    def semantics(self, occ: torch.Tensor) -> torch.Tensor:
        """(B, nx, ny, nz) integer labels or (B, nx, ny, nz, 18) logits → (B, nx, ny, nz) uint8.

        Logits are reduced by argmax over the last axis (the official code applies softmax first,
        which does not change the argmax).
        """
        grid = self.cfg.grid
        if occ.dim() == 5:
            if tuple(occ.shape[1:]) != (*grid.shape, NUM_CLASSES):
                raise InputError(f'occupancy logits must be (B, {grid.nx}, {grid.ny}, {grid.nz}, '
                                 f'{NUM_CLASSES}), got {tuple(occ.shape)}')
            if not occ.dtype.is_floating_point:
                raise InputError(f'5-D occupancy must be float logits, got {occ.dtype}')
            return occ.argmax(dim=-1).to(torch.uint8)
        if occ.dim() == 4:
            if tuple(occ.shape[1:]) != grid.shape:
                raise InputError(f'occupancy labels must be (B, {grid.nx}, {grid.ny}, {grid.nz}), '
                                 f'got {tuple(occ.shape)}')
            if occ.dtype.is_floating_point or occ.dtype == torch.bool:
                raise InputError(f'4-D occupancy must be integer labels, got {occ.dtype}')
            if occ.numel() and (int(occ.min()) < 0 or int(occ.max()) >= NUM_CLASSES):
                raise InputError(f'occupancy labels must be in 0..{NUM_CLASSES - 1}')
            return occ.to(torch.uint8)
        raise InputError('occupancy must be labels (B, nx, ny, nz) or logits (B, nx, ny, nz, C), '
                         f'got {tuple(occ.shape)}')

    def __call__(self, occ: torch.Tensor, heatmap: Optional[torch.Tensor] = None,
                 reg: Optional[torch.Tensor] = None, height: Optional[torch.Tensor] = None,
                 visible: Optional[torch.Tensor] = None, stamp_ns: int = 0) -> list[PanopticOccupancy]:
        """Run the post-processing.

        Args:
            occ: (B, nx, ny, nz) int labels or (B, nx, ny, nz, 18) float logits.
            heatmap: (B, 10, ny, nx) centre logits, or None for a semantic-only model (then no
                instances: the instance grid is all 0 and the table empty).
            reg: (B, 2, ny, nx); height: (B, 1, ny, nx) — required with `heatmap`.
            visible: optional (B, nx, ny, nz) bool camera-visibility mask, passed through.
            stamp_ns: stamp copied into every result.
        """
        sem = self.semantics(occ)
        b = sem.shape[0]
        device = sem.device
        if heatmap is None:
            centres: Sequence[Centers] = [Centers.empty(device) for _ in range(b)]
        else:
            if reg is None or height is None:
                raise InputError('heatmap given without reg/height: the centerness head must provide all three')
            if heatmap.shape[0] != b:
                raise InputError(f'heatmap batch {heatmap.shape[0]} != occupancy batch {b}')
            centres = decode_centers(heatmap.to(device), reg.to(device), height.to(device), self.cfg)
        if visible is not None and (tuple(visible.shape) != tuple(sem.shape)):
            raise InputError(f'visible must be {tuple(sem.shape)}, got {tuple(visible.shape)}')
        results = []
        for i in range(b):
            c = centres[i]
            inst, ids, counts = _assign(sem[i], c, self.cfg, checked=True)
            table = InstanceTable(ids=ids, occ_class=c.occ_class, det_class=c.det_class,
                                  centers=c.xyz, scores=c.scores, voxel_count=counts)
            results.append(PanopticOccupancy(
                semantics=sem[i], instances=inst, table=table,
                visible=None if visible is None else visible[i].to(device=device, dtype=torch.bool),
                stamp_ns=int(stamp_ns), official_compat=self.cfg.official_compat))
        return results
