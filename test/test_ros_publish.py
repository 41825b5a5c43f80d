"""Output builders on hand-made results: markers only where voxels are, grid cells, panoptic arrays."""
from __future__ import annotations


import numpy as np
import pytest

try:                                   # the message builders need the ROS 2 message wheels; the
    from visualization_msgs.msg import Marker       # numpy parts (voxel selection, grid values) do not
except ImportError:                    # pragma: no cover
    Marker = None
needs_msgs = pytest.mark.skipif(Marker is None, reason='needs the ROS 2 message wheels (visualization_msgs)')

from occ_ros.core.classes import FREE, GROUND_CLASSES, OCC_CLASSES, OCC_INDEX, PALETTE  # noqa: E402
from occ_ros.core.config import GridSpec  # noqa: E402
from occ_ros.core.errors import ConfigError  # noqa: E402
from occ_ros.core.occupancy import InstanceInfo, Occupancy  # noqa: E402
from occ_ros.ros import publish as pub  # noqa: E402

GRID = GridSpec()
CAR, PED, ROAD, MANMADE = OCC_INDEX['car'], OCC_INDEX['pedestrian'], OCC_INDEX['driveable_surface'], \
    OCC_INDEX['manmade']


def scene(with_ped: bool = True, visible: bool = True) -> Occupancy:
    """A road patch, a car (id 3), a pedestrian (id 5), a tall building part, unseen columns x < 50."""
    sem = np.full(GRID.shape, FREE, np.uint8)
    inst = np.zeros(GRID.shape, np.uint16)
    sem[100:131, 80:121, 2] = ROAD
    sem[110:115, 98:102, 2:6] = CAR
    inst[110:115, 98:102, 2:6] = 3
    if with_ped:
        sem[120, 90, 2:6] = PED
        inst[120, 90, 2:6] = 5
    sem[60:63, 100, 12] = MANMADE                   # z centre 4.0 m: above the obstacle band
    sem[10, 10, 3] = CAR                            # a car voxel nobody can see
    vis = np.ones(GRID.shape, bool)
    vis[:50] = False
    ids = [3, 5, 9] if with_ped else [3, 9]
    labels = [CAR, PED, CAR] if with_ped else [CAR, CAR]
    centres = [(4.5, 0.0, 0.6), (8.2, -3.8, 0.6), (1.0, 1.0, 0.5)] if with_ped else [(4.5, 0.0, 0.6), (1.0, 1.0, 0.5)]
    scores = [0.9, 0.75, 0.4] if with_ped else [0.9, 0.4]
    counts = [80, 4, 0] if with_ped else [80, 0]
    table = [InstanceInfo(i, lab, c, n, s) for i, lab, c, n, s in zip(ids, labels, centres, counts, scores)]
    return Occupancy(sem, inst, mask_camera=vis if visible else None, instance_table=table)


def _all_points(markers) -> np.ndarray:
    pts = [(p.x, p.y, p.z) for m in markers if m.action == Marker.ADD for p in m.points]
    return np.array(pts).reshape(-1, 3)


# ------------------------------------------------------------------ voxels
def test_select_voxels_only_non_free_and_visible() -> None:
    r = scene()
    sel = pub.select_voxels(r, GRID, max_voxels=100000)
    expect = np.argwhere((r.semantics != FREE) & r.mask_camera)
    assert sel.total == len(expect) and sel.dropped == 0
    assert {tuple(x) for x in sel.ijk} == {tuple(x) for x in expect}
    assert (sel.labels == r.semantics[tuple(sel.ijk.T)]).all()
    all_nonfree = pub.select_voxels(r, GRID, 100000, visible_only=False)
    assert all_nonfree.total == int((r.semantics != FREE).sum())


def test_voxel_cap_keeps_the_nearest() -> None:
    r = scene()
    sel = pub.select_voxels(r, GRID, max_voxels=25)
    full = np.argwhere((r.semantics != FREE) & r.mask_camera)
    d = np.sum(pub.voxel_centres(full, GRID) ** 2, axis=1)
    kept_d = np.sum(pub.voxel_centres(sel.ijk, GRID) ** 2, axis=1)
    assert len(sel.ijk) == 25 and sel.dropped == len(full) - 25
    assert kept_d.max() <= np.sort(d)[24] + 1e-9
    assert len(pub.select_voxels(r, GRID, max_voxels=0).ijk) == 0


