"""Occ3D-format ground truth of the synthetic world: semantics, instances, camera visibility mask.

All arrays are indexed [x, y, z] in the ego (base_link) frame at the frame's stamp, on
`config.GridSpec` (default 200 × 200 × 16 voxels of 0.4 m, x/y ∈ [−40, 40), z ∈ [−1, 5.4)).

- `semantics` uint8: class of the voxel, free = 17.
  * Ground: the ego frame's z = 0 is the ground (base_link sits on the ground under the rear
    axle, as in nuScenes). The ground occupies the one voxel layer whose z-range contains 0
    (k_ground = floor((0 − z_lo)/dz) = 2 for the default grid, z ∈ [−0.2, 0.2)); it carries the
    ground class under the voxel centre (driveable_surface, sidewalk, terrain, other_flat).
    Voxels below it are free and never observed (rays stop at the ground).
  * Boxes: a voxel belongs to an upright oriented box when its centre lies inside the box
    (faces inclusive; a box standing on the ground therefore also claims its ground-layer
    voxels, whose centres are at z = 0). Stuff is written first, things last, so things win.
    A box inside the grid that contains no voxel centre (a traffic cone between centres) claims
    the voxel column under its own centre over its height, so no object vanishes.
  * The ego vehicle's own space is free (the ego is not part of the world).
- `instances` uint16: the thing's instance id (≥ 1) on its voxels; 0 for stuff and free.
- `mask_camera` bool: voxels observed by the cameras, i.e. traversed by a camera ray up to and
  including the first occupied voxel. Not a literal per-ray voxel walk (too slow for 12 Hz in
  numpy, and a sparse ray set misses ground voxels seen at grazing angles) but its equivalent
  on a depth map:
  * Rays: a depth-only rendering per camera at a subsampled resolution (default 400 px wide,
    i.e. one ray per 4 × 4 pixels of a 1600 × 900 image; for the f ≈ 1266 px cameras 3.2 mrad
    per ray, 0.13 m between rays at 40 m, three rays across a 0.4 m voxel).
  * A voxel is observed by a camera when its centre projects inside that image and its range
    from the camera is at most the surface range of the ray through it plus a margin
    m = (half voxel diagonal) / max(cos θ, 0.2), θ being that ray's incidence angle on the
    surface: this admits the voxels within half a voxel diagonal behind the visible surface
    (the first occupied voxel); voxels further behind (inside buildings, behind objects,
    under the ground) are not observed.
  * Voxels within 12 m of a camera (several low-resolution pixels wide) are also tested at
    eight points just inside their corners (observed when in front of the surface, no
    margin), so a voxel only partly in view still counts.
  * A distorted lens (`occ-ros synth --distortion`, `lenses=`): a voxel is in view when its point
    projects inside the raw image through the lens (`occ_ros.bag.lens.project_points`, the
    pixel undistorting back to the same ray, so a polynomial folding over far off the axis admits
    nothing), and its surface range is read from a depth rendering of the lens's pinhole canvas
    (which holds every ray of the raw image). A barrel lens sees more than the pinhole of the
    same K, so its mask is larger at the image edges.
  * The voxel → pixel projection is fixed (the cameras are fixed on the ego and the grid moves
    with it), so it is computed once per rig; per frame only the low-resolution depth
    rendering and a gather-compare run.
  `test_synth.py` checks the mask against a brute-force voxel traversal (DDA) of random camera
  rays through the voxel occupancy (≥ 99 % of traversed voxels between 1 and 40 m observed).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from occ_ros.core.classes import FREE, THING_CLASSES
from occ_ros.core.config import OCC3D_GRID, GridSpec
from occ_ros.core.occupancy import InstanceInfo, Occupancy
from occ_ros.core.errors import ConfigError
from occ_ros.bag.compose import camera_visibility, voxelise_boxes
from occ_ros.bag.render import NEAR, _CameraPre, rasterise
from occ_ros.bag.boxes import BoxSet
from occ_ros.bag.world import World
from occ_ros.bag.lens import LensDistortion, project_points, undistort_pixels
from occ_ros.geometry.camera_model import CameraModel

_EPS = 1e-6


def _ground_layer(grid: GridSpec) -> Optional[int]:
    k = math.floor((0.0 - grid.z.lo) / grid.z.step)
    return k if 0 <= k < grid.nz else None


class GroundTruthMaker:
    """Computes `Occupancy` for a world, a rig and a grid.

    rig: cameras with name / K / sensor2ego / image_hw (e.g. `occ_ros.geometry.Rig`); only their
    geometry matters here (image sizes are rescaled to `mask_width`).
    lenses: one `LensDistortion` per rig camera when the images are those of a distorted lens
    (the camera mask is then the lens's visible region), else None (pinhole cameras).
    """

    def __init__(self, world: World, rig: Sequence[Any], grid: GridSpec = OCC3D_GRID,
                 mask_width: int = 400, near_samples: float = 12.0,
                 lenses: Optional[Sequence[LensDistortion]] = None) -> None:
        if mask_width < 16:
            raise ConfigError(f'mask_width must be at least 16 px, got {mask_width}')
        if lenses is not None and len(lenses) != len(rig):
            raise ConfigError(f'lenses: one per rig camera ({len(rig)}), got {len(lenses)}')
        self.world = world
        self.grid = grid
        self.k_ground = _ground_layer(grid)
        nx, ny, nz = grid.shape
        self.xc = grid.x.lo + (np.arange(nx) + 0.5) * grid.x.step
        self.yc = grid.y.lo + (np.arange(ny) + 0.5) * grid.y.step
        self.zc = grid.z.lo + (np.arange(nz) + 0.5) * grid.z.step
        gx, gy = np.meshgrid(self.xc, self.yc, indexing='ij')
        self._col_xy = np.stack([gx.ravel(), gy.ravel()], axis=1)          # (nx·ny, 2) ego
        half = [s / 2 for s in grid.voxel]
        self.margin = float(math.sqrt(sum(h * h for h in half)))        # half voxel diagonal
        self.radius = float(math.hypot(max(abs(grid.x.lo), abs(grid.x.hi)),
                                       max(abs(grid.y.lo), abs(grid.y.hi)))) + 2.0
        lens_list: Sequence[Optional[LensDistortion]] = lenses if lenses is not None else [None] * len(rig)
        self._vis = _visibility_tables(tuple(_camera_key(c, ld) for c, ld in zip(rig, lens_list)), grid,
                                       int(mask_width), float(near_samples))

    # ------------------------------------------------------------------------------------------
    def boxes_near(self, t: float) -> BoxSet:
        """World-frame boxes that may reach the grid around the ego at time t."""
        pose = self.world.ego_pose(t)
        return self.world.boxes_at(t, pose[:2, 3], self.radius)

    def __call__(self, t: float, stamp_ns: int = 0, boxes: Optional[BoxSet] = None) -> Occupancy:
        pose = self.world.ego_pose(t)
        if boxes is None:
            boxes = self.world.boxes_at(t, pose[:2, 3], self.radius)
        elif len(boxes):
            # only boxes that can reach the grid matter (for voxels and for occlusion alike)
            half_diag = 0.5 * np.hypot(boxes.size[:, 0], boxes.size[:, 1])
            dist = np.hypot(boxes.center[:, 0] - pose[0, 3], boxes.center[:, 1] - pose[1, 3])
            boxes = boxes.select(dist - half_diag <= self.radius)
        sem, inst = self.voxelise(pose, boxes)
        mask = self.visibility(pose, boxes)
        table = self.instance_table(t, pose, inst)
        return Occupancy(sem, inst, mask_camera=mask, instance_table=table, ego_pose=pose, stamp_ns=int(stamp_ns))

    # ------------------------------------------------------------------------------------------
    def voxelise(self, pose: np.ndarray, boxes: BoxSet) -> tuple[np.ndarray, np.ndarray]:
        """Semantics (uint8, free = 17) and instances (uint16) on the grid for ego pose `pose`."""
        g = self.grid
        nx, ny, nz = g.shape
        sem = np.full((nx, ny, nz), FREE, dtype=np.uint8)
        inst = np.zeros((nx, ny, nz), dtype=np.uint16)
        if self.k_ground is not None:
            c, s = pose[0, 0], pose[1, 0]
            wx = pose[0, 3] + c * self._col_xy[:, 0] - s * self._col_xy[:, 1]
            wy = pose[1, 3] + s * self._col_xy[:, 0] + c * self._col_xy[:, 1]
            sem[:, :, self.k_ground] = self.world.ground_class(wx, wy).reshape(nx, ny)
        if len(boxes) == 0:
            return sem, inst
        eb = boxes.transformed(np.linalg.inv(pose))
        order = np.argsort(eb.inst > 0, kind='stable')                  # stuff first, things last
        f64 = np.float64
        voxelise_boxes(sem, inst, np.ascontiguousarray(eb.center, f64), np.ascontiguousarray(eb.size, f64),
                       np.ascontiguousarray(eb.yaw, f64), np.ascontiguousarray(eb.cls, np.uint8),
                       np.ascontiguousarray(eb.inst, np.uint16), order.astype(np.int64), self.xc, self.yc,
                       np.array([g.x.lo, g.y.lo, g.z.lo], f64), np.array([g.x.step, g.y.step, g.z.step], f64), _EPS)
        return sem, inst

    def visibility(self, pose: np.ndarray, boxes: BoxSet) -> np.ndarray:
        """mask_camera (nx, ny, nz) bool for ego pose `pose` and world boxes `boxes`."""
        mask = np.zeros(self.grid.shape, dtype=bool).ravel()
        margin = np.float32(self.margin)
        for pre, vox, pix, rng, with_margin in self._vis:
            T_cw = np.linalg.inv(pose @ pre.T_ce)
            ras = rasterise(pre, boxes, T_cw)
            camera_visibility(mask, vox, pix, rng, with_margin, ras.inv.ravel(), ras.fid.ravel(),
                              ras.face_h.astype(np.float32), pre.ray_norm.ravel(), pre.ground_idx,
                              pre.ground_cos, margin)
        return mask.reshape(self.grid.shape)

    def instance_table(self, t: float, pose: np.ndarray, inst: np.ndarray) -> list[InstanceInfo]:
        flat = inst.ravel()
        counts = np.bincount(flat[flat != 0])            # voxels per instance id (things are few)
        present = set(np.flatnonzero(counts))
        if not present:
            return []
        T_ew = np.linalg.inv(pose)
        out = []
        for ob in self.world.objects_at(t, include_static=False):
            if ob.instance_id in present and ob.class_id in THING_CLASSES:
                c = T_ew[:3, :3] @ ob.center + T_ew[:3, 3]
                out.append(InstanceInfo(ob.instance_id, ob.class_id, (float(c[0]), float(c[1]), float(c[2])),
                                        int(counts[ob.instance_id])))
        out.sort(key=lambda i: i.id)
        return out


@dataclass(frozen=True)
class _LowResCam:
    name: str
    K: np.ndarray
    sensor2ego: np.ndarray
    image_hw: tuple[int, int]


def _camera_key(cam: Any, lens: Optional[LensDistortion] = None) -> tuple:
    """Hashable geometry of one camera: name, K, sensor2ego, size, and its lens (model, D, pinhole
    canvas K and size) or None."""
    lens_key = None
    if lens is not None:
        rc = lens.render_camera
        lens_key = (lens.model.distortion_model, tuple(float(d) for d in lens.D),
                    np.asarray(rc.K, np.float64).tobytes(), (int(rc.image_hw[0]), int(rc.image_hw[1])))
    return (cam.name, np.asarray(cam.K, np.float64).tobytes(), np.asarray(cam.sensor2ego, np.float64).tobytes(),
            (int(cam.image_hw[0]), int(cam.image_hw[1])), lens_key)


def _scaled(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    out = np.array(K, dtype=np.float64)
    out[0] *= sx
    out[1] *= sy
    out[2] = (0.0, 0.0, 1.0)
    return out


def _lens_pixels(name: str, K_full: np.ndarray, hw: tuple[int, int], lens_key: tuple, sx: float, sy: float,
                 pts: np.ndarray) -> np.ndarray:
    """(N,) bool: points (optical frame, z > 0) inside the raw image of the lens at the mask's
    resolution (distorted pixel rounded into [0, mw) × [0, mh), the pinhole grid's convention), whose
    pixel undistorts back to their own ray (no fold-over)."""
    model_name, D, _, _ = lens_key
    h, w = hw
    mw, mh = int(round(w * sx)), int(round(h * sy))
    uv = project_points(K_full, D, model_name, pts)
    u, v = np.round(uv[:, 0] * sx), np.round(uv[:, 1] * sy)
    inside = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < mw) & (v >= 0) & (v < mh)
    idx = np.flatnonzero(inside)
    if len(idx):
        model = CameraModel.create(K_full, D, model_name, (h, w), who=name)
        back = undistort_pixels(model, uv[idx])
        ray = pts[idx, :2] / pts[idx, 2:3]
        err = np.linalg.norm(back - ray, axis=1)
        inside[idx[~(err <= 1e-6 * (1.0 + np.linalg.norm(ray, axis=1)))]] = False
    return inside


def row_norms(p: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row of an (N, 3) float array: `np.linalg.norm(p, axis=1)`, bit for
    bit — the same squares, summed in the same order ((x² + y²) + z²: numpy's reduction of a
    three-element row), the same square root — without its strided reduction (a third of its time)."""
    x = p[:, 0] * p[:, 0]
    y = p[:, 1] * p[:, 1]
    x += y
    np.multiply(p[:, 2], p[:, 2], out=y)
    x += y
    return np.sqrt(x, out=x)


def _samples(pts: np.ndarray, src: np.ndarray, centre: float, K: np.ndarray, mask_hw: tuple[int, int],
             depth_hw: tuple[int, int], name: str, K_full: np.ndarray, hw: tuple[int, int], lens_key: Optional[tuple],
             sx: float, sy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The samples `pts` (N, 3, optical frame; voxel src[i] each) that the low-res camera sees:
    their voxel, pixel in its depth image, range (float32) and `centre` flag (float32)."""
    (mh, mw), (dh, dw) = mask_hw, depth_hw
    ok = pts[:, 2] > NEAR
    seen = pts[ok]
    uvw = seen @ K.T
    u = np.round(uvw[:, 0] / uvw[:, 2])
    v = np.round(uvw[:, 1] / uvw[:, 2])
    if lens_key is None:
        inside = (u >= 0) & (u < mw) & (v >= 0) & (v < mh)
    else:
        inside = _lens_pixels(name, K_full, hw, lens_key, sx, sy, seen)
        u, v = np.clip(u, 0, dw - 1), np.clip(v, 0, dh - 1)      # the canvas holds every raw ray
    sel = np.flatnonzero(ok)[inside]
    pix = (v[inside] * dw + u[inside]).astype(np.int64)
    rng = row_norms(seen[inside]).astype(np.float32)
    return src[sel].astype(np.int64), pix, rng, np.full(len(sel), centre, np.float32)


@functools.lru_cache(maxsize=8)
def _visibility_tables(cams: tuple, grid: GridSpec, mask_width: int, near_samples: float) -> list:
    """Per camera: (low-res camera, voxel index, pixel index, range, margin flag) of every sample.

    Depends only on the rig geometry and the grid, so it is computed once per process. The low-res
    camera is the one whose depth is rendered per frame: the camera itself, or for a distorted lens
    its pinhole canvas at the same scale; a sample's pixel indexes that rendering.
    """
    xc = grid.x.lo + (np.arange(grid.nx) + 0.5) * grid.x.step
    yc = grid.y.lo + (np.arange(grid.ny) + 0.5) * grid.y.step
    zc = grid.z.lo + (np.arange(grid.nz) + 0.5) * grid.z.step
    vis = []
    centres = np.stack(np.meshgrid(xc, yc, zc, indexing='ij'), -1).reshape(-1, 3)
    for name, K_bytes, T_bytes, (h, w), lens_key in cams:
        mw = int(mask_width)
        mh = max(1, int(round(h * mw / w)))
        sx, sy = mw / w, mh / h
        K_full = np.frombuffer(K_bytes, np.float64).reshape(3, 3).copy()
        T = np.frombuffer(T_bytes, np.float64).reshape(4, 4)
        if lens_key is None:
            K, (dh, dw) = _scaled(K_full, sx, sy), (mh, mw)
        else:
            # depth from the lens's pinhole canvas at the same scale, its pixel grid the image's
            # grid extended by whole pixels (so the rays the pinhole image has are sampled alike)
            hc, wc = lens_key[3]
            Kr = np.frombuffer(lens_key[2], np.float64).reshape(3, 3)
            K = _scaled(K_full, sx, sy)
            ox, oy = math.ceil((Kr[0, 2] - K_full[0, 2]) * sx), math.ceil((Kr[1, 2] - K_full[1, 2]) * sy)
            K[0, 2] += ox
            K[1, 2] += oy
            dh, dw = int(math.ceil(hc * sy)) + 1, int(math.ceil(wc * sx)) + 1
        pre = _CameraPre(_LowResCam(name, K, T, (dh, dw)), 0)
        R, t = pre.T_ec[:3, :3].T, pre.T_ec[:3, 3]
        p_all = centres @ R + t                                          # optical frame
        # near voxels (large on the image) are also sampled at 8 points near their corners,
        # so a voxel whose centre is just outside the image but whose corner is seen counts
        near = np.flatnonzero(row_norms(p_all) < near_samples)
        offs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
        offs = offs * (0.45 * np.asarray(grid.voxel))                   # inside the voxel
        corner_pts = (centres[near][:, None, :] + offs[None]).reshape(-1, 3) @ R + t
        # centres, then corners (margin 0: a corner must be in front of the surface; a centre
        # gets the margin), each sample's voxel, pixel and range — the two sets one after the other
        # rather than concatenated (the same rows through the same operations)
        camera = (K, (mh, mw), (dh, dw), name, K_full, (h, w), lens_key, sx, sy)
        parts = [_samples(p_all, np.arange(len(centres)), 1.0, *camera),
                 _samples(corner_pts, np.repeat(near, len(offs)), 0.0, *camera)]
        vox, pix, rng, centre_sample = (np.concatenate(a) for a in zip(*parts))
        vis.append((pre, vox.astype(np.int64), pix, rng, centre_sample))
    return vis
