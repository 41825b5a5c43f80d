"""Synthetic world, renderer and ground truth: determinism, analytic geometry, brute-force references."""
from __future__ import annotations

import math

import numpy as np
import pytest

from occ_ros.bag.groundtruth import GroundTruthMaker
from occ_ros.bag.render import Renderer
from occ_ros.bag.synth import SyntheticSequence, frame_stamps
from occ_ros.bag.boxes import BoxSet
from occ_ros.bag.world import World
from occ_ros.core.classes import FREE, OCC_INDEX, PALETTE, THING_CLASSES
from occ_ros.core.config import GridSpec
from occ_ros.geometry import nuscenes_rig

HW = (225, 400)
CAR = OCC_INDEX['car']
MANMADE = OCC_INDEX['manmade']
DRIVEABLE = OCC_INDEX['driveable_surface']
GRID = GridSpec()


@pytest.fixture(scope='module')
def rig():
    return nuscenes_rig(HW)


@pytest.fixture(scope='module')
def seq(rig):
    return SyntheticSequence(3, 2.0, 12.0, rig, HW, classes=True)


@pytest.fixture(scope='module')
def frame(seq):
    return seq.frame(6)


def _box(center, size, yaw, cls, colour=(200, 200, 200)):
    return BoxSet(np.array([center], float), np.array([size], float), np.array([yaw], float),
                  np.array([cls], np.uint8), np.array([0], np.uint16), np.array([colour], np.float32),
                  np.array([0], np.uint8))


def _ego_to_world(world, t, p):
    T = world.ego_pose(t)
    return T[:3, :3] @ np.asarray(p, float) + T[:3, 3]


def _controlled_world(boxes_ego, t=0.0):
    """An empty driveable plane holding `boxes_ego` = [(centre_ego, size, yaw_ego, cls)]."""
    w = World(5, 2.0)
    T = w.ego_pose(t)
    yaw0 = math.atan2(T[1, 0], T[0, 0])
    sets = [_box(_ego_to_world(w, t, c), s, yaw0 + y, k) for c, s, y, k in boxes_ego]
    w.replace_content(BoxSet.concat(sets), [], ground_class=DRIVEABLE)
    return w


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_differs(rig, frame):
    again = SyntheticSequence(3, 2.0, 12.0, rig, HW, classes=True).frame(6)
    for a, b in zip(frame.views, again.views):
        assert a.image.tobytes() == b.image.tobytes()
        assert a.depth.tobytes() == b.depth.tobytes()
    assert frame.gt.semantics.tobytes() == again.gt.semantics.tobytes()
    assert frame.gt.instances.tobytes() == again.gt.instances.tobytes()
    assert frame.gt.mask_camera.tobytes() == again.gt.mask_camera.tobytes()
    np.testing.assert_array_equal(frame.ego_pose, again.ego_pose)
    other = SyntheticSequence(4, 2.0, 12.0, rig, HW).frame(6)
    assert other.views[1].image.tobytes() != frame.views[1].image.tobytes()
    assert other.gt.semantics.tobytes() != frame.gt.semantics.tobytes()


def test_frame_stamps_and_odometry_are_exact():
    st = frame_stamps(1.0, 12.0, 1000)
    assert len(st) == 12 and st[0] == 1000 and st[1] == 1000 + 83333333 and st[-1] == 1000 + 916666667
    w = World(9, 5.0)
    # velocity is the time derivative of the pose (central differences)
    for t in (0.5, 2.0, 4.0):
        dt = 1e-4
        a, b = w.ego_pose(t - dt), w.ego_pose(t + dt)
        v_num = np.hypot(*(b[:2, 3] - a[:2, 3])) / (2 * dt)
        yaw_num = (math.atan2(b[1, 0], b[0, 0]) - math.atan2(a[1, 0], a[0, 0])) / (2 * dt)
        v, w_rate = w.ego_velocity(t)
        assert v == pytest.approx(v_num, rel=1e-5)
        assert w_rate == pytest.approx(yaw_num, abs=1e-6)
        assert 3.0 < v < 15.0


