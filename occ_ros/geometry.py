"""Camera rig maths: calibration, test-time image transform, frustum → BEV cells, visibility.

Conventions
-----------
- Ego frame (= `base_link`): x forward, y left, z up, metres.
- Camera optical frame: x right, y down, z forward (OpenCV / ROS `*_optical_frame`).
- `CameraCalib.sensor2ego` maps optical-frame points to the ego frame: p_ego = R·p_cam + t.
- `CameraCalib.K` is the pinhole matrix of the image the camera *actually delivers*
  (`image_hw`), pixel centres at integer coordinates (OpenCV / ROS CameraInfo).
- The BEV frame is the ego frame of view 0 (CAM_FRONT_LEFT in nuScenes order) at its timestamp
  (`sensor2keyego`), as in the official FlashOcc `prepare_inputs`.

Calibration maths runs in numpy float64. Torch appears only where the pool index and the camera
vector are produced for the network.

The frustum → cell mapping reproduces the official `LSSViewTransformer.get_lidar_coor` +
`voxel_pooling_prepare_v2` step by step (flashocc.md §2.1 item 4): u = linspace(0, W_in−1, fW),
v = linspace(0, H_in−1, fH), d = depth bins; undo post_rot/post_tran; (u·d, v·d, d);
R·K⁻¹·p + t; (p − lower) / voxel truncated toward zero (so points in (−1, 0) cell units land in
cell 0 — the official quirk). We compute it in **float64** by default: the official code runs in
float32 on the GPU (with TF32 matmuls on Ampere under the PyTorch versions it was trained with),
so no host computation can match its rounding bit for bit anyway. The two precisions disagree
only for points within float32 rounding of a cell boundary — measured on the nuScenes rig:
1 of 152,120 kept points (44 bins) and 3 of 301,987 (88 bins) change cell. `precision='float32'`
reproduces the float32 evaluation order when wanted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from occ_ros.core.config import NUSCENES_CAMERAS, GridSpec, ImageGeometry, ModelConfig, PoolBounds
from occ_ros.core.errors import CalibrationError
from occ_ros.model.bev_pool import BevPoolIndex, build_bev_pool_index, required_capacities

RIG_FORMAT = 'occ_ros.rig'
RIG_VERSION = 1
CAMERA_VECTOR_SIZE = 27           # DepthNet camera vector length (flashocc.md §2.2)
_ORTHO_TOL = 1e-5                 # max |RᵀR − I| accepted for a rotation


# --------------------------------------------------------------------------------------------
# Calibration containers
# --------------------------------------------------------------------------------------------

def _matrix(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f'{what}: expected a {"×".join(map(str, shape))} array of numbers '
                               f'({exc})') from exc
    if arr.shape != shape:
        raise CalibrationError(f'{what}: expected shape {shape}, got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f'{what}: contains NaN or infinite values')
    arr.setflags(write=False)
    return arr


def check_intrinsics(K: Any, what: str) -> np.ndarray:
    """A validated, read-only (3, 3) float64 pinhole K: finite, positive focal lengths, the form
    [[fx, s, cx], [0, fy, cy], [0, 0, 1]]. Raises CalibrationError naming `what`."""
    arr = _matrix(K, (3, 3), what)
    if not (arr[0, 0] > 0 and arr[1, 1] > 0):
        raise CalibrationError(f'{what} focal lengths must be positive, got fx={arr[0, 0]}, '
                               f'fy={arr[1, 1]}')
    if np.max(np.abs(arr[2] - (0.0, 0.0, 1.0))) > 1e-9 or abs(arr[1, 0]) > 1e-9:
        raise CalibrationError(f'{what} must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], '
                               f'got {arr.tolist()}')
    return arr


@dataclass(frozen=True, eq=False)
class CameraCalib:
    """Calibration of one camera.

    name: camera name (nuScenes channel names by default).
    K: (3, 3) float64 intrinsics for an image of `image_hw` = (height, width) pixels.
    sensor2ego: (4, 4) float64 rigid transform, camera optical frame → ego (base_link).
    Arrays are copied, validated and made read-only; invalid values raise CalibrationError.
    """

    name: str
    K: np.ndarray
    sensor2ego: np.ndarray
    image_hw: tuple[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise CalibrationError(f'camera name must be a non-empty string, got {self.name!r}')
        who = f'camera {self.name}'
        K = check_intrinsics(self.K, f'{who}: K')
        T = _matrix(self.sensor2ego, (4, 4), f'{who}: sensor2ego')
        if np.max(np.abs(T[3] - (0.0, 0.0, 0.0, 1.0))) > 1e-9:
            raise CalibrationError(f'{who}: sensor2ego last row must be [0, 0, 0, 1], '
                                   f'got {T[3].tolist()}')
        R = T[:3, :3]
        err = float(np.max(np.abs(R.T @ R - np.eye(3))))
        if err > _ORTHO_TOL or np.linalg.det(R) <= 0:
            raise CalibrationError(
                f'{who}: sensor2ego rotation is not a proper rotation (max |RᵀR − I| = {err:.2e}, '
                f'det = {np.linalg.det(R):.6f}); give a right-handed orthonormal 3×3 block')
        try:
            hw = (int(self.image_hw[0]), int(self.image_hw[1]))
            ok = len(self.image_hw) == 2 and hw[0] > 0 and hw[1] > 0
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            raise CalibrationError(f'{who}: image_hw must be (height, width) > 0, '
                                   f'got {self.image_hw!r}')
        object.__setattr__(self, 'K', K)
        object.__setattr__(self, 'sensor2ego', T)
        object.__setattr__(self, 'image_hw', hw)

    def scaled_to(self, image_hw: tuple[int, int]) -> 'CameraCalib':
        """The same camera delivering images of `image_hw`: K rows scaled by the size ratios.

        Plain scaling (fx, cx ·= W'/W; fy, cy ·= H'/H), the convention of ROS image_proc resize and
        of the official post_rot (both ignore the half-pixel shift of pixel centres).
        """
        h, w = int(image_hw[0]), int(image_hw[1])
        if (h, w) == self.image_hw:
            return self
        K = self.K.copy()
        K[0] *= w / self.image_hw[1]
        K[1] *= h / self.image_hw[0]
        K[2] = (0.0, 0.0, 1.0)
        return CameraCalib(self.name, K, self.sensor2ego, (h, w))

    def same_as(self, other: 'CameraCalib', atol: float = 0.0) -> bool:
        """Value equality (arrays compared with `atol`)."""
        return (self.name == other.name and self.image_hw == other.image_hw
                and np.allclose(self.K, other.K, rtol=0, atol=atol)
                and np.allclose(self.sensor2ego, other.sensor2ego, rtol=0, atol=atol))


@dataclass(frozen=True, eq=False)
class Rig:
    """An ordered set of cameras (order = network view order)."""

    cameras: tuple[CameraCalib, ...]

    def __post_init__(self) -> None:
        cams = tuple(self.cameras)
        if not cams:
            raise CalibrationError('a rig needs at least one camera')
        for c in cams:
            if not isinstance(c, CameraCalib):
                raise CalibrationError(f'rig cameras must be CameraCalib, got {type(c).__name__}')
        names = [c.name for c in cams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CalibrationError(f'rig has duplicate camera names: {dup}')
        object.__setattr__(self, 'cameras', cams)

    def __len__(self) -> int:
        return len(self.cameras)

    def __iter__(self) -> Iterator[CameraCalib]:
        return iter(self.cameras)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def camera(self, name: str) -> CameraCalib:
        for c in self.cameras:
            if c.name == name:
                return c
        raise CalibrationError(f'rig has no camera {name!r}; it has {list(self.names)}')

    def intrinsics(self) -> np.ndarray:
        """(N, 3, 3) float64 stack of K."""
        return np.stack([c.K for c in self.cameras])

    def sensor2ego(self) -> np.ndarray:
        """(N, 4, 4) float64 stack of camera → ego transforms."""
        return np.stack([c.sensor2ego for c in self.cameras])

    def ordered(self, names: Sequence[str]) -> 'Rig':
        """The cameras `names`, in that order (CalibrationError if one is missing)."""
        return Rig(tuple(self.camera(n) for n in names))

    def without(self, names: Sequence[str]) -> 'Rig':
        """The rig minus the cameras `names` (e.g. dead cameras for visibility masks)."""
        drop = set(names)
        return Rig(tuple(c for c in self.cameras if c.name not in drop))

    def same_as(self, other: 'Rig', atol: float = 0.0) -> bool:
        return len(self) == len(other) and all(a.same_as(b, atol) for a, b in zip(self, other))


def quaternion_to_matrix(wxyz: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation of the unit quaternion (w, x, y, z) (normalised first)."""
    q = np.asarray(wxyz, dtype=np.float64)
    n = float(np.linalg.norm(q))
    if q.shape != (4,) or not math.isfinite(n) or n < 1e-12:
        raise CalibrationError(f'quaternion (w, x, y, z) must be 4 finite numbers, got {wxyz!r}')
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion_xyzw(R: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation → unit quaternion in ROS order (x, y, z, w), w >= 0 (Shepperd's method)."""
    m = np.asarray(R, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def rigid_transform(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """(4, 4) homogeneous transform from a (3, 3) rotation and a (3,) translation."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


# Approximate nuScenes `calibrated_sensor` figures (v1.0, the widely published records of the
# Boston/Singapore Renault Zoe rig; individual logs differ by a few cm / tenths of a degree).
# translation (m, ego frame), rotation quaternion (w, x, y, z) optical → ego, K at 1600×900.
_NUSCENES_SOURCE_HW = (900, 1600)
_NUSCENES_CALIB: dict[str, tuple[tuple[float, float, float], tuple[float, float, float, float],
                                 tuple[float, float, float, float]]] = {
    # name: (translation, quaternion wxyz, (fx, fy, cx, cy))
    'CAM_FRONT_LEFT': ((1.52387798135, 0.494631336551, 1.50932822144),
                       (0.6757265034669446, -0.6736266522251881, 0.21214015046209478,
                        -0.21122827103904068),
                       (1272.5979470598488, 1272.5979470598488, 826.6154927353808,
                        479.75165386361925)),
    'CAM_FRONT': ((1.70079118954, 0.0159456324149, 1.51095763913),
                  (0.4998015430569128, -0.5030316162024876, 0.4997798114386805,
                   -0.49737083824542755),
                  (1266.417203046554, 1266.417203046554, 816.2670197447984, 491.50706579294757)),
    'CAM_FRONT_RIGHT': ((1.5508477543, -0.493404796419, 1.49574800619),
                        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167,
                         -0.6713610884174485),
                        (1260.8474446004698, 1260.8474446004698, 807.968244525554,
                         495.3344268742088)),
    'CAM_BACK_LEFT': ((1.0148780988, 0.480568219723, 1.56239545128),
                      (0.6924185592174665, -0.7031619420114925, -0.11648342771943819,
                       0.11203317912370753),
                      (1256.7414812095406, 1256.7414812095406, 792.1125740759628,
                       492.7757465151356)),
    'CAM_BACK': ((0.0283260309358, 0.00345136761476, 1.57910346144),
                 (0.5037872666382278, -0.49740249788611096, -0.4941850223835201,
                  0.5045496097725578),
                 (809.2209905677063, 809.2209905677063, 829.2196003259838, 481.77842384512485)),
    'CAM_BACK_RIGHT': ((1.0148780988, -0.480568219723, 1.56239545128),
                       (0.12280980120078765, -0.132400842670559, -0.7004305821388234,
                        0.690496031265798),
                       (1259.5137405846733, 1259.5137405846733, 807.2529053838625,
                        501.19579884916527)),
}


def nuscenes_rig(image_hw: tuple[int, int] = _NUSCENES_SOURCE_HW) -> Rig:
    """A nuScenes-like six-camera rig in `NUSCENES_CAMERAS` order.

    Values are approximate nuScenes calibrated_sensor figures (one published log; real logs
    differ by centimetres and fractions of a degree): cameras ≈ 1.5 m high, yaws ≈ 0, ±55°,
    ±110°, 180°; fx ≈ 1257–1273 px (CAM_BACK 809 px) for 1600×900 images. For another
    `image_hw` the intrinsics are scaled (`CameraCalib.scaled_to`).
    """
    cams = []
    for name in NUSCENES_CAMERAS:
        t, q, (fx, fy, cx, cy) = _NUSCENES_CALIB[name]
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        T = rigid_transform(quaternion_to_matrix(q), t)
        cam = CameraCalib(name, K, T, _NUSCENES_SOURCE_HW)
        cams.append(cam.scaled_to(image_hw))
    return Rig(tuple(cams))


# --------------------------------------------------------------------------------------------
# Rig YAML
# --------------------------------------------------------------------------------------------

_YAML_HEADER = """\
# occ_ros camera rig (written by occ_ros.geometry.save_rig).
# Per camera, in network view order:
#   image_hw:   [height, width] of the images this camera delivers
#   K:          3x3 pinhole intrinsics for that image size (pixel centres at integer coordinates)
#   sensor2ego: 4x4 row-major transform, camera optical frame (x right, y down, z forward)
#               -> ego / base_link (x forward, y left, z up), metres
"""


def save_rig(rig: Rig, path: Union[str, Path], comment: Optional[str] = None) -> None:
    """Write `rig` as YAML (floats with full precision: load_rig after save_rig gives `rig` back).

    comment: optional text written as extra `#` lines at the top of the file.
    """
    doc = {
        'format': RIG_FORMAT,
        'version': RIG_VERSION,
        'cameras': [
            {'name': c.name,
             'image_hw': [int(c.image_hw[0]), int(c.image_hw[1])],
             'K': [[float(v) for v in row] for row in c.K],
             'sensor2ego': [[float(v) for v in row] for row in c.sensor2ego]}
            for c in rig],
    }
    extra = ''.join(f'# {line}'.rstrip() + '\n' for line in (comment or '').splitlines())
    text = (_YAML_HEADER + extra
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    Path(path).write_text(text, encoding='utf-8')


def load_rig(path: Union[str, Path]) -> Rig:
    """Read and validate a rig written by `save_rig` (or by hand in the same layout).

    Raises CalibrationError naming the file and the offending field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding='utf-8')
    except OSError as exc:
        raise CalibrationError(f'{p}: cannot read the rig file ({exc.strerror or exc})') from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f'{p}: not valid YAML: {exc}') from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f'{p}: expected a mapping with a "cameras" list')
    if doc.get('format', RIG_FORMAT) != RIG_FORMAT:
        raise CalibrationError(f'{p}: format is {doc.get("format")!r}, expected {RIG_FORMAT!r}')
    if doc.get('version', RIG_VERSION) != RIG_VERSION:
        raise CalibrationError(f'{p}: rig file version {doc.get("version")!r} is not supported '
                               f'(this code reads version {RIG_VERSION})')
    entries = doc.get('cameras')
    if not isinstance(entries, list) or not entries:
        raise CalibrationError(f'{p}: "cameras" must be a non-empty list')
    cams = []
    for i, entry in enumerate(entries):
        where = f'{p}: cameras[{i}]'
        if not isinstance(entry, dict):
            raise CalibrationError(f'{where}: expected a mapping with name, image_hw, K, '
                                   'sensor2ego')
        missing = [k for k in ('name', 'image_hw', 'K', 'sensor2ego') if k not in entry]
        if missing:
            raise CalibrationError(f'{where}: missing field(s) {missing}')
        where = f'{where} ({entry["name"]})'
        hw = entry['image_hw']
        if (not isinstance(hw, list) or len(hw) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)):
            raise CalibrationError(f'{where}.image_hw: expected [height, width] positive '
                                   f'integers, got {hw!r}')
        K = _matrix(entry['K'], (3, 3), f'{where}.K')
        T = _matrix(entry['sensor2ego'], (4, 4), f'{where}.sensor2ego')
        try:
            cams.append(CameraCalib(str(entry['name']), K, T, (hw[0], hw[1])))
        except CalibrationError as exc:
            raise CalibrationError(f'{where}: {exc}') from exc
    try:
        return Rig(tuple(cams))
    except CalibrationError as exc:
        raise CalibrationError(f'{p}: {exc}') from exc


