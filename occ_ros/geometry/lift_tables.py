"""The history inputs of the official 4D lift (temporal_mode 'lift'): per history slot, its cached
neck features, the camera vector DepthNet gets and the pool tables of its cameras posed in the
*current* key ego frame.

The official evaluation of the multi-frame models (`bevdet4d.py` `extract_img_feat`,
`align_after_view_transfromation=False`, Yzichen/FlashOCC) runs, for every frame f of the window:

* `prepare_inputs` l.241-249: sensor2keyego_f = inv(ego2global of the *current* frame's view 0) ·
  ego2global_f,cam · sensor2ego_f,cam — a history frame's cameras map into the current key ego;
* l.327-328: `mlp_input = get_mlp_input(sensor2keyegos[0], ego2globals[0], intrin, post_rot,
  post_tran, bda)` — the *current* frame's sensor2keyego with frame f's intrinsics and image
  transforms (identical for one rig);
* l.136-160 `prepare_bev_feat`: image encoder → DepthNet(mlp_input) → pool → pre_process.

The image encoder depends on the images only, so the node caches each frame's neck features and
rebuilds the rest here per output (`lift_history_inputs`), with `FrameTableBuilder` (the same
plugin-free bucketed tables as the current frame's: tables are network inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import CalibrationError
from occ_ros.geometry.camera import CAMERA_VECTOR_SIZE, camera_vectors
from occ_ros.geometry.frame_tables import FrameTableBuilder


@dataclass(frozen=True)
class LiftFrame:
    """What the history ring keeps of one processed frame for the lift.

    img_feat: (N, C_neck, fH, fW) neck features (on the backend's device, as the network gave them);
    ego2global: (N, 4, 4) float64, each camera's ego pose at its capture time (T_odom_base);
    builder: the table builder of that frame's calibration (shared, not copied).
    Memory is the features: N·C_neck·fH·fW·4 bytes (pano-4d / longterm8f: 6·512·16·44·4 = 8.65 MB).
    """

    img_feat: torch.Tensor
    ego2global: np.ndarray
    builder: FrameTableBuilder


@dataclass(frozen=True)
class LiftInputs:
    """The stacked history inputs of the lift graph (io_spec `hist_*`), H = num_frames − 1 slots.

    img_feat (H, N, C_neck, fH, fW) float32; cam_vec (H, N, 27) float32; depth_idx / feat_idx
    (H, P) int64; cell_row (H, ny·nx) int64; valid (H,) float32 (0: empty slot — zero features and
    all-pad tables; the network then repeats the current frame, the official scene-start rule);
    overflows: slots whose relative pose did not fit the pool bounds (run as empty, counted);
    overflow_reason: the first such slot's `CalibrationError` message.
    """

    img_feat: torch.Tensor
    cam_vec: torch.Tensor
    depth_idx: torch.Tensor
    feat_idx: torch.Tensor
    cell_row: torch.Tensor
    valid: torch.Tensor
    overflows: int = 0
    overflow_reason: str = ''


def lift_history_inputs(cfg: ModelConfig, slots: Sequence[Optional[LiftFrame]],
                        key_ego2global: np.ndarray, key_sensor2keyego: np.ndarray,
                        device: torch.device) -> LiftInputs:
    """Stack the lift inputs of `slots` (newest first; None = empty) for the current frame.

    key_ego2global (4, 4): the current key ego pose (view 0 at its capture time);
    key_sensor2keyego (N, 4, 4): the current frame's sensor2keyego (what its camera vector holds:
    official `get_mlp_input(sensor2keyegos[0], …)` for every frame).
    """
    h = cfg.num_frames - 1
    if len(slots) != h:
        raise CalibrationError(f'{cfg.name}: {len(slots)} history slots given, the model has {h}')
    n, (fh, fw), d = cfg.num_cameras, cfg.feature_hw, cfg.depth.n
    total = cfg.pool_bounds.total_slots
    ny, nx = cfg.grid.bev_shape
    feat = torch.zeros(h, n, cfg.neck_out_channels, fh, fw, device=device)
    cam = torch.zeros(h, n, CAMERA_VECTOR_SIZE, device=device)
    depth_idx = torch.full((h, total), n * d * fh * fw, dtype=torch.long, device=device)
    feat_idx = torch.full((h, total), n * fh * fw, dtype=torch.long, device=device)
    cell_row = torch.zeros(h, ny * nx, dtype=torch.long, device=device)
    valid = torch.zeros(h, device=device)
    overflows, reason = 0, ''
    key = np.asarray(key_ego2global, dtype=np.float64)
    for k, frame in enumerate(slots):
        if frame is None:
            continue
        b = frame.builder
        try:
            geo = b.build(frame.ego2global, key_ego2global=key)
        except CalibrationError as exc:
            overflows += 1                  # beyond the bounds: the slot repeats the current frame
            reason = reason or f'history slot {k + 1}: {exc}'
            continue
        depth_idx[k], feat_idx[k], cell_row[k] = (t.to(device) for t in geo.pool_index.tensors())
        cam[k] = torch.from_numpy(camera_vectors(b.K, b.post_rot, b.post_tran, key_sensor2keyego)).to(device)
        feat[k] = frame.img_feat.to(device=device, dtype=feat.dtype)
        valid[k] = 1.0
    return LiftInputs(feat, cam, depth_idx, feat_idx, cell_row, valid, overflows, reason)