# ------------------------------------------------------------------------------------------------
# ground truth
# ------------------------------------------------------------------------------------------------

def test_gt_layout_and_ego_space_free(frame):
    gt = frame.gt
    assert gt.semantics.shape == GRID.shape and gt.semantics.dtype == np.uint8
    assert gt.instances.dtype == np.uint16 and gt.mask_camera.dtype == bool
    # the ego (rear axle at the origin, ≈ 4.1 × 1.8 m) is free above the ground layer
    xc = GRID.x.lo + (np.arange(GRID.nx) + 0.5) * GRID.x.step
    yc = GRID.y.lo + (np.arange(GRID.ny) + 0.5) * GRID.y.step
    ix = np.flatnonzero((xc > -0.9) & (xc < 3.3))
    iy = np.flatnonzero(np.abs(yc) < 0.9)
    k_ground = int(math.floor((0 - GRID.z.lo) / GRID.z.step))
    assert k_ground == 2
    ego = gt.semantics[np.ix_(ix, iy, np.arange(k_ground + 1, GRID.nz))]
    assert (ego == FREE).all()
    # the ground layer under the ego is the ego's lane; below the ground everything is free
    assert (gt.semantics[np.ix_(ix, iy, [k_ground])] == DRIVEABLE).all()
    assert (gt.semantics[:, :, :k_ground] == FREE).all()
    # things and only things carry instance ids; ids are consistent with the table
    thing = np.isin(gt.semantics, list(THING_CLASSES))
    assert ((gt.instances > 0) == thing).all()
    counts = np.bincount(gt.instances.ravel())
    for info in gt.instance_table:
        assert info.voxel_count == counts[info.id] > 0
        assert (gt.semantics[gt.instances == info.id] == info.label).all()
    assert {i.id for i in gt.instance_table} == set(np.flatnonzero(counts[1:]) + 1)


def test_voxelisation_matches_brute_force_point_in_box(seq, frame):
    """Every voxel centre inside a box carries that box's class (things over stuff)."""
    gt = frame.gt
    pose = frame.ego_pose
    boxes = seq.world.boxes_at(frame.t, pose[:2, 3], 70.0).transformed(np.linalg.inv(pose))
    xc = GRID.x.lo + (np.arange(GRID.nx) + 0.5) * GRID.x.step
    yc = GRID.y.lo + (np.arange(GRID.ny) + 0.5) * GRID.y.step
    zc = GRID.z.lo + (np.arange(GRID.nz) + 0.5) * GRID.z.step
    X, Y, Z = np.meshgrid(xc, yc, zc, indexing='ij')
    ref = np.full(GRID.shape, FREE, np.uint8)
    ref_inst = np.zeros(GRID.shape, np.uint16)
    k_ground = 2
    ref[:, :, k_ground] = gt.semantics[:, :, k_ground]       # ground classes checked elsewhere
    for b in np.argsort(boxes.inst > 0, kind='stable'):
        c, s = math.cos(boxes.yaw[b]), math.sin(boxes.yaw[b])
        dx, dy = X - boxes.center[b, 0], Y - boxes.center[b, 1]
        lx, ly = dx * c + dy * s, -dx * s + dy * c
        L, W, H = boxes.size[b]
        inside = ((np.abs(lx) <= L / 2 + 1e-6) & (np.abs(ly) <= W / 2 + 1e-6)
                  & (np.abs(Z - boxes.center[b, 2]) <= H / 2 + 1e-6))
        if not inside.any():
            # documented rule: a box holding no voxel centre claims the column under its centre
            i = math.floor((boxes.center[b, 0] - GRID.x.lo) / GRID.x.step)
            j = math.floor((boxes.center[b, 1] - GRID.y.lo) / GRID.y.step)
            ka = max(0, math.floor((boxes.center[b, 2] - H / 2 - GRID.z.lo) / GRID.z.step))
            kb = min(GRID.nz - 1, math.floor((boxes.center[b, 2] + H / 2 - GRID.z.lo) / GRID.z.step - 1e-6))
            if not (0 <= i < GRID.nx and 0 <= j < GRID.ny) or ka > kb:
                continue
            inside = np.zeros(GRID.shape, bool)
            inside[i, j, ka:kb + 1] = True
        ref[inside] = boxes.cls[b]
        ref_inst[inside] = boxes.inst[b]
    np.testing.assert_array_equal(ref, gt.semantics)
    np.testing.assert_array_equal(ref_inst, gt.instances)
    assert (gt.semantics[:, :, 3:] != FREE).sum() > 1000       # a populated scene