DEFAULT_RIG_COMMENT = """\
Default rig: approximate nuScenes calibrated_sensor figures (one published log of the
Renault Zoe rig; real logs differ by centimetres and tenths of a degree), images 1600x900.
Regenerate with: python -c "import occ_ros.geometry as g; g.write_default_rig()"
"""


def default_rig_path() -> Path:
    """config/nuscenes_rig.yaml of the source tree, else of the installed share directory."""
    here = Path(__file__).resolve().parent
    source = here.parent / 'config' / 'nuscenes_rig.yaml'
    installed = here.parents[3] / 'share' / 'occ_ros' / 'config' / 'nuscenes_rig.yaml' \
        if len(here.parents) > 3 else source
    return source if source.exists() or not installed.exists() else installed


def default_rig() -> Rig:
    """The committed default rig file if present, else `nuscenes_rig()` (the same values)."""
    path = default_rig_path()
    return load_rig(path) if path.exists() else nuscenes_rig()


def write_default_rig(path: Optional[Union[str, Path]] = None) -> Path:
    """(Re)write config/nuscenes_rig.yaml from `nuscenes_rig()`; returns the path written."""
    source_tree = Path(__file__).resolve().parent.parent
    target = Path(path) if path is not None else source_tree / 'config' / 'nuscenes_rig.yaml'
    save_rig(nuscenes_rig(), target, comment=DEFAULT_RIG_COMMENT)
    return target