@needs_msgs
def test_voxel_markers_class_mode() -> None:
    r = scene()
    b = pub.VoxelMarkerBuilder(GRID, 'base_link', max_voxels=100000)
    arr = b.build(r, 123)
    by_ns = {m.ns: m for m in arr.markers}
    assert set(by_ns) == {'car', 'pedestrian', 'driveable_surface', 'manmade'}
    for m in arr.markers:
        assert m.type == Marker.CUBE_LIST and m.action == Marker.ADD and m.id == OCC_INDEX[m.ns]
        assert m.header.frame_id == 'base_link' and m.header.stamp.nanosec == 123
        assert (m.scale.x, m.scale.y, m.scale.z) == pytest.approx(GRID.voxel)
        assert (m.color.r, m.color.g, m.color.b) == pytest.approx(np.array(PALETTE[m.id]) / 255)
        assert len(m.colors) == 0
    # markers exactly where visible non-free voxels are (the hidden car voxel is not drawn)
    expect = pub.voxel_centres(np.argwhere((r.semantics != FREE) & r.mask_camera), GRID)
    got = _all_points(arr.markers)
    assert sorted(map(tuple, np.round(got, 6))) == sorted(map(tuple, np.round(expect, 6)))
    assert len(by_ns['pedestrian'].points) == 4 and len(by_ns['car'].points) == 80
    p = by_ns['pedestrian'].points[0]
    assert (p.x, p.y) == pytest.approx((-40 + 120.5 * 0.4, -40 + 90.5 * 0.4))


@needs_msgs
def test_vanished_classes_are_deleted_and_ids_are_stable() -> None:
    b = pub.VoxelMarkerBuilder(GRID, 'base_link')
    first = b.build(scene(with_ped=True), 1)
    second = b.build(scene(with_ped=False), 2)
    deletes = [(m.ns, m.id) for m in second.markers if m.action == Marker.DELETE]
    assert deletes == [('pedestrian', PED)]
    assert {(m.ns, m.id) for m in first.markers} - {('pedestrian', PED)} == \
        {(m.ns, m.id) for m in second.markers if m.action == Marker.ADD}
    third = b.build(scene(with_ped=False), 3)
    assert all(m.action == Marker.ADD for m in third.markers)


@needs_msgs
def test_instance_colour_mode_colours_every_point() -> None:
    r = scene()
    arr = pub.VoxelMarkerBuilder(GRID, 'base_link', color_mode='instance', alpha=0.5).build(r, 0)
    for m in arr.markers:
        assert len(m.colors) == len(m.points)
        assert all(c.a == pytest.approx(0.5) for c in m.colors)
    car = next(m for m in arr.markers if m.ns == 'car')
    assert (car.colors[0].r, car.colors[0].g, car.colors[0].b) == pytest.approx(pub.instance_colour(3))
    road = next(m for m in arr.markers if m.ns == 'driveable_surface')
    assert (road.colors[0].r, road.colors[0].g) == pytest.approx(pub.class_colour(ROAD)[:2])
    with pytest.raises(ConfigError):
        pub.VoxelMarkerBuilder(GRID, 'b', color_mode='rainbow')


@needs_msgs
def test_instance_markers() -> None:
    r = scene()
    arr = pub.InstanceMarkerBuilder(GRID, 'base_link').build(r, 5)
    assert arr.markers[0].action == Marker.DELETEALL
    boxes = {m.id: m for m in arr.markers if m.ns == 'instances'}
    labels = {m.id: m for m in arr.markers if m.ns == 'instance_labels'}
    assert set(boxes) == set(labels) == {3, 5}          # id 9 owns no voxel: not drawn
    car = boxes[3]
    assert car.type == Marker.CUBE
    assert (car.pose.position.x, car.pose.position.y, car.pose.position.z) == \
        pytest.approx((-40 + 112.5 * 0.4, -40 + 100 * 0.4, -1 + 4 * 0.4))
    assert (car.scale.x, car.scale.y, car.scale.z) == pytest.approx((2.0, 1.6, 1.6))
    assert labels[3].type == Marker.TEXT_VIEW_FACING and labels[3].text == 'car 3 0.90'
    assert labels[5].text == 'pedestrian 5 0.75'
    assert labels[3].pose.position.z == pytest.approx(-1 + 6 * 0.4 + 0.5)


# ------------------------------------------------------------------ occupancy grid
def test_occupancy_grid_values_at_the_right_cells() -> None:
    r = scene()
    v = pub.occupancy_grid_values(r, GRID, (-0.2, 2.2), pub.default_obstacle_classes())
    assert v.shape == GRID.bev_shape and v.dtype == np.int8
    assert set(np.unique(v)) <= {-1, 0, 100}
    expect = np.zeros(GRID.bev_shape, np.int8)          # (ny, nx): rows y, columns x
    expect[98:102, 110:115] = 100                       # car
    expect[90, 120] = 100                               # pedestrian
    expect[:, :50] = -1                                 # unseen columns (incl. the hidden car)
    np.testing.assert_array_equal(v, expect)            # road and the 4 m-high building part: 0
    high = pub.occupancy_grid_values(r, GRID, (3.5, 4.5), pub.default_obstacle_classes())
    assert high[100, 60:63].tolist() == [100, 100, 100] and (high[98:102, 110:115] == 0).all()
    no_vis = pub.occupancy_grid_values(scene(visible=False), GRID, (-0.2, 2.2), pub.default_obstacle_classes())
    assert (no_vis >= 0).all() and no_vis[10, 10] == 100


def test_default_obstacle_classes() -> None:
    obs = set(pub.default_obstacle_classes())
    assert FREE not in obs and not (obs & set(GROUND_CLASSES))
    assert obs | set(GROUND_CLASSES) | {FREE} == set(range(len(OCC_CLASSES)))


