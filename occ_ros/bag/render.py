"""Rasterising renderer for the synthetic world: RGB, depth and per-pixel class per camera.

Method (vectorised numpy + OpenCV polygon fill, no per-pixel ray casting against primitives):

- The ground is the plane z = 0 of the ego frame. The cameras are fixed on the ego, so the
  ray–plane intersection of every pixel (its depth and its ego-frame ground point) is computed
  once per camera; per frame the ground points are moved into the world by the ego pose and
  looked up in the world's ground-class raster.
- Boxes (upright, oriented) are culled against the view frustum, back faces dropped, faces that
  cross a frustum plane clipped in 3-D (Sutherland–Hodgman), projected and filled with
  `cv2.fillConvexPoly`. A per-pixel inverse-depth test (z-buffer) keeps the nearest surface:
  1/z is affine in (u, v) on a plane, so a face's inverse depth over its bounding box is one
  multiply-add. The ground's inverse depth initialises the buffer; sky is 0.
- Colour: per-face base colour (class colour with per-instance jitter) × Lambert shading by the
  sun, face-anchored texture (noise, windows on facades, foliage, glass, stripes) from the
  face's own 2-D coordinates, world-anchored ground texture and lane paint, distance haze,
  a sky gradient and a small sensor-noise pattern.

Depth is metres along the optical axis (z of the optical frame), 0 for sky. Per-pixel class
is the Occ3D class of the visible surface (sky = free).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from occ_ros.core.classes import FREE, OCC_INDEX
from occ_ros.core.errors import ConfigError
from occ_ros.bag.boxes import BoxSet
from occ_ros.bag.colour import compose_image, ground_runs
from occ_ros.bag.compose import camera_rays, depth_from_inverse, sky_image, zbuffer_face
from occ_ros.bag.raster import clip_faces, raster_faces
from occ_ros.bag.world import World
from occ_ros.bag.world_mix import (CLASS_BITS, GROUND_RES, MAT_FACADE, MAT_GLASS, MAT_STRIPES, PAINT_WHITE,
                                   PAINT_YELLOW, TERRAIN)

NEAR = 0.1                      # near plane, metres
FAR = 250.0                     # boxes beyond this depth are not drawn
GROUND_FAR = 1000.0             # the ground plane is drawn up to this depth
GUARD = 2.0                     # frustum guard band in pixels for clipping
FOG = 260.0                     # haze distance constant, metres
HAZE = np.array([196.0, 206.0, 216.0], dtype=np.float32)
SKY_HORIZON = np.array([205.0, 218.0, 232.0], dtype=np.float32)
SKY_ZENITH = np.array([84.0, 132.0, 204.0], dtype=np.float32)
WINDOW = np.array([58.0, 72.0, 94.0], dtype=np.float32)
GLASS = np.array([44.0, 58.0, 78.0], dtype=np.float32)
WHITE_PAINT = np.array([226.0, 226.0, 220.0], dtype=np.float32)
YELLOW_PAINT = np.array([222.0, 188.0, 64.0], dtype=np.float32)

# natural ground colours (RGB), indexed by class (unused entries grey)
GROUND_COLOURS = np.full((32, 3), 120.0, dtype=np.float32)
GROUND_COLOURS[OCC_INDEX['driveable_surface']] = (86, 87, 92)
GROUND_COLOURS[OCC_INDEX['sidewalk']] = (168, 136, 126)
GROUND_COLOURS[OCC_INDEX['other_flat']] = (152, 149, 138)
GROUND_COLOURS[OCC_INDEX['terrain']] = (104, 136, 62)

# box faces: corner indices (corner j has signs from bits x=j&1, y=j&2, z=j&4), outward normal,
# texture axes (e1, e2) in box coordinates and the corner that is the texture origin
_FACES = np.array([[0, 2, 6, 4], [1, 5, 7, 3], [0, 4, 5, 1], [2, 3, 7, 6], [0, 1, 3, 2], [4, 6, 7, 5]])
_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float64)
_E1 = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float64)
_E2 = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]], dtype=np.float64)
_ORIGIN = np.array([0, 1, 0, 2, 0, 4])


@dataclass
class CameraView:
    """One rendered camera image.

    image: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres along the optical axis, 0 = sky.
    classes: (H, W) uint8 Occ3D class of the visible surface (free = sky) or None.
    instances: (H, W) uint16 instance id of the visible thing (0 = stuff/sky) or None.
    """

    name: str
    image: Optional[np.ndarray]
    depth: np.ndarray
    classes: Optional[np.ndarray] = None
    instances: Optional[np.ndarray] = None


def periodic_noise(seed: int, n: int = 256, scale: float = 6.0) -> np.ndarray:
    """(n, n) float32 smooth, tileable noise in [0, 1] (white noise low-passed in Fourier space)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    spec = np.fft.fft2(white) / (1.0 + (r * n / scale) ** 2)
    noise = np.real(np.fft.ifft2(spec))
    noise = (noise - noise.min()) / (noise.max() - noise.min() + 1e-12)
    # add a little fine grain
    noise = 0.8 * noise + 0.2 * rng.random((n, n))
    return noise.astype(np.float32)


