"""Instance assignment: every thing voxel to the nearest centre of its class (vectorised,
memory-bounded), and the official `pano_inst` layout."""
from __future__ import annotations

import torch

from occ_ros.core.classes import NUM_CLASSES, OFFICIAL_DET_TO_OCC, THING_CLASSES
from occ_ros.core.config import GridSpec
from occ_ros.core.errors import InputError
from occ_ros.postprocess.config import (
    INT32_SAFE_INDEX,
    OFFICIAL_ID_OFFSET,
    Centers,
    PostprocessConfig,
)


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
    big = int(c_xyz.abs().max()) > INT32_SAFE_INDEX
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