# --------------------------------------------------------------------------------------------
# Per-frame transforms and the camera vector
# --------------------------------------------------------------------------------------------

def image_aug_matrices(geom: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Test-time image transform as the official post_rot (3, 3) / post_tran (3,) (float64).

    post_rot = diag(scale, scale, 1), post_tran = (0, −crop_top, 0): a source pixel (u, v)
    lands at (scale·u, scale·v − crop_top) in the network input. `geom.src_hw` must be the size
    of the image actually received, and K must be for that size. For a camera whose images differ
    from the configured source size, pass `geom.with_source(image_hw)`: resize and crop are then
    derived for that source exactly as for the configured one (scale = input_w / src_w, keep the
    bottom input_h rows). The official code uses the same `scale` on both axes even though the
    resized height is int(src_h·scale); for 900×1600 both coincide, otherwise the vertical
    mismatch is below one pixel of the resized image. Like the official code, pixel positions
    are scaled about the image corner, ignoring the half-pixel shift of a real resize
    (0.5·(1 − scale) ≈ 0.28 px at 0.44) — the checkpoints were trained with exactly this.
    """
    s = geom.scale
    post_rot = np.diag([s, s, 1.0])
    post_tran = np.array([0.0, -float(geom.crop_top), 0.0])
    return post_rot, post_tran


def sensor2keyego(sensor2ego: np.ndarray, ego2global: Optional[np.ndarray] = None) -> np.ndarray:
    """Camera → key-ego transforms (N, 4, 4), float64.

    sensor2keyego_i = inv(ego2global_0) · ego2global_i · sensor2ego_i (the official
    `prepare_inputs`, computed in double precision): the BEV frame is the ego frame of view 0
    (CAM_FRONT_LEFT in nuScenes order) at that camera's timestamp; ego2global_i is the ego pose
    at camera i's timestamp. With `ego2global=None` every camera shares one ego pose (the
    product is the identity) and sensor2keyego = sensor2ego.
    """
    s2e = np.asarray(sensor2ego, dtype=np.float64)
    if s2e.ndim != 3 or s2e.shape[1:] != (4, 4):
        raise CalibrationError(f'sensor2ego must be (N, 4, 4), got {s2e.shape}')
    if ego2global is None:
        return s2e.copy()
    e2g = np.asarray(ego2global, dtype=np.float64)
    if e2g.shape != s2e.shape:
        raise CalibrationError(f'ego2global must be (N, 4, 4) like sensor2ego {s2e.shape}, '
                               f'got {e2g.shape}')
    if not np.all(np.isfinite(e2g)):
        raise CalibrationError('ego2global contains NaN or infinite values')
    try:
        global2key = np.linalg.inv(e2g[0])
    except np.linalg.LinAlgError as exc:
        raise CalibrationError('ego2global of view 0 is singular') from exc
    return global2key[None] @ e2g @ s2e


def camera_vectors(K: np.ndarray, post_rot: np.ndarray, post_tran: np.ndarray,
                   sensor2keyego_: np.ndarray, bda: Optional[np.ndarray] = None) -> np.ndarray:
    """The DepthNet camera vector (N, 27) float32 (official `get_mlp_input`, flashocc.md §2.2).

    Layout per camera: [fx, fy, cx, cy, post_rot00, post_rot01, post_tran0, post_rot10,
    post_rot11, post_tran1, bda00, bda01, bda10, bda11, bda22] followed by sensor2keyego[:3, :4]
    row-major (R00 R01 R02 t0 R10 R11 R12 t1 R20 R21 R22 t2). K is the source-image intrinsics
    (before the resize/crop); bda (3, 3) defaults to the identity (test time).
    K (N,3,3), post_rot (N,3,3), post_tran (N,3), sensor2keyego (N,4,4).
    """
    K = np.asarray(K, dtype=np.float64)
    pr = np.asarray(post_rot, dtype=np.float64)
    pt = np.asarray(post_tran, dtype=np.float64)
    s2k = np.asarray(sensor2keyego_, dtype=np.float64)
    n = K.shape[0]
    if (K.shape != (n, 3, 3) or pr.shape != (n, 3, 3) or pt.shape != (n, 3)
            or s2k.shape != (n, 4, 4)):
        raise CalibrationError(f'camera_vectors: shapes K {K.shape}, post_rot {pr.shape}, '
                               f'post_tran {pt.shape}, sensor2keyego {s2k.shape} do not agree')
    b = np.eye(3) if bda is None else np.asarray(bda, dtype=np.float64)
    if b.shape != (3, 3):
        raise CalibrationError(f'bda must be (3, 3), got {b.shape}')
    head = np.stack([
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2],
        pr[:, 0, 0], pr[:, 0, 1], pt[:, 0],
        pr[:, 1, 0], pr[:, 1, 1], pt[:, 1],
        np.full(n, b[0, 0]), np.full(n, b[0, 1]), np.full(n, b[1, 0]), np.full(n, b[1, 1]),
        np.full(n, b[2, 2]),
    ], axis=1)                                                        # (N, 15)
    vec = np.concatenate([head, s2k[:, :3, :].reshape(n, 12)], axis=1)   # (N, 27)
    return vec.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Frustum → BEV cells
# --------------------------------------------------------------------------------------------

def frustum_pixels(input_hw: tuple[int, int], feature_hw: tuple[int, int],
                   depth_values: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """The LSS frustum (D, fH, fW, 3) of (u, v, d) in network-input pixels.

    u = linspace(0, W_in−1, fW), v = linspace(0, H_in−1, fH) — pixel positions, not cell centres
    (official `create_frustum`), d = the depth bin values.
    """
    h_in, w_in = input_hw
    fh, fw = feature_hw
    d = np.asarray(depth_values, dtype=dtype)
    u = np.linspace(0, w_in - 1, fw, dtype=dtype)
    v = np.linspace(0, h_in - 1, fh, dtype=dtype)
    dd, vv, uu = np.meshgrid(d, v, u, indexing='ij')
    return np.stack([uu, vv, dd], axis=-1)                           # (D, fH, fW, 3)


def depth_bin_values(cfg: ModelConfig, dtype: Any = np.float64) -> np.ndarray:
    """(D,) depth of each LSS bin: start + i·step (official `torch.arange(start, stop, step)`)."""
    bins = cfg.depth.start + np.arange(cfg.depth.n, dtype=dtype) * dtype(cfg.depth.step)
    return bins.astype(dtype)


def frustum_points_ego(cfg: ModelConfig, K: np.ndarray, post_rot: np.ndarray,
                       post_tran: np.ndarray, sensor2keyego_: np.ndarray,
                       bda: Optional[np.ndarray] = None, precision: str = 'float64') -> np.ndarray:
    """Key-ego coordinates (N, D, fH, fW, 3) of every frustum point (official `get_lidar_coor`).

    Per point: q = inv(post_rot)·((u, v, d) − post_tran); p = (q_x·q_z, q_y·q_z, q_z);
    x = R·K⁻¹·p + t (sensor2keyego); then bda·x. `precision` 'float64' (default) or 'float32'
    (the official evaluation dtype; sensor2keyego is still composed in float64 first).
    """
    dt = _dtype(precision)
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    pix = frustum_pixels(cfg.image.input_hw, cfg.feature_hw, depth_bin_values(cfg, dt), dt)
    b = np.eye(3) if bda is None else np.asarray(bda, dtype=np.float64)
    out = np.empty((n,) + pix.shape, dtype=dt)
    for i in range(n):
        inv_post = np.linalg.inv(np.asarray(post_rot[i], dtype=dt)).astype(dt)
        q = (pix - np.asarray(post_tran[i], dtype=dt)) @ inv_post.T            # (D, fH, fW, 3)
        p = np.concatenate([q[..., :2] * q[..., 2:3], q[..., 2:3]], axis=-1)
        s2k = np.asarray(sensor2keyego_[i]).astype(dt)
        combine = s2k[:3, :3] @ np.linalg.inv(K[i].astype(dt)).astype(dt)
        x = p @ combine.T + s2k[:3, 3]
        if bda is not None:
            x = x @ b.astype(dt).T
        out[i] = x
    return out


def _dtype(precision: str) -> Any:
    if precision == 'float64':
        return np.float64
    if precision == 'float32':
        return np.float32
    raise CalibrationError(f"precision must be 'float64' or 'float32', got {precision!r}")


@dataclass(frozen=True)
class FrustumRanks:
    """Kept frustum points and where they go (official `voxel_pooling_prepare_v2`, unsorted).

    ranks_depth: (M,) int64 flat index into depth (N, D, fH, fW).
    ranks_feat: (M,) int64 flat index into context rows (N, fH, fW).
    ranks_bev: (M,) int64 BEV cell y·nx + x.
    """

    ranks_depth: np.ndarray
    ranks_feat: np.ndarray
    ranks_bev: np.ndarray
    depth_size: int
    feat_rows: int
    bev_hw: tuple[int, int]


def voxelize_frustum(points: np.ndarray, grid: GridSpec) -> FrustumRanks:
    """Assign frustum points (N, D, fH, fW, 3) to the BEV pillar grid `grid` (nz must be 1).

    Cell index = ((p − lower) / voxel) truncated toward zero (`.long()` in the official code),
    kept when 0 ≤ ix < nx, 0 ≤ iy < ny, 0 ≤ iz < 1. Note the quirk: a point at −0.5 cell units
    is truncated to 0 and kept.
    """
    if grid.nz != 1:
        raise CalibrationError(f'the BEV pool grid must have one z cell (use grid.bev_pillar()), '
                               f'got nz={grid.nz}')
    n, d, fh, fw, _ = points.shape
    dt = points.dtype.type
    lower = np.asarray(grid.lower, dtype=dt)
    voxel = np.asarray(grid.voxel, dtype=dt)
    flat = points.reshape(-1, 3)
    cell = ((flat - lower) / voxel)
    # truncation toward zero; clip first so far-away points cannot overflow int64
    idx = np.clip(cell, -2.0, float(max(grid.nx, grid.ny) + 2)).astype(np.int64)
    keep = ((idx[:, 0] >= 0) & (idx[:, 0] < grid.nx) & (idx[:, 1] >= 0) & (idx[:, 1] < grid.ny)
            & (idx[:, 2] >= 0) & (idx[:, 2] < 1))
    ranks_depth = np.nonzero(keep)[0].astype(np.int64)                 # index into (N, D, fH, fW)
    cam = ranks_depth // (d * fh * fw)
    pix = ranks_depth % (fh * fw)
    ranks_feat = cam * (fh * fw) + pix                                 # index into (N, fH, fW)
    ranks_bev = idx[keep, 1] * grid.nx + idx[keep, 0]                  # y·nx + x
    return FrustumRanks(ranks_depth, ranks_feat, ranks_bev.astype(np.int64),
                        depth_size=n * d * fh * fw, feat_rows=n * fh * fw,
                        bev_hw=(grid.ny, grid.nx))


# --------------------------------------------------------------------------------------------
# Everything the network needs from calibration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BevGeometry:
    """Calibration-derived network inputs, cached until the calibration changes.

    cam_vec: (1, N, 27) float32 tensor, the DepthNet camera vector per view.
    pool_index: the bucketed BEV-pool tables (`occ_ros.model.bev_pool`).
    K: (N, 3, 3), post_rot: (N, 3, 3), post_tran: (N, 3), sensor2keyego: (N, 4, 4) — float64
    numpy, per camera in network view order `camera_names`.
    image_geometry: per-camera ImageGeometry (source size of that camera's images).
    required_capacities: cells per pool bucket this calibration needs (for sizing PoolBounds).
    """

    cam_vec: torch.Tensor
    pool_index: BevPoolIndex
    K: np.ndarray
    post_rot: np.ndarray
    post_tran: np.ndarray
    sensor2keyego: np.ndarray
    camera_names: tuple[str, ...]
    image_geometry: tuple[ImageGeometry, ...]
    required_capacities: tuple[int, ...]
    num_frustum_points: int = 0

    @property
    def device(self) -> torch.device:
        return self.cam_vec.device

    def to(self, device: Union[torch.device, str]) -> 'BevGeometry':
        """A copy with the tensors (camera vector, pool tables) on `device`."""
        return BevGeometry(self.cam_vec.to(device), self.pool_index.to(device), self.K,
                           self.post_rot, self.post_tran, self.sensor2keyego, self.camera_names,
                           self.image_geometry, self.required_capacities,
                           self.num_frustum_points)

    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network inputs: cam_vec (1, N, 27), pool_depth_idx (P,), pool_feat_idx (P,),
        pool_cell_row (ny·nx,)."""
        return (self.cam_vec,) + self.pool_index.tensors()


def rig_for_model(cfg: ModelConfig, rig: Rig) -> Rig:
    """`rig` reordered to the model's camera order (CalibrationError if cameras differ)."""
    if rig.names == tuple(cfg.cameras):
        return rig
    if set(rig.names) != set(cfg.cameras):
        raise CalibrationError(f'model {cfg.name!r} expects cameras {list(cfg.cameras)} but the '
                               f'rig has {list(rig.names)}')
    return rig.ordered(cfg.cameras)


def image_transforms(cfg: ModelConfig, rig: Rig
                     ) -> tuple[tuple[ImageGeometry, ...], np.ndarray, np.ndarray]:
    """Per-camera ImageGeometry and stacked post_rot (N, 3, 3) / post_tran (N, 3)."""
    geoms = tuple(cfg.image.with_source(c.image_hw) for c in rig)
    mats = [image_aug_matrices(g) for g in geoms]
    return geoms, np.stack([m[0] for m in mats]), np.stack([m[1] for m in mats])


def frustum_ranks(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                  precision: str = 'float64') -> FrustumRanks:
    """Point → cell ranks for `rig` under model `cfg` (rig already in model order)."""
    _, post_rot, post_tran = image_transforms(cfg, rig)
    s2k = sensor2keyego(rig.sensor2ego(), ego2global)
    pts = frustum_points_ego(cfg, rig.intrinsics(), post_rot, post_tran, s2k, precision=precision)
    return voxelize_frustum(pts, cfg.grid.bev_pillar())


def compute_bev_geometry(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                         *, precision: str = 'float64', fast_path: bool = True,
                         bda: Optional[np.ndarray] = None) -> BevGeometry:
    """Everything the network needs from calibration: camera vectors and the pool tables.

    rig: cameras matching `cfg.cameras` (reordered to model order if needed); each camera's K is
    for its own `image_hw`, and its resize/crop is derived from that size.
    ego2global: optional (N, 4, 4) ego pose at each camera's timestamp (see `sensor2keyego`).
    fast_path: also build the sparse-CSR tables for the eager CPU fast path (`bev_pool_fast`).
    bda: (3, 3) BEV data augmentation applied to the lifted points (training: a flip of the BEV
    plane); None at test time.
    Raises CalibrationError when the rig needs more pool capacity than `cfg.pool_bounds`; the
    message gives the capacities it needs.
    """
    rig = rig_for_model(cfg, rig)
    geoms, post_rot, post_tran = image_transforms(cfg, rig)
    K = rig.intrinsics()
    s2k = sensor2keyego(rig.sensor2ego(), ego2global)
    cam_vec = camera_vectors(K, post_rot, post_tran, s2k, bda)
    pts = frustum_points_ego(cfg, K, post_rot, post_tran, s2k, bda, precision=precision)
    ranks = voxelize_frustum(pts, cfg.grid.bev_pillar())
    rb = torch.from_numpy(ranks.ranks_bev)
    need = tuple(required_capacities(rb, ranks.bev_hw[0] * ranks.bev_hw[1],
                                     len(cfg.pool_bounds.capacities)))
    try:
        index = build_bev_pool_index(torch.from_numpy(ranks.ranks_depth),
                                     torch.from_numpy(ranks.ranks_feat), rb,
                                     ranks.depth_size, ranks.feat_rows, ranks.bev_hw,
                                     cfg.pool_bounds, fast_path=fast_path)
    except CalibrationError as exc:
        raise CalibrationError(
            f'calibration of cameras {list(rig.names)} does not fit the pool bounds of model '
            f'{cfg.name!r}: {exc}') from exc
    return BevGeometry(
        cam_vec=torch.from_numpy(cam_vec).unsqueeze(0),                 # (1, N, 27)
        pool_index=index, K=K, post_rot=post_rot, post_tran=post_tran, sensor2keyego=s2k,
        camera_names=rig.names, image_geometry=geoms, required_capacities=need,
        num_frustum_points=int(pts.shape[0] * pts.shape[1] * pts.shape[2] * pts.shape[3]))


# --------------------------------------------------------------------------------------------
# Visibility
# --------------------------------------------------------------------------------------------

def voxel_centres(grid: GridSpec) -> np.ndarray:
    """(nx, ny, nz, 3) float64 ego coordinates of the voxel centres of `grid`."""
    axes = [lo + (np.arange(n) + 0.5) * step
            for lo, n, step in zip(grid.lower, grid.shape, grid.voxel)]
    xx, yy, zz = np.meshgrid(*axes, indexing='ij')
    return np.stack([xx, yy, zz], axis=-1)


def camera_frustum_masks(grid: Union[GridSpec, ModelConfig], rig: Rig,
                         geom: Optional[ImageGeometry] = None, max_depth: Optional[float] = None,
                         sensor2keyego_: Optional[np.ndarray] = None) -> np.ndarray:
    """Which voxels each camera sees: (N, nx, ny, nz) bool, N = len(rig) in rig order.

    A voxel counts as seen by a camera when its centre projects inside the network-input image
    of that camera (after resize and crop: u ∈ [−0.5, W_in − 0.5), v ∈ [−0.5, H_in − 0.5), the
    pixel footprint of the input) with optical depth z ∈ (0, max_depth].
    grid: the occupancy grid, or a ModelConfig (its grid; `geom` then defaults to its image
    geometry and `max_depth` to its last depth-bin edge, `depth.stop`).
    geom: the model's image geometry (default `ImageGeometry()`); each camera's own source size
    is applied (`with_source`). max_depth defaults to 45 m without a ModelConfig.
    The union over cameras (`mask.any(0)`) is "seen by at least one camera"; a dead camera is
    left out by dropping its row (or passing `rig.without([...])`). sensor2keyego_ (N, 4, 4)
    defaults to the rig's sensor2ego (all cameras at one ego pose).
    """
    if isinstance(grid, ModelConfig):
        g = grid.grid
        geom = grid.image if geom is None else geom
        max_depth = grid.depth.stop if max_depth is None else max_depth
    else:
        g = grid
    geom = ImageGeometry() if geom is None else geom
    max_depth = 45.0 if max_depth is None else float(max_depth)
    if max_depth <= 0:
        raise CalibrationError(f'max_depth must be positive, got {max_depth}')
    s2k = rig.sensor2ego() if sensor2keyego_ is None else np.asarray(sensor2keyego_, np.float64)
    if s2k.shape != (len(rig), 4, 4):
        raise CalibrationError(f'sensor2keyego must be ({len(rig)}, 4, 4), got {s2k.shape}')
    axes = [lo + (np.arange(n) + 0.5) * step for lo, n, step in zip(g.lower, g.shape, g.voxel)]
    h_in, w_in = geom.input_hw
    masks = np.empty((len(rig),) + g.shape, dtype=bool)
    for i, cam in enumerate(rig):
        post_rot, post_tran = image_aug_matrices(geom.with_source(cam.image_hw))
        R, t = s2k[i, :3, :3], s2k[i, :3, 3]
        # ego → input pixels (homogeneous): P·(p − t) with P = post_rot·K·Rᵀ; its third row is
        # Rᵀ's, so the homogeneous weight is the optical depth z. P·p is separable over the
        # voxel axes: (nx,1,1) + (1,ny,1) + (1,1,nz) terms per component.
        P = post_rot @ cam.K @ R.T                                        # (3, 3)
        off = P @ t
        U, V, Z = (axes[0][:, None, None] * P[c, 0] + axes[1][None, :, None] * P[c, 1]
                   + axes[2][None, None, :] * P[c, 2] - off[c] for c in range(3))  # (nx,ny,nz)
        # u = U/Z + tu ∈ [−0.5, W_in − 0.5) ⇔ (−0.5 − tu)·Z ≤ U < (W_in − 0.5 − tu)·Z for Z > 0
        seen = (Z > 0) & (Z <= max_depth)
        seen &= U >= (-0.5 - post_tran[0]) * Z
        seen &= U < (w_in - 0.5 - post_tran[0]) * Z
        seen &= V >= (-0.5 - post_tran[1]) * Z
        seen &= V < (h_in - 0.5 - post_tran[1]) * Z
        masks[i] = seen
    return masks


def suggest_pool_bounds(cfg: ModelConfig, rig: Rig, ego2global: Optional[np.ndarray] = None,
                        headroom: float = 1.3) -> PoolBounds:
    """Pool bounds with `headroom` over what `rig` needs under `cfg` (for a custom rig).

    Use as `cfg.with_(pool_bounds=suggest_pool_bounds(cfg, rig))` before exporting a model for
    a rig that does not fit the derived defaults.
    """
    ranks = frustum_ranks(cfg, rig_for_model(cfg, rig), ego2global)
    cells = ranks.bev_hw[0] * ranks.bev_hw[1]
    cnt = np.bincount(ranks.ranks_bev, minlength=cells)
    nb = max(1, int(cnt.max() - 1).bit_length() + 1) if cnt.size and cnt.max() > 0 else 1
    need = required_capacities(torch.from_numpy(ranks.ranks_bev), cells, nb)
    return PoolBounds.from_need(need, headroom=headroom)
