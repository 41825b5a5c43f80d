"""Ego-motion-aligned BEV history for the multi-frame (4D) models. Pure torch.

The multi-frame FlashOcc models concatenate, after the view transform, the current BEV feature
with the features of the N previous frames: [t, t−1, …, t−N] along channels. Online, the previous
features are cached in their own ego frame and warped into the current one with `F.grid_sample`
(the official `BEVDet4D.gen_grid` / `shift_feature`, reference flashocc.md §1.7). This module
holds that cache (`TemporalBuffer`) and the warp (`warp_bev`, `bev_affine`).

Poses are 4×4 homogeneous transforms **T_odom_base**: they map a point in the vehicle (base /
ego) frame into the odometry frame — the pose of the vehicle in odom, i.e. the transform TF calls
`odom → base_link` (nuScenes' `ego2global`). The transform of a point from a previous ego frame
into the current one is therefore T_prev_to_cur = inv(T_odom_cur) · T_odom_prev.

Warp convention (identical to the reference):

* drop the z row and column of the 4×4 (rows/cols 0, 1, 3) → a 3×3 2-D rigid transform; roll,
  pitch and z translation are ignored;
* BEV pixel (column i, row j) is taken to sit at metric (x_lo + i·step_x, y_lo + j·step_y) via
  `feat2bev` = [[step_x, 0, x_lo], [0, step_y, y_lo], [0, 0, 1]] — the *lower corner* of the
  cell, not its centre (the LSS pooling puts cell i over [x_lo + i·s, x_lo + (i+1)·s)). For
  translations this is immaterial; a rotation by θ pivots about metric (0, 0) = pixel
  (−x_lo/s, −y_lo/s) and so differs from a cell-centred warp by (R − I)·(s/2, s/2), i.e.
  ≤ 0.28·θ·s per frame — reproduced on purpose;
* every current pixel samples the previous feature at inv(feat2bev) · T_cur_to_prev · feat2bev ·
  (i, j, 1), normalised by (W − 1, H − 1) to [−1, 1]; `grid_sample` bilinear,
  `align_corners=True`, zero padding (areas not seen in the previous frame are 0).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from occ_ros.core.config import GridSpec, ModelConfig
from occ_ros.core.errors import ConfigError, InputError

__all__ = ['TemporalConfig', 'ResetReason', 'TemporalBuffer', 'bev_affine', 'bev_sampling_grid',
           'warp_bev', 'relative_transform']

PoseLike = Union[torch.Tensor, np.ndarray, 'list[list[float]]']


@dataclass(frozen=True)
class TemporalConfig:
    """History length and reset policy.

    Attributes:
        num_history: N previous frames kept (model `num_frames` − 1; 1 for the pano-4D configs,
            8 / 16 for longterm).
        max_gap_s: reset when the stamp advances by more than this (dropped frames, paused bag).
            1.0 s = two nuScenes key-frame intervals: beyond it the history no longer shows the
            scene the model was trained to see as "previous".
        max_translation_jump_m: reset when the ego moved more than this between two consecutive
            frames (3-D norm of the relative translation): an odometry glitch, a relocalisation
            or a bag jumping to another place. 5 m per frame is 50 m/s at 10 Hz — far above any
            plausible motion at camera rate — but only 36 km/h at the 0.5 s key-frame spacing;
            raise it if the buffer is fed at key-frame rate at speed.
        max_rotation_jump_rad: reset when the relative rotation angle (3-D, from the trace)
            between consecutive frames exceeds this. 0.5 rad ≈ 29° per frame.
        grid: the BEV grid of the stored features ((C, ny, nx) maps).
        channels: C of the stored maps, or None to take it from the first pushed feature. Needed
            for a fixed-shape history before the first push (`for_model` sets it).
    """

    num_history: int = 1
    max_gap_s: float = 1.0
    max_translation_jump_m: float = 5.0
    max_rotation_jump_rad: float = 0.5
    grid: GridSpec = field(default_factory=GridSpec)
    channels: Optional[int] = None

    def __post_init__(self) -> None:
        if self.num_history < 1:
            raise ConfigError(f'num_history must be >= 1 (single-frame models need no buffer), '
                              f'got {self.num_history}')
        for name in ('max_gap_s', 'max_translation_jump_m', 'max_rotation_jump_rad'):
            v = getattr(self, name)
            if not v > 0:
                raise ConfigError(f'{name} must be > 0 (math.inf disables the check), got {v}')
        if self.channels is not None and self.channels < 1:
            raise ConfigError(f'channels must be >= 1 or None, got {self.channels}')

    @classmethod
    def for_model(cls, model: ModelConfig, **overrides) -> 'TemporalConfig':
        """History settings of a multi-frame `ModelConfig` (num_frames − 1 maps of context_channels)."""
        if model.num_frames < 2:
            raise ConfigError(f'model {model.name!r} is single-frame (num_frames=1): it takes no history')
        base = cls(num_history=model.num_frames - 1, grid=model.grid, channels=model.context_channels)
        return replace(base, **overrides)

    def with_(self, **changes) -> 'TemporalConfig':
        return replace(self, **changes)


class ResetReason(str, enum.Enum):
    """Why the history was dropped (NONE: it continues)."""

    NONE = 'none'
    FIRST_FRAME = 'first_frame'        # nothing stored yet
    TIME_BACKWARDS = 'time_backwards'  # stamp <= newest stored stamp (bag loop, duplicate)
    GAP = 'gap'                        # stamp advanced by more than max_gap_s
    POSE_JUMP = 'pose_jump'            # relative motion beyond the jump thresholds
    EXPLICIT = 'explicit'              # reset() was called


# --------------------------------------------------------------------------------------------
# pure warp functions
# --------------------------------------------------------------------------------------------

def _as_pose(pose: Optional[PoseLike], what: str = 'pose') -> torch.Tensor:
    if pose is None:
        raise InputError(f'{what} is missing: multi-frame models need the ego pose (odometry / TF '
                         'odom → base) of every frame to align the BEV history')
    try:
        t = torch.as_tensor(np.asarray(pose, dtype=np.float64) if not isinstance(pose, torch.Tensor) else pose)
    except (TypeError, ValueError) as e:
        raise InputError(f'{what} must be a 4×4 numeric transform: {e}') from e
    t = t.detach().to(device='cpu', dtype=torch.float64)
    if t.shape != (4, 4):
        raise InputError(f'{what} must be a 4×4 homogeneous transform, got shape {tuple(t.shape)}')
    if not torch.isfinite(t).all():
        raise InputError(f'{what} contains NaN/inf: check the odometry source')
    if not torch.allclose(t[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
        raise InputError(f'{what} last row must be [0, 0, 0, 1], got {t[3].tolist()}')
    return t


def relative_transform(pose_prev: PoseLike, pose_cur: PoseLike) -> torch.Tensor:
    """T_prev_to_cur = inv(T_odom_cur) · T_odom_prev, (4, 4) float64: previous-ego points → current ego."""
    return torch.linalg.solve(_as_pose(pose_cur, 'pose_cur'), _as_pose(pose_prev, 'pose_prev'))


def _feat2bev(grid: GridSpec) -> torch.Tensor:
    return torch.tensor([[grid.x.step, 0.0, grid.x.lo],
                         [0.0, grid.y.step, grid.y.lo],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def bev_affine(T_prev_to_cur: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Pixel-space affine: current BEV pixel (col, row, 1) → sampling position in the previous map.

    Args:
        T_prev_to_cur: (4, 4) or (N, 4, 4) transforms of points from the previous ego frame into
            the current one.
        grid: BEV grid (feat2bev = [[step_x, 0, x_lo], [0, step_y, y_lo], [0, 0, 1]]).
    Returns:
        (3, 3) or (N, 3, 3) float64: inv(feat2bev) · T2d(inv(T_prev_to_cur)) · feat2bev where T2d
        keeps rows/columns (0, 1, 3) — the reference `gen_grid` matrix `tf`.
    """
    T = torch.as_tensor(T_prev_to_cur).to(dtype=torch.float64, device='cpu')
    if T.shape[-2:] != (4, 4):
        raise InputError(f'T_prev_to_cur must be (..., 4, 4), got {tuple(T.shape)}')
    cur_to_prev = torch.linalg.inv(T)
    keep = torch.tensor([0, 1, 3])
    t2d = cur_to_prev[..., keep[:, None], keep[None, :]]
    f = _feat2bev(grid)
    return torch.linalg.inv(f) @ t2d @ f