class _CameraPre:
    """Everything about one camera that does not change from frame to frame."""

    def __init__(self, cam: Any, sky_seed: int) -> None:
        self.name = cam.name
        self.K = np.asarray(cam.K, dtype=np.float64)
        self.H, self.W = int(cam.image_hw[0]), int(cam.image_hw[1])
        self.T_ce = np.asarray(cam.sensor2ego, dtype=np.float64)        # optical → ego
        self.T_ec = np.linalg.inv(self.T_ce)
        self.A = np.linalg.inv(self.K)                                    # pixel → ray (z = 1)
        H, W = self.H, self.W
        self.height = float(self.T_ce[2, 3])
        if self.height <= NEAR:
            raise ConfigError(f'camera {self.name} is {self.height:.2f} m above the ground; the synthetic '
                              f'world needs cameras above the ground plane')
        # per pixel: the ray A·(u, v, 1) (optical frame; z = 1 for a standard K) and its ego-frame
        # direction e; the ground plane z = 0 where e_z < 0, up to GROUND_FAR (one compiled pass)
        self.ray_norm, self.ground_inv, self.ground_idx, tt, gex, gey, open_idx, sky_dir = camera_rays(
            H, W, self.A, np.ascontiguousarray(self.T_ce[:3, :3]), self.height, GROUND_FAR)
        # ego-frame ground point of each ground pixel, x and y as separate contiguous arrays
        self.ground_row_runs, self.ground_runs = ground_runs(self.ground_idx, H, W)   # by row, for the colour pass
        self.ground_x = self.T_ce[0, 3] + tt * gex
        self.ground_y = self.T_ce[1, 3] + tt * gey
        self.ground_t = tt.astype(np.float32)
        # cosine of the incidence angle on the ground (for visibility margins): height / range
        self.ground_cos = (self.height / (tt * self.ray_norm.ravel()[self.ground_idx])).astype(np.float32)
        # sky gradient by elevation angle of the ray, only where the ground plane is not seen (a
        # ground pixel shows the ground or a box, never the sky: its entry stays 0)
        ex, ey, ez = sky_dir
        el = np.arcsin(np.clip(ez / np.sqrt(ex * ex + ey * ey + ez * ez), -1, 1))
        a = np.clip(el / 0.7, 0.0, 1.0) ** 0.6
        # soft clouds: low-frequency noise on azimuth / elevation (fixed per camera direction)
        az = np.arctan2(ey, ex)
        self.sky = sky_image(H * W, open_idx, el, a, az, periodic_noise(sky_seed, 128, 4.0), SKY_HORIZON,
                             SKY_ZENITH, HAZE).reshape(H, W, 3)
        # frustum planes (n, c): n·P + c ≥ 0 inside (optical frame)
        K = self.K
        self.planes = np.array([
            np.append(K[0] + GUARD * K[2], 0.0),
            np.append((W - 1 + GUARD) * K[2] - K[0], 0.0),
            np.append(K[1] + GUARD * K[2], 0.0),
            np.append((H - 1 + GUARD) * K[2] - K[1], 0.0),
            np.array([0.0, 0.0, 1.0, -NEAR]),
            np.array([0.0, 0.0, -1.0, FAR]),
        ])


