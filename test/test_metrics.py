"""mIoU, RayIoU, RayPQ, the Occ3D file format and `occ-ros eval`, on hand-made grids with hand-computed answers."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from occ_ros.core.classes import FREE, OCC_INDEX
from occ_ros.core.config import AxisSpec, GridSpec
from occ_ros.core.errors import EvaluationError, OccFileError, OccRosError
from occ_ros.core.occ3d import (instances_from_official_pano, load_ground_truth, load_prediction,
                                save_ground_truth, save_prediction)
from occ_ros.core.occupancy import Occupancy
from occ_ros.metrics import RayCaster, RayIoU, RayPQ, SemanticIoU, pair_files, score_pairs
from occ_ros.apps import evaluate as eval_cli
from occ_ros.metrics.evaluate import EvalSample
from occ_ros.metrics.raycast import DEFAULT_LIDAR_ORIGIN

GRID = GridSpec()
CAR, TRUCK, PED = OCC_INDEX['car'], OCC_INDEX['truck'], OCC_INDEX['pedestrian']
ROAD, WALKWAY, MANMADE, VEG = (OCC_INDEX['driveable_surface'], OCC_INDEX['sidewalk'], OCC_INDEX['manmade'],
                              OCC_INDEX['vegetation'])
ORIGIN = (0.2, 0.2, 1.2)          # the centre of voxel (100, 100, 5) of the Occ3D grid


def empty(grid: GridSpec = GRID) -> np.ndarray:
    return np.full(grid.shape, FREE, dtype=np.uint8)


def walls() -> np.ndarray:
    """Four walls around voxel (100, 100): manmade 2 voxels thick at ix 110–111 and 89–90 (iy 95–105),
    vegetation 1 voxel thick at iy 110 and 90 (ix 95–105); all heights."""
    lab = empty()
    lab[110:112, 95:106, :] = MANMADE
    lab[89:91, 95:106, :] = MANMADE
    lab[95:106, 110, :] = VEG
    lab[95:106, 90, :] = VEG
    return lab


def shift_x(lab: np.ndarray, n: int = 1) -> np.ndarray:
    """Everything moved n voxels towards +x (the vacated layer is free)."""
    out = np.full_like(lab, FREE)
    out[n:] = lab[:-n]
    return out


def street() -> tuple[np.ndarray, np.ndarray]:
    """A structured scene around the default origin: ground, buildings, trees, cars, a truck, people.
    Returns (semantics, instances) with instance ids ≥ 1 for things, 0 elsewhere."""
    sem, inst = empty(), np.zeros(GRID.shape, np.uint16)
    sem[:, :, 0:2] = WALKWAY
    sem[:, 80:120, 0:2] = ROAD
    sem[:, :60, 2:10] = MANMADE
    sem[:, 150:, 2:7] = VEG
    boxes = [(CAR, 115, 85, 11, 5, 4), (CAR, 115, 110, 11, 5, 4), (CAR, 70, 92, 11, 5, 4),
             (TRUCK, 130, 100, 20, 7, 8), (PED, 95, 125, 2, 2, 4), (PED, 100, 70, 2, 2, 4)]
    for i, (c, x, y, dx, dy, dz) in enumerate(boxes, start=1):
        sem[x:x + dx, y:y + dy, 2:2 + dz] = c
        inst[x:x + dx, y:y + dy, 2:2 + dz] = i
    return sem, inst


def horizontal_rays(azimuths_deg) -> np.ndarray:
    a = np.radians(np.asarray(azimuths_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)


# --- mIoU ---------------------------------------------------------------------------------------

def test_miou_perfect_and_empty_prediction():
    gt = walls()
    m = SemanticIoU()
    m.update(gt, gt)
    r = m.compute()
    assert r.miou == pytest.approx(100.0)
    assert np.isnan(r.iou[CAR]) and r.iou[FREE] == pytest.approx(100.0)
    e = SemanticIoU()
    e.update(empty(), gt)
    assert e.compute().miou == 0.0
    assert e.compute().iou[MANMADE] == 0.0 and e.compute().iou[VEG] == 0.0


def test_miou_shift_by_one_voxel_hand_computed():
    # manmade: 2 walls × 2 layers × 11 × 16 = 704 voxels; shifted, one layer per wall overlaps:
    #   TP 352 → IoU 352 / (704 + 704 − 352) = 1/3
    # vegetation: 2 walls × 11 × 16 = 352; shifted along the wall, 10 of 11 columns overlap:
    #   TP 320 → IoU 320 / (352 + 352 − 320) = 5/6;  mIoU = (1/3 + 5/6) / 2 = 7/12
    gt = walls()
    m = SemanticIoU()
    m.update(shift_x(gt), gt, np.ones(GRID.shape, bool))
    r = m.compute()
    assert r.iou[MANMADE] == pytest.approx(100 / 3)
    assert r.iou[VEG] == pytest.approx(500 / 6)
    assert r.miou == pytest.approx(700 / 12)
    assert r.confusion[MANMADE, MANMADE] == 352 and r.confusion[MANMADE].sum() == 704
    assert r.confusion.sum() == np.prod(GRID.shape) and r.num_voxels == np.prod(GRID.shape)
    assert set(np.flatnonzero(~np.isnan(r.iou[:FREE]))) == {MANMADE, VEG}    # the rest is NaN


def test_miou_camera_mask_and_ignored_gt_labels():
    gt = walls()
    pred = gt.copy()
    pred[40:50, 40:50, 3:6] = CAR                      # a false car in free space
    mask = np.ones(GRID.shape, bool)
    m = SemanticIoU()
    m.update(pred, gt, mask)
    assert m.compute().iou[CAR] == 0.0
    assert m.compute().miou == pytest.approx((100 + 100 + 0) / 3)
    mask[40:50, 40:50, :] = False                       # the camera does not see it
    m = SemanticIoU()
    m.update(pred, gt, mask)
    assert np.isnan(m.compute().iou[CAR]) and m.compute().miou == pytest.approx(100.0)
    assert m.compute().num_voxels == np.prod(GRID.shape) - 10 * 10 * 16
    gt255 = gt.copy()
    gt255[40:50, 40:50, :] = 255                        # GT labels outside [0, 18) are ignored
    m = SemanticIoU()
    m.update(pred, gt255)
    assert m.compute().miou == pytest.approx(100.0)


def test_miou_accumulates_one_matrix_and_handles_all_absent_classes():
    gt = walls()
    m = SemanticIoU()
    m.update(shift_x(gt), gt)
    m.update(gt, gt)
    r = m.compute()
    # one matrix over both frames: manmade TP 352 + 704, GT = pred = 1408 → 1056 / 1760
    assert r.iou[MANMADE] == pytest.approx(60.0)
    assert r.iou[VEG] == pytest.approx(100 * 672 / 736)
    assert r.num_frames == 2
    nothing = SemanticIoU()
    nothing.update(empty(), empty())
    assert math.isnan(nothing.compute().miou)           # no class 0..16 anywhere: NaN, no warning
    assert nothing.compute().to_dict()['miou'] is None


def test_miou_input_errors_are_named():
    m = SemanticIoU()
    bad = walls()
    bad[0, 0, 0] = 18
    with pytest.raises(EvaluationError, match='predicted labels'):
        m.update(bad, walls())
    with pytest.raises(EvaluationError, match='shape'):
        m.update(walls()[:, :, :8], walls())
    with pytest.raises(EvaluationError, match='integer'):
        m.update(walls().astype(np.float32), walls())
    m.update(torch.from_numpy(walls()), walls())         # torch tensors are accepted
    assert m.compute().miou == pytest.approx(100.0)


# --- RayIoU -------------------------------------------------------------------------------------

def test_rayiou_perfect_and_empty_prediction_official_rays():
    sem, _ = street()
    perfect = RayIoU()
    perfect.update(sem, sem)
    r = perfect.compute()
    assert r.rayiou == pytest.approx(100.0)
    np.testing.assert_allclose(r.rayiou_at, 100.0)
    assert r.num_rays == int(r.gt_count.sum()) and 1000 < r.num_rays <= 14040
    present = r.gt_count > 0
    assert {CAR, TRUCK, MANMADE, ROAD} <= set(np.flatnonzero(present))
    assert np.all(np.isnan(r.iou[:, ~present]))
    nothing = RayIoU()
    nothing.update(empty(), sem)
    assert nothing.compute().rayiou == 0.0
    assert nothing.compute().pred_count.sum() == 0


def test_rayiou_shift_by_one_voxel_passes_or_fails_by_threshold():
    # Rays ±x hit the manmade walls: GT depth 4.2 m (leaving voxel 110 at x = 4.4 / voxel 90 at
    # x = −4.0); shifted by +1 voxel the prediction gives 4.6 m and 3.8 m: |error| = 0.4 m.
    # Rays ±y hit the vegetation walls, which the shift moves along themselves: error 0.
    gt = walls()
    caster = RayCaster(GRID, horizontal_rays([0, 180, 90, 270]))
    h = caster.cast(np.stack([shift_x(gt), gt]), ORIGIN)
    np.testing.assert_allclose(h.depth[1, 0], [4.2, 4.2, 4.2, 4.2])
    np.testing.assert_allclose(h.depth[0, 0], [4.6, 3.8, 4.2, 4.2])
    m = RayIoU(GRID, thresholds=(0.3, 0.5), caster=caster)
    m.update(shift_x(gt), gt, ORIGIN)
    r = m.compute()
    # t = 0.3 m: manmade TP 0 of GT 2 / pred 2 → 0; vegetation 2/2 → 100 → RayIoU@0.3 = 50
    assert r.iou[0, MANMADE] == 0.0 and r.iou[0, VEG] == 100.0
    np.testing.assert_allclose(r.rayiou_at, [50.0, 100.0])
    assert r.rayiou == pytest.approx(75.0)
    assert r.gt_count[MANMADE] == 2 and r.pred_count[MANMADE] == 2


def test_rayiou_coarse_voxel_shift_fails_at_1m_passes_at_2_and_4m():
    # 1.6 m voxels: a one-voxel shift moves the hit by 1.6 m: |err| < 1 fails, < 2 and < 4 pass.
    grid = GridSpec(AxisSpec(-40.0, 40.0, 1.6, 'x'), AxisSpec(-40.0, 40.0, 1.6, 'y'), AxisSpec(-1.0, 5.4, 1.6, 'z'))
    gt = np.full(grid.shape, FREE, np.uint8)
    gt[30, 20:31, :] = MANMADE                  # x ∈ [8.0, 9.6)
    gt[20, 20:31, :] = VEG                      # x ∈ [−8.0, −6.4)
    pred = np.full_like(gt, FREE)
    pred[1:] = gt[:-1]
    m = RayIoU(grid, caster=RayCaster(grid, horizontal_rays([0, 180])))
    m.update(pred, gt, (0.8, 0.8, 1.4))         # centre of voxel (25, 25, 1)
    r = m.compute()
    np.testing.assert_allclose(r.rayiou_at, [0.0, 100.0, 100.0])
    assert r.rayiou == pytest.approx(200 / 3)


def test_rayiou_wrong_class_counts_against_both_classes():
    # 10 rays hit a manmade wall; the prediction labels the wall car: manmade IoU 0 (GT 10, TP 0),
    # car IoU 0 (pred 10, TP 0); 5 rays hit a correct vegetation wall: IoU 100. RayIoU = 100/3.
    gt = empty()
    gt[110, 60:140, :] = MANMADE
    gt[60:140, 110, :] = VEG
    pred = gt.copy()
    pred[110, 60:140, :] = CAR
    caster = RayCaster(GRID, horizontal_rays(list(range(-5, 5)) + [88, 89, 90, 91, 92]))
    m = RayIoU(GRID, caster=caster)
    m.update(pred, gt, ORIGIN)
    r = m.compute()
    assert r.gt_count[MANMADE] == 10 and r.pred_count[CAR] == 10 and r.pred_count[VEG] == 5
    assert r.iou[0, MANMADE] == 0.0 and r.iou[0, CAR] == 0.0 and r.iou[0, VEG] == 100.0
    assert r.rayiou == pytest.approx(100 / 3)


def test_origins_more_than_eight_are_subsampled():
    sem, _ = street()
    a = RayIoU()
    a.update(sem, sem, np.array([DEFAULT_LIDAR_ORIGIN] * 20))      # 20 identical → 8 kept
    b = RayIoU()
    b.update(sem, sem)
    assert a.compute().num_rays == 8 * b.compute().num_rays


# --- RayPQ --------------------------------------------------------------------------------------

# Horizontal rays from ORIGIN: car A (x ∈ [4, 6)) is hit by 30 rays, car B (x ∈ [−6, −4)) by 12.
RAYS_A = list(range(-15, 15))                # 30 azimuths
RAYS_B = list(range(174, 186))               # 12 azimuths


def two_cars() -> tuple[np.ndarray, np.ndarray]:
    sem, inst = empty(), np.zeros(GRID.shape, np.uint16)
    sem[110:115, 80:121, 3:8] = CAR
    inst[110:115, 80:121, 3:8] = 1
    sem[85:90, 80:121, 3:8] = CAR
    inst[85:90, 80:121, 3:8] = 2
    return sem, inst


def pq_metric(azimuths, **kw) -> RayPQ:
    return RayPQ(GRID, caster=RayCaster(GRID, horizontal_rays(azimuths)), **kw)


def test_raypq_perfect_prediction_official_rays_and_all_metrics_100():
    sem, inst = street()
    pq = RayPQ()
    pq.update(sem, inst, sem, inst)
    r = pq.compute()
    assert r.raypq == pytest.approx(100.0)
    assert r.fp.sum() == 0 and r.fn.sum() == 0
    assert r.tp[0, CAR] == 3 and r.tp[0, PED] >= 1 and r.tp[0, TRUCK] == 1   # one TP per visible car
    report = score_pairs([(Occupancy(sem, inst), Occupancy(sem, inst, mask_camera=np.ones(GRID.shape, bool)))])
    assert (report.semantic.miou, report.ray_iou.rayiou, report.ray_pq.raypq) == (
        pytest.approx(100.0), pytest.approx(100.0), pytest.approx(100.0))


def test_raypq_empty_prediction_is_zero():
    sem, inst = street()
    pq = RayPQ()
    pq.update(empty(), np.zeros_like(inst), sem, inst)
    r = pq.compute()
    assert r.raypq == 0.0 and r.tp.sum() == 0 and r.fn[0, CAR] >= 1


def test_raypq_swapped_or_arbitrary_ids_are_matched_not_compared():
    sem, inst = two_cars()
    swapped = np.where(inst == 1, 2, np.where(inst == 2, 1, 0)).astype(np.uint16)
    arbitrary = np.where(inst == 1, 1000, np.where(inst == 2, 7, 0)).astype(np.uint16)
    for pred_inst in (inst, swapped, arbitrary):
        pq = pq_metric(RAYS_A + RAYS_B)
        pq.update(sem, pred_inst, sem, inst, ORIGIN)
        r = pq.compute()
        assert r.raypq == pytest.approx(100.0)
        assert r.tp[:, CAR].tolist() == [2, 2, 2]


def test_raypq_merged_instance_hand_computed():
    # GT: A (30 rays) and B (12 rays); prediction: one id for both (42 rays).
    # IoU(A, P) = 30/42 > 0.5 → TP; IoU(B, P) = 12/42 → B unmatched with ≥ 10 rays → FN.
    # PQ = SQ · RQ = (30/42) · 1 / (1 + ½) = 0.47619…
    sem, inst = two_cars()
    merged = np.where(inst > 0, 5, 0).astype(np.uint16)
    pq = pq_metric(RAYS_A + RAYS_B)
    pq.update(sem, merged, sem, inst, ORIGIN)
    r = pq.compute()
    assert r.sq[0, CAR] == pytest.approx(100 * 30 / 42)
    assert r.rq[0, CAR] == pytest.approx(100 / 1.5)
    assert r.pq[0, CAR] == pytest.approx(100 * (30 / 42) / 1.5)
    assert r.raypq == pytest.approx(100 * (30 / 42) / 1.5)
    assert (r.tp[0, CAR], r.fp[0, CAR], r.fn[0, CAR]) == (1, 0, 1)


def test_raypq_segments_under_10_rays_are_neither_fn_nor_fp():
    sem, inst = two_cars()
    pred_sem, pred_inst = sem.copy(), inst.copy()
    pred_sem[85:90] = FREE                     # car B missed
    pred_inst[85:90] = 0
    few = pq_metric(RAYS_A + RAYS_B[:8])       # B seen by 8 rays: ignored
    few.update(pred_sem, pred_inst, sem, inst, ORIGIN)
    assert few.compute().raypq == pytest.approx(100.0) and few.compute().fn.sum() == 0
    many = pq_metric(RAYS_A + RAYS_B)          # B seen by 12 rays: a false negative
    many.update(pred_sem, pred_inst, sem, inst, ORIGIN)
    assert many.compute().pq[0, CAR] == pytest.approx(100 / 1.5)
    # a predicted car where GT has a wall: ≥ 10 rays → FP (and the wall an FN), < 10 → ignored (NaN)
    sem_w, inst_w = two_cars()
    sem_w[80:121, 110, :] = MANMADE            # y ∈ [4.0, 4.4), hit by rays around +y
    inst_w[80:121, 110, :] = 9                 # a stuff id: ignored (one segment per stuff class)
    pred_w, pred_wi = sem_w.copy(), inst_w.copy()
    pred_w[80:121, 110, :] = CAR
    pred_wi[80:121, 110, :] = 3
    big = pq_metric(RAYS_A + RAYS_B + list(range(80, 100)))      # 20 wall rays
    big.update(pred_w, pred_wi, sem_w, inst_w, ORIGIN)
    r = big.compute()
    assert (r.tp[0, CAR], r.fp[0, CAR], r.fn[0, MANMADE]) == (2, 1, 1)
    assert r.pq[0, CAR] == pytest.approx(80.0) and r.pq[0, MANMADE] == 0.0
    assert r.raypq == pytest.approx(40.0)
    small = pq_metric(RAYS_A + RAYS_B + list(range(86, 94)))     # 8 wall rays
    small.update(pred_w, pred_wi, sem_w, inst_w, ORIGIN)
    r = small.compute()
    assert np.isnan(r.pq[0, MANMADE]) and r.raypq == pytest.approx(100.0)


def test_raypq_depth_threshold_and_stuff_ids_per_ray():
    # 20 car rays, 4 of them 1.5 m off: at 1 m inter = 16 → IoU 16 / (20 + 20 − 16) = 2/3 (TP, PQ 66.7);
    # at 2 and 4 m PQ 100. 15 manmade rays with two GT ids: stuff is one segment whatever the ids.
    gl = np.array([CAR] * 20 + [MANMADE] * 15)
    gi = np.array([4] * 20 + [1] * 7 + [2] * 8)
    pi = np.array([9] * 20 + [0] * 15)
    gd = np.full(35, 10.0)
    pd = gd.copy()
    pd[:4] += 1.5
    pq = RayPQ()
    pq.update_rays(gl, pi, pd, gl, gi, gd)
    r = pq.compute()
    np.testing.assert_allclose(r.pq[:, CAR], [200 / 3, 100.0, 100.0])
    np.testing.assert_allclose(r.pq[:, MANMADE], 100.0)
    np.testing.assert_allclose(r.raypq_at, [250 / 3, 100.0, 100.0])
    assert r.raypq == pytest.approx((200 / 3 + 500) / 6)
    # 8 rays off: inter = 12 → IoU 12 / 28 < 0.5 at 1 m → no match: one FN and one FP, PQ 0
    pd[:8] = 11.5
    pq = RayPQ()
    pq.update_rays(gl, pi, pd, gl, gi, gd)
    r = pq.compute()
    assert (r.tp[0, CAR], r.fp[0, CAR], r.fn[0, CAR], r.pq[0, CAR]) == (0, 1, 1, 0.0)
    assert r.pq[1, CAR] == pytest.approx(100.0)


def test_raypq_gt_id_spanning_two_classes_is_dropped_as_officially():
    # GT id 1 covers 20 car rays and 15 truck rays → treated as id 0, merging with 12 car rays of
    # id 0: the GT car segment has 32 rays. Prediction: 20 rays id 5, 12 rays id 6.
    # IoU(seg0, 5) = 20/32 → TP; pred 6 (12 rays) unmatched → FP. PQ_car = 0.625 / 1.5.
    gl = np.array([CAR] * 32 + [TRUCK] * 15)
    gi = np.array([1] * 20 + [0] * 12 + [1] * 15)
    pi = np.array([5] * 20 + [6] * 12 + [3] * 15)
    d = np.zeros(47)
    pq = RayPQ()
    pq.update_rays(gl, pi, d, gl, gi, d)
    r = pq.compute()
    assert r.pq[0, CAR] == pytest.approx(100 * 0.625 / 1.5)
    assert r.pq[0, TRUCK] == pytest.approx(100.0)


def test_official_pano_inst_conversion():
    pano = np.array([[[0, 11, 17], [18, 19, 4], [25, 18, 15]]], dtype=np.int64)
    conv = instances_from_official_pano(pano)
    assert conv.dtype == np.uint16
    np.testing.assert_array_equal(conv, [[[0, 0, 0], [1, 2, 0], [8, 1, 0]]])
    with pytest.raises(EvaluationError):
        instances_from_official_pano(np.array([-1]))
    # scoring with the converted grid equals scoring with the native one
    sem, inst = two_cars()
    official = np.where(inst > 0, inst.astype(np.int64) + 17, sem).astype(np.int64)
    a, b = pq_metric(RAYS_A + RAYS_B), pq_metric(RAYS_A + RAYS_B)
    a.update(sem, inst, sem, inst, ORIGIN)
    b.update(sem, instances_from_official_pano(official), sem, inst, ORIGIN)
    np.testing.assert_array_equal(a.compute().pq, b.compute().pq)


# --- files --------------------------------------------------------------------------------------

def write_gt(path: Path, sem: np.ndarray, inst=None, **kw) -> None:
    ones = np.ones(GRID.shape, bool)
    save_ground_truth(path, Occupancy(sem, inst, mask_camera=ones, mask_lidar=ones, **kw))


def test_occ3d_files_round_trip(tmp_path):
    sem, inst = street()
    gt = Occupancy(sem, inst, mask_camera=sem != FREE, mask_lidar=np.zeros(GRID.shape, bool),
                   origins=np.array([[1.0, 2.0, 3.0]]))
    save_ground_truth(tmp_path / 'a' / 'labels.npz', gt)
    back = load_ground_truth(tmp_path / 'a' / 'labels.npz')
    np.testing.assert_array_equal(back.semantics, sem)
    assert back.semantics.dtype == np.uint8 and back.mask_camera.dtype == np.bool_
    np.testing.assert_array_equal(back.mask_camera, sem != FREE)
    np.testing.assert_array_equal(back.instances, inst)
    np.testing.assert_array_equal(back.origins, [[1.0, 2.0, 3.0]])
    with np.load(tmp_path / 'a' / 'labels.npz') as raw:             # the Occ3D layout on disk
        assert raw['mask_camera'].dtype == np.uint8 and raw['semantics'].shape == GRID.shape
    save_prediction(tmp_path / 'p.npz', Occupancy(sem, inst))
    p = load_prediction(tmp_path / 'p.npz')
    np.testing.assert_array_equal(p.semantics, sem)
    np.testing.assert_array_equal(p.instances, inst)
    official = np.where(inst > 0, inst.astype(np.int64) + 17, sem)
    np.savez(tmp_path / 'official.npz', semantics=sem, pano_inst=official)
    np.testing.assert_array_equal(load_prediction(tmp_path / 'official.npz').instances, inst)


def test_malformed_files_raise_named_errors(tmp_path):
    sem = walls()
    cases = {
        'no_mask': dict(semantics=sem),
        'wrong_shape': dict(semantics=sem[:, :, :8], mask_camera=np.ones((200, 200, 8), np.uint8)),
        'float_sem': dict(semantics=sem.astype(np.float32), mask_camera=np.ones(GRID.shape, np.uint8)),
        'bad_mask': dict(semantics=sem, mask_camera=np.full(GRID.shape, 2, np.uint8)),
    }
    messages = {'no_mask': "missing required key 'mask_camera'", 'wrong_shape': 'shape',
                'float_sem': 'integer', 'bad_mask': '0/1'}
    for name, arrays in cases.items():
        np.savez(tmp_path / f'{name}.npz', **arrays)
        with pytest.raises(OccFileError, match=messages[name]):
            load_ground_truth(tmp_path / f'{name}.npz')
    (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
    with pytest.raises(OccFileError, match='not a readable'):
        load_ground_truth(tmp_path / 'junk.npz')
    with pytest.raises(OccFileError, match='no such file'):
        load_prediction(tmp_path / 'absent.npz')
    bad = sem.copy()
    bad[0, 0, 0] = 18
    np.savez(tmp_path / 'pred18.npz', semantics=bad)
    with pytest.raises(OccFileError, match='class ids'):
        load_prediction(tmp_path / 'pred18.npz')
    np.savez(tmp_path / 'nosem.npz', pred_occ=sem)
    with pytest.raises(OccFileError, match="'semantics'"):
        load_prediction(tmp_path / 'nosem.npz')
    assert issubclass(OccFileError, OccRosError)


def test_pairing_by_relative_key_then_token(tmp_path):
    for k in ('scene-1/tokA', 'scene-1/tokB', 'scene-2/tokC'):
        write_gt(tmp_path / 'gt' / k / 'labels.npz', empty())
    save_prediction(tmp_path / 'pred' / 'tokA.npz', Occupancy(empty()))
    save_prediction(tmp_path / 'pred' / 'scene-1' / 'tokB' / 'labels.npz', Occupancy(empty()))
    save_prediction(tmp_path / 'pred' / 'stray.npz', Occupancy(empty()))
    p = pair_files(tmp_path / 'pred', tmp_path / 'gt')
    assert [(k, pp.relative_to(tmp_path).as_posix()) for k, pp, _ in p.pairs] == [
        ('scene-1/tokA', 'pred/tokA.npz'), ('scene-1/tokB', 'pred/scene-1/tokB/labels.npz')]
    assert p.missing_predictions == ('scene-2/tokC',)
    assert p.unmatched_predictions == ('stray',)
    with pytest.raises(OccFileError, match='does not exist'):
        pair_files(tmp_path / 'nope', tmp_path / 'gt')


# --- score_pairs and the CLI ----------------------------------------------------------------------

def eval_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return parser.parse_args(['--pred', str(tmp_path / 'pred'), '--gt', str(tmp_path / 'gt'),
                              '--json', str(tmp_path / 'out.json'), '--quiet', *extra])


def make_eval_dirs(tmp_path: Path) -> None:
    gt_walls = walls()
    inst = np.zeros(GRID.shape, np.uint16)
    write_gt(tmp_path / 'gt' / 'scene-1' / 'tokA' / 'labels.npz', gt_walls, inst)
    write_gt(tmp_path / 'gt' / 'scene-1' / 'tokB' / 'labels.npz', gt_walls, inst)
    save_prediction(tmp_path / 'pred' / 'tokA.npz', Occupancy(shift_x(gt_walls), inst))
    save_prediction(tmp_path / 'pred' / 'tokB' / 'labels.npz', Occupancy(gt_walls, inst))


def test_cli_eval_writes_json_with_hand_computed_miou(tmp_path, capsys):
    make_eval_dirs(tmp_path)
    assert eval_cli.run(eval_args(tmp_path)) == 0
    out = json.loads((tmp_path / 'out.json').read_text())
    # one confusion matrix over both frames (shifted + perfect):
    # manmade 1056 / 1760 = 60 %, vegetation 672 / 736 = 91.304 % → mIoU 75.652 %
    assert out['miou'] == pytest.approx((60.0 + 100 * 672 / 736) / 2, abs=1e-5)
    assert out['semantic']['per_class']['manmade'] == pytest.approx(60.0)
    assert out['semantic']['per_class']['car'] is None
    assert out['num_frames'] == 2 and out['num_panoptic_frames'] == 2 and out['complete']
    # ray metrics equal those of the accumulators driven directly
    ri = RayIoU()
    ri.update(shift_x(walls()), walls())
    ri.update(walls(), walls())
    assert out['rayiou'] == pytest.approx(ri.compute().rayiou, abs=1e-5)
    assert set(out['rayiou_at']) == {'1', '2', '4'}
    assert 0 < out['rayiou'] < 100 and out['raypq'] is not None
    printed = capsys.readouterr().out
    assert '| manmade | 60.00 |' in printed and 'RayIoU@1' in printed and 'RayPQ@4' in printed


def test_cli_reports_missing_pairs_and_errors(tmp_path, capsys):
    make_eval_dirs(tmp_path)
    write_gt(tmp_path / 'gt' / 'scene-2' / 'tokC' / 'labels.npz', walls())
    assert eval_cli.run(eval_args(tmp_path, '--no-rays')) == 1                 # missing → exit 1
    out = json.loads((tmp_path / 'out.json').read_text())
    assert out['missing_predictions'] == ['scene-2/tokC'] and not out['complete']
    assert out['num_frames'] == 2 and out['rayiou'] is None
    assert 'MISSING predictions' in capsys.readouterr().out
    assert eval_cli.run(eval_args(tmp_path, '--no-rays', '--missing', 'skip')) == 0
    assert eval_cli.run(eval_args(tmp_path, '--no-rays', '--missing', 'empty')) == 0
    out = json.loads((tmp_path / 'out.json').read_text())
    assert out['num_frames'] == 3
    # the empty frame adds GT voxels with no prediction: manmade 1056 / (2112 + 1408 − 1056)
    assert out['semantic']['per_class']['manmade'] == pytest.approx(100 * 1056 / 2464)
    np.savez(tmp_path / 'pred' / 'tokC.npz', semantics=walls()[:, :, :8])     # malformed prediction
    with pytest.raises(OccFileError, match='tokC'):
        eval_cli.run(eval_args(tmp_path))


def test_cli_origins_from_json_and_gt(tmp_path):
    make_eval_dirs(tmp_path)
    origins = {'tokA': [[0.2, 0.2, 1.2]], 'scene-1/tokB': [[0.2, 0.2, 1.2], [45.0, 0.0, 1.2]]}  # 2nd dropped
    (tmp_path / 'origins.json').write_text(json.dumps(origins))
    assert eval_cli.run(eval_args(tmp_path, '--origins-from', str(tmp_path / 'origins.json'))) == 0
    out = json.loads((tmp_path / 'out.json').read_text())
    ri = RayIoU()
    ri.update(shift_x(walls()), walls(), ORIGIN)
    ri.update(walls(), walls(), ORIGIN)
    assert out['rayiou'] == pytest.approx(ri.compute().rayiou, abs=1e-5)
    assert 'origins.json' in out['origins']
    (tmp_path / 'origins.json').write_text(json.dumps({'tokA': [[0.2, 0.2, 1.2]]}))
    with pytest.raises(EvaluationError, match='tokB'):
        eval_cli.run(eval_args(tmp_path, '--origins-from', str(tmp_path / 'origins.json')))
    with pytest.raises(OccFileError, match='origins'):
        eval_cli.run(eval_args(tmp_path, '--origins-from', 'gt'))


def test_score_pairs_report_markdown_and_dict():
    sem, inst = street()
    gt = Occupancy(sem, inst, mask_camera=np.ones(GRID.shape, bool))
    report = score_pairs([(Occupancy(empty()), gt), (Occupancy(sem, inst), gt)])
    d = report.to_dict()
    json.dumps(d, allow_nan=False)                                   # NaN-free JSON
    assert d['num_frames'] == 2 and d['num_panoptic_frames'] == 1
    assert any('RayPQ over 1 of 2 frames' in n for n in d['notes'])
    md = report.to_markdown()
    assert md.count('\n| ') == 19 and '| others | n/a |' in md       # header + 17 classes + mean
    with pytest.raises(EvaluationError, match='no frames'):
        score_pairs([])


def test_score_pairs_on_worker_processes_gives_the_serial_scores():
    """Rays cast on two spawned processes (what the replay uses): the same report, frame order kept;
    a bad frame is still named."""
    sem, inst = street()
    gt = Occupancy(sem, inst, mask_camera=np.ones(GRID.shape, bool))
    pairs = [(Occupancy(empty()), gt), (Occupancy(sem, inst), gt), (Occupancy(shift_x(walls())), gt)]
    serial, parallel = score_pairs(pairs).to_dict(), score_pairs(pairs, workers=2).to_dict()
    serial.pop('seconds', None)
    parallel.pop('seconds', None)
    assert parallel == serial
    bad = pairs + [(Occupancy(sem, inst), Occupancy(sem, inst, mask_camera=np.ones(GRID.shape, bool),
                                                    origins=np.array([[45.0, 0.0, 1.2]])))]
    with pytest.raises(EvaluationError, match='frame 3: no ray origin'):
        score_pairs([EvalSample(str(i), p, g, g.origins) for i, (p, g) in enumerate(bad)], workers=2)


def test_eval_no_camera_mask_flag_scores_the_unseen_voxels_too(tmp_path):
    """`occ-ros eval --no-camera-mask` must reach the scorer: a prediction that is right where the
    cameras see and wrong where they do not scores 100 mIoU with the mask (the Occ3D protocol)
    and less without it. Ignoring the flag fails here."""
    sem = walls()
    seen = np.zeros(GRID.shape, bool)
    seen[:, :100] = True                                      # the right half is unseen
    save_ground_truth(tmp_path / 'gt' / 'tokA' / 'labels.npz', Occupancy(sem, mask_camera=seen))
    pred = sem.copy()
    pred[:, 100:][pred[:, 100:] != FREE] = FREE               # misses every wall it cannot see
    save_prediction(tmp_path / 'pred' / 'tokA.npz', Occupancy(pred))
    assert eval_cli.run(eval_args(tmp_path, '--no-rays')) == 0
    masked = json.loads((tmp_path / 'out.json').read_text())['miou']
    assert eval_cli.run(eval_args(tmp_path, '--no-rays', '--no-camera-mask')) == 0
    unmasked = json.loads((tmp_path / 'out.json').read_text())['miou']
    assert masked == pytest.approx(100.0)
    assert unmasked < 90.0


def test_eval_bag_official_compat_flag_reaches_the_node(tmp_path, monkeypatch):
    """`occ-ros eval --bag B --official-compat` starts the node with official_compat:=true (the
    replay itself is stood in for: it needs DDS and a bag; test_replay.py runs it for real)."""
    from occ_ros.apps import replay
    seen = {}

    class Done(Exception):
        pass

    def fake_run_replay(bag, out, **kwargs):
        seen.update(kwargs)
        raise Done

    monkeypatch.setattr(replay, 'run_replay', fake_run_replay)
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    with pytest.raises(Done):
        eval_cli.run(parser.parse_args(['--bag', str(tmp_path / 'b'), '--official-compat', '--quiet']))
    assert seen['node_params'] == {'official_compat': True}
    seen.clear()
    with pytest.raises(Done):
        eval_cli.run(parser.parse_args(['--bag', str(tmp_path / 'b'), '--quiet']))
    assert not seen['node_params']


def test_raypq_checks_an_ids_class_over_its_stuff_rays_too():
    """Official ray_pq.py `add_panoptic_sample` (Yzichen/FlashOCC 4084861, l.54-63): every GT id's
    class is taken over all its rays before stuff becomes one segment per class; an id whose rays
    carry several classes gets the free class, and its thing rays fall into the class's unassigned
    segment. Two car instances that are also written on a few road rays therefore merge into one
    40-ray car segment, which neither 20-ray predicted car matches (IoU 0.5 is not > 0.5):
    per threshold, car TP 0, FP 2, FN 1 — by hand from the official code; road TP 1."""
    car, road = OCC_INDEX['car'], OCC_INDEX['driveable_surface']
    gl = np.array([car] * 40 + [road] * 30 + [road] * 30)
    gi = np.array([5] * 20 + [7] * 20 + [5] * 15 + [7] * 15 + [0] * 30)
    pl = gl.copy()
    pi = np.array([9] * 20 + [11] * 20 + [0] * 60)
    depth = np.zeros(gl.size)
    pq = RayPQ()
    pq.update_rays(pl, pi, depth, gl, gi, depth)
    r = pq.compute()
    assert r.tp[:, car].tolist() == [0, 0, 0]
    assert r.fp[:, car].tolist() == [2, 2, 2] and r.fn[:, car].tolist() == [1, 1, 1]
    assert r.tp[:, road].tolist() == [1, 1, 1] and r.fp[:, road].sum() == 0 and r.fn[:, road].sum() == 0