def test_car_voxels_carry_class_and_instance():
    w = _controlled_world([])
    car = w.make_thing(CAR, (4.6, 1.9, 1.5), *_ego_to_world(w, 0.0, (12.0, 3.0, 0))[:2],
                       yaw=0.3 + math.atan2(w.ego_pose(0)[1, 0], w.ego_pose(0)[0, 0]))
    w.replace_content(BoxSet.empty(), [car], ground_class=DRIVEABLE)
    gt = GroundTruthMaker(w, nuscenes_rig(HW))(0.0)
    ids = gt.instances[gt.instances > 0]
    assert set(ids.tolist()) == {car.instance_id}
    assert (gt.semantics[gt.instances == car.instance_id] == CAR).all()
    # footprint 4.6 × 1.9 m = 54.6 voxel columns of 0.16 m², 0–1.5 m → layers 2..5 (centres 0, .4, .8, 1.2)
    n = int((gt.instances == car.instance_id).sum())
    assert 45 * 4 <= n <= 65 * 4
    centre_vox = (int((12.0 + 40) / 0.4), int((3.0 + 40) / 0.4), 4)
    assert gt.instances[centre_vox] == car.instance_id
    (info,) = gt.instance_table
    assert info.label == CAR and info.voxel_count == n
    assert np.allclose(info.center, (12.0, 3.0, 0.75), atol=1e-6)
    # free above the car and above the ground elsewhere
    assert (gt.semantics[:, :, 6:] == FREE).all()
    assert ((gt.semantics[:, :, 3:] != FREE) == (gt.instances[:, :, 3:] > 0)).all()


def test_mask_camera_in_front_observed_behind_building_not():
    w = _controlled_world([((20.0, 0.0, 5.0), (10.0, 20.0, 10.0), 0.0, MANMADE)])
    rig = nuscenes_rig(HW)
    gt = GroundTruthMaker(w, rig)(0.0)

    def vox(x, y, z):
        return (int(math.floor((x + 40) / 0.4)), int(math.floor((y + 40) / 0.4)), int(math.floor((z + 1) / 0.4)))
    m, sem = gt.mask_camera, gt.semantics
    # 2 m along every camera's optical axis: observed and free
    for cam in rig:
        p = cam.sensor2ego[:3, :3] @ np.array([0, 0, 2.0]) + cam.sensor2ego[:3, 3]
        assert m[vox(*p)], cam.name
        assert sem[vox(*p)] == FREE
    assert m[vox(8.0, 0.0, 1.0)] and sem[vox(8.0, 0.0, 1.0)] == FREE
    assert m[vox(15.1, 0.0, 1.0)] and sem[vox(15.1, 0.0, 1.0)] == MANMADE     # the facade voxel
    assert not m[vox(18.0, 0.0, 1.0)]                                            # inside the building
    for x in (26.0, 30.0, 36.0):                                                 # behind it
        assert not m[vox(x, 0.0, 1.0)] and sem[vox(x, 0.0, 1.0)] == FREE
    # the ground in front of the ego is observed, the layer under it never
    assert m[vox(8.0, 2.0, 0.0)] and sem[vox(8.0, 2.0, 0.0)] == DRIVEABLE
    assert not m[:, :, :2].any()
    # beside the building (not shadowed) the far ground is observed
    assert m[vox(30.0, 25.0, 0.0)]


