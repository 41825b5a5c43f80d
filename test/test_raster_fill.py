"""The compiled rasteriser (occ_ros/bag/raster.py) against outside references.

1. `raster.fill_convex_poly` re-implements OpenCV's `cv::fillConvexPoly` for LINE_8 / shift=4
   (opencv/opencv modules/imgproc/src/drawing.cpp: FillConvexPoly, Line2, clipLine). Reference:
   `cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)` itself, on thousands of random
   polygons — convex ones of 3..8 vertices, vertices outside the mask, thin / collinear /
   repeated-vertex polygons, horizontal edges, sub-pixel and huge ones, and point sets in any
   order (the same algorithm must give the same pixels whatever it is given). Every mask equal.
2. `render.rasterise` (compiled face loop) against the Python face loop it replaced
   (`rasterise(..., reference=True)`: Sutherland–Hodgman in numpy, `cv2.fillConvexPoly` per face,
   `compose.zbuffer_face`), on real frames of three worlds, all six cameras, at the renderer's
   and at a ground-truth-like small raster, and on boxes around the camera that cross the near
   and side planes: inverse depth, face ids and every per-face table equal bit for bit (where the
   frames are pinned bit for bit, `test_render_pinned.RECORDED_ON`; near agreement elsewhere).
   `raster.clip_faces` against the numpy clip it replaced on 3000 quads, bow-ties included.
"""
from __future__ import annotations

import platform

import cv2
import numpy as np
import pytest

import occ_ros.bag.render as render
from occ_ros.bag.boxes import BoxList
from occ_ros.core.errors import ConfigError
from occ_ros.bag.raster import clip_faces, fill_convex_poly, raster_faces
from occ_ros.bag.render import FAR, Renderer, rasterise
from occ_ros.bag.synth import SyntheticSequence
from occ_ros.geometry import nuscenes_rig
from test_render_pinned import RECORDED_ON


