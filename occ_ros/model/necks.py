"""Necks: `CustomFPN` (image side) and `FPN_LSS` (BEV side), named like the official modules."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.layers import ConvModule, init_conv_bn


class CustomFPN(nn.Module):
    """BEVDet's CustomFPN with one output at the finest input level.

    1×1 laterals (bias, no norm/act) on every input level; top-down: each coarser lateral is
    resized with nearest interpolation to the next finer level's size and added; one 3×3 conv
    (bias, no norm/act) on the finest level. Keys: `lateral_convs.{i}.conv`, `fpn_convs.0.conv`.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if not in_channels:
            raise ConfigError('CustomFPN needs at least one input level')
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, bias=True, act=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            [ConvModule(out_channels, out_channels, 3, padding=1, bias=True, act=False)])
        self.out_channels = out_channels
        init_conv_bn(self)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """feats: [(B, C_i, H_i, W_i)] finest first → (B, out, H_0, W_0)."""
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            size = laterals[i - 1].shape[-2:]
            up = F.interpolate(laterals[i], size=size, mode='nearest')   # (B, out, H_i-1, W_i-1)
            laterals[i - 1] = laterals[i - 1] + up
        return self.fpn_convs[0](laterals[0])


class FPNLSS(nn.Module):
    """FlashOcc/BEVDet `FPN_LSS`: fuse a fine and a coarse BEV level, then upsample.

    The coarse map is upsampled ×`scale_factor` (bilinear, align_corners=True) and concatenated
    after the fine one; two [3×3 conv (no bias), BN, ReLU] of width out·2; then (`extra_upsample`)
    ×2 bilinear upsample, 3×3 conv → out, BN, ReLU, 1×1 conv (bias). Keys: `conv.{0,1,3,4}`,
    `up2.{1,2,4}`.
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int,
                 extra_upsample: int = 2, input_ids: tuple[int, int] = (0, 2)) -> None:
        super().__init__()
        self.input_ids = input_ids
        self.scale_factor = scale_factor
        self.extra_upsample = extra_upsample
        mid = out_channels * (2 if extra_upsample > 1 else 1)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.up2: nn.Module
        if extra_upsample > 1:
            self.up2 = nn.Sequential(
                nn.Upsample(scale_factor=extra_upsample, mode='bilinear', align_corners=True),
                nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 1),
            )
        else:
            self.up2 = nn.Identity()
        self.out_channels = out_channels
        init_conv_bn(self)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """feats: encoder levels; uses (B, C_f, h, w) and (B, C_c, h/s, w/s)
        → (B, out, h·u, w·u)."""
        fine, coarse = feats[self.input_ids[0]], feats[self.input_ids[1]]
        coarse = F.interpolate(coarse, scale_factor=self.scale_factor, mode='bilinear',
                               align_corners=True)                  # (B, C_c, h, w)
        x = torch.cat([fine, coarse], dim=1)                        # (B, C_f + C_c, h, w)
        return self.up2(self.conv(x))