def _dda(origin, direction, occupied, max_range):
    """Voxels (grid index triples) a ray traverses up to and including the first occupied one."""
    lower = np.array(GRID.lower)
    vs = np.array(GRID.voxel)
    shape = np.array(GRID.shape)
    p = (origin - lower) / vs
    d = direction / np.linalg.norm(direction)
    dv = d / vs
    idx = np.floor(p).astype(int)
    step = np.where(dv > 0, 1, -1)
    with np.errstate(divide='ignore'):
        t_max = np.where(dv != 0, ((idx + (step > 0)) - p) / dv, np.inf)
        t_delta = np.where(dv != 0, np.abs(1 / dv), np.inf)
    out, t = [], 0.0
    while t <= max_range:
        if np.any(idx < 0) or np.any(idx >= shape):
            break
        out.append((tuple(idx), t))
        if occupied[tuple(idx)]:
            break
        a = int(np.argmin(t_max))
        t = t_max[a]
        idx[a] += step[a]
        t_max[a] += t_delta[a]
    return out


def test_mask_camera_agrees_with_brute_force_ray_traversal(rig, frame):
    """Voxels traversed (1–40 m) by random camera rays, up to the first occupied one, are observed."""
    occupied = frame.gt.semantics != FREE
    mask = frame.gt.mask_camera
    rng = np.random.default_rng(0)
    hits = total = 0
    for cam in rig:
        H, W = cam.image_hw
        Kinv = np.linalg.inv(cam.K)
        R, t = cam.sensor2ego[:3, :3], cam.sensor2ego[:3, 3]
        for _ in range(60):
            u, v = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
            d = R @ (Kinv @ np.array([u, v, 1.0]))
            for ijk, tr in _dda(t, d, occupied, 40.0):
                if tr < 1.0:
                    continue
                total += 1
                hits += bool(mask[ijk])
    assert total > 3000
    assert hits / total >= 0.99, (hits, total)


# ------------------------------------------------------------------------------------------------
# rendering geometry
# ------------------------------------------------------------------------------------------------

def _convex_hull(pts):
    pts = sorted(map(tuple, pts))
    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])          # counter-clockwise


def _signed_distance(hull, U, V):
    d = np.full(U.shape, np.inf)
    for i in range(len(hull)):
        a, b = hull[i], hull[(i + 1) % len(hull)]
        e = b - a
        n = np.array([-e[1], e[0]]) / np.hypot(*e)      # inward normal for a CCW polygon
        d = np.minimum(d, (U - a[0]) * n[0] + (V - a[1]) * n[1])
    return d


