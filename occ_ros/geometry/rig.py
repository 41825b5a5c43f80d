"""Camera calibration: `CameraCalib`, `Rig`, rotations and rigid transforms, the nuScenes rig."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from occ_ros.core.config import NUSCENES_CAMERAS
from occ_ros.core.errors import CalibrationError

RIG_FORMAT = 'occ_ros.rig'


RIG_VERSION = 1


_ORTHO_TOL = 1e-5                 # max |RᵀR − I| accepted for a rotation


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


# nuScenes `calibrated_sensor` records of one log (v1.0-mini, scene-0061, log
# n015-2018-07-24-11-22-45+0800; other logs differ by a few cm / tenths of a degree), copied
# unchanged: translation (m, ego frame), rotation quaternion (w, x, y, z) optical → ego, K at
# 1600×900. The ONE definition of the built-in rig: config/nuscenes_rig.yaml is generated from it
# (`write_default_rig`) and a test keeps the two equal; test_geometry checks it against the
# published records.
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
    'CAM_BACK_LEFT': ((1.03569100218, 0.484795032713, 1.59097014818),
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
