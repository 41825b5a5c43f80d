"""Frozen configuration: the one place every shape derives from.

`GridSpec` fixes the occupancy volume, `DepthBins` the LSS depth axis, `ImageGeometry` how a
source camera image becomes a network input, `ModelConfig` every width of the network.
Nothing else in the package writes a grid size, an input size or a channel count as a literal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from occ_ros.core.errors import ConfigError

# The precisions a network runs in (export, engines, backends): defined here once.
PRECISIONS: tuple[str, ...] = ('fp32', 'fp16')

# The distortion models of sensor_msgs/distortion_models.hpp this package rectifies, each with the
# lengths of D it accepts (an empty D means no distortion under any name).
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    'plumb_bob': (5, 4),                  # k1 k2 p1 p2 [k3]            (OpenCV's 4/5 coefficients)
    'rational_polynomial': (8,),          # k1 k2 p1 p2 k3 k4 k5 k6     (OpenCV's 8 coefficients)
    'equidistant': (4,),                  # k1 k2 k3 k4                 (cv2.fisheye)
}

# Which camera images the node is fed, and what it does with their distortion (parameter
# `rectification`): 'raw' = image_raw, rectified here when D is non-zero (network intrinsics P);
# 'image_rect' = already rectified (image_proc), used as published with P; 'none' = raw images with
# the distortion ignored (K used as it is; wrong geometry for a distorted lens, on purpose).
RECTIFICATION_MODES: tuple[str, ...] = ('raw', 'image_rect', 'none')

NUSCENES_CAMERAS: tuple[str, ...] = (
    'CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT',
    'CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT',
)
# When each nuScenes camera exposes, seconds after CAM_FRONT_LEFT: the top LiDAR triggers a camera as
# it sweeps past the camera's centre, clockwise from the front left, one turn in ≈ 50 ms (the
# sample_data stamps of a nuScenes sample spread over ≈ 42 ms in this order).
NUSCENES_CAPTURE_OFFSETS_S: dict[str, float] = {
    'CAM_FRONT_LEFT': 0.0, 'CAM_FRONT': 0.0083, 'CAM_FRONT_RIGHT': 0.0167,
    'CAM_BACK_RIGHT': 0.025, 'CAM_BACK': 0.0333, 'CAM_BACK_LEFT': 0.0417,
}


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


#: The Occ3D-nuScenes grid (200 × 200 × 16 voxels of 0.4 m, x, y ∈ [−40, 40), z ∈ [−1, 5.4)): the one
#: definition that defaults name; data on another grid passes its own GridSpec.
OCC3D_GRID = GridSpec()


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
        """(int(src_h·scale), input_w), in exact integer arithmetic.

        The official `int(src · scale)` in floats gives the same numbers for 900×1600 but can
        land one pixel short for other sources (e.g. int(267 · (704/267)) = 703).
        """
        return (self.src_hw[0] * self.input_hw[1] // self.src_hw[1], self.input_hw[1])

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


# Cells per BEV-pool bucket (1, 2, 4, … points per cell) measured on the default nuScenes-like
# rig (`occ_ros.geometry.nuscenes_rig`, float64 geometry, Occ3D 200×200 grid, 6 cameras), keyed
# by (depth bins, fH, fW); regenerate with `bench/bench_bev_pool.py --measure`. The official
# configs are (44, 16, 44) — pano-tiny/tiny/m0 — and (88, 16, 44) — pano-depth/depth/4D/m1:
# 302k kept points in 22.0k non-empty cells, cf. 302,255 points / 22,092 intervals reported by
# TRT_FlashOcc for real nuScenes calibration; (44, 7, 20) is `lite` (112×320 input).
NUSCENES_POOL_NEED: dict[tuple[int, int, int], tuple[int, ...]] = {
    # (D, fH, fW): cells needing bucket 0, 1, 2, …       kept points, max points in one cell
    (22, 6, 16): (251, 230, 748, 938, 47, 23),                                #    9,933   30
    (22, 7, 20): (253, 260, 606, 1544, 80, 19, 13),                           #   15,049   49
    (22, 8, 22): (248, 234, 526, 1914, 101, 26, 15),                          #   18,737   56
    (22, 10, 28): (258, 244, 509, 1132, 1536, 149, 19, 13),                   #   30,257   90
    (22, 12, 32): (219, 235, 423, 1052, 2147, 179, 54, 20),                   #   41,199  124
    (22, 12, 34): (221, 239, 431, 1167, 2215, 205, 61, 17, 4),                #   44,558  136
    (22, 14, 38): (233, 234, 436, 1026, 2764, 258, 85, 21, 11),               #   57,526  182
    (22, 16, 44): (228, 217, 394, 896, 3398, 370, 111, 33, 18),               #   76,819  240
    (22, 20, 55): (216, 205, 406, 729, 2132, 2437, 498, 95, 21, 13),          #  120,478  372
    (22, 24, 66): (213, 179, 363, 709, 1782, 3429, 717, 226, 51, 19, 2),      #  173,866  528
    (22, 32, 88): (177, 136, 302, 583, 1322, 4432, 1447, 492, 128, 44, 19),   #  310,160  947
    (44, 6, 16): (671, 680, 1531, 1720, 119, 34),                             #   19,649   30
    (44, 7, 20): (643, 653, 1441, 2885, 182, 50, 13),                         #   29,799   49
    (44, 8, 22): (580, 628, 1313, 3603, 252, 61, 15),                         #   37,096   56
    (44, 10, 28): (571, 629, 1321, 2394, 2845, 315, 47, 13),                  #   59,961   90
    (44, 12, 32): (522, 616, 1241, 2368, 3890, 404, 126, 25),                 #   81,521  124
    (44, 12, 34): (523, 577, 1186, 2572, 4087, 478, 133, 24, 4),              #   88,284  136
    (44, 14, 38): (522, 569, 1106, 2474, 5154, 600, 170, 49, 11),             #  114,063  182
    (44, 16, 44): (493, 509, 1045, 2345, 6311, 909, 233, 69, 19),             #  152,112  240
    (44, 20, 55): (470, 456, 1003, 2147, 4445, 4397, 1073, 174, 51, 13),      #  238,566  372
    (44, 24, 66): (434, 427, 905, 1922, 4121, 6245, 1533, 457, 110, 30, 2),   #  344,691  528
    (44, 32, 88): (355, 309, 744, 1580, 3563, 8085, 3019, 1066, 274, 89, 20), #  614,385  947
    (88, 6, 16): (1043, 1138, 3060, 3326, 356, 59),                           #   39,012   30
    (88, 7, 20): (967, 1066, 2700, 5586, 578, 95, 19),                        #   59,122   49
    (88, 8, 22): (929, 1032, 2305, 7033, 718, 120, 27),                       #   73,604   56
    (88, 10, 28): (865, 994, 2248, 4671, 5485, 830, 97, 17),                  #  118,972   90
    (88, 12, 32): (784, 931, 1979, 4467, 7537, 1066, 267, 44),                #  161,857  124
    (88, 12, 34): (767, 882, 1887, 4759, 7844, 1266, 293, 47, 4),             #  175,134  136
    (88, 14, 38): (764, 796, 1718, 4421, 9915, 1568, 377, 105, 11),           #  226,466  182
    (88, 16, 44): (748, 725, 1613, 3948, 11908, 2319, 546, 143, 35),          #  301,989  240
    (88, 20, 55): (595, 638, 1364, 3291, 8421, 8406, 2516, 399, 105, 18),     #  473,606  372
    (88, 24, 66): (500, 592, 1127, 2716, 7470, 11707, 3513, 1085, 229, 49, 2),  # 684,204  528
    (88, 32, 88): (354, 351, 782, 1772, 5677, 14856, 6418, 2403, 650, 171, 36),  # 1.22M  947
}
NUSCENES_POOL_CAMERAS = 6
POOL_HEADROOM = 1.3          # capacity = 1.3 × measured need, rounded up to 10 cells
POOL_SPARE_CELLS = 32        # cells of one extra bucket beyond the measured max points per cell
# The relative motion between the cameras of one set that the derived pool bounds must hold (per-camera
# capture-time ego poses, `occ_ros.geometry.frame_tables`): cameras fired over up to 0.1 s (nuScenes:
# 42 ms) on a car at up to 40 m/s turning at up to 1 rad/s. Measured on the nuScenes rig: the fullest
# bucket tail then uses at most 86 % of the derived capacity (77 % standing still), i.e. the 1.3×
# POOL_HEADROOM covers it; test_frame_tables.py guards this for the named models.
# Multi-frame (4D) history: slot k holds the frame nearest to t − k·HISTORY_INTERVAL_S (the 2 Hz key
# frames the official models were trained with) if one lies within HISTORY_TOLERANCE_S (occ_ros.temporal).
HISTORY_INTERVAL_S = 0.5
HISTORY_TOLERANCE_S = 0.125
# How a multi-frame model sees its history (occ_ros.temporal, pipeline, export):
#   'lift' — the official evaluation (bevdet4d.py extract_img_feat, align_after_view_transfromation=
#            False): each history frame's cached neck features re-run through DepthNet with the
#            current camera vector and pooled with relative-pose tables into the current ego frame;
#   'warp' — the cached BEV of each history frame warped with grid_sample (the official online
#            shift_feature path): cheaper, approximate.
TEMPORAL_MODES: tuple[str, ...] = ('lift', 'warp')
DEFAULT_TEMPORAL_MODE = 'lift'

# Whether ONNX Runtime's idle pool threads spin (busy-wait) for the next parallel section. Off: the
# pipeline's pre- and post-processing (Pillow and torch threads) run right after inference on the
# same cores, and a spinning pool thread took them over — `lite` on two cores, in one run:
# post-processing 31.7 → 11.6 ms, the whole pipeline 183 → 158 ms, inference unchanged (115.0 /
# 115.9 ms); through the node with a co-located camera driver, post-processing 23–33 → 11–12 ms.
DEFAULT_ORT_SPINNING = False


def check_temporal_mode(mode: str) -> str:
    """`mode` if it is one of TEMPORAL_MODES, else ConfigError naming the choices."""
    if mode not in TEMPORAL_MODES:
        raise ConfigError(f'temporal_mode must be one of {TEMPORAL_MODES}, got {mode!r}')
    return mode
MOTION_MAX_SPREAD_S = 0.1
MOTION_MAX_SPEED_MPS = 40.0
MOTION_MAX_YAW_RATE = 1.0


@dataclass(frozen=True)
class PoolBounds:
    """Capacity of the bucketed BEV pool (see `occ_ros.model.bev_pool`).

    Bucket k holds BEV cells that receive at most 2**k frustum points (bucket 0: exactly one);
    `capacities[k]` is how many cells it can hold. A cell goes to the smallest bucket that fits
    its count and spills into the next larger one when that is full, so a calibration fits when,
    for every k, the cells with more than 2**(k-1) points number at most sum(capacities[k:]).
    These bounds fix the shapes of the exported graph; a calibration that needs more raises
    `CalibrationError` that says which bound to raise.

    `derived=True` marks bounds that `ModelConfig` derives from its frustum size
    (`PoolBounds.for_frustum`) and re-derives whenever the config changes; bounds given
    explicitly (`derived=False`, the constructor default) are kept as they are.
    The default capacities are the pano-tiny ones: `for_frustum(6, 44, (16, 44))`.
    """

    capacities: tuple[int, ...] = (650, 670, 1360, 3050, 8210, 1190, 310, 90, 30, 32)
    derived: bool = False

    def __post_init__(self) -> None:
        caps = tuple(int(c) for c in self.capacities)
        if not caps or any(c < 0 for c in caps):
            raise ConfigError(f'PoolBounds.capacities must be a non-empty tuple of counts >= 0, '
                              f'got {self.capacities!r}')
        object.__setattr__(self, 'capacities', caps)

    @property
    def max_points_per_cell(self) -> int:
        return 2 ** (len(self.capacities) - 1)

    @property
    def bucket_sizes(self) -> tuple[int, ...]:
        return tuple(2 ** k for k in range(len(self.capacities)))

    @property
    def total_slots(self) -> int:
        return sum(c * k for c, k in zip(self.capacities, self.bucket_sizes))

    @property
    def total_cells(self) -> int:
        return sum(self.capacities)

    @classmethod
    def from_need(cls, need: tuple[int, ...] | list[int], headroom: float = POOL_HEADROOM,
                  spare_cells: int = POOL_SPARE_CELLS, derived: bool = False) -> 'PoolBounds':
        """Bounds with `headroom` over a measured per-bucket `need`, plus one spare bucket."""
        caps = [0 if n == 0 else -(-math.ceil(n * headroom) // 10) * 10 for n in need]
        while len(caps) > 1 and caps[-1] == 0:
            caps.pop()
        return cls(tuple(caps) + (int(spare_cells),), derived=derived)

    @classmethod
    def for_frustum(cls, num_cameras: int, num_depth: int,
                    feature_hw: tuple[int, int]) -> 'PoolBounds':
        """Bounds for a frustum of this size on a nuScenes-like rig and the Occ3D grid.

        Uses the smallest measured entry of `NUSCENES_POOL_NEED` that is at least as large on
        every axis (in the measurements, more bins / rows / columns never lowered the tail
        counts that decide the fit); beyond the table, the largest entry scaled by the size
        ratios with one more bucket per doubling of fH·fW. Other rigs or grids: measure with
        `occ_ros.geometry.suggest_pool_bounds` and pass the result as `pool_bounds`.
        """
        fh, fw = int(feature_hw[0]), int(feature_hw[1])
        fits = [(d * h * w, (d, h, w)) for (d, h, w) in NUSCENES_POOL_NEED
                if d >= num_depth and h >= fh and w >= fw]
        if fits and num_cameras <= NUSCENES_POOL_CAMERAS:
            return cls.from_need(NUSCENES_POOL_NEED[min(fits)[1]], derived=True)
        d0, h0, w0 = max(NUSCENES_POOL_NEED, key=lambda k: k[0] * k[1] * k[2])
        area = max(1.0, fh / h0) * max(1.0, fw / w0)
        scale = max(1.0, num_cameras / NUSCENES_POOL_CAMERAS) * max(1.0, num_depth / d0) * area
        need = [math.ceil(n * scale) for n in NUSCENES_POOL_NEED[(d0, h0, w0)]]
        extra = math.ceil(math.log2(area)) if area > 1 else 0
        spare = POOL_SPARE_CELLS * math.ceil(scale)
        return cls.from_need(tuple(need) + (spare,) * extra, spare_cells=spare, derived=True)


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
    # derived from the frustum size unless given explicitly (see PoolBounds)
    pool_bounds: PoolBounds = field(default_factory=lambda: PoolBounds(derived=True))
    # image encoder
    backbone_depth: int = 50                   # ResNet depth: 18 or 50
    backbone_out_indices: tuple[int, ...] = (2, 3)
    neck_out_channels: int = 256               # CustomFPN out_channels
    downsample: int = 16                       # image feature stride
    # view transform
    depthnet: str = 'bevdepth'                 # 'bevdepth' (DepthNet with SE/ASPP) or 'lss' (1×1 conv)
    # The image resize factors the checkpoint's camera-aware DepthNet was trained on (the camera
    # vector's post_rot entries): the official configs draw resize = 704/1600 + U(−0.06, 0.11)
    # (loading.py l.70-80, data_config 'resize'), i.e. [0.38, 0.55]. None: not camera-aware / unknown.
    trained_resize: Optional[tuple[float, float]] = (0.38, 0.55)
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
        if self.pool_bounds.derived:
            bounds = PoolBounds.for_frustum(self.num_cameras, self.depth.n, self.feature_hw)
            if self.num_frames > 1:
                # the 4D lift pools history frames seconds back: a frustum apex near the grid's
                # edge folds two cells' points into one (the official truncation toward zero),
                # e.g. 832 points in one cell 41.6 m back on a 21 m/s drive — one bucket more
                bounds = PoolBounds(bounds.capacities + (POOL_SPARE_CELLS,), derived=True)
            object.__setattr__(self, 'pool_bounds', bounds)

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
