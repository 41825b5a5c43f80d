"""ResNet-18 / ResNet-50 image trunk (mmdet `ResNet`, style 'pytorch' = torchvision minus `fc`)."""
from __future__ import annotations

from typing import Sequence, Type, Union

import torch
from torch import nn

from occ_ros.core.errors import ConfigError
from occ_ros.model.layers import BasicBlock, Bottleneck, init_conv_bn

Block = Type[Union[BasicBlock, Bottleneck]]

ARCHS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)


class ResNet(nn.Module):
    """Stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool) and stages `layer1..layerK`.

    Stage i has stride 4·2**i relative to the input. `out_indices` selects the returned stages;
    stages after the last selected one are not built (the official configs select (2, 3), so
    all four exist and the state_dict equals torchvision's minus `fc`).
    """

    def __init__(self, depth: int, out_indices: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        if depth not in ARCHS:
            raise ConfigError(f'ResNet depth {depth} is not supported; '
                              f'choose one of {sorted(ARCHS)}')
        if not out_indices or min(out_indices) < 0 or max(out_indices) > 3:
            raise ConfigError(f'ResNet out_indices must be within 0..3, got {tuple(out_indices)}')
        block, blocks = ARCHS[depth]
        self.depth = depth
        self.out_indices = tuple(sorted(out_indices))
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        self.stage_names: list[str] = []
        self.out_channels: list[int] = []
        for i in range(max(self.out_indices) + 1):
            width = STAGE_WIDTHS[i]
            stride = 1 if i == 0 else 2
            layer, in_ch = self._make_stage(block, in_ch, width, blocks[i], stride)
            name = f'layer{i + 1}'
            self.add_module(name, layer)
            self.stage_names.append(name)
            if i in self.out_indices:
                self.out_channels.append(in_ch)
        init_conv_bn(self)

    @staticmethod
    def _make_stage(block: Block, in_ch: int, width: int, n: int,
                    stride: int) -> tuple[nn.Sequential, int]:
        out_ch = width * block.expansion
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_ch))
        layers = [block(in_ch, width, stride, downsample)]
        layers += [block(out_ch, width) for _ in range(n - 1)]
        return nn.Sequential(*layers), out_ch

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) → [(B, C_i, H/2**(i+2), W/2**(i+2)) for i in out_indices]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
