"""The panoptic result of one frame (`PanopticOccupancy`, `InstanceTable`) and the
post-processor that makes it from the backend outputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from occ_ros.core.classes import NUM_CLASSES
from occ_ros.core.occupancy import InstanceInfo, Occupancy
from occ_ros.core.errors import InputError
from occ_ros.postprocess.centers import decode_centers
from occ_ros.postprocess.config import (
    OFFICIAL_ID_OFFSET,
    Array,
    Centers,
    PostprocessConfig,
)
from occ_ros.postprocess.instances import _assign, _thing_lut, official_pano_inst


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

    def to_occupancy(self) -> Occupancy:
        """The frame as the one numpy occupancy type: semantics uint8, instances uint16, `visible`
        as mask_camera, and one `InstanceInfo` per centre that owns voxels (with its score)."""
        t = self.table.to_numpy()
        table = [InstanceInfo(int(t.ids[k]), int(t.occ_class[k]), tuple(float(v) for v in t.centers[k]),  # type: ignore[arg-type]
                              int(t.voxel_count[k]), float(t.scores[k]))
                 for k in range(len(t)) if int(t.voxel_count[k]) > 0]
        return Occupancy(_np(self.semantics).astype(np.uint8), _np(self.instances).astype(np.uint16),
                         mask_camera=None if self.visible is None else _np(self.visible).astype(bool),
                         instance_table=table, stamp_ns=int(self.stamp_ns))

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
