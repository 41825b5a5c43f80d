"""Camera rig maths: calibration containers, rig YAML, image transform, sensor→key-ego, camera
vectors, frustum → BEV-cell geometry (against analytic and brute-force references), pool-bound
derivation and visibility masks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_ros import geometry as G
from occ_ros.core.config import (NUSCENES_CAMERAS, NUSCENES_POOL_NEED, DepthBins, GridSpec,
                            ImageGeometry, ModelConfig, PoolBounds)
from occ_ros.core.errors import CalibrationError

REPO = Path(__file__).resolve().parents[1]

# optical frame (x right, y down, z forward) → ego (x forward, y left, z up) for a camera looking
# along ego +x: optical z → ego x, optical x → ego −y, optical y → ego −z
R_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def yaw_matrix(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def simple_camera(name: str, yaw_deg: float = 0.0, t=(1.0, 0.0, 1.5), f: float = 1000.0,
                  hw=(900, 1600), c=None) -> G.CameraCalib:
    cx, cy = c if c is not None else ((hw[1] - 1) / 2, (hw[0] - 1) / 2)
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return G.CameraCalib(name, K, G.rigid_transform(yaw_matrix(yaw_deg) @ R_FORWARD, t), hw)


@pytest.fixture(scope='module')
def rig() -> G.Rig:
    return G.nuscenes_rig()


@pytest.fixture(scope='module')
def tiny_cfg() -> ModelConfig:
    return ModelConfig(name='pano-tiny-like', depth=DepthBins(1.0, 45.0, 1.0))


# ------------------------------------------------------------------------------------------------
# calibration containers and the default rig
# ------------------------------------------------------------------------------------------------

def test_nuscenes_rig_layout(rig: G.Rig) -> None:
    assert rig.names == NUSCENES_CAMERAS
    expect_yaw = {'CAM_FRONT_LEFT': 55, 'CAM_FRONT': 0, 'CAM_FRONT_RIGHT': -55,
                  'CAM_BACK_LEFT': 110, 'CAM_BACK': 180, 'CAM_BACK_RIGHT': -110}
    expect_t = {'CAM_FRONT': (1.70, 0.016, 1.51), 'CAM_FRONT_LEFT': (1.52, 0.49, 1.51),
                'CAM_FRONT_RIGHT': (1.55, -0.49, 1.50), 'CAM_BACK_LEFT': (1.04, 0.48, 1.59),
                'CAM_BACK': (0.03, 0.003, 1.58), 'CAM_BACK_RIGHT': (1.01, -0.48, 1.56)}
    expect_f = {'CAM_FRONT': 1266.4, 'CAM_FRONT_LEFT': 1272.6, 'CAM_FRONT_RIGHT': 1260.8,
                'CAM_BACK_LEFT': 1256.7, 'CAM_BACK': 809.2, 'CAM_BACK_RIGHT': 1259.5}
    for cam in rig:
        R, t = cam.sensor2ego[:3, :3], cam.sensor2ego[:3, 3]
        z_axis, y_axis = R[:, 2], R[:, 1]                   # optical forward / down in ego
        yaw = math.degrees(math.atan2(z_axis[1], z_axis[0]))
        diff = (yaw - expect_yaw[cam.name] + 180) % 360 - 180
        assert abs(diff) < 2.0, (cam.name, yaw)
        assert abs(z_axis[2]) < 0.02                        # optical axis ~horizontal
        assert y_axis[2] < -0.99                            # image y points down
        np.testing.assert_allclose(t, expect_t[cam.name], atol=0.01)
        assert cam.K[0, 0] == pytest.approx(expect_f[cam.name], abs=0.1)
        assert cam.K[0, 0] == cam.K[1, 1]
        assert abs(cam.K[0, 2] - 800) < 40 and abs(cam.K[1, 2] - 450) < 60
        assert cam.image_hw == (900, 1600)
    front = rig.camera('CAM_FRONT')
    assert (front.K[0, 2], front.K[1, 2]) == pytest.approx((816.267, 491.507), abs=1e-3)


# nuScenes v1.0-mini `calibrated_sensor.json`, the six camera records of log
# n015-2018-07-24-11-22-45+0800 (scene-0061; sample ca9a282c9e77460f8360f564131a8af5), as the dataset
# publishes them: translation (m, ego), rotation (w, x, y, z), camera_intrinsic fx, cx, cy. Typed
# here from the dataset, not from occ_ros; CAM_BACK_LEFT is record 3bc29be787ea4fc79144c4a46a3c91ca
# (sensor a89643a5de885c6486df2232dc954da2) — the value issue 19 found wrong in the built-in rig.
NUSCENES_MINI_CALIBRATED_SENSOR = {
    'CAM_FRONT': ((1.70079118954, 0.0159456324149, 1.51095763913),
                  (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755),
                  (1266.417203046554, 816.2670197447984, 491.50706579294757)),
    'CAM_FRONT_RIGHT': ((1.5508477543, -0.493404796419, 1.49574800619),
                        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485),
                        (1260.8474446004698, 807.968244525554, 495.3344268742088)),
    'CAM_FRONT_LEFT': ((1.52387798135, 0.494631336551, 1.50932822144),
                       (0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068),
                       (1272.5979470598488, 826.6154927353808, 479.75165386361925)),
    'CAM_BACK': ((0.0283260309358, 0.00345136761476, 1.57910346144),
                 (0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578),
                 (809.2209905677063, 829.2196003259838, 481.77842384512485)),
    'CAM_BACK_LEFT': ((1.03569100218, 0.484795032713, 1.59097014818),
                      (0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753),
                      (1256.7414812095406, 792.1125740759628, 492.7757465151356)),
    'CAM_BACK_RIGHT': ((1.0148780988, -0.480568219723, 1.56239545128),
                       (0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798),
                       (1259.5137405846733, 807.2529053838625, 501.19579884916527)),
}


def test_nuscenes_rig_is_the_published_calibration(rig: G.Rig) -> None:
    """The built-in rig and config/nuscenes_rig.yaml against nuScenes' published calibrated_sensor
    records, made into 4×4 transforms by the official devkit (nutonomy/nuscenes-devkit,
    python-sdk/nuscenes/utils/geometry_utils.py `transform_matrix`, with pyquaternion as the devkit
    does). CAM_BACK_LEFT once held CAM_BACK_RIGHT's translation with y flipped (1.0149, 0.4806,
    1.5624), 3.6 cm off."""
    pytest.importorskip('nuscenes', reason='needs the nuscenes-devkit (scripts/setup.sh installs it)')
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion
    committed = G.load_rig(REPO / 'config' / 'nuscenes_rig.yaml')
    for name, (t, q, (f, cx, cy)) in NUSCENES_MINI_CALIBRATED_SENSOR.items():
        official = transform_matrix(t, Quaternion(q), inverse=False)
        for built in (rig.camera(name), committed.camera(name)):
            assert tuple(built.sensor2ego[:3, 3]) == t, name          # copied, so exactly equal
            np.testing.assert_allclose(built.sensor2ego, official, rtol=0, atol=1e-12, err_msg=name)
            assert (built.K[0, 0], built.K[1, 1], built.K[0, 2], built.K[1, 2]) == (f, f, cx, cy)
    back_left = rig.camera('CAM_BACK_LEFT').sensor2ego[:3, 3]
    np.testing.assert_array_equal(back_left, (1.03569100218, 0.484795032713, 1.59097014818))


def test_nuscenes_rig_scaled_intrinsics(rig: G.Rig) -> None:
    half = G.nuscenes_rig((450, 800))
    for a, b in zip(rig, half):
        assert b.image_hw == (450, 800)
        np.testing.assert_allclose(b.K[:2], a.K[:2] / 2)
        np.testing.assert_array_equal(a.sensor2ego, b.sensor2ego)


def test_calibration_validation() -> None:
    good = simple_camera('A')
    bad_K = good.K.copy()
    bad_K[0, 0] = -5
    with pytest.raises(CalibrationError, match='focal'):
        G.CameraCalib('A', bad_K, good.sensor2ego, (900, 1600))
    nan_K = good.K.copy()
    nan_K[1, 2] = np.nan
    with pytest.raises(CalibrationError, match='NaN'):
        G.CameraCalib('A', nan_K, good.sensor2ego, (900, 1600))
    with pytest.raises(CalibrationError, match='shape'):
        G.CameraCalib('A', np.eye(4), good.sensor2ego, (900, 1600))
    sheared = good.sensor2ego.copy()
    sheared[0, 1] += 0.01
    with pytest.raises(CalibrationError, match='rotation'):
        G.CameraCalib('A', good.K, sheared, (900, 1600))
    mirrored = good.sensor2ego.copy()
    mirrored[:3, 0] *= -1                                      # orthonormal but det = −1
    with pytest.raises(CalibrationError, match='rotation'):
        G.CameraCalib('A', good.K, mirrored, (900, 1600))
    with pytest.raises(CalibrationError, match='image_hw'):
        G.CameraCalib('A', good.K, good.sensor2ego, (0, 1600))
    with pytest.raises(CalibrationError, match='duplicate'):
        G.Rig((good, simple_camera('A', 90)))
    with pytest.raises(CalibrationError, match='no camera'):
        G.Rig((good,)).camera('B')
    assert not good.K.flags.writeable                          # calibration is immutable


# ------------------------------------------------------------------------------------------------
# rig YAML
# ------------------------------------------------------------------------------------------------

def test_committed_default_rig_is_nuscenes_rig(rig: G.Rig) -> None:
    loaded = G.load_rig(REPO / 'config' / 'nuscenes_rig.yaml')
    # 1e-12, not 0: nuscenes_rig() computes the matrices from quaternions, and numpy's SIMD paths
    # differ by an ulp between releases and CPUs (numpy 2.4.6 here: 6.7e-16); the YAML round trip
    # itself is exact (test_rig_yaml_round_trip)
    assert loaded.same_as(rig, atol=1e-12)


def test_rig_yaml_round_trip(tmp_path: Path) -> None:
    rig = G.Rig((simple_camera('L', 30.0, (0.1, 0.2, 0.3), 777.7, (480, 640)),
                 simple_camera('R', -30.0 + 1e-7, (0.1, -0.2, 0.3), 1e3 / 3, (720, 1280))))
    path = tmp_path / 'rig.yaml'
    G.save_rig(rig, path, comment='two cameras\nfor a test')
    text = path.read_text()
    assert '# two cameras' in text and '# for a test' in text
    back = G.load_rig(path)
    assert back.same_as(rig) and back.names == ('L', 'R')


@pytest.mark.parametrize('edit, match', [
    (lambda d: d['cameras'][1].pop('K'), r"cameras\[1\]: missing field\(s\) \['K'\]"),
    (lambda d: d['cameras'][0].__setitem__('K', [[1, 0, 0], [0, 1, 0]]),
     r'cameras\[0\] \(CAM_FRONT_LEFT\)\.K: expected shape \(3, 3\)'),
    (lambda d: d['cameras'][2].__setitem__('image_hw', [900]),
     r'cameras\[2\] \(CAM_FRONT_RIGHT\)\.image_hw'),
    (lambda d: d['cameras'][3]['sensor2ego'][0].__setitem__(0, 2.0),
     r'cameras\[3\] \(CAM_BACK_LEFT\).*rotation'),
    (lambda d: d['cameras'][4]['K'][0].__setitem__(0, 'abc'),
     r'cameras\[4\] \(CAM_BACK\)\.K'),
    (lambda d: d.__setitem__('cameras', []), 'non-empty list'),
    (lambda d: d.__setitem__('version', 99), 'version 99'),
])
def test_rig_yaml_errors_name_file_and_field(tmp_path: Path, edit, match: str) -> None:
    import yaml
    doc = yaml.safe_load((REPO / 'config' / 'nuscenes_rig.yaml').read_text())
    edit(doc)
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CalibrationError, match=match) as info:
        G.load_rig(path)
    assert str(path) in str(info.value)


def test_rig_yaml_unreadable(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match='cannot read'):
        G.load_rig(tmp_path / 'missing.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('cameras: [\n  - name: A\n  K: ]]')
    with pytest.raises(CalibrationError, match='not valid YAML'):
        G.load_rig(bad)


# ------------------------------------------------------------------------------------------------
# per-frame transforms and camera vectors
# ------------------------------------------------------------------------------------------------

def test_image_aug_matrices() -> None:
    post_rot, post_tran = G.image_aug_matrices(ImageGeometry())
    np.testing.assert_allclose(post_rot, np.diag([0.44, 0.44, 1.0]), atol=1e-15)
    np.testing.assert_array_equal(post_tran, [0.0, -140.0, 0.0])
    g = ImageGeometry().with_source((1080, 1920))            # a 1080p camera
    post_rot, post_tran = G.image_aug_matrices(g)
    assert post_rot[0, 0] == post_rot[1, 1] == pytest.approx(704 / 1920)
    assert g.resized_hw == (396, 704) and post_tran[1] == -140.0
    # a source pixel at the bottom-right corner lands at the bottom-right of the input
    u, v = 1919.0, 1079.0
    uv = post_rot[:2, :2] @ (u, v) + post_tran[:2]
    assert uv == pytest.approx((703.63, 255.63), abs=0.01)


def test_resized_width_is_exact_for_awkward_sources() -> None:
    # float int(W · (704/W)) can give 703; the geometry must always produce the input width
    for w in (267, 276, 1919, 2047, 3000):
        g = ImageGeometry(src_hw=(w // 2 + 300, w), input_hw=(256, 704))
        assert g.resized_hw[1] == 704


def test_sensor2keyego_conventions(rig: G.Rig) -> None:
    s2e = rig.sensor2ego()
    np.testing.assert_array_equal(G.sensor2keyego(s2e), s2e)
    same_pose = np.repeat(G.rigid_transform(yaw_matrix(33), (100, -20, 3))[None], 6, 0)
    np.testing.assert_allclose(G.sensor2keyego(s2e, same_pose), s2e, atol=1e-12)
    # cameras triggered at slightly different instants while the car drives forward and turns
    rng = np.random.default_rng(3)
    e2g = np.stack([G.rigid_transform(yaw_matrix(10 + 0.3 * i), (500 + 0.6 * i, 200, 0.1))
                    for i in range(6)])
    got = G.sensor2keyego(s2e, e2g)
    assert got.dtype == np.float64
    for i in range(6):
        p_cam = np.append(rng.normal(size=3) * 10, 1.0)
        p_global = e2g[i] @ s2e[i] @ p_cam                     # where the camera saw it
        p_key = np.linalg.solve(e2g[0], p_global)              # in view 0's ego frame
        np.testing.assert_allclose(got[i] @ p_cam, p_key, atol=1e-9)
    np.testing.assert_allclose(got[0], s2e[0], atol=1e-12)     # view 0 is the key frame
    with pytest.raises(CalibrationError):
        G.sensor2keyego(s2e, e2g[:5])


def test_camera_vector_layout() -> None:
    n = 2
    K = np.stack([np.array([[11.0, 0, 13], [0, 12, 14], [0, 0, 1]])] * n)
    post_rot = np.stack([np.array([[21.0, 22, 0], [23, 24, 0], [0, 0, 1]])] * n)
    post_tran = np.stack([np.array([25.0, 26, 0])] * n)
    s2k = np.stack([np.arange(16, dtype=float).reshape(4, 4) + 100 * (i + 1) for i in range(n)])
    bda = np.array([[31.0, 32, 0], [33, 34, 0], [0, 0, 35]])
    vec = G.camera_vectors(K, post_rot, post_tran, s2k, bda)
    assert vec.shape == (n, G.CAMERA_VECTOR_SIZE) and vec.dtype == np.float32
    head = [11, 12, 13, 14, 21, 22, 25, 23, 24, 26, 31, 32, 33, 34, 35]
    for i in range(n):
        np.testing.assert_array_equal(vec[i, :15], head)
        np.testing.assert_array_equal(vec[i, 15:], s2k[i, :3, :].reshape(-1))
    plain = G.camera_vectors(K, post_rot, post_tran, s2k)
    np.testing.assert_array_equal(plain[:, 10:15], [[1, 0, 0, 1, 1]] * n)   # bda = I at test


# ------------------------------------------------------------------------------------------------
# frustum → cells
# ------------------------------------------------------------------------------------------------

def test_frustum_points_match_analytic_camera(tiny_cfg: ModelConfig) -> None:
    """A forward camera at (1, 0, 1.5): every frustum point from the closed-form ray equation."""
    f, hw, t = 1000.0, (900, 1600), (1.0, 0.0, 1.5)
    cam = simple_camera('F', 0.0, t, f, hw, c=(800.0, 450.0))
    geom = tiny_cfg.image
    post_rot, post_tran = G.image_aug_matrices(geom)
    pts = G.frustum_points_ego(tiny_cfg, cam.K[None], post_rot[None], post_tran[None],
                               cam.sensor2ego[None])[0]                  # (D, fH, fW, 3)
    (h_in, w_in), (fh, fw) = geom.input_hw, tiny_cfg.feature_hw
    s, top = geom.scale, geom.crop_top
    d = 1.0 + np.arange(tiny_cfg.depth.n)
    u_src = np.linspace(0, w_in - 1, fw) / s
    v_src = (np.linspace(0, h_in - 1, fh) + top) / s
    dd, vv, uu = np.meshgrid(d, v_src, u_src, indexing='ij')
    expect = np.stack([dd + t[0], -(uu - 800.0) * dd / f + t[1], -(vv - 450.0) * dd / f + t[2]],
                      -1)
    np.testing.assert_allclose(pts, expect, atol=1e-9)


def test_point_projects_back_and_lands_in_its_cell(rig: G.Rig, tiny_cfg: ModelConfig) -> None:
    """Synthetic ground truth: a 3-D point put on a frustum sample of each nuScenes camera."""
    geoms, post_rot, post_tran = G.image_transforms(tiny_cfg, rig)
    s2k = rig.sensor2ego()
    pts = G.frustum_points_ego(tiny_cfg, rig.intrinsics(), post_rot, post_tran, s2k)
    ranks = G.voxelize_frustum(pts, tiny_cfg.grid.bev_pillar())
    depth_to_cell = dict(zip(ranks.ranks_depth.tolist(), ranks.ranks_bev.tolist()))
    D, (fh, fw) = tiny_cfg.depth.n, tiny_cfg.feature_hw
    (h_in, w_in), s, top = tiny_cfg.image.input_hw, tiny_cfg.image.scale, tiny_cfg.image.crop_top
    for n, cam in enumerate(rig):
        for (k, i, j) in [(9, 15, 0), (4, 8, 21), (19, 12, 43)]:
            depth = 1.0 + k
            u_src, v_src = j * (w_in - 1) / (fw - 1) / s, (i * (h_in - 1) / (fh - 1) + top) / s
            # the ground-truth point: along the pixel's ray at optical depth `depth`
            ray = np.linalg.solve(cam.K, [u_src, v_src, 1.0]) * depth
            p_ego = cam.sensor2ego[:3, :3] @ ray + cam.sensor2ego[:3, 3]
            np.testing.assert_allclose(pts[n, k, i, j], p_ego, atol=1e-9)
            # project it back: pixel and depth
            p_cam = cam.sensor2ego[:3, :3].T @ (p_ego - cam.sensor2ego[:3, 3])
            uvw = cam.K @ p_cam
            assert p_cam[2] == pytest.approx(depth)
            assert uvw[:2] / uvw[2] == pytest.approx((u_src, v_src), abs=1e-6)
            # its cell, by truncation toward zero of the cell coordinates
            cx, cy, cz = (p_ego - np.array([-40.0, -40.0, -1.0])) / np.array([0.4, 0.4, 6.4])
            flat = ((n * D + k) * fh + i) * fw + j
            if 0 <= int(cx) < 200 and 0 <= int(cy) < 200 and int(cz) == 0:
                assert depth_to_cell[flat] == int(cy) * 200 + int(cx)
            else:
                assert flat not in depth_to_cell


def test_truncation_toward_zero_quirk() -> None:
    """Points within one cell below the lower bound land in cell 0 (official `.long()`)."""
    grid = GridSpec().bev_pillar()
    xs = [-40.39, -40.41, 39.99, 40.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    zs = [0.0, 0.0, 0.0, 0.0, -1.5, -7.3, -7.5, 5.39, 5.4]
    pts = np.array([[x, 0.1, z] for x, z in zip(xs, zs)]).reshape(1, 1, 1, len(xs), 3)
    r = G.voxelize_frustum(pts, grid)
    kept = dict(zip(r.ranks_depth.tolist(), r.ranks_bev.tolist()))
    y_row = int((0.1 + 40) / 0.4) * 200
    # x −40.39 → −0.975 cells → 0 (kept); −40.41 → −1.03 → dropped; 39.99 → 199; 40.0 → dropped;
    # z −1.5 and −7.3 → (−1, 0) cells → 0 (kept); −7.5 → dropped; 5.39 kept; 5.4 dropped
    assert kept == {0: y_row + 0, 2: y_row + 199, 4: y_row + 100, 5: y_row + 100,
                    7: y_row + 100}
    with pytest.raises(CalibrationError, match='one z cell'):
        G.voxelize_frustum(pts, GridSpec())


def test_ranks_match_brute_force_loop(rig: G.Rig) -> None:
    """Ranks from an independent per-point loop in plain Python (small frustum, all cameras)."""
    cfg = ModelConfig(name='small', depth=DepthBins(1.0, 45.0, 11.0),
                      image=ImageGeometry(input_hw=(64, 176)))
    ranks = G.frustum_ranks(cfg, rig)
    got = sorted(zip(ranks.ranks_depth.tolist(), ranks.ranks_feat.tolist(),
                     ranks.ranks_bev.tolist()))
    (h_in, w_in), (fh, fw), D = cfg.image.input_hw, cfg.feature_hw, cfg.depth.n
    s, top = cfg.image.scale, cfg.image.crop_top
    expect = []
    for n, cam in enumerate(rig):
        K, T = cam.K.tolist(), cam.sensor2ego.tolist()
        fx, fy, cx, cy = K[0][0], K[1][1], K[0][2], K[1][2]
        for k in range(D):
            d = 1.0 + 11.0 * k
            for i in range(fh):
                for j in range(fw):
                    u = (j * (w_in - 1) / (fw - 1)) / s
                    v = (i * (h_in - 1) / (fh - 1) + top) / s
                    ray = ((u - cx) / fx * d, (v - cy) / fy * d, d)
                    p = [sum(T[r][c] * ray[c] for c in range(3)) + T[r][3] for r in range(3)]
                    ix, iy = int((p[0] + 40) / 0.4), int((p[1] + 40) / 0.4)
                    iz = int((p[2] + 1) / 6.4)
                    if 0 <= ix < 200 and 0 <= iy < 200 and iz == 0:
                        expect.append((((n * D + k) * fh + i) * fw + j, (n * fh + i) * fw + j,
                                       iy * 200 + ix))
    assert got == sorted(expect)
    assert len(got) > 100


def test_other_source_resolution_gives_same_cells(rig: G.Rig, tiny_cfg: ModelConfig) -> None:
    """A camera delivering 2× images (K doubled) gives the same network input, so same cells."""
    cams = list(rig)
    cams[1] = cams[1].scaled_to((1800, 3200))
    big = G.Rig(tuple(cams))
    a, b = G.frustum_ranks(tiny_cfg, rig), G.frustum_ranks(tiny_cfg, big)
    np.testing.assert_array_equal(a.ranks_depth, b.ranks_depth)
    np.testing.assert_array_equal(a.ranks_bev, b.ranks_bev)
    geo = G.compute_bev_geometry(tiny_cfg, big, fast_path=False)
    assert geo.image_geometry[1].src_hw == (1800, 3200)
    assert geo.image_geometry[0].src_hw == (900, 1600)
    assert geo.post_rot[1, 0, 0] == pytest.approx(0.22)
    assert geo.cam_vec[0, 1, 0] == pytest.approx(2 * rig.camera('CAM_FRONT').K[0, 0])


def test_float32_and_float64_ranks_nearly_agree(rig: G.Rig) -> None:
    """The official float32 evaluation moves only points within rounding of a cell boundary.

    Measured on the nuScenes rig, 88 bins: 3 of 301,989 kept points differ.
    """
    cfg = ModelConfig(name='d88', depth=DepthBins(1.0, 45.0, 0.5))
    a = G.frustum_ranks(cfg, rig, precision='float64')
    b = G.frustum_ranks(cfg, rig, precision='float32')
    da, db = dict(zip(a.ranks_depth.tolist(), a.ranks_bev.tolist())), dict(
        zip(b.ranks_depth.tolist(), b.ranks_bev.tolist()))
    differ = sum(1 for key in set(da) | set(db) if da.get(key) != db.get(key))
    assert 0 <= differ <= 30 and len(da) > 290_000
    with pytest.raises(CalibrationError, match='precision'):
        G.frustum_ranks(cfg, rig, precision='float16')


# ------------------------------------------------------------------------------------------------
# BevGeometry and pool bounds
# ------------------------------------------------------------------------------------------------

def test_compute_bev_geometry(rig: G.Rig, tiny_cfg: ModelConfig) -> None:
    geo = G.compute_bev_geometry(tiny_cfg, rig)
    assert geo.cam_vec.shape == (1, 6, 27) and geo.cam_vec.dtype == torch.float32
    assert geo.camera_names == NUSCENES_CAMERAS
    idx = geo.pool_index
    assert idx.depth_idx.shape == (tiny_cfg.pool_bounds.total_slots,)
    assert idx.cell_row.shape == (200 * 200,) and idx.fast is not None
    assert geo.required_capacities == NUSCENES_POOL_NEED[(44, 16, 44)] + (0,)
    assert idx.num_points == 152_112
    np.testing.assert_allclose(geo.cam_vec[0].numpy(), G.camera_vectors(
        rig.intrinsics(), geo.post_rot, geo.post_tran, rig.sensor2ego()), rtol=0, atol=0)
    moved = geo.to('cpu')
    assert moved.device.type == 'cpu' and moved.pool_index.fast is not None
    # camera order follows the model, whatever the rig order
    shuffled = G.Rig(tuple(reversed(rig.cameras)))
    geo2 = G.compute_bev_geometry(tiny_cfg, shuffled, fast_path=False)
    assert torch.equal(geo2.cam_vec, geo.cam_vec) and torch.equal(geo2.pool_index.cell_row,
                                                                  idx.cell_row)
    with pytest.raises(CalibrationError, match='expects cameras'):
        G.compute_bev_geometry(tiny_cfg, rig.without(['CAM_BACK']))


def test_bounds_overflow_says_how_to_rebuild(rig: G.Rig, tiny_cfg: ModelConfig) -> None:
    small = tiny_cfg.with_(
        pool_bounds=PoolBounds((500, 500, 1000, 2000, 5000, 1000, 300, 100, 30)))
    with pytest.raises(CalibrationError) as info:
        G.compute_bev_geometry(small, rig)
    msg = str(info.value)
    assert 'bucket 4' in msg and 'PoolBounds' in msg and 'rebuild' in msg
    assert 'pano-tiny-like' in msg and 'need 7541 places' in msg
    # the suggested bounds fit
    suggested = eval(msg.split('ModelConfig.pool_bounds=')[1].split(', and')[0])
    G.compute_bev_geometry(tiny_cfg.with_(pool_bounds=suggested), rig, fast_path=False)
    few = tiny_cfg.with_(pool_bounds=PoolBounds((10000,) * 7))       # at most 64 points per cell
    with pytest.raises(CalibrationError, match=r'receives 240 frustum points.*add 2 bucket'):
        G.compute_bev_geometry(few, rig)


@pytest.mark.parametrize('name, depth, hw', [
    ('pano-tiny', DepthBins(1.0, 45.0, 1.0), (256, 704)),
    ('pano-depth', DepthBins(1.0, 45.0, 0.5), (256, 704)),
    ('half-res', DepthBins(1.0, 45.0, 1.0), (128, 352)),
    ('coarse-bins', DepthBins(1.0, 45.0, 2.0), (192, 512)),     # not in the table: dominated
    ('off-table', DepthBins(1.0, 45.0, 1.0), (256, 512)),
    ('lite-like', DepthBins(1.0, 45.0, 1.0), (112, 320)),
])
def test_derived_bounds_fit_the_nuscenes_rig(rig: G.Rig, name, depth, hw) -> None:
    cfg = ModelConfig(name=name, depth=depth, image=ImageGeometry(input_hw=hw))
    assert cfg.pool_bounds.derived
    geo = G.compute_bev_geometry(cfg, rig, fast_path=False)
    slots = cfg.pool_bounds.total_slots
    assert slots < 3.5 * geo.pool_index.num_points               # padding stays moderate


def test_derived_bounds_follow_config_changes() -> None:
    cfg = ModelConfig(name='x', depth=DepthBins(1.0, 45.0, 1.0))
    assert cfg.pool_bounds == PoolBounds.for_frustum(6, 44, (16, 44))
    assert cfg.pool_bounds.capacities == PoolBounds().capacities     # the documented default
    d88 = cfg.with_(depth=DepthBins(1.0, 45.0, 0.5))
    assert d88.pool_bounds == PoolBounds.for_frustum(6, 88, (16, 44))
    assert d88.pool_bounds.total_slots > cfg.pool_bounds.total_slots
    explicit = cfg.with_(pool_bounds=PoolBounds((1, 2, 3)))
    assert explicit.pool_bounds.capacities == (1, 2, 3)
    assert explicit.with_(depth=DepthBins(1.0, 45.0, 0.5)).pool_bounds.capacities == (1, 2, 3)
    huge = PoolBounds.for_frustum(8, 100, (64, 176))                 # beyond the table: scaled
    assert huge.max_points_per_cell >= 4 * 1024


def test_pool_need_table_is_monotone_under_dominance() -> None:
    """The rule behind `PoolBounds.for_frustum`: a frustum at least as large on every axis
    never needs fewer places in buckets k and up, for any k."""
    def tails(need):
        return [sum(need[k:]) for k in range(12)]
    keys = list(NUSCENES_POOL_NEED)
    pairs = 0
    for a in keys:
        for b in keys:
            if a != b and all(x >= y for x, y in zip(a, b)):
                pairs += 1
                ta, tb = tails(NUSCENES_POOL_NEED[a]), tails(NUSCENES_POOL_NEED[b])
                assert all(x >= y for x, y in zip(ta, tb)), (a, b)
    assert pairs > 100


def test_suggest_pool_bounds_for_custom_rig(tiny_cfg: ModelConfig) -> None:
    # a narrow-FOV rig concentrates points: it overflows the default bounds, the suggestion fits
    cams = tuple(simple_camera(n, yaw, (1.0, 0.0, 1.5), 2500.0) for n, yaw in
                 zip(NUSCENES_CAMERAS, (60, 0, -60, 120, 180, -120)))
    narrow = G.Rig(cams)
    bounds = G.suggest_pool_bounds(tiny_cfg, narrow)
    geo = G.compute_bev_geometry(tiny_cfg.with_(pool_bounds=bounds), narrow, fast_path=False)
    need = geo.required_capacities
    assert all(sum(bounds.capacities[k:]) >= 1.3 * sum(need[k:]) - 10 for k in range(len(need)))


# ------------------------------------------------------------------------------------------------
# visibility
# ------------------------------------------------------------------------------------------------

def _voxel_index(grid: GridSpec, x: float, y: float, z: float) -> tuple[int, int, int]:
    return tuple(int((c - lo) / s) for c, lo, s in zip((x, y, z), grid.lower, grid.voxel))


def test_frustum_masks(rig: G.Rig) -> None:
    grid, geom = GridSpec(), ImageGeometry()
    masks = G.camera_frustum_masks(grid, rig, geom, max_depth=45.0)
    assert masks.shape == (6,) + grid.shape and masks.dtype == bool
    front = NUSCENES_CAMERAS.index('CAM_FRONT')
    back = NUSCENES_CAMERAS.index('CAM_BACK')
    ahead = _voxel_index(grid, 20.0, 0.1, 0.3)
    assert masks[(slice(None),) + ahead].tolist() == [i == front for i in range(6)]
    behind = _voxel_index(grid, -20.0, 0.1, 0.3)
    assert masks[(slice(None),) + behind].tolist() == [i == back for i in range(6)]
    high = _voxel_index(grid, 5.0, 0.1, 5.0)                 # above the cropped field of view
    assert not masks[(slice(None),) + high].any()
    short = G.camera_frustum_masks(grid, rig, geom, max_depth=15.0)
    assert not short[(slice(None),) + ahead].any()            # beyond max depth
    union = masks.any(0)
    assert 0.2 < union.mean() < 0.9
    alive = G.camera_frustum_masks(grid, rig.without(['CAM_FRONT']), geom, 45.0)
    assert alive.shape[0] == 5 and not alive.any(0)[ahead]
    np.testing.assert_array_equal(alive, np.delete(masks, front, axis=0))
    # a ModelConfig supplies grid, image geometry and (by default) the depth range
    cfg = ModelConfig(name='m')
    np.testing.assert_array_equal(G.camera_frustum_masks(cfg, rig), masks)
    np.testing.assert_array_equal(G.camera_frustum_masks(cfg, rig, max_depth=15.0), short)


def test_frustum_masks_match_per_voxel_projection(rig: G.Rig) -> None:
    grid, geom = GridSpec(), ImageGeometry()
    masks = G.camera_frustum_masks(grid, rig, geom, max_depth=30.0)
    rng = np.random.default_rng(0)
    picks = np.stack([rng.integers(0, n, 400) for n in grid.shape], 1)
    # bias half the picks towards the visible set so both answers are exercised
    seen = np.argwhere(masks.any(0))
    picks[:200] = seen[rng.integers(0, len(seen), 200)]
    for ix, iy, iz in picks:
        p = np.array([grid.x.lo + (ix + 0.5) * 0.4, grid.y.lo + (iy + 0.5) * 0.4,
                      grid.z.lo + (iz + 0.5) * 0.4])
        for n, cam in enumerate(rig):
            q = cam.sensor2ego[:3, :3].T @ (p - cam.sensor2ego[:3, 3])
            expect = False
            if 0 < q[2] <= 30.0:
                u, v = (cam.K @ q)[:2] / q[2]
                u_in, v_in = u * geom.scale, v * geom.scale - geom.crop_top
                expect = -0.5 <= u_in < 703.5 and -0.5 <= v_in < 255.5
            assert masks[n, ix, iy, iz] == expect