def test_box_appears_where_its_projected_corners_predict(rig):
    centre, size = (12.0, 1.0, 1.0), (2.0, 3.0, 2.0)
    w = _controlled_world([(centre, size, 0.0, MANMADE)])
    r = Renderer(w, rig)
    cam_i = rig.names.index('CAM_FRONT')
    cam = rig.cameras[cam_i]
    view = r.render(0.0)[cam_i]
    # analytic projection of the 8 corners
    sx, sy, sz = np.array(size) / 2
    corners = np.array([[centre[0] + a * sx, centre[1] + b * sy, centre[2] + c * sz]
                        for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    T_ec = np.linalg.inv(cam.sensor2ego)
    pc = corners @ T_ec[:3, :3].T + T_ec[:3, 3]
    uv = (pc @ cam.K.T)[:, :2] / pc[:, 2:3]
    hull = _convex_hull(uv)
    H, W = cam.image_hw
    V, U = np.mgrid[0:H, 0:W].astype(float)
    sd = _signed_distance(hull, U, V)
    is_box = view.classes == MANMADE
    assert is_box[sd > 1.0].all()
    assert not is_box[sd < -1.0].any()
    assert is_box.sum() > 500
    # depth on the front face (x = 11 m in ego) is the analytic ray–plane distance
    Kinv = np.linalg.inv(cam.K)
    R, t = cam.sensor2ego[:3, :3], cam.sensor2ego[:3, 3]
    rays = np.einsum('ij,hwj->hwi', R @ Kinv, np.stack([U, V, np.ones_like(U)], -1))
    s_face = (centre[0] - sx - t[0]) / rays[..., 0]
    hit = t[None, None, :] + s_face[..., None] * rays
    on_face = ((np.abs(hit[..., 1] - centre[1]) < sy - 0.05) & (np.abs(hit[..., 2] - centre[2]) < sz - 0.05)
               & (s_face > 0))
    assert on_face.sum() > 300
    np.testing.assert_allclose(view.depth[on_face], s_face[on_face], rtol=1e-4)


def test_ground_depth_is_the_analytic_plane_distance(rig):
    w = _controlled_world([])
    views = Renderer(w, rig).render(0.0)
    for cam, view in zip(rig, views):
        H, W = cam.image_hw
        V, U = np.mgrid[0:H, 0:W].astype(float)
        R, t = cam.sensor2ego[:3, :3], cam.sensor2ego[:3, 3]
        dz = (np.stack([U, V, np.ones_like(U)], -1) @ (R @ np.linalg.inv(cam.K)).T)[..., 2]
        with np.errstate(divide='ignore'):
            depth = np.where(dz < 0, -t[2] / dz, 0.0)
        ground = (depth > 0) & (depth < 1000)
        assert ground.sum() > 0.3 * H * W
        np.testing.assert_allclose(view.depth[ground], depth[ground], rtol=1e-4)
        near = ground & (depth < 60)                   # inside the ground raster (terrain beyond)
        assert (view.classes[near] == DRIVEABLE).all()
        assert (view.depth[~ground] == 0).all() and (view.classes[~ground] == FREE).all()


def test_instance_colours_vary_and_differ_from_palette(frame):
    means = {}
    for v in frame.views:
        for iid in np.unique(v.instances[(v.classes == CAR)]):
            sel = (v.instances == iid) & (v.classes == CAR)
            if iid and sel.sum() >= 30:
                means[int(iid)] = v.image[sel].reshape(-1, 3).mean(0)
    assert len(means) >= 3
    m = np.array(list(means.values()))
    assert m.std(axis=0).max() > 6.0                # per-instance variation
    # rendered colours are shaded/textured, not the palette colour
    assert np.abs(m - np.array(PALETTE[CAR])).max(axis=1).min() > 10
    # texture: pixels of one instance are not a single colour
    v = frame.views[int(np.argmax([(x.classes == CAR).sum() for x in frame.views]))]
    iid = np.bincount(v.instances[v.classes == CAR]).argmax()
    px = v.image[(v.instances == iid) & (v.classes == CAR)]
    assert len(np.unique(px, axis=0)) > 20


def test_depth_and_class_views_are_consistent(frame):
    for v in frame.views:
        sky = v.depth == 0
        assert (v.classes[sky] == FREE).all()
        assert (v.classes[~sky] != FREE).all()
        assert v.image.shape == HW + (3,) and v.image.dtype == np.uint8


def test_staggered_cameras_see_the_world_at_their_own_capture_time(tmp_path):
    """A staggered, fast-forwarded sequence: camera k of frame i is exactly what a synchronised rig
    sees at that camera's capture time (the same world rendered from a sequence whose stamps are
    shifted by the camera's offset), each view carries its stamp and pose; the bag stamps every
    camera at its capture time and the odometry moves time_scale× faster."""
    from occ_ros.bag.reader import BagReader
    from occ_ros.bag.synth import SyntheticSequence, staggered_offsets
    from occ_ros.bag.writer import write_synthetic_bag
    from occ_ros.core.config import NUSCENES_CAPTURE_OFFSETS_S
    from occ_ros.ros.convert import stamp_to_ns
    hw = (90, 160)
    rig = nuscenes_rig(hw)
    offs = staggered_offsets(rig)
    assert offs == tuple(NUSCENES_CAPTURE_OFFSETS_S[c.name] for c in rig)
    seq = SyntheticSequence(23, 0.3, 12.0, rig, hw, ground_truth=False, capture_offsets_s=offs, time_scale=3.0)
    f = seq.frame(2)
    for k in (0, 3, 5):          # CAM_FRONT_LEFT (+0), CAM_BACK_LEFT (+41.7 ms), CAM_BACK_RIGHT (+25 ms)
        shift = seq.capture_offsets_ns[k]
        assert f.view_stamps_ns[k] == f.stamp_ns + shift
        sync = SyntheticSequence(23, 0.3, 12.0, rig, hw, ground_truth=False, time_scale=3.0,
                                 start_ns=seq.start_ns + shift)
        sync.start_ns, sync.world, sync.renderer = seq.start_ns, seq.world, seq.renderer   # same world and clock
        g = sync.frame(2)
        np.testing.assert_array_equal(f.views[k].depth, g.views[k].depth)
        np.testing.assert_array_equal(f.view_poses[k], g.ego_pose)
    moved = np.linalg.norm(f.view_poses[3][:2, 3] - f.view_poses[0][:2, 3])
    v = seq.ego_velocity(f.stamp_ns)[0]
    assert 3 * 5.0 * 0.04 < moved < 3 * 11.5 * 0.042 and 15.0 <= v <= 34.5      # 5–11 m/s × 3
    fs = f.frame_set(rig)
    assert [fr.stamp_ns for fr in fs.frames] == list(f.view_stamps_ns)
    assert fs.frames[3].ego_pose is not None and fs.ego_pose is not None
    np.testing.assert_array_equal(fs.ego_pose.matrix, f.ego_pose)
    out = tmp_path / 'staggered'
    write_synthetic_bag(out, 0.2, 23, image_hw=hw, staggered=True, time_scale=3.0)
    with BagReader(out) as bag:
        stamps: dict[str, list[int]] = {}
        for raw, msg in bag.messages([f'/{c}/image_raw' for c in rig.names] + ['/odom']):
            assert stamp_to_ns(msg.header.stamp) == raw.stamp_ns
            stamps.setdefault(raw.topic, []).append(raw.stamp_ns)
            if raw.topic == '/odom':
                assert 15.0 <= msg.twist.twist.linear.x <= 34.5
    first = stamps['/CAM_FRONT_LEFT/image_raw']
    for c, off in zip(rig.names, seq.capture_offsets_ns):
        assert [s - off for s in stamps[f'/{c}/image_raw']] == first


def _ground_rules_mask_by_mask(X, Y, road, L, cross, blocks, s_lo, s_hi):
    """The ground raster's rules as whole-array masks, each overwriting the previous (the numpy
    code `bag.road._ground_classes` had before its compiled pass; kept here as the reference)."""
    from occ_ros.bag.world_mix import (DRIVEABLE, LANE_W, OTHER_FLAT, PAINT_WHITE, PAINT_YELLOW, SIDEWALK,
                                      TERRAIN, WORLD_EXTENT_D_M)
    s, d = road.to_road(X, Y)
    out = np.full(X.shape, TERRAIN, dtype=np.uint8)
    inside = (s >= s_lo - 5) & (s <= s_hi + 5) & (np.abs(d) <= WORLD_EXTENT_D_M)
    el, er = L.edge_left, L.edge_right
    for (a, b, side, style, verge_cls) in blocks:
        blk = inside & (s >= a) & (s < b) & ((d > 0) if side > 0 else (d < 0))
        out[blk] = TERRAIN if style == 'park' else OTHER_FLAT
        edge = el if side > 0 else -er
        out[blk & (np.abs(d) > edge + L.sidewalk) & (np.abs(d) <= edge + L.sidewalk + L.verge)] = OCC_INDEX[verge_cls]
    on_road = inside & (d <= el) & (d >= er)
    out[on_road] = DRIVEABLE
    if L.median > 0:
        out[inside & (np.abs(d) <= L.median / 2)] = OTHER_FLAT
    out[inside & (((d > el) & (d <= el + L.sidewalk)) | ((d < er) & (d >= er - L.sidewalk)))] = SIDEWALK
    paint = np.zeros(X.shape, dtype=np.uint8)
    if L.median == 0:
        paint[on_road & (np.abs(d) < 0.1)] = PAINT_YELLOW
    for side in (-1, 1):
        for i in range(1, L.lanes):
            dsep = side * (L.median / 2 + i * LANE_W)
            paint[on_road & (np.abs(d - dsep) < 0.1) & (np.mod(s, 9.0) < 3.0)] = PAINT_WHITE
        lane_edge = side * (L.median / 2 + L.lanes * LANE_W)
        paint[on_road & (np.abs(d - lane_edge + side * 0.15) < 0.1)] = PAINT_WHITE
    for cs in cross:
        e, f = cs.to_local(X, Y)
        near = np.abs(e) <= WORLD_EXTENT_D_M
        band = near & (np.abs(f) <= cs.half_width)
        out[band] = DRIVEABLE
        paint[band & (np.abs(d) <= max(el, -er) + L.sidewalk)] = 0
        cwalk = near & (np.abs(f) > cs.half_width) & (np.abs(f) <= cs.half_width + cs.sidewalk)
        outside_main = (d > el + L.sidewalk) | (d < er - L.sidewalk)
        out[cwalk & outside_main] = SIDEWALK
        paint[band & outside_main & (np.abs(f) < 0.1)] = PAINT_YELLOW if cs.half_width > 4 else PAINT_WHITE
        paint[on_road & (np.abs(np.abs(f) - cs.half_width - 2.0) < 1.5) & (np.mod(d, 1.0) < 0.5)] = PAINT_WHITE
    return out | paint


@pytest.mark.parametrize('seed', [2, 4242, 9203])
def test_compiled_ground_raster_equals_the_mask_by_mask_rules(seed):
    """The compiled ground classification gives, cell for cell, what the mask-by-mask numpy rules
    give, on a straight road without median (2), a curved one with a wide median (4242) and a
    curved one with a narrow median (9203), over the whole raster."""
    from occ_ros.bag.road import GROUND_RES, _ground_classes
    w = World(seed)
    h, wd = w.ground.shape
    cx = w.ground_x0 + (np.arange(wd) + 0.5) * GROUND_RES
    cy = w.ground_y0 + (np.arange(h) + 0.5) * GROUND_RES
    X, Y = np.meshgrid(cx, cy)
    expected = _ground_rules_mask_by_mask(X, Y, w.road, w.layout, w.cross, w.blocks, w.s_lo, w.s_hi)
    np.testing.assert_array_equal(w.ground, expected)
    np.testing.assert_array_equal(_ground_classes(X, Y, w.road, w.layout, w.cross, w.blocks, w.s_lo, w.s_hi),
                                  expected)
    assert len(np.unique(expected)) >= 5                # roads, sidewalks, lots, verges and paint all present


def test_row_norms_are_numpys_norm_bit_for_bit():
    """`groundtruth.row_norms` replaces `np.linalg.norm(p, axis=1)` in the visibility tables; the
    reference is numpy's own norm, compared bit for bit (also after the float32 cast the tables
    keep) over magnitudes from 1e-6 to 1e6, signed zeros, subnormals and a non-contiguous view."""
    from occ_ros.bag.groundtruth import row_norms

    rng = np.random.default_rng(3)
    for scale in (1e-6, 1.0, 40.0, 1e6):
        p = rng.normal(size=(50_000, 3)) * scale
        assert np.array_equal(row_norms(p), np.linalg.norm(p, axis=1))
        assert np.array_equal(row_norms(p).astype(np.float32), np.linalg.norm(p, axis=1).astype(np.float32))
    edge = np.array([[0.0, -0.0, 0.0], [5e-324, 0.0, -5e-324], [3.0, 4.0, 12.0], [-1e300, 0.0, 0.0]])
    with np.errstate(over='ignore'):                         # 1e300² overflows in both: inf
        assert np.array_equal(row_norms(edge), np.linalg.norm(edge, axis=1))
    view = rng.normal(size=(1000, 4))[:, 1:]
    assert np.array_equal(row_norms(view), np.linalg.norm(view, axis=1))
