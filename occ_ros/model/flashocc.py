"""FlashOcc / Panoptic-FlashOcc composed from injected parts.

Attribute names are the official state_dict prefixes (`img_backbone.`, `img_neck.`,
`img_view_transformer.`, `img_bev_encoder_backbone.`, `img_bev_encoder_neck.`, `occ_head.`,
`aux_centerness_head.`, `pre_process_net.`), so official checkpoints load without renaming.

Stages (each usable on its own by the benchmark, the trainer and the exporter):
  encode_images → view_transform (= predict_depth + pool) → encode_bev (= pre_process +
  encode_preprocessed_bev) → heads.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from occ_ros.core.config import ModelConfig
from occ_ros.core.errors import ConfigError
from occ_ros.model.bev_encoder import CustomResNet
from occ_ros.model.heads import CenternessHead, OccHead
from occ_ros.model.necks import CustomFPN, FPNLSS
from occ_ros.model.resnet import ResNet
from occ_ros.model.view_transform import LSSViewTransformer


class FlashOcc(nn.Module):
    """Camera-only (panoptic) occupancy network.

    forward(img (B, N, 3, H, W), cam_vec (B, N, 27), pool_depth_idx (P,), pool_feat_idx (P,),
    pool_cell_row (ny·nx,), bev_history (B, C·(F−1), ny, nx) = None, history_valid (F−1,) = None)
    returns a dict:
      'occ_logits' (B, nx, ny, nz, K) — indexed [x, y, z, class] like Occ3D `semantics`;
      'heatmap' (B, n_det, ny, nx) raw logits, 'reg' (B, 2, ny, nx), 'height' (B, 1, ny, nx)
        — panoptic models only;
      'bev_feat' (B, C, ny, nx) — the current frame's (pre-processed) BEV feature, for the
        caller's temporal buffer;
      'depth' (B, N, D, fH, fW) — depth probabilities (training depth loss).
    """

    def __init__(self, cfg: ModelConfig, img_backbone: ResNet, img_neck: CustomFPN,
                 img_view_transformer: LSSViewTransformer,
                 img_bev_encoder_backbone: CustomResNet, img_bev_encoder_neck: FPNLSS,
                 occ_head: OccHead, aux_centerness_head: Optional[CenternessHead] = None,
                 pre_process_net: Optional[CustomResNet] = None) -> None:
        super().__init__()
        if (cfg.num_frames > 1) != (pre_process_net is not None):
            raise ConfigError(f'{cfg.name}: a pre_process_net is required exactly for multi-frame '
                              f'models (num_frames = {cfg.num_frames})')
        if cfg.centerness != (aux_centerness_head is not None):
            raise ConfigError(f'{cfg.name}: config centerness={cfg.centerness} but the centerness '
                              f'head is {"missing" if aux_centerness_head is None else "given"}')
        self.cfg = cfg
        self.img_backbone = img_backbone
        self.img_neck = img_neck
        self.img_view_transformer = img_view_transformer
        self.img_bev_encoder_backbone = img_bev_encoder_backbone
        self.img_bev_encoder_neck = img_bev_encoder_neck
        self.pre_process_net = pre_process_net
        self.occ_head = occ_head
        self.aux_centerness_head = aux_centerness_head

    # ------------------------------------------------------------------ stages
    def encode_images(self, img: torch.Tensor) -> torch.Tensor:
        """img: (B, N, 3, H, W) normalised B,G,R planes → (B·N, C_neck, fH, fW)."""
        b, n, c, h, w = img.shape
        x = img.reshape(b * n, c, h, w)                                    # (B·N, 3, H, W)
        return self.img_neck(self.img_backbone(x))

    def predict_depth(self, feats: torch.Tensor,
                      cam_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth net: (B·N, C_neck, fH, fW) → depth (B, N, D, fH, fW) and channels-last
        context (B, N, fH, fW, C)."""
        return self.img_view_transformer.predict(feats, cam_vec)

    def pool(self, depth: torch.Tensor, context: torch.Tensor, pool_depth_idx: torch.Tensor,
             pool_feat_idx: torch.Tensor, pool_cell_row: torch.Tensor) -> torch.Tensor:
        """BEV pool: depth (B, N, D, fH, fW) × context (B, N, fH, fW, C) → (B, C, ny, nx)."""
        return self.img_view_transformer.pool(depth, context, pool_depth_idx, pool_feat_idx,
                                              pool_cell_row)

    def view_transform(self, feats: torch.Tensor, cam_vec: torch.Tensor,
                       pool_depth_idx: torch.Tensor, pool_feat_idx: torch.Tensor,
                       pool_cell_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B·N, C_neck, fH, fW) → (bev (B, C, ny, nx), depth (B, N, D, fH, fW))."""
        return self.img_view_transformer(feats, cam_vec, pool_depth_idx, pool_feat_idx,
                                         pool_cell_row)

    def pre_process(self, bev: torch.Tensor) -> torch.Tensor:
        """Multi-frame models: one BasicBlock on the current BEV feature (identity otherwise)."""
        if self.pre_process_net is None:
            return bev
        return self.pre_process_net(bev)[0]

    def lift_history(self, hist_feat: torch.Tensor, hist_cam_vec: torch.Tensor,
                     hist_depth_idx: torch.Tensor, hist_feat_idx: torch.Tensor,
                     hist_cell_row: torch.Tensor) -> torch.Tensor:
        """The official 4D lift of the history frames into the current ego frame → bev_history.

        hist_feat (H, N, C_neck, fH, fW): each history frame's cached neck features (what
        `encode_images` gave for its images — exact to cache, it depends on the images only);
        hist_cam_vec (H, N, 27): the camera vector DepthNet gets for each frame — the official code
        gives every frame the *current* key frame's sensor2keyego (bevdet4d.py l.327-328
        `get_mlp_input(sensor2keyegos[0], …)`); hist_depth_idx / hist_feat_idx (H, P),
        hist_cell_row (H, ny·nx): each frame's pool tables built with its cameras' poses relative
        to the current key ego (bevdet4d.py l.241-249 `prepare_inputs`).
        Per frame: DepthNet (batched over the H frames), the pool with its own tables, pre_process
        (bevdet4d.py l.136-160 `prepare_bev_feat`). Returns (1, C·H, ny, nx), newest slot first —
        the `bev_history` of `encode_preprocessed_bev`.
        """
        h, n = hist_feat.shape[:2]
        feats = hist_feat.reshape((h * n,) + tuple(hist_feat.shape[2:]))      # (H·N, C_neck, fH, fW)
        depth, context = self.predict_depth(feats, hist_cam_vec)            # (H, N, D, fH, fW), (H, N, fH, fW, C)
        bevs = [self.pool(depth[k:k + 1], context[k:k + 1], hist_depth_idx[k], hist_feat_idx[k],
                          hist_cell_row[k]) for k in range(h)]              # H × (1, C, ny, nx)
        lifted = self.pre_process(torch.cat(bevs, dim=0))                   # (H, C, ny, nx)
        return lifted.reshape((1, h * lifted.shape[1]) + tuple(lifted.shape[2:]))

    def fuse_history(self, bev: torch.Tensor, bev_history: Optional[torch.Tensor],
                     history_valid: Optional[torch.Tensor]) -> torch.Tensor:
        """Channel concat [current, t−1, …, t−F+1] → (B, F·C, ny, nx).

        bev: (B, C, ny, nx) pre-processed current feature; bev_history: (B, C·(F−1), ny, nx)
        ego-aligned pre-processed history, newest first; history_valid: (F−1,) with 1 for a
        stored frame and 0 for none — an invalid slot takes the current feature (the official
        scene-start duplication). No history at all (None) = every slot invalid.
        """
        frames = self.cfg.num_frames
        if frames == 1:
            if bev_history is not None:
                raise ConfigError(f'{self.cfg.name} is a single-frame model: '
                                  'bev_history must be None')
            return bev
        b, c, ny, nx = bev.shape
        current = bev.unsqueeze(1)                                         # (B, 1, C, ny, nx)
        if bev_history is None:
            history = current.expand(b, frames - 1, c, ny, nx)             # (B, F−1, C, ny, nx)
        else:
            if bev_history.shape[1] != c * (frames - 1):
                raise ConfigError(
                    f'{self.cfg.name}: bev_history has {bev_history.shape[1]} channels, expected '
                    f'{c * (frames - 1)} = {frames - 1} frames × {c}')
            history = bev_history.reshape(b, frames - 1, c, ny, nx)        # (B, F−1, C, ny, nx)
            if history_valid is not None:
                v = history_valid.to(bev.dtype).reshape(1, frames - 1, 1, 1, 1)  # (1, F−1, 1,1,1)
                history = v * history + (1.0 - v) * current
        x = torch.cat([current, history], dim=1)                           # (B, F, C, ny, nx)
        return x.reshape(b, frames * c, ny, nx)                            # (B, F·C, ny, nx)

    def encode_bev(self, bev: torch.Tensor, bev_history: Optional[torch.Tensor] = None,
                   history_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """View-transform output (B, C, ny, nx) [+ history] → occ_bev_feature (B, C_bev, ny, nx).

        Applies `pre_process` to `bev` (multi-frame models) before fusing it with the history.
        """
        return self.encode_preprocessed_bev(self.pre_process(bev), bev_history, history_valid)

    def encode_preprocessed_bev(self, current: torch.Tensor,
                                bev_history: Optional[torch.Tensor] = None,
                                history_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """As `encode_bev` for an already pre-processed current feature (B, C, ny, nx)."""
        x = self.fuse_history(current, bev_history, history_valid)          # (B, F·C, ny, nx)
        return self.img_bev_encoder_neck(self.img_bev_encoder_backbone(x))

    def heads(self, occ_bev_feature: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C_bev, ny, nx) → {'occ_logits'} (+ 'reg', 'height', 'heatmap' if panoptic)."""
        out = {'occ_logits': self.occ_head(occ_bev_feature)}
        if self.aux_centerness_head is not None:
            out.update(self.aux_centerness_head(occ_bev_feature))
        return out

    # ------------------------------------------------------------------ whole network
    def forward(self, img: torch.Tensor, cam_vec: torch.Tensor, pool_depth_idx: torch.Tensor,
                pool_feat_idx: torch.Tensor, pool_cell_row: torch.Tensor,
                bev_history: Optional[torch.Tensor] = None,
                history_valid: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        feats = self.encode_images(img)
        bev, depth = self.view_transform(feats, cam_vec, pool_depth_idx, pool_feat_idx,
                                         pool_cell_row)
        current = self.pre_process(bev)
        out = self.heads(self.encode_preprocessed_bev(current, bev_history, history_valid))
        out['bev_feat'] = current
        out['depth'] = depth
        return out

    def forward_lift(self, img: torch.Tensor, cam_vec: torch.Tensor, pool_depth_idx: torch.Tensor,
                     pool_feat_idx: torch.Tensor, pool_cell_row: torch.Tensor,
                     hist_feat: torch.Tensor, hist_cam_vec: torch.Tensor,
                     hist_depth_idx: torch.Tensor, hist_feat_idx: torch.Tensor,
                     hist_cell_row: torch.Tensor,
                     history_valid: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """`forward` with the history lifted from cached neck features (`lift_history`) instead of
        given as ego-aligned BEV; an invalid slot takes the current frame's feature (the official
        repeat rule). Adds 'img_feat' (B, N, C_neck, fH, fW): this frame's neck features, for the
        caller's history ring."""
        feats = self.encode_images(img)                                     # (B·N, C_neck, fH, fW)
        bev, depth = self.view_transform(feats, cam_vec, pool_depth_idx, pool_feat_idx,
                                         pool_cell_row)
        current = self.pre_process(bev)
        history = self.lift_history(hist_feat, hist_cam_vec, hist_depth_idx, hist_feat_idx,
                                    hist_cell_row)
        out = self.heads(self.encode_preprocessed_bev(current, history, history_valid))
        out['bev_feat'] = current
        out['depth'] = depth
        out['img_feat'] = feats.reshape(img.shape[:2] + tuple(feats.shape[1:]))
        return out

    @property
    def panoptic(self) -> bool:
        return self.aux_centerness_head is not None