def bev_sampling_grid(T_prev_to_cur: torch.Tensor, grid: GridSpec, device: Union[torch.device, str, None] = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised `grid_sample` grid (N, ny, nx, 2) for (N, 4, 4) (or (4, 4) → N = 1) transforms."""
    tf = bev_affine(T_prev_to_cur, grid)
    if tf.dim() == 2:
        tf = tf[None]
    ny, nx = grid.bev_shape
    xs = torch.arange(nx, dtype=torch.float64).view(1, nx).expand(ny, nx)
    ys = torch.arange(ny, dtype=torch.float64).view(ny, 1).expand(ny, nx)
    pix = torch.stack((xs, ys, torch.ones_like(xs)), dim=-1)                    # (ny, nx, 3)
    src = torch.einsum('nij,hwj->nhwi', tf, pix)[..., :2]                       # (N, ny, nx, 2)
    norm = torch.tensor([nx - 1.0, ny - 1.0], dtype=torch.float64)
    return (src / norm * 2.0 - 1.0).to(device=device, dtype=dtype)


def warp_bev(feat: torch.Tensor, T_prev_to_cur: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Warp BEV features from a previous ego frame into the current one (reference `shift_feature`).

    Args:
        feat: (N, C, ny, nx) or (C, ny, nx) features in the previous ego frame(s) (row = y, column = x).
        T_prev_to_cur: (4, 4), applied to every map, or (N, 4, 4) one per map.
        grid: the BEV grid of `feat`.
    Returns:
        Same shape, dtype and device as `feat`: bilinear, align_corners=True, zeros outside.
    """
    squeeze = feat.dim() == 3
    f = feat[None] if squeeze else feat
    if f.dim() != 4 or tuple(f.shape[-2:]) != grid.bev_shape:
        raise InputError(f'feat must be (N, C, {grid.ny}, {grid.nx}) or (C, {grid.ny}, {grid.nx}), '
                         f'got {tuple(feat.shape)}')
    T = torch.as_tensor(T_prev_to_cur)
    if T.dim() == 2:
        T = T[None].expand(f.shape[0], 4, 4)
    if T.shape != (f.shape[0], 4, 4):
        raise InputError(f'T_prev_to_cur must be (4, 4) or ({f.shape[0]}, 4, 4), got {tuple(T.shape)}')
    sgrid = bev_sampling_grid(T, grid, device=f.device, dtype=f.dtype)
    out = F.grid_sample(f, sgrid, mode='bilinear', padding_mode='zeros', align_corners=True)
    return out[0] if squeeze else out


# --------------------------------------------------------------------------------------------
# the buffer
# --------------------------------------------------------------------------------------------

@dataclass
class _Frame:
    feat: torch.Tensor      # (C, ny, nx)
    stamp_ns: int
    pose: torch.Tensor      # (4, 4) float64 CPU, T_odom_base


def _rotation_angle(R: torch.Tensor) -> float:
    c = (float(torch.trace(R)) - 1.0) / 2.0
    return math.acos(max(-1.0, min(1.0, c)))


class TemporalBuffer:
    """The last N BEV feature maps with stamps and poses; serves them warped into the current ego frame.

    Per frame::

        history, valid, reason = buf.prepare(stamp_ns, pose)   # before the forward
        ... model(images, history, valid) → bev_feat (1, C, ny, nx) ...
        buf.push(bev_feat, stamp_ns, pose)                     # after the forward

    `history` is (1, C·N, ny, nx), newest first: channels [0, C) = t−1, [C, 2C) = t−2, … — the
    order of the official channel concat after the current frame. `valid` (N,) is 1 for slots
    holding a stored frame and 0 otherwise (history is zero there); the model substitutes the
    current frame's feature in invalid slots, which is how the official code "repeats the
    current frame" at a scene start.

    Resets (history dropped, reported as the returned `ResetReason` and counted in
    `reset_counts`), checked against the newest stored frame in this order:
    TIME_BACKWARDS if stamp <= newest stamp — a duplicate stamp is treated as going backwards
    (the same frame set re-delivered or a bag restarted on the same stamp; keeping it would feed
    the network a copy of the current frame as "previous"); GAP if the stamp advanced by more
    than `max_gap_s`; POSE_JUMP if the relative translation or rotation exceeds its threshold;
    EXPLICIT after `reset()`; FIRST_FRAME when nothing is stored (first frame ever, or the
    previous prepared frame was never pushed).

    Features are kept on the device/dtype given to the constructor, or of the first push; the
    channel count C comes from `cfg.channels` or the first push, and every later push must match
    (`InputError`). Not thread-safe: one pipeline thread owns it.
    """

    def __init__(self, cfg: TemporalConfig, device: Union[torch.device, str, None] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self.cfg = cfg
        self.device: Optional[torch.device] = torch.device(device) if device is not None else None
        self.dtype: Optional[torch.dtype] = dtype
        self.channels: Optional[int] = cfg.channels
        self._frames: list[_Frame] = []           # newest first
        self._explicit = False
        self._prepared: Optional[int] = None      # stamp of the last prepare() not yet pushed
        self._counts: dict[ResetReason, int] = {r: 0 for r in ResetReason if r is not ResetReason.NONE}
        self.last_reason: ResetReason = ResetReason.NONE

    # -- state -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._frames)

    @property
    def reset_counts(self) -> dict[str, int]:
        """Number of resets reported so far, by reason value ('gap', 'pose_jump', …)."""
        return {r.value: n for r, n in self._counts.items()}

    @property
    def stamps_ns(self) -> list[int]:
        """Stamps of the stored frames, newest first."""
        return [f.stamp_ns for f in self._frames]

    def reset(self) -> None:
        """Drop the history now; the next `prepare` (or unprepared `push`) reports EXPLICIT."""
        self._frames.clear()
        self._prepared = None
        self._explicit = True

    # -- core --------------------------------------------------------------------------------
    def _check(self, stamp_ns: int, pose: torch.Tensor) -> ResetReason:
        """Decide (and apply) a reset for a new frame; counts every reason except NONE."""
        if self._explicit:
            reason = ResetReason.EXPLICIT
        elif not self._frames:
            reason = ResetReason.FIRST_FRAME
        else:
            last = self._frames[0]
            cfg = self.cfg
            if stamp_ns <= last.stamp_ns:
                reason = ResetReason.TIME_BACKWARDS
            elif (stamp_ns - last.stamp_ns) > cfg.max_gap_s * 1e9:
                reason = ResetReason.GAP
            else:
                rel = torch.linalg.solve(pose, last.pose)     # T_prev_to_cur
                if (float(rel[:3, 3].norm()) > cfg.max_translation_jump_m
                        or _rotation_angle(rel[:3, :3]) > cfg.max_rotation_jump_rad):
                    reason = ResetReason.POSE_JUMP
                else:
                    reason = ResetReason.NONE
        self._explicit = False
        if reason is not ResetReason.NONE:
            self._frames.clear()
            self._counts[reason] += 1
        self.last_reason = reason
        return reason

    def prepare(self, stamp_ns: int, pose: PoseLike
                ) -> tuple[Optional[torch.Tensor], torch.Tensor, ResetReason]:
        """History for the frame at `stamp_ns` with ego pose `pose` (4×4 T_odom_base).

        Returns:
            history: (1, C·N, ny, nx) stored maps warped into the current ego frame, newest first,
                zeros in empty slots; device/dtype of the stored features. None only while C is
                unknown (no `cfg.channels` and nothing pushed yet — then every slot is invalid
                anyway); configure `channels` (`TemporalConfig.for_model`) to always get a tensor.
            valid: (N,) float, 1 where a slot holds a frame.
            reason: the reset applied before building the history (NONE if it continues).
        Raises:
            InputError: missing or malformed pose.
        """
        stamp_ns = int(stamp_ns)
        p = _as_pose(pose)
        reason = self._check(stamp_ns, p)
        self._prepared = stamp_ns
        n = self.cfg.num_history
        ny, nx = self.cfg.grid.bev_shape
        device = self.device or torch.device('cpu')
        dtype = self.dtype or torch.float32
        if self.channels is None:
            return None, torch.zeros(n, device=device, dtype=torch.float32), reason
        history = torch.zeros(n, self.channels, ny, nx, device=device, dtype=dtype)
        valid = torch.zeros(n, device=device, dtype=torch.float32)
        k = len(self._frames)
        if k:
            feats = torch.stack([f.feat for f in self._frames])                  # (k, C, ny, nx)
            rel = torch.stack([torch.linalg.solve(p, f.pose) for f in self._frames])  # (k, 4, 4)
            history[:k] = warp_bev(feats, rel, self.cfg.grid)
            valid[:k] = 1.0
        return history.reshape(1, n * self.channels, ny, nx), valid, reason

    def push(self, bev_feat: torch.Tensor, stamp_ns: int, pose: PoseLike) -> ResetReason:
        """Store the current frame's BEV feature (1, C, ny, nx) (or (C, ny, nx)) in its own ego frame.

        Normally called after `prepare` for the same stamp (returns NONE: any reset was already
        reported). A push without a matching prepare runs the reset checks itself and returns
        (and counts) their reason.
        """
        stamp_ns = int(stamp_ns)
        p = _as_pose(pose)
        f = bev_feat[0] if bev_feat.dim() == 4 and bev_feat.shape[0] == 1 else bev_feat
        ny, nx = self.cfg.grid.bev_shape
        if f.dim() != 3 or tuple(f.shape[1:]) != (ny, nx):
            raise InputError(f'bev_feat must be (1, C, {ny}, {nx}), got {tuple(bev_feat.shape)}')
        if self.channels is not None and f.shape[0] != self.channels:
            raise InputError(f'bev_feat has {f.shape[0]} channels but this buffer holds {self.channels}-channel '
                             'maps: the model and TemporalConfig.channels disagree')
        if self._prepared == stamp_ns and not self._explicit:
            reason = ResetReason.NONE
        else:
            reason = self._check(stamp_ns, p)
        self._prepared = None
        if self.channels is None:
            self.channels = int(f.shape[0])
        if self.device is None:
            self.device = f.device
        if self.dtype is None:
            self.dtype = f.dtype
        self._frames.insert(0, _Frame(f.detach().to(device=self.device, dtype=self.dtype), stamp_ns, p))
        del self._frames[self.cfg.num_history:]
        return reason
