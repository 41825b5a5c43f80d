"""Ego-motion-aligned BEV history for the multi-frame (4D) models. Pure torch.

The multi-frame FlashOcc models concatenate, after the view transform, the current BEV feature
with the features of the N previous key frames (0.5 s apart in training): [t, t−1, …, t−N] along
channels. Online, the previous features are cached in their own ego frame in a time ring, slot k
takes the frame nearest to t − k·interval, and they are warped into the current one with
`F.grid_sample` (the official `BEVDet4D.gen_grid` / `shift_feature`, reference flashocc.md §1.7).
This module holds that cache (`TemporalBuffer`) and the warp (`warp_bev`, `bev_affine`) — the
`warp` temporal mode. In the `lift` mode (the default; the official evaluation) the same ring keeps
each frame's neck features and camera poses instead (`select` / `store`; the lift itself is
`geometry.lift_tables` and `FlashOcc.lift_history`).

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
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from occ_ros.core.config import HISTORY_INTERVAL_S, HISTORY_TOLERANCE_S, GridSpec, ModelConfig
from occ_ros.core.errors import ConfigError, InputError

__all__ = ['TemporalConfig', 'ResetReason', 'TemporalBuffer', 'StoredFrame', 'bev_affine',
           'bev_sampling_grid', 'warp_bev', 'relative_transform']

PoseLike = Union[torch.Tensor, np.ndarray, 'list[list[float]]']


@dataclass(frozen=True)
class TemporalConfig:
    """History length, key-frame spacing and reset policy.

    The official multi-frame models were trained with key-frame history: slot k holds the k-th
    previous *key frame* of the scene (2 Hz nuScenes samples, `nuscenes_dataset_bevdet.py`
    `get_adj_info` l.280-296), and a slot before the scene start repeats the current frame. Online,
    the buffer keeps a time ring of the processed frames and slot k takes the frame nearest to
    t − k·`history_interval_s`, if one lies within `history_tolerance_s` of it; otherwise the slot
    is invalid and the model repeats the current frame (the official rule).

    Attributes:
        num_history: N previous frames (model `num_frames` − 1; 1 for pano-4D, 8 for longterm8f).
        history_interval_s: spacing of the history slots (0.5 s: the official key-frame rate).
        history_tolerance_s: how far (either way) the frame used for a slot may be from its target
            time. Must stay below half the interval (a frame then serves one slot at most).
        max_gap_intervals: reset when no frame came for this many intervals (default 2: 1 s at
            0.5 s; dropped frames, a paused bag) — `max_gap_s`.
        max_speed_mps / max_yaw_rate_rps: pose jump (odometry glitch, relocalisation, a bag jumping
            to another place) when the ego moved (3-D norm) or turned (3-D angle) more than this rate
            allows since the newest stored frame: threshold = rate · max(dt, interval/4). 50 m/s and
            1 rad/s: 25 m and 0.5 rad per 0.5 s interval, 6.25 m and 0.125 rad at camera rate.
        grid: the BEV grid of the stored features ((C, ny, nx) maps).
        channels: C of the stored maps, or None to take it from the first pushed feature. Needed
            for a fixed-shape history before the first push (`for_model` sets it).
    Memory: the ring keeps the processed frames of the history span, at most `ring_capacity` of them
    (one per half tolerance: longterm8f at the defaults 67 — reached only when frames are processed
    at ≥ 16 Hz; at 12 Hz 50): warp maps of 80 × 200 × 200, 0.86 GB in fp32, or the lift's neck
    features of 6 × 512 × 16 × 44, 580 MB in fp32.
    """

    num_history: int = 1
    history_interval_s: float = HISTORY_INTERVAL_S
    history_tolerance_s: float = HISTORY_TOLERANCE_S
    max_gap_intervals: float = 2.0
    max_speed_mps: float = 50.0
    max_yaw_rate_rps: float = 1.0
    grid: GridSpec = field(default_factory=GridSpec)
    channels: Optional[int] = None

    def __post_init__(self) -> None:
        if self.num_history < 1:
            raise ConfigError(f'num_history must be >= 1 (single-frame models need no buffer), '
                              f'got {self.num_history}')
        for name in ('history_interval_s', 'max_gap_intervals', 'max_speed_mps', 'max_yaw_rate_rps'):
            v = getattr(self, name)
            if not v > 0:
                raise ConfigError(f'{name} must be > 0 (math.inf disables the check), got {v}')
        if not 0 < self.history_tolerance_s < self.history_interval_s / 2:
            raise ConfigError(f'history_tolerance_s must be in (0, history_interval_s / 2 = '
                              f'{self.history_interval_s / 2:g}), got {self.history_tolerance_s}')
        if not math.isfinite(self.history_interval_s):
            raise ConfigError(f'history_interval_s must be finite, got {self.history_interval_s}')
        if self.channels is not None and self.channels < 1:
            raise ConfigError(f'channels must be >= 1 or None, got {self.channels}')

    @property
    def max_gap_s(self) -> float:
        return self.max_gap_intervals * self.history_interval_s

    @property
    def ring_span_ns(self) -> int:
        """How far back the ring reaches: the oldest slot's target plus the tolerance."""
        return int(round((self.num_history * self.history_interval_s + self.history_tolerance_s) * 1e9))

    @property
    def ring_capacity(self) -> int:
        """Most maps the ring holds: its span at one frame per half tolerance (16 Hz at the defaults;
        faster processing thins the ring where it is densest)."""
        return int(math.floor(self.ring_span_ns / (self.history_tolerance_s / 2 * 1e9))) + 1

    def jump_limits(self, dt_s: float) -> tuple[float, float]:
        """(metres, radians) of plausible motion over `dt_s` (floored at a quarter interval)."""
        dt = max(dt_s, self.history_interval_s / 4)
        return self.max_speed_mps * dt, self.max_yaw_rate_rps * dt

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
    GAP = 'gap'                        # no frame for more than max_gap_s
    POSE_JUMP = 'pose_jump'            # relative motion beyond the speed / yaw-rate limits
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
class StoredFrame:
    """One frame of the ring: what was stored (warp: its (C, ny, nx) BEV feature; lift: the
    caller's record of its neck features and camera poses), its stamp and ego pose."""

    feat: Any               # warp: (C, ny, nx) tensor; lift: geometry.lift_tables.LiftFrame
    stamp_ns: int
    pose: torch.Tensor      # (4, 4) float64 CPU, T_odom_base


