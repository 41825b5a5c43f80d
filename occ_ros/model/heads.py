"""Heads on the BEV feature: the channel-to-height occupancy head and the centerness head."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.layers import ConvModule, init_conv_bn

HEATMAP_INIT_BIAS = -2.19          # CenterPoint prior: sigmoid(−2.19) ≈ 0.1
# name → (output channels, number of convs incl. the final one); official `common_heads` order.
CENTERNESS_HEADS: dict[str, tuple[int, int]] = {
    'reg': (2, 2), 'height': (1, 2), 'dim': (3, 2), 'rot': (2, 2), 'vel': (2, 2),
}
INFERENCE_HEADS: tuple[str, ...] = ('reg', 'height', 'heatmap')


class OccHead(nn.Module):
    """FlashOcc `BEVOCCHead2D` / `BEVOCCHead2D_V2` (identical layers; they differ only in loss).

    3×3 conv (bias) + ReLU (`final_conv`), permute (B, C, ny, nx) → (B, nx, ny, C), then
    `predicter` = Linear(C, 2C) → Softplus → Linear(2C, nz·K), viewed as (B, nx, ny, nz, K):
    output channel z·K + k is the logit of class k in height slice z (z-major, class-minor).
    `variant` ('v1' or 'v2') records which official head — and so which loss — this is.
    """

    def __init__(self, in_channels: int, channels: int, nz: int, num_classes: int,
                 variant: str = 'v2') -> None:
        super().__init__()
        if variant not in ('v1', 'v2'):
            raise ConfigError(f"occupancy head variant must be 'v1' or 'v2', got {variant!r}")
        self.variant = variant
        self.nz = nz
        self.num_classes = num_classes
        self.final_conv = ConvModule(in_channels, channels, 3, padding=1, bias=True)
        self.predicter = nn.Sequential(
            nn.Linear(channels, channels * 2),
            nn.Softplus(),
            nn.Linear(channels * 2, nz * num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, ny, nx) → occupancy logits (B, nx, ny, nz, K)."""
        x = self.final_conv(x).permute(0, 3, 2, 1)                         # (B, nx, ny, C)
        b, nx, ny = x.shape[:3]
        x = self.predicter(x)                                              # (B, nx, ny, nz·K)
        return x.reshape(b, nx, ny, self.nz, self.num_classes)             # (B, nx, ny, nz, K)


class SeparateHead(nn.Module):
    """mmdet3d SeparateHead: per output `name`, (n−1) × [3×3 conv, BN, ReLU] then a 3×3 conv with
    bias. Keys `{name}.{i}.conv`, `{name}.{i}.bn`, `{name}.{n−1}.{weight,bias}`."""

    def __init__(self, in_channels: int, heads: Mapping[str, tuple[int, int]], head_channels: int,
                 final_kernel: int = 3, init_bias: float = HEATMAP_INIT_BIAS) -> None:
        super().__init__()
        self.names = tuple(heads)
        pad = final_kernel // 2
        for name, (classes, num_conv) in heads.items():
            layers: list[nn.Module] = []
            c_in = in_channels
            for _ in range(num_conv - 1):
                layers.append(ConvModule(c_in, head_channels, final_kernel, padding=pad,
                                         norm=True))
                c_in = head_channels
            layers.append(nn.Conv2d(c_in, classes, final_kernel, padding=pad, bias=True))
            self.add_module(name, nn.Sequential(*layers))
        init_conv_bn(self)
        if 'heatmap' in heads:
            final = getattr(self, 'heatmap')[-1]
            nn.init.constant_(final.bias, init_bias)

    def forward(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """x: (B, C, H, W) → {name: (B, classes, H, W)} for the requested outputs."""
        return {name: getattr(self, name)(x) for name in names}


class CenternessHead(nn.Module):
    """FlashOcc `Centerness_Head` (CenterPoint head with one task of all detection classes).

    Shared 3×3 conv (no bias) + BN + ReLU, then a SeparateHead. Inference evaluates only
    `outputs` (reg, height, heatmap); dim/rot/vel exist for official checkpoints.
    """

    def __init__(self, in_channels: int, share_channels: int, num_det_classes: int,
                 all_heads: bool = True, outputs: Sequence[str] = INFERENCE_HEADS) -> None:
        super().__init__()
        heads = {k: v for k, v in CENTERNESS_HEADS.items()
                 if all_heads or k in outputs}
        heads['heatmap'] = (num_det_classes, 2)
        missing = [o for o in outputs if o not in heads]
        if missing:
            raise ConfigError(f'centerness outputs {missing} are not built heads {sorted(heads)}')
        self.outputs = tuple(outputs)
        self.shared_conv = ConvModule(in_channels, share_channels, 3, padding=1, norm=True)
        self.task_heads = nn.ModuleList([SeparateHead(share_channels, heads, share_channels)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, C, ny, nx) → {'reg': (B, 2, ny, nx), 'height': (B, 1, ny, nx),
        'heatmap': (B, num_det_classes, ny, nx) raw logits}."""
        return self.task_heads[0](self.shared_conv(x), self.outputs)
