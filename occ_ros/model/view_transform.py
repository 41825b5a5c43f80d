"""LSS view transform: per-pixel depth distribution × context feature, pooled into BEV cells.

`LSSViewTransformer` owns a `depth_net` (state_dict prefix `img_view_transformer.depth_net.`):
a plain 1×1 conv for FlashOcc M0/M1, BEVDepth's camera-aware `DepthNet` for the panoptic models
(`BEVDepthViewTransformer`). The frustum→cell geometry is not part of the module: it arrives as
the three pool index tensors built from calibration (`occ_ros.model.bev_pool`).
"""
from __future__ import annotations

import torch
from torch import nn

from occ_ros.core.config import ModelConfig
from occ_ros.model.bev_pool import bev_pool
from occ_ros.model.depthnet import DepthNet


class LSSViewTransformer(nn.Module):
    """Lift (depth softmax × context) and splat (exact bucketed BEV pool).

    The depth net maps (B·N, Cin, fH, fW) to (B·N, D + C, fH, fW): D depth logits, then C context
    channels. The camera vector is ignored here (plain LSS); see `BEVDepthViewTransformer`.
    """

    def __init__(self, depth_net: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.depth_net = depth_net
        self.num_cameras = cfg.num_cameras
        self.num_depth = cfg.depth.n
        self.context_channels = cfg.context_channels
        self.feature_hw = cfg.feature_hw
        self.bev_hw = cfg.grid.bev_shape
        self.pool_bounds = cfg.pool_bounds

    def depth_logits(self, feats: torch.Tensor, cam_vec: torch.Tensor) -> torch.Tensor:
        """feats: (B·N, Cin, fH, fW) → (B·N, D + C, fH, fW). cam_vec is unused by plain LSS."""
        return self.depth_net(feats)

    def predict(self, feats: torch.Tensor,
                cam_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth probabilities (B, N, D, fH, fW) and channels-last context (B, N, fH, fW, C)."""
        n, d, c = self.num_cameras, self.num_depth, self.context_channels
        fh, fw = self.feature_hw
        x = self.depth_logits(feats, cam_vec)                              # (B·N, D + C, fH, fW)
        b = x.shape[0] // n
        depth = x[:, :d].softmax(dim=1).reshape(b, n, d, fh, fw)           # (B, N, D, fH, fW)
        context = x[:, d:d + c].reshape(b, n, c, fh, fw)                   # (B, N, C, fH, fW)
        return depth, context.permute(0, 1, 3, 4, 2)                       # (B, N, fH, fW, C)

    def pool(self, depth: torch.Tensor, context: torch.Tensor, pool_depth_idx: torch.Tensor,
             pool_feat_idx: torch.Tensor, pool_cell_row: torch.Tensor) -> torch.Tensor:
        """Sum depth × context per BEV cell → (B, C, ny, nx) (rows = y, columns = x)."""
        return bev_pool(depth, context, pool_depth_idx, pool_feat_idx, pool_cell_row,
                        self.pool_bounds, self.bev_hw)

    def forward(self, feats: torch.Tensor, cam_vec: torch.Tensor, pool_depth_idx: torch.Tensor,
                pool_feat_idx: torch.Tensor,
                pool_cell_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B·N, Cin, fH, fW) → (bev (B, C, ny, nx), depth (B, N, D, fH, fW))."""
        depth, context = self.predict(feats, cam_vec)
        return self.pool(depth, context, pool_depth_idx, pool_feat_idx, pool_cell_row), depth


class BEVDepthViewTransformer(LSSViewTransformer):
    """LSS with BEVDepth's camera-aware `DepthNet` (uses the 27-value camera vector)."""

    depth_net: DepthNet

    def depth_logits(self, feats: torch.Tensor, cam_vec: torch.Tensor) -> torch.Tensor:
        """feats: (B·N, Cin, fH, fW), cam_vec: (B, N, 27) → (B·N, D + C, fH, fW)."""
        return self.depth_net(feats, cam_vec)