def _polygons(rng: np.random.Generator, count: int):
    """(mask shape, (k, 2) int32 vertices with 4 fractional bits) of many kinds."""
    for i in range(count):
        h, w = int(rng.integers(1, 48)), int(rng.integers(1, 48))
        kind = i % 8
        k = int(rng.integers(3, 9))
        if kind == 0:          # convex: sorted angles on an ellipse, either orientation
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            if rng.random() < 0.5:
                ang = ang[::-1]
            c = rng.uniform(-0.3, 1.3, 2) * (w, h)
            r = rng.uniform(0.2, 1.2, 2) * (w, h)
            pts = c + r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        elif kind == 1:        # convex hull of random points, partly outside the mask
            p = rng.uniform(-0.5, 1.5, (k, 2)) * (w, h)
            pts = cv2.convexHull(p.astype(np.float32))[:, 0].astype(np.float64)
        elif kind == 2:        # collinear (a degenerate polygon: a segment)
            a, b = rng.uniform(-0.5, 1.5, 2) * (w, h), rng.uniform(-0.5, 1.5, 2) * (w, h)
            pts = a + np.sort(rng.uniform(0, 1, k))[:, None] * (b - a)
        elif kind == 3:        # thin sliver
            a, b = rng.uniform(-0.2, 1.2, 2) * (w, h), rng.uniform(-0.2, 1.2, 2) * (w, h)
            pts = np.array([a, b, b + rng.uniform(-0.4, 0.4, 2)])
        elif kind == 4:        # axis-aligned rectangle / horizontal edges, repeated vertices
            x0, x1 = np.sort(rng.uniform(-0.3, 1.3, 2) * w)
            y0, y1 = np.sort(rng.uniform(-0.3, 1.3, 2) * h)
            pts = np.array([[x0, y0], [x1, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif kind == 5:        # sub-pixel
            c = rng.uniform(-1, 1, 2) + rng.uniform(0, 1, 2) * (w, h)
            pts = c + rng.uniform(-0.6, 0.6, (k, 2))
        elif kind == 6:        # huge: vertices thousands of pixels away
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            pts = rng.uniform(0, 1, 2) * (w, h) + rng.uniform(50, 4000) * np.stack([np.cos(ang), np.sin(ang)], 1)
        else:                  # any point set, any order (not convex)
            pts = rng.uniform(-0.5, 1.5, (k, 2)) * (w, h)
        yield (h, w), (pts * 16.0 + 0.5).astype(np.int32).reshape(-1, 2)


def test_fill_matches_cv2_fill_convex_poly():
    rng = np.random.default_rng(18)
    n = 0
    for shape, pts in _polygons(rng, 4000):
        ref = np.zeros(shape, np.uint8)
        cv2.fillConvexPoly(ref, pts, 1, lineType=cv2.LINE_8, shift=4)
        got = np.zeros(shape, np.uint8)
        fill_convex_poly(got, pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64), len(pts), 1)
        assert np.array_equal(got, ref), f'polygon {n}: {pts.tolist()} on {shape}'
        n += 1
    assert n == 4000


# Both paths project clipped faces and take texture-axis dot products with numpy's BLAS (one batched
# product against one per face): the same bits where the frames are pinned bit for bit; elsewhere
# (another BLAS) a last-bit difference may move a rounded vertex, so only near agreement is held.
EXACT = (platform.machine(), '.'.join(np.__version__.split('.')[:2])) == RECORDED_ON


def _assert_same(a, b) -> None:
    if not EXACT:
        assert np.mean(a.fid == b.fid) >= 0.999
        np.testing.assert_allclose(a.inv, b.inv, rtol=1e-5)
        return
    for f in ('inv', 'fid', 'face_box', 'face_kind', 'face_h', 'face_axes'):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f'{f} differs'


@pytest.fixture
def count_clipped(monkeypatch):
    """How many faces crossing a frustum plane the compiled path clipped."""
    seen = [0]
    inner = render.clip_faces

    def counting(verts, planes):
        seen[0] += len(verts)
        return inner(verts, planes)
    monkeypatch.setattr(render, 'clip_faces', counting)
    return seen


# a non-planar bow-tie quad (found by a random search) whose clip by the frustum of the rig's first
# camera (CAM_FRONT_LEFT at 90×160) has 11 vertices: more than a convex face's 4 + 6, which a fixed
# 10-vertex buffer would overrun
BOW_TIE = [[0.22291131910214346, 0.8505727660324994, 1.83358167267693],
           [-0.7328516944727143, -0.38575445810409825, 0.6834082637075409],
           [0.6958566329386308, 0.4837929807976729, 0.06683150882440712],
           [-1.433804387883723, -1.1168505902099155, 0.1715179466239575]]


def test_clip_faces_equals_the_python_clip_on_any_quad():
    """Quads around a real camera's frustum — planar faces and also bow-ties, slivers and
    repeated vertices, whose clipped polygons can have more vertices than a convex face's
    4 + 6 (the buffers are sized for any input): the same vertex counts and the same bits as
    `render._clip_polygon`, the numpy Sutherland–Hodgman the Python loop used."""
    hw = (90, 160)
    pre = Renderer(SyntheticSequence(5, 1.0, 12.0, nuscenes_rig(hw), hw, ground_truth=False).world,
                   list(nuscenes_rig(hw))).cameras[0]
    rng = np.random.default_rng(7)
    quads = rng.normal(0.0, 1.0, (3000, 4, 3)) * rng.choice([0.05, 1.0, 20.0, 400.0], (3000, 1, 1))
    quads[:, :, 2] += rng.choice([0.0, 0.1, 5.0], (3000, 1))
    quads[::7, 3] = quads[::7, 2]                                          # repeated vertex
    quads[::11, 1] = quads[::11, 0] + 1e-12                                # near-repeated
    quads[0] = BOW_TIE                                                     # clips to 11 vertices
    polys, counts = clip_faces(quads, pre.planes)
    assert polys.shape[1] == counts.max()
    for m in range(len(quads)):
        ref = render._clip_polygon(quads[m], pre.planes)
        assert counts[m] == len(ref), m
        assert np.array_equal(polys[m, :counts[m]].view(np.uint64), ref.reshape(-1, 3).view(np.uint64)), m
        assert not polys[m, counts[m]:].any()
    assert counts[0] == 11 and (counts == 0).any() and (counts == 4).any()


@pytest.mark.parametrize('seed,hw', [(3, (225, 400)), (4242, (225, 400)), (77, (57, 100))])
def test_compiled_rasterise_equals_python_loop(seed, hw, count_clipped):
    seq = SyntheticSequence(seed, 4.0, 12.0, nuscenes_rig(hw), hw, ground_truth=False)
    faces = 0
    for i in (0, len(seq) // 2, len(seq) - 1):
        t = seq.time_of(i)
        pose = seq.world.ego_pose(t)
        boxes = seq.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        for pre in seq.renderer.cameras:
            T_cw = np.linalg.inv(pose @ pre.T_ce)
            ref = rasterise(pre, boxes, T_cw, reference=True)
            got = rasterise(pre, boxes, T_cw)
            _assert_same(got, ref)
            faces += len(got.face_box)
    assert faces > 100 and count_clipped[0] > 10


def test_compiled_rasterise_equals_python_loop_on_boxes_around_the_camera(count_clipped):
    """Boxes a few metres around the ego, many crossing the near plane and the image sides."""
    hw = (120, 200)
    seq = SyntheticSequence(5, 1.0, 12.0, nuscenes_rig(hw), hw, ground_truth=False)
    renderer = Renderer(seq.world, list(nuscenes_rig(hw)))
    rng = np.random.default_rng(5)
    for trial in range(6):
        bl = BoxList()
        for _ in range(40):
            bl.add(rng.uniform(-6, 6, 2).tolist() + [rng.uniform(0.2, 2.0)], rng.uniform(0.2, 4.0, 3),
                   rng.uniform(-np.pi, np.pi), 4, 1)
        boxes = bl.freeze()
        for pre in renderer.cameras:
            T_cw = np.linalg.inv(pre.T_ce)                               # ego at the world origin
            _assert_same(rasterise(pre, boxes, T_cw), rasterise(pre, boxes, T_cw, reference=True))
    assert count_clipped[0] > 100


def test_a_non_finite_face_is_a_named_error_not_a_hang():
    """The Python loop raised at math.floor(nan); compiled code would turn NaN into a garbage integer."""
    uv = np.array([[[1.0, 1.0], [5.0, 1.0], [np.nan, 4.0], [1.0, 4.0]]])
    inv, fid = np.zeros((8, 8), np.float32), np.full((8, 8), -1, np.int32)
    with pytest.raises(ConfigError, match='non-finite'):
        raster_faces(inv, fid, uv, np.array([[1.0, 1.0]]), np.array([[np.nan, 4.0]]), np.full(1, -1, np.int64),
                     np.zeros((0, 1, 2)), np.zeros(0, np.int64), np.ones((1, 3), np.float32))
