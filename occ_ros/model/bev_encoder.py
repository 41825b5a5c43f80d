"""BEVDet's `CustomResNet`: the BEV encoder backbone and the 4D `pre_process_net`.

Each stage is a sequence of mmdet BasicBlocks; its first block carries the stage stride and a
shortcut that is a *plain biased 3×3 conv* (no BN) — key `layers.{s}.0.downsample.{weight,bias}`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.layers import BasicBlock, init_conv_bn


class CustomResNet(nn.Module):
    """Stages of BasicBlocks. forward((B, Cin, H, W)) → [(B, C_s, H/Π stride, W/Π stride)] for
    the stages in `out_ids` (all stages by default)."""

    def __init__(self, in_channels: int, channels: Sequence[int], blocks: Sequence[int],
                 strides: Sequence[int], out_ids: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if not (len(channels) == len(blocks) == len(strides)) or not channels:
            raise ConfigError(f'CustomResNet: channels {tuple(channels)}, blocks {tuple(blocks)} '
                              f'and strides {tuple(strides)} must be non-empty and equally long')
        stages = []
        cur = in_channels
        for width, n, stride in zip(channels, blocks, strides):
            shortcut = nn.Conv2d(cur, width, 3, stride=stride, padding=1)
            layer = [BasicBlock(cur, width, stride, shortcut)]
            layer += [BasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            cur = width
        self.layers = nn.Sequential(*stages)
        self.out_ids = tuple(range(len(channels)) if out_ids is None else out_ids)
        self.out_channels = [channels[i] for i in self.out_ids]
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_ids:
                feats.append(x)
        return feats