@needs_msgs
def test_occupancy_grid_msg_layout() -> None:
    v = pub.occupancy_grid_values(scene(), GRID, (-0.2, 2.2), pub.default_obstacle_classes())
    msg = pub.occupancy_grid_msg(v, GRID, 7_000_000_123, 'base_link')
    assert (msg.info.width, msg.info.height) == (GRID.nx, GRID.ny)
    assert msg.info.resolution == pytest.approx(0.4)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (-40.0, -40.0)
    assert msg.info.origin.orientation.w == 1.0
    assert msg.header.stamp.sec == 7 and msg.header.stamp.nanosec == 123
    data = np.asarray(msg.data, np.int8)
    assert data.size == GRID.nx * GRID.ny
    assert data[90 * GRID.nx + 120] == 100 and data[90 * GRID.nx + 10] == -1 and data[0 * 200 + 199] == 0
    with pytest.raises(ConfigError):
        pub.occupancy_grid_msg(v[:10], GRID, 0, 'b')


# ------------------------------------------------------------------ panoptic message
@needs_msgs
def test_panoptic_msg_arrays_and_table() -> None:
    pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')
    from rclpy.serialization import deserialize_message, serialize_message

    from occ_ros.msg import PanopticOccupancy
    r = scene()
    msg = pub.panoptic_msg(r, GRID, 42, 'base_link', missing=('CAM_BACK',))
    n = GRID.nx * GRID.ny * GRID.nz
    assert (msg.size_x, msg.size_y, msg.size_z) == GRID.shape
    assert len(msg.semantics) == len(msg.instances) == len(msg.visible) == n
    back = deserialize_message(serialize_message(msg), PanopticOccupancy)
    sem = np.frombuffer(back.semantics, np.uint8).reshape(GRID.shape)
    inst = np.frombuffer(back.instances, np.uint16).reshape(GRID.shape)
    vis = np.frombuffer(back.visible, np.uint8).reshape(GRID.shape)
    np.testing.assert_array_equal(sem, r.semantics)
    np.testing.assert_array_equal(inst, r.instances)
    np.testing.assert_array_equal(vis.astype(bool), r.mask_camera)
    i, j, k = 120, 90, 3                                # Occ3D flattening: (i·ny + j)·nz + k
    assert back.semantics[(i * GRID.ny + j) * GRID.nz + k] == PED
    assert [e.id for e in back.instance_table] == [3, 5]
    car = back.instance_table[0]
    assert (car.label, car.voxel_count) == (CAR, 80) and car.score == pytest.approx(0.9)
    assert (car.center.x, car.center.y, car.center.z) == pytest.approx((4.5, 0.0, 0.6))
    assert list(back.class_names) == list(OCC_CLASSES) and back.free_label == FREE
    assert (back.origin.x, back.origin.z) == (-40.0, -1.0) and back.voxel_size.z == pytest.approx(0.4)
    assert list(back.missing_cameras) == ['CAM_BACK']
    assert len(pub.panoptic_msg(scene(visible=False), GRID, 0, 'b').visible) == 0


@needs_msgs
def test_builders_accept_the_real_postprocess_result() -> None:
    pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')
    import torch

    from occ_ros.postprocess import InstanceTable, PanopticOccupancy
    r = scene()
    t = r.instance_table
    real = PanopticOccupancy(
        semantics=torch.from_numpy(r.semantics), instances=torch.from_numpy(r.instances.astype(np.int32)),
        table=InstanceTable(ids=torch.tensor([i.id for i in t], dtype=torch.int32),
                            occ_class=torch.tensor([i.label for i in t]),
                            det_class=torch.zeros(len(t), dtype=torch.int64),
                            centers=torch.tensor([i.center for i in t], dtype=torch.float32),
                            scores=torch.tensor([i.score for i in t], dtype=torch.float32),
                            voxel_count=torch.tensor([i.voxel_count for i in t])),
        visible=torch.from_numpy(r.mask_camera)).to_occupancy()
    assert [i.id for i in real.instance_table] == [3, 5]              # centres owning no voxel dropped
    assert real.instance_table[1].score == pytest.approx(0.75) and real.semantics.dtype == np.uint8
    assert len(pub.panoptic_msg(real, GRID, 0, 'b').instance_table) == 2
    assert len(pub.VoxelMarkerBuilder(GRID, 'b').build(real, 0).markers) == 4
    assert len(pub.InstanceMarkerBuilder(GRID, 'b').build(real, 0).markers) == 5


def test_shape_mismatch_is_a_config_error() -> None:
    r = scene()
    r.semantics = r.semantics[:, :, :8]
    with pytest.raises(ConfigError, match='grid'):
        pub.select_voxels(r, GRID, 10)


@needs_msgs
def test_float_stamped() -> None:
    pytest.importorskip('occ_ros.msg', reason='interfaces not built (scripts/build_interfaces.sh)')
    m = pub.float_stamped(12.5, 3, 'base_link')
    assert m.data == 12.5 and m.header.frame_id == 'base_link' and m.header.stamp.nanosec == 3
