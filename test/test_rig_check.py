"""The rig-vs-checkpoint warning (occ_ros.geometry.rig_check): numbers against OpenCV, and when
it is (and is not) raised."""
from __future__ import annotations

import math

import numpy as np
import pytest

from occ_ros import geometry as G
from occ_ros.geometry import rig_check as RC


def _camera(name: str, fx: float, hw=(900, 1600), height: float = 1.5, yaw_deg: float = 0.0) -> G.CameraCalib:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    K = np.array([[fx, 0.0, hw[1] * 0.47], [0.0, fx, hw[0] / 2], [0.0, 0.0, 1.0]])
    return G.CameraCalib(name, K, G.rigid_transform(R, (1.0, 0.0, height)), hw)


@pytest.mark.parametrize('fx, hw', [(1266.417, (900, 1600)), (400.0, (800, 1280)), (160.0, (480, 640))])
def test_horizontal_fov_is_opencvs(fx: float, hw: tuple[int, int]) -> None:
    """Against OpenCV's own cv::calibrationMatrixValues (modules/calib3d/src/calibration.cpp,
    fovx = atan2(cx, fx) + atan2(width − cx, fx), in degrees)."""
    cv2 = pytest.importorskip('cv2')
    cam = _camera('C', fx, hw)
    fovx, _, _, _, _ = cv2.calibrationMatrixValues(cam.K, (hw[1], hw[0]), 0.0, 0.0)
    assert RC.horizontal_fov_deg(cam) == pytest.approx(fovx, abs=1e-9)


def test_training_rig_agrees_with_itself_and_with_a_scaled_copy() -> None:
    ref = RC.training_rig()
    assert RC.rig_differences(ref, ref) == ()
    assert RC.rig_warning(G.nuscenes_rig((450, 800))) is None        # same lenses at half size
    assert RC.rig_warning(ref.ordered(list(reversed(ref.names)))) is None   # matched by name


def test_low_wide_four_camera_robot_is_reported_with_numbers() -> None:
    ref = RC.training_rig()
    robot = G.Rig(tuple(_camera(f'cam{i}', fx=300.0, hw=(800, 1280), height=0.42, yaw_deg=90.0 * i)
                        for i in range(4)))
    lines = RC.rig_differences(robot, ref)
    assert lines[0] == '4 cameras (the checkpoint\'s rig has 6)'
    # matched by order (the names are not nuScenes'): cam0 ↔ CAM_FRONT_LEFT
    h_ref = ref.cameras[0].sensor2ego[2, 3]
    assert f'cam0 (as CAM_FRONT_LEFT): mounted 0.42 m high, the checkpoint\'s {h_ref:.2f} m ' \
           f'({0.42 - h_ref:+.2f} m)' in lines
    fov = math.degrees(math.atan2(1280 * 0.47, 300.0) + math.atan2(1280 * 0.53, 300.0))
    assert any(line.startswith(f'cam0 (as CAM_FRONT_LEFT): horizontal field of view {fov:.1f}°')
               for line in lines)
    assert len(lines) == 1 + 4 * 2
    text = RC.rig_warning(robot)
    assert text is not None and 'nuScenes rig the checkpoint was trained on' in text and '0.42 m' in text


def test_within_tolerance_is_quiet_and_one_camera_off_is_named() -> None:
    ref = RC.training_rig()
    cams = list(ref)
    front = cams[1]
    T = front.sensor2ego.copy()
    T[2, 3] += RC.RIG_HEIGHT_TOLERANCE_M * 0.8                     # 20 cm higher: within tolerance
    cams[1] = G.CameraCalib(front.name, front.K, T, front.image_hw)
    assert RC.rig_differences(G.Rig(tuple(cams)), ref) == ()
    T[2, 3] += RC.RIG_HEIGHT_TOLERANCE_M                              # now 45 cm: reported
    cams[1] = G.CameraCalib(front.name, front.K, T, front.image_hw)
    lines = RC.rig_differences(G.Rig(tuple(cams)), ref)
    assert len(lines) == 1 and lines[0].startswith('CAM_FRONT: mounted 1.96 m high') and '+0.45 m' in lines[0]


def test_rig_check_reports_once_per_change() -> None:
    ref = RC.training_rig()
    check = RC.RigCheck(ref)
    assert check.update(ref) is None                                 # start-up, agrees: nothing
    assert check.update(ref) is None
    wide = RC.with_intrinsics(ref, {'CAM_FRONT': (np.array([[500.0, 0, 800], [0, 500.0, 450], [0, 0, 1]]),
                                                  (900, 1600))})
    text = check.update(wide)
    assert text and 'CAM_FRONT: horizontal field of view 116.0°' in text
    assert check.update(wide) is None                                # unchanged: said once
    assert check.update(ref) == ''                                   # resolved: said once
    assert check.update(ref) is None
    first = RC.RigCheck(ref)
    assert first.update(wide) == text                                # a mismatch at start-up