def _rotation_angle(R: torch.Tensor) -> float:
    c = (float(torch.trace(R)) - 1.0) / 2.0
    return math.acos(max(-1.0, min(1.0, c)))


class TemporalBuffer:
    """A time ring of BEV feature maps with stamps and poses; serves key-frame history warped into
    the current ego frame.

    Per frame::

        history, valid, reason = buf.prepare(stamp_ns, pose)   # before the forward
        ... model(images, history, valid) → bev_feat (1, C, ny, nx) ...
        buf.push(bev_feat, stamp_ns, pose)                     # after the forward

    `history` is (1, C·N, ny, nx): channels [0, C) = slot 1 (t − interval), [C, 2C) = slot 2, … —
    the order of the official channel concat after the current frame. Slot k holds the stored frame
    nearest to t − k·interval within the tolerance (see `TemporalConfig`); `valid` (N,) is 1 there
    and 0 for an empty slot (history zero): the model substitutes the current frame's feature in
    invalid slots — the official repeat rule of `get_adj_info` at a scene start.

    Resets (ring dropped, reported as the returned `ResetReason` and counted in `reset_counts`),
    checked against the newest stored frame in this order: TIME_BACKWARDS if stamp <= newest
    stamp — a duplicate stamp is treated as going backwards (the same frame set re-delivered or a
    bag restarted on the same stamp); GAP if the stamp advanced by more than `max_gap_s`; POSE_JUMP
    if the motion since exceeds `jump_limits(dt)`; EXPLICIT after `reset()`; FIRST_FRAME when
    nothing is stored (first frame ever, or the previous prepared frame was never pushed).

    `push` stores every frame and drops those older than the ring span; beyond `ring_capacity` it
    thins the ring where it is densest (counted in `thinned`), so a slot finds the processed frame
    nearest to its target whenever frames come no faster than one per half tolerance.
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
        self._frames: list[StoredFrame] = []      # the ring, newest first
        self._explicit = False
        self._prepared: Optional[int] = None      # stamp of the last prepare() not yet pushed
        self._counts: dict[ResetReason, int] = {r: 0 for r in ResetReason if r is not ResetReason.NONE}
        self.last_reason: ResetReason = ResetReason.NONE
        self.last_slots: list[Optional[int]] = [None] * cfg.num_history   # stamps used by the last prepare
        self.thinned = 0

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
            dt = (stamp_ns - last.stamp_ns) / 1e9
            if stamp_ns <= last.stamp_ns:
                reason = ResetReason.TIME_BACKWARDS
            elif dt > cfg.max_gap_s:
                reason = ResetReason.GAP
            else:
                rel = torch.linalg.solve(pose, last.pose)     # T_prev_to_cur
                max_m, max_rad = cfg.jump_limits(dt)
                if float(rel[:3, 3].norm()) > max_m or _rotation_angle(rel[:3, :3]) > max_rad:
                    reason = ResetReason.POSE_JUMP
                else:
                    reason = ResetReason.NONE
        self._explicit = False
        if reason is not ResetReason.NONE:
            self._frames.clear()
            self._counts[reason] += 1
        self.last_reason = reason
        return reason

    def _slots(self, stamp_ns: int) -> list[Optional[StoredFrame]]:
        """Slot k → the stored frame nearest to stamp − k·interval within the tolerance, or None."""
        cfg = self.cfg
        tol = int(round(cfg.history_tolerance_s * 1e9))
        out: list[Optional[StoredFrame]] = []
        for k in range(1, cfg.num_history + 1):
            target = stamp_ns - int(round(k * cfg.history_interval_s * 1e9))
            best = min(self._frames, key=lambda f: abs(f.stamp_ns - target), default=None)
            out.append(best if best is not None and abs(best.stamp_ns - target) <= tol else None)
        return out

    def select(self, stamp_ns: int, pose: PoseLike) -> tuple[list[Optional[StoredFrame]], ResetReason]:
        """The stored frame of each history slot (None: empty) for the frame at `stamp_ns` with ego
        pose `pose`, after the reset checks — what `prepare` warps and the lift re-lifts. Raises
        InputError for a missing or malformed pose."""
        stamp_ns = int(stamp_ns)
        p = _as_pose(pose)
        reason = self._check(stamp_ns, p)
        self._prepared = stamp_ns
        slots = self._slots(stamp_ns)
        self.last_slots = [None if f is None else f.stamp_ns for f in slots]
        return slots, reason

    def prepare(self, stamp_ns: int, pose: PoseLike
                ) -> tuple[Optional[torch.Tensor], torch.Tensor, ResetReason]:
        """History for the frame at `stamp_ns` with ego pose `pose` (4×4 T_odom_base).

        Returns:
            history: (1, C·N, ny, nx) the slots' frames warped into the current ego frame, zeros in
                empty slots; device/dtype of the stored features. None only while C is unknown (no
                `cfg.channels` and nothing pushed yet — then every slot is invalid anyway);
                configure `channels` (`TemporalConfig.for_model`) to always get a tensor.
            valid: (N,) float, 1 where a slot holds a frame.
            reason: the reset applied before building the history (NONE if it continues).
        Raises:
            InputError: missing or malformed pose.
        """
        p = _as_pose(pose)
        slots, reason = self.select(stamp_ns, p)
        n = self.cfg.num_history
        ny, nx = self.cfg.grid.bev_shape
        device = self.device or torch.device('cpu')
        dtype = self.dtype or torch.float32
        if self.channels is None:
            return None, torch.zeros(n, device=device, dtype=torch.float32), reason
        history = torch.zeros(n, self.channels, ny, nx, device=device, dtype=dtype)
        valid = torch.zeros(n, device=device, dtype=torch.float32)
        used = [k for k, f in enumerate(slots) if f is not None]
        if used:
            feats = torch.stack([slots[k].feat for k in used])                          # type: ignore[union-attr]
            rel = torch.stack([torch.linalg.solve(p, slots[k].pose) for k in used])      # type: ignore[union-attr]
            history[used] = warp_bev(feats, rel, self.cfg.grid)
            valid[used] = 1.0
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
        if self.channels is None:
            self.channels = int(f.shape[0])
        if self.device is None:
            self.device = f.device
        if self.dtype is None:
            self.dtype = f.dtype
        return self.store(f.detach().to(device=self.device, dtype=self.dtype), stamp_ns, p)

    def store(self, item: Any, stamp_ns: int, pose: PoseLike) -> ResetReason:
        """Store `item` (anything: the lift keeps its `LiftFrame` records here) as the frame at
        `stamp_ns` with ego pose `pose`; the ring rules and return value are `push`'s."""
        stamp_ns = int(stamp_ns)
        p = _as_pose(pose)
        if self._prepared == stamp_ns and not self._explicit:
            reason = ResetReason.NONE
        else:
            reason = self._check(stamp_ns, p)
        self._prepared = None
        self._frames.insert(0, StoredFrame(item, stamp_ns, p))
        oldest = stamp_ns - self.cfg.ring_span_ns
        self._frames = [fr for fr in self._frames if fr.stamp_ns >= oldest]
        while len(self._frames) > self.cfg.ring_capacity:
            # thin where the ring is densest: drop the older frame of the closest adjacent pair
            gaps = [self._frames[i].stamp_ns - self._frames[i + 1].stamp_ns for i in range(len(self._frames) - 1)]
            del self._frames[gaps.index(min(gaps)) + 1]
            self.thinned += 1
        return reason
