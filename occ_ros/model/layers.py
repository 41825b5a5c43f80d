"""Shared building blocks: mmcv-style ConvModule and the mmdet ResNet residual blocks.

Attribute names reproduce the official checkpoints: a ConvModule holds `conv` (and `bn` when it
has a norm), residual blocks hold `conv1`/`bn1`/`conv2`/`bn2`(/`conv3`/`bn3`) and an optional
`downsample`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class ConvModule(nn.Module):
    """Conv2d → optional BatchNorm2d (`bn`) → optional ReLU, named like mmcv's ConvModule.

    mmcv's `bias='auto'` rule applies when `bias` is None: a conv followed by a norm has no bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: Optional[bool] = None, norm: bool = False, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation,
                              bias=(not norm) if bias is None else bias)
        self.bn: Optional[nn.BatchNorm2d] = nn.BatchNorm2d(out_channels) if norm else None
        self.activate: Optional[nn.ReLU] = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Cin, H, W) → (B, Cout, H', W')."""
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """mmdet/torchvision BasicBlock: 3×3 (stride) → BN → ReLU → 3×3 → BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Cin, H, W) → (B, C, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """mmdet ResNet Bottleneck, style 'pytorch' (the stride sits on the 3×3 conv), expansion 4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Cin, H, W) → (B, 4·C, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def init_conv_bn(module: nn.Module) -> None:
    """torchvision-style init: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
