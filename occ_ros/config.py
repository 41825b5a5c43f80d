"""Frozen configuration: the one place every shape derives from.

`GridSpec` fixes the occupancy volume, `DepthBins` the LSS depth axis, `ImageGeometry` how a
source camera image becomes a network input, `ModelConfig` every width of the network.
Nothing else in the package writes a grid size, an input size or a channel count as a literal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from occ_ros.errors import ConfigError

NUSCENES_CAMERAS: tuple[str, ...] = (
    'CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT',
    'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT',
)


def _cells(lo: float, hi: float, step: float, axis: str) -> int:
    n = (hi - lo) / step
    if step <= 0 or hi <= lo or abs(n - round(n)) > 1e-6:
        raise ConfigError(f'grid axis {axis}: [{lo}, {hi}) is not a whole number of {step} m cells')
    return int(round(n))


@dataclass(frozen=True)
class AxisSpec:
    """One axis of a regular grid: [lo, hi) in metres split into cells of `step` metres."""

    lo: float
    hi: float
    step: float
    name: str = 'x'

    @property
    def n(self) -> int:
        return _cells(self.lo, self.hi, self.step, self.name)

    def __post_init__(self) -> None:
        self.n  # validates


@dataclass(frozen=True)
class GridSpec:
    """The Occ3D occupancy volume in the ego frame (x forward, y left, z up).

    Arrays indexed [x, y, z] have shape (nx, ny, nz); BEV tensors are (C, ny, nx):
    rows are y, columns are x (the FlashOcc convention).
    """

    x: AxisSpec = AxisSpec(-40.0, 40.0, 0.4, 'x')
    y: AxisSpec = AxisSpec(-40.0, 40.0, 0.4, 'y')
    z: AxisSpec = AxisSpec(-1.0, 5.4, 0.4, 'z')

    @property
    def nx(self) -> int:
        return self.x.n

    @property
    def ny(self) -> int:
        return self.y.n

    @property
    def nz(self) -> int:
        return self.z.n

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nx, ny, nz): the layout of Occ3D `semantics` arrays."""
        return (self.nx, self.ny, self.nz)

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(ny, nx): rows × columns of BEV feature maps."""
        return (self.ny, self.nx)

    @property
    def lower(self) -> tuple[float, float, float]:
        return (self.x.lo, self.y.lo, self.z.lo)

    @property
    def upper(self) -> tuple[float, float, float]:
        return (self.x.hi, self.y.hi, self.z.hi)

    @property
    def voxel(self) -> tuple[float, float, float]:
        return (self.x.step, self.y.step, self.z.step)

    def bev_pillar(self) -> 'GridSpec':
        """The LSS pooling grid: same x/y cells, one z cell spanning the whole height."""
        return replace(self, z=AxisSpec(self.z.lo, self.z.hi, self.z.hi - self.z.lo, 'z'))


@dataclass(frozen=True)
class DepthBins:
    """LSS depth bins [start, stop) with `step` metres; bin i is at depth start + i·step."""

    start: float = 1.0
    stop: float = 45.0
    step: float = 1.0

    @property
    def n(self) -> int:
        return _cells(self.start, self.stop, self.step, 'depth')


@dataclass(frozen=True)
class ImageGeometry:
    """How a source camera image becomes the network input (the official test-time transform).

    The image is resized by `scale` = input_w / src_w (PIL antialiased bicubic), then the
    bottom `input_h` rows are kept: crop_top = int(src_h · scale) − input_h.
    """

    src_hw: tuple[int, int] = (900, 1600)
    input_hw: tuple[int, int] = (256, 704)

    @property
    def scale(self) -> float:
        return self.input_hw[1] / self.src_hw[1]

    @property
    def resized_hw(self) -> tuple[int, int]:
        return (int(self.src_hw[0] * self.scale), int(self.src_hw[1] * self.scale))

    @property
    def crop_top(self) -> int:
        return self.resized_hw[0] - self.input_hw[0]

    def __post_init__(self) -> None:
        if min(self.src_hw) <= 0 or min(self.input_hw) <= 0:
            raise ConfigError(f'image sizes must be positive: src {self.src_hw}, input {self.input_hw}')
        if self.crop_top < 0:
            raise ConfigError(
                f'input size {self.input_hw} is taller than the resized source '
                f'{self.resized_hw}: choose an input aspect ratio no taller than the camera')

    def with_source(self, src_hw: tuple[int, int]) -> 'ImageGeometry':
        return replace(self, src_hw=(int(src_hw[0]), int(src_hw[1])))


@dataclass(frozen=True)
class PoolBounds:
    """Capacity of the bucketed BEV pool (see `occ_ros.model.bev_pool`).

    Bucket k holds the BEV cells that receive between 2**(k-1)+1 and 2**k frustum points
    (bucket 0: exactly one point); `capacities[k]` is how many such cells it can hold.
    These bounds fix the shapes of the exported graph; a calibration that needs more raises
    `CalibrationError` that says which bound to raise.
    """

    capacities: tuple[int, ...] = (12000, 8000, 8000, 6000, 4000, 2000, 1000, 500, 250)

    @property
    def max_points_per_cell(self) -> int:
        return 2 ** (len(self.capacities) - 1)

    @property
    def bucket_sizes(self) -> tuple[int, ...]:
        return tuple(2 ** k for k in range(len(self.capacities)))

    @property
    def total_slots(self) -> int:
        return sum(c * k for c, k in zip(self.capacities, self.bucket_sizes))


@dataclass(frozen=True)
class ModelConfig:
    """Every width and switch of a FlashOcc / Panoptic-FlashOcc network.

    Field names follow the domain; the official config name each corresponds to is in the
    comment. `build_model(name)` in `occ_ros.model` maps the named configs onto this.
    """

    name: str
    grid: GridSpec = field(default_factory=GridSpec)
    depth: DepthBins = field(default_factory=DepthBins)
    image: ImageGeometry = field(default_factory=ImageGeometry)
    cameras: tuple[str, ...] = NUSCENES_CAMERAS
    pool_bounds: PoolBounds = field(default_factory=PoolBounds)
    # image encoder
    backbone_depth: int = 50                   # ResNet depth: 18 or 50
    backbone_out_indices: tuple[int, ...] = (2, 3)
    neck_out_channels: int = 256               # CustomFPN out_channels
    downsample: int = 16                       # image feature stride
    # view transform
    depthnet: str = 'bevdepth'                 # 'bevdepth' (DepthNet with SE/ASPP) or 'lss' (1×1 conv)
    depthnet_mid_channels: Optional[int] = None  # None → same as neck_out_channels
    aspp_mid_channels: int = 96
    context_channels: int = 64                 # numC_Trans
    # temporal
    num_frames: int = 1                        # 1 = single frame; N = current + N-1 history
    # BEV encoder
    bev_channels: tuple[int, int, int] = (128, 256, 512)
    bev_blocks: tuple[int, int, int] = (2, 2, 2)
    bev_neck_channels: int = 128               # FPN_LSS out_channels
    # heads
    occ_head: str = 'v2'                       # 'v2' (BEVOCCHead2D_V2) or 'v1' (BEVOCCHead2D)
    occ_head_channels: int = 128
    num_classes: int = 18
    centerness: bool = True
    centerness_share_channels: int = 64
    centerness_all_heads: bool = True          # dim/rot/vel exist in official checkpoints
    num_det_classes: int = 10

    def __post_init__(self) -> None:
        if self.backbone_depth not in (18, 50):
            raise ConfigError(f'backbone_depth must be 18 or 50, got {self.backbone_depth}')
        if self.depthnet not in ('bevdepth', 'lss'):
            raise ConfigError(f"depthnet must be 'bevdepth' or 'lss', got {self.depthnet!r}")
        if self.occ_head not in ('v1', 'v2'):
            raise ConfigError(f"occ_head must be 'v1' or 'v2', got {self.occ_head!r}")
        if self.num_frames < 1:
            raise ConfigError(f'num_frames must be >= 1, got {self.num_frames}')
        h, w = self.image.input_hw
        if h % self.downsample or w % self.downsample:
            raise ConfigError(f'input size {self.image.input_hw} is not a multiple of {self.downsample}')
        if self.grid.nx % 8 or self.grid.ny % 8:
            raise ConfigError(f'BEV grid {self.grid.bev_shape} must be a multiple of 8 (3 stride-2 stages)')

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    @property
    def feature_hw(self) -> tuple[int, int]:
        """(fH, fW) of the image feature map fed to the view transform."""
        h, w = self.image.input_hw
        return (h // self.downsample, w // self.downsample)

    @property
    def bev_in_channels(self) -> int:
        """Input width of the BEV encoder: context channels × frames (channel concat)."""
        return self.context_channels * self.num_frames

    @property
    def history_channels(self) -> int:
        """Width of the ego-aligned BEV history input (0 for single-frame models)."""
        return self.context_channels * (self.num_frames - 1)

    @property
    def panoptic(self) -> bool:
        return self.centerness

    def frustum_points(self) -> int:
        fh, fw = self.feature_hw
        return self.num_cameras * self.depth.n * fh * fw

    def with_(self, **changes) -> 'ModelConfig':
        return replace(self, **changes)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))