def _clip_polygon(poly: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman clip of a convex 3-D polygon (k, 3) against half-spaces n·P + c ≥ 0."""
    for n0, n1, n2, c in planes:
        if len(poly) == 0:
            break
        d = poly[:, 0] * n0 + poly[:, 1] * n1 + poly[:, 2] * n2 + c
        if (d >= 0).all():
            continue
        out = []
        k = len(poly)
        for i in range(k):
            j = (i + 1) % k
            if d[i] >= 0:
                out.append(poly[i])
            if (d[i] >= 0) != (d[j] >= 0):
                t = d[i] / (d[i] - d[j])
                out.append(poly[i] + t * (poly[j] - poly[i]))
        poly = np.array(out) if out else np.zeros((0, 3))
    return poly


@dataclass
class _Raster:
    """Result of rasterising boxes into one camera."""

    inv: np.ndarray            # (H, W) float32 inverse depth, 0 = nothing (sky)
    fid: np.ndarray            # (H, W) int32 face index, −1 = ground or sky
    face_box: np.ndarray       # (F,) int64 box index per face
    face_kind: np.ndarray      # (F,) int64 face kind 0..5
    face_h: np.ndarray         # (F,) float64 |distance| from the camera to the face plane
    face_axes: np.ndarray      # (F, 8) float32 texture axes in the optical frame (e1, −o·e1, e2, −o·e2)


def rasterise(pre: _CameraPre, boxes: BoxSet, T_cw: np.ndarray, *, reference: bool = False) -> _Raster:
    """Z-buffer the faces of `boxes` (world frame) into camera `pre` (world → optical `T_cw`).

    The per-face loop (clip, pixel box, convex fill, z-test) runs compiled (`bag/raster.py`);
    `reference=True` runs it as the Python loop it was (`cv2.fillConvexPoly` per face), which gives
    the same bits and is kept to test that against (`test/test_raster_fill.py`)."""
    H, W = pre.H, pre.W
    inv = pre.ground_inv.copy()
    fid = np.full((H, W), -1, dtype=np.int32)
    empty = _Raster(inv, fid, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                    np.zeros((0, 8), np.float32))
    if len(boxes) == 0:
        return empty
    R, t = T_cw[:3, :3], T_cw[:3, 3]
    corners = boxes.corners() @ R.T + t                                  # (N, 8, 3)
    pl = pre.planes
    vals = corners @ pl[:, :3].T + pl[:, 3]                              # (N, 8, P)
    keep = ~np.any(np.all(vals < 0, axis=1), axis=1)
    if not keep.any():
        return empty
    bidx = np.flatnonzero(keep)
    corners = corners[bidx]
    vals = vals[bidx]
    yaw = boxes.yaw[bidx]
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((len(bidx), 3, 3))                                    # box → world
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    rot_c = np.einsum('ij,njk->nik', R, rot)                             # box → optical
    normals = np.einsum('nik,fk->nfi', rot_c, _NORMALS)                  # (N, 6, 3)
    # the face plane passes through its first corner
    p0 = corners[:, _FACES[:, 0], :]                                     # (N, 6, 3)
    h = np.einsum('nfi,nfi->nf', normals, p0)                           # n·P = h on the face
    visible = h < -1e-6
    e1 = np.einsum('nik,fk->nfi', rot_c, _E1)
    e2 = np.einsum('nik,fk->nfi', rot_c, _E2)
    origin = corners[:, _ORIGIN, :]
    A = pre.A
    K = pre.K
    nb, nf = np.nonzero(visible)
    q = _FACES[nf]                                                       # (M, 4) corner ids
    fverts = corners[nb[:, None], q]                                     # (M, 4, 3)
    fvals = vals[nb[:, None], q]                                         # (M, 4, P)
    neg = fvals < 0
    keep = ~np.any(np.all(neg, axis=1), axis=1)                          # not wholly outside a plane
    nb, nf, fverts, neg = nb[keep], nf[keep], fverts[keep], neg[keep]
    clip = np.any(neg, axis=(1, 2))
    with np.errstate(divide='ignore', invalid='ignore'):
        uvw = fverts @ K.T
        uv_all = uvw[..., :2] / uvw[..., 2:3]                            # valid where not clipped
    # faces that need no clipping and cover no pixel centre are dropped here, vectorised
    lo = np.where(clip[:, None], 0.0, uv_all.min(axis=1))
    hi = np.where(clip[:, None], 1.0, uv_all.max(axis=1))
    covers = np.all(np.floor(hi) >= np.ceil(lo), axis=1) & (hi[:, 0] >= 0) & (hi[:, 1] >= 0) \
        & (lo[:, 0] <= W - 1) & (lo[:, 1] <= H - 1)
    nb, nf, fverts, clip, uv_all = nb[covers], nf[covers], fverts[covers], clip[covers], uv_all[covers]
    lo, hi = lo[covers], hi[covers]
    normals_k = normals[nb, nf]                                          # (M, 3)
    h_k = h[nb, nf]
    coefs = ((normals_k @ A) / h_k[:, None]).astype(np.float32)          # 1/z = coef·[u, v, 1]
    if reference:
        return _faces_reference(pre, inv, fid, empty, nb, nf, fverts, clip, uv_all, lo, hi, coefs, h_k, bidx,
                                origin, e1, e2)
    # faces crossing a frustum plane: clipped (compiled), projected with one matrix product
    ci = np.flatnonzero(clip)
    slot = np.full(len(nb), -1, np.int64)
    slot[ci] = np.arange(len(ci))
    polys, counts = clip_faces(np.ascontiguousarray(fverts[ci]), pl)
    with np.errstate(divide='ignore', invalid='ignore'):                 # zero padding → nan, unused
        pw = polys.reshape(-1, 3) @ K.T
        uv_clip = (pw[:, :2] / pw[:, 2:3]).reshape(polys.shape[0], polys.shape[1], 2)
    won = raster_faces(inv, fid, np.ascontiguousarray(uv_all), lo, hi, slot, uv_clip, counts, coefs)
    if len(won) == 0:
        return empty
    bi, fk = nb[won], nf[won]
    o, a1, a2 = origin[bi, fk], e1[bi, fk], e2[bi, fk]
    d1 = (o[:, None, :] @ a1[:, :, None])[:, :, 0]                      # o·e1, as `o @ a1` per face
    d2 = (o[:, None, :] @ a2[:, :, None])[:, :, 0]
    return _Raster(inv, fid, bidx[bi].astype(np.int64), fk.astype(np.int64), -h_k[won],
                   np.concatenate([a1, -d1, a2, -d2], axis=1).astype(np.float32))


def _faces_reference(pre: _CameraPre, inv: np.ndarray, fid: np.ndarray, empty: _Raster, nb: np.ndarray,
                     nf: np.ndarray, fverts: np.ndarray, clip: np.ndarray, uv_all: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, coefs: np.ndarray, h_k: np.ndarray, bidx: np.ndarray, origin: np.ndarray,
                     e1: np.ndarray, e2: np.ndarray) -> _Raster:
    """`rasterise`'s per-face loop in Python, as it was before `bag/raster.py` compiled it."""
    H, W = pre.H, pre.W
    pl, K = pre.planes, pre.K
    # per-face pixel bounds of the unclipped faces, as Python floats (one conversion, not 4 per face)
    lo_l, hi_l, clip_l = lo.tolist(), hi.tolist(), clip.tolist()
    face_box: list[int] = []
    face_kind: list[int] = []
    face_h: list[float] = []
    face_axes: list[tuple[float, ...]] = []
    for m_i in range(len(nb)):
        if clip_l[m_i]:
            poly = _clip_polygon(fverts[m_i], pl)
            if len(poly) < 3:
                continue
            pw = poly @ K.T
            uv = pw[:, :2] / pw[:, 2:3]
            umin, vmin = uv.min(axis=0)
            umax, vmax = uv.max(axis=0)
        else:
            uv = uv_all[m_i]
            (umin, vmin), (umax, vmax) = lo_l[m_i], hi_l[m_i]
        u0, u1 = max(0, math.floor(umin)), min(W - 1, math.ceil(umax))
        v0, v1 = max(0, math.floor(vmin)), min(H - 1, math.ceil(vmax))
        if u0 > u1 or v0 > v1:
            continue
        mask = np.zeros((v1 - v0 + 1, u1 - u0 + 1), dtype=np.uint8)
        pts = ((uv - (u0, v0)) * 16.0 + 0.5).astype(np.int32)            # 4 fractional bits
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
        coef = coefs[m_i]
        k = len(face_box)
        if not zbuffer_face(inv, fid, mask, v0, u0, coef[0], coef[1], coef[2], k):
            continue                                                     # hidden: k was written nowhere
        bi, fk = int(nb[m_i]), int(nf[m_i])
        face_box.append(bidx[bi])
        face_kind.append(fk)
        face_h.append(-float(h_k[m_i]))
        o = origin[bi, fk]
        a1, a2 = e1[bi, fk], e2[bi, fk]
        face_axes.append((a1[0], a1[1], a1[2], -float(o @ a1), a2[0], a2[1], a2[2], -float(o @ a2)))
    if not face_box:
        return empty
    return _Raster(inv, fid, np.array(face_box, np.int64), np.array(face_kind, np.int64),
                   np.array(face_h), np.array(face_axes, np.float32))


class Renderer:
    """Renders `World` frames through a rig of pinhole cameras.

    rig: an iterable of cameras with `name`, `K` (3, 3), `sensor2ego` (4, 4, optical → ego),
    `image_hw` (e.g. `occ_ros.geometry.Rig`). Per-camera constants are computed once.
    """

    def __init__(self, world: World, rig: Sequence[Any], *, sensor_noise: float = 3.0) -> None:
        self.world = world
        self.cameras = [_CameraPre(c, world.seed * 7919 + i) for i, c in enumerate(rig)]
        if not self.cameras:
            raise ConfigError('the renderer needs at least one camera')
        self.noise = periodic_noise(world.seed + 11, 256, 10.0)
        self.noise_fine = periodic_noise(world.seed + 13, 256, 40.0)
        self.sensor_noise = float(sensor_noise)
        hmax = max(c.H for c in self.cameras)
        wmax = max(c.W for c in self.cameras)
        rng = np.random.default_rng(world.seed + 17)
        self._grain = (rng.standard_normal((hmax + 32, wmax + 32, 3)) * self.sensor_noise).astype(
            np.float32) if self.sensor_noise > 0 else None
        self._sun = world.sun                                             # unit vector, world frame

    def render(self, t: float, *, boxes: Optional[BoxSet] = None, colour: bool = True,
               classes: bool = True, frame_index: int = 0) -> list[CameraView]:
        """Render every camera at time t. `boxes` (world frame) defaults to world.boxes_at(t)."""
        pose = self.world.ego_pose(t)
        if boxes is None:
            boxes = self.world.boxes_at(t, pose[:2, 3], FAR + 10.0)
        return [self.render_camera(i, pose, boxes, colour=colour, classes=classes, frame_index=frame_index)
                for i in range(len(self.cameras))]

    def render_camera(self, i: int, ego_pose: np.ndarray, boxes: BoxSet, *, colour: bool = True,
                      classes: bool = True, frame_index: int = 0) -> CameraView:
        """Render camera i for ego pose `ego_pose` (4, 4) and world-frame `boxes`.

        colour: also compose the RGB image (else depth / classes only). frame_index shifts the
        sensor-grain pattern so consecutive frames do not share the same noise.
        """
        pre = self.cameras[i]
        T_wc = ego_pose @ pre.T_ce
        T_cw = np.linalg.inv(T_wc)
        ras = rasterise(pre, boxes, T_cw)
        inv = ras.inv
        # 1 / inv where something was hit (inv ≥ 1 / GROUND_FAR there), 0 for sky
        depth = depth_from_inverse(inv)
        cls_img: Optional[np.ndarray] = None
        inst_img: Optional[np.ndarray] = None
        if classes:
            cls_img, inst_img = self._classes(pre, ras, boxes, ego_pose)
        image = self._colour(pre, ras, boxes, depth, ego_pose, frame_index) if colour else None
        return CameraView(pre.name, image, depth, cls_img, inst_img)

    def _classes(self, pre: _CameraPre, ras: _Raster, boxes: BoxSet,
                 ego_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel Occ3D class (free = sky) and instance id of the visible surface."""
        H, W = pre.H, pre.W
        fid = ras.fid.ravel()
        # ground pixels not covered by a box
        gsel = fid[pre.ground_idx] < 0
        gi = pre.ground_idx[gsel]
        gx = pre.ground_x[gsel]
        gy = pre.ground_y[gsel]
        c, s = ego_pose[0, 0], ego_pose[1, 0]
        wx = ego_pose[0, 3] + c * gx - s * gy
        wy = ego_pose[1, 3] + s * gx + c * gy
        cls_flat = np.full(H * W, FREE, dtype=np.uint8)
        cls_flat[gi] = self.world.ground_class(wx, wy)
        inst_flat = np.zeros(H * W, dtype=np.uint16)
        bi = np.flatnonzero(fid >= 0)
        if len(bi):
            bf = fid[bi]
            cls_flat[bi] = boxes.cls[ras.face_box][bf]
            inst_flat[bi] = boxes.inst[ras.face_box][bf]
        return cls_flat.reshape(H, W), inst_flat.reshape(H, W)

    def _colour(self, pre: _CameraPre, ras: _Raster, boxes: BoxSet, depth: np.ndarray, ego_pose: np.ndarray,
                frame_index: int) -> np.ndarray:
        """Compose the RGB image: a colour look-up table indexed per pixel, times a texture map.

        LUT rows: [0, F) face colours, [F, 2F) the faces' alternative colours (windows, stripes),
        [2F, 2F + 128) ground raster values (class | paint bits), last row black (sky: the
        precomputed sky gradient is added where nothing was hit).
        """
        H, W = pre.H, pre.W
        sun = self._sun
        nface = len(ras.face_box)
        g0 = 2 * nface
        lut = np.zeros((g0 + 128, 3), dtype=np.float32)
        # ---- ground ------------------------------------------------------------------------------
        gshade = np.float32(0.62 + 0.45 * max(0.0, float(sun[2])))
        vals = np.arange(128)
        gcol = GROUND_COLOURS[vals & CLASS_BITS].copy()
        gcol[(vals & PAINT_WHITE) != 0] = WHITE_PAINT
        gcol[(vals & PAINT_YELLOW) != 0] = YELLOW_PAINT
        lut[g0:g0 + 128] = gcol * gshade
        # ---- boxes ---------------------------------------------------------------------------------
        mat = np.zeros(0, np.uint8)
        if nface:
            fb = ras.face_box
            yaw = boxes.yaw[fb]
            nl = _NORMALS[ras.face_kind]
            c, s = np.cos(yaw), np.sin(yaw)
            nw = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], axis=1)
            lam = np.clip(nw @ sun, 0.0, 1.0)
            shade = (0.5 + 0.5 * lam + 0.08 * nw[:, 2]).astype(np.float32)
            base = boxes.colour[fb] * shade[:, None]
            mat = np.ascontiguousarray(boxes.material[fb], dtype=np.uint8)
            alt = base.copy()
            fac = mat == MAT_FACADE
            alt[fac] = WINDOW * (0.8 + 0.4 * (base[fac, 0:1] / 255.0))
            st = mat == MAT_STRIPES
            alt[st] = 0.5 * base[st] + np.float32(0.5 * 235.0)
            gl = mat == MAT_GLASS
            base[gl] = base[gl] * 0.35 + GLASS
            lut[:nface] = base
            lut[nface:g0] = alt
        # ---- compose: LUT × texture, haze by distance, sky, sensor grain (one compiled pass) -------
        f = np.multiply(depth.ravel(), np.float32(-1.0 / FOG))
        np.exp(f, out=f)                                            # in place: no second full-image array
        if self._grain is not None:
            grain, oy, ox = self._grain, (frame_index * 7) % 32, (frame_index * 13) % 32
        else:
            grain, oy, ox = np.zeros((H, W, 3), np.float32), 0, 0
        image = np.empty((H, W, 3), dtype=np.uint8)
        world = self.world
        compose_image(image.reshape(-1), W, f, pre.sky.reshape(H * W, 3), grain, oy, ox, lut, HAZE,
                      self.noise.ravel(), self.noise_fine.ravel(), ras.fid.ravel(), pre.ground_row_runs,
                      pre.ground_runs, pre.ground_x, pre.ground_y, ego_pose, world.ground, world.ground_x0,
                      world.ground_y0, 1.0 / GROUND_RES, TERRAIN, g0, depth.ravel(), pre.A.astype(np.float32),
                      ras.face_axes, mat, nface)
        return image
