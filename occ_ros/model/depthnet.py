"""BEVDepth's camera-aware DepthNet (SE-gated by a 27-value camera vector, 3 BasicBlocks, ASPP).

Key names follow FlashOcc's `model_utils/depthnet.py`: `reduce_conv.{0,1}`, `context_conv`, `bn`
(BatchNorm1d over the camera vector), `{depth,context}_mlp.fc{1,2}`,
`{depth,context}_se.conv_{reduce,expand}`, `depth_conv.{0,1,2}` (BasicBlocks), `depth_conv.3`
(ASPP), `depth_conv.4` (1×1 conv to depth logits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from occ_ros.model.layers import BasicBlock, init_conv_bn

CAMERA_VECTOR_SIZE = 27
ASPP_DILATIONS = (6, 12, 18)


class Mlp(nn.Module):
    """Linear → ReLU → Linear (the official dropouts are p=0, omitted)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, in) → (M, out)."""
        return self.fc2(self.act(self.fc1(x)))


class SELayer(nn.Module):
    """Squeeze-excitation gate driven by an external vector: x · sigmoid(W2 relu(W1 v))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels, 1, bias=True)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor, x_se: torch.Tensor) -> torch.Tensor:
        """x: (M, C, H, W), x_se: (M, C, 1, 1) → (M, C, H, W)."""
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)


class ASPPBranch(nn.Module):
    """One ASPP branch: conv (no bias, `atrous_conv`) → BN (`bn`) → ReLU."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_channels, channels, kernel_size, padding=padding,
                                     dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1 and three dilated 3×3 branches plus an image-pool
    branch (upsampled bilinear, align_corners=True), concatenated and fused by 1×1 conv + BN +
    ReLU, then Dropout(0.5) (a no-op in eval mode)."""

    def __init__(self, in_channels: int, mid_channels: int) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(in_channels, mid_channels, 1, 1)
        self.aspp2 = ASPPBranch(in_channels, mid_channels, 3, ASPP_DILATIONS[0])
        self.aspp3 = ASPPBranch(in_channels, mid_channels, 3, ASPP_DILATIONS[1])
        self.aspp4 = ASPPBranch(in_channels, mid_channels, 3, ASPP_DILATIONS[2])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(mid_channels * 5, in_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (M, C, H, W) → (M, C, H, W)."""
        pooled = self.global_avg_pool(x)                                    # (M, mid, 1, 1)
        pooled = F.interpolate(pooled, size=x.shape[-2:], mode='bilinear',
                               align_corners=True)                          # (M, mid, H, W)
        x = torch.cat([self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled],
                      dim=1)                                                # (M, 5·mid, H, W)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class DepthNet(nn.Module):
    """Camera-aware depth + context prediction (BEVDepth, no DCN).

    forward(x (B·N, Cin, fH, fW), cam_vec (B, N, 27)) → (B·N, D + C_context, fH, fW): depth
    logits first, then context features.
    """

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int,
                 depth_channels: int, aspp_mid_channels: int) -> None:
        super().__init__()
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
        )
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.bn = nn.BatchNorm1d(CAMERA_VECTOR_SIZE)
        self.depth_mlp = Mlp(CAMERA_VECTOR_SIZE, mid_channels, mid_channels)
        self.depth_se = SELayer(mid_channels)
        self.context_mlp = Mlp(CAMERA_VECTOR_SIZE, mid_channels, mid_channels)
        self.context_se = SELayer(mid_channels)
        self.depth_conv = nn.Sequential(
            BasicBlock(mid_channels, mid_channels),
            BasicBlock(mid_channels, mid_channels),
            BasicBlock(mid_channels, mid_channels),
            ASPP(mid_channels, aspp_mid_channels),
            nn.Conv2d(mid_channels, depth_channels, 1),
        )
        self.depth_channels = depth_channels
        self.context_channels = context_channels
        init_conv_bn(self)

    def forward(self, x: torch.Tensor, cam_vec: torch.Tensor) -> torch.Tensor:
        """x: (B·N, Cin, fH, fW), cam_vec: (B, N, 27) → (B·N, D + C, fH, fW)."""
        v = self.bn(cam_vec.reshape(-1, cam_vec.shape[-1]))                # (B·N, 27)
        x = self.reduce_conv(x)                                             # (B·N, mid, fH, fW)
        context_se = self.context_mlp(v)[..., None, None]                   # (B·N, mid, 1, 1)
        context = self.context_conv(self.context_se(x, context_se))         # (B·N, C, fH, fW)
        depth_se = self.depth_mlp(v)[..., None, None]                       # (B·N, mid, 1, 1)
        depth = self.depth_conv(self.depth_se(x, depth_se))                 # (B·N, D, fH, fW)
        return torch.cat([depth, context], dim=1)
